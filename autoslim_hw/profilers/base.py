"""The backend interface every runtime implements (nn-Meter's shape: a registry of
backends by name, imported only when used), and the latency result type."""
from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..errors import UserError

# What a measured latency means. On a shared VM the noise is one-sided (neighbours, interrupts
# and slow spells only ever add time) and comes and goes in spells of seconds, so the fast end of
# the runs is what the hardware does with the model, and it repeats. "min": the fastest of all
# timed runs (host tables now; also what Python's timeit recommends). On the AMD family 25 VM,
# on a noisy day, the same 148 MobileNetV2-224 sub-networks timed in two sessions agreed to
# 1.87% by it (ONNX Runtime; 2.34% by the 10th percentile, 4.2% by the median), and tables built
# and validated by it were off by 1.63% (ORT) and 1.94% (LiteRT), against 2.50% and 2.13% by the
# 10th percentile (benchmarks/latency_statistic.py, benchmarks/RESULTS.md). "p10": the 10th
# percentile, host tables built before. "median": older tables, and phone tables, where
# benchmark_model prints only the mean and the median.
STATISTICS = ("min", "p10", "median")
STATISTIC_TEXT = {"min": "the fastest of the timed runs", "p10": "the 10th percentile of the timed runs",
                  "median": "the median of the timed runs"}
HOST_STATISTIC = "min"


@dataclass(frozen=True)
class Latency:
    """Milliseconds over all timed runs of all rounds: median, 10th and 90th percentiles, and
    (`value("min")`) the fastest run."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    runs_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)  # the timed runs, when kept
    # the fastest run, where a backend knows it better than min(runs_ms) (ONNX Runtime's
    # whole-microsecond kernel timers); None: min(runs_ms)
    min_ms: float | None = None

    def value(self, statistic: str) -> float:
        """The latency in one of STATISTICS."""
        if statistic not in STATISTICS:
            raise ValueError(f"unknown latency statistic {statistic!r}; known: {', '.join(STATISTICS)}")
        if statistic == "min":
            if self.min_ms is not None:
                return self.min_ms
            if not self.runs_ms:
                raise ValueError("the fastest run needs the timed runs, and this latency kept none")
            return min(self.runs_ms)
        return self.p10_ms if statistic == "p10" else self.median_ms

    def scaled(self, factor: float) -> "Latency":
        return Latency(self.median_ms * factor, self.p10_ms * factor, self.p90_ms * factor, self.runs,
                       tuple(t * factor for t in self.runs_ms), None if self.min_ms is None else self.min_ms * factor)

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "runs": self.runs}


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 10
    runs: int = 20  # timed runs per round
    rounds: int = 3  # rounds are interleaved across models by callers that compare
    min_round_s: float = 0.05  # a round runs at least this long: more runs for sub-millisecond models


def summarize(times_s: list[float]) -> Latency:
    return summarize_ms([t * 1e3 for t in times_s])


def summarize_ms(ms: list[float]) -> Latency:
    if not ms:
        raise ValueError("no timed runs")
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return Latency(statistics.median(ms), q[0], q[-1], len(ms), tuple(ms))


def time_runs(fn: Callable[[], object], warmup: int, runs: int, min_time_s: float = 0.0) -> list[float]:
    """At least `runs` timed runs and at least `min_time_s` of them, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    out = []
    start = time.perf_counter()
    while len(out) < runs or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def measure_interleaved(backend: "Backend", paths: list, settings: MeasureSettings, threads: int = 1,
                        seed: int = 0, chunk: int = 25, progress: Callable[[int], None] | None = None,
                        bridges: int = 3, statistic: str = HOST_STATISTIC) -> list[Latency]:
    """Latency of several model files, timed in `settings.rounds` rounds that each visit every
    model once, in a fresh random order; a model's latency summarizes all its runs of all rounds.

    Why: a shared VM or a laptop drifts 5-30% in speed over minutes (neighbours, thermal
    limits). Timed back to back, a model caught in a slow spell is off by that much; timed in
    interleaved rounds, every model sees the same mix of spells, and comparisons between them
    hold. At most `chunk` models are loaded at once (memory). When they take several chunks,
    `bridges` models of the first chunk, spread over its latency range, are timed again in each
    later chunk, whose latencies are then scaled by how much faster its bridges ran (by
    `statistic`) than in the first: on the AMD VM two chunks timed a minute apart differed by
    17%, more than the networks being compared (benchmarks/RESULTS.md). `progress(k)` is called
    as models finish."""
    import random

    rng = random.Random(seed)
    out: list[Latency | None] = [None] * len(paths)
    bridges = min(bridges, chunk // 2)
    reference: dict[int, float] = {}  # bridge -> its latency in the first chunk
    start = 0
    while start < len(paths):
        new = list(range(start, min(start + chunk - len(reference), len(paths))))
        start += len(new)
        lats = _interleaved_chunk(backend, paths, new + list(reference), settings, threads, rng)
        factor = statistics.median(reference[i] / lats[i].value(statistic) for i in reference) if reference else 1.0
        for i in new:
            out[i] = lats[i].scaled(factor) if factor != 1.0 else lats[i]
        if progress is not None:
            progress(len(new))
        if not reference and start < len(paths) and bridges:
            ranked = sorted(new, key=lambda i: lats[i].value(statistic))
            picks = {ranked[round((k + 0.5) * len(ranked) / bridges - 0.5)] for k in range(bridges)}
            reference = {i: lats[i].value(statistic) for i in picks}
    return out  # type: ignore[return-value]


def _interleaved_chunk(backend: "Backend", paths: list, idx: list[int], settings: MeasureSettings, threads: int,
                       rng) -> dict[int, Latency]:
    """The interleaved rounds of `measure_interleaved` over the models `idx`, loaded together."""
    runs = {i: backend.load(paths[i], threads) for i in idx}
    for i in idx:
        for _ in range(settings.warmup):
            runs[i]()
    times: dict[int, list[float]] = {i: [] for i in idx}
    for _ in range(settings.rounds):
        order = idx[:]
        rng.shuffle(order)
        for i in order:
            # two untimed runs refill the caches the other models evicted
            times[i] += time_runs(runs[i], 2, settings.runs, settings.min_round_s)
    return {i: summarize(times[i]) for i in idx}


@contextlib.contextmanager
def pinned_to_core(core: int | None) -> Iterator[None]:
    """Pin this process to one core while measuring; restore the old affinity after."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    if core not in old:
        raise UserError(f"core {core} is not available to this process (allowed: {sorted(old)})")
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


class Backend:
    """A runtime: turn a plain PyTorch model into its file, and time that file."""

    name: str = ""
    suffix: str = ""

    def version(self) -> str:
        raise NotImplementedError

    def convert(self, model, input_shapes: list[tuple[int, ...]], path: str | os.PathLike) -> str:
        """Write `model` (plain PyTorch, eval mode) as this runtime's file."""
        raise NotImplementedError

    def load(self, path: str | os.PathLike, threads: int = 1):
        """A callable running one inference on a fixed random input."""
        raise NotImplementedError

    def measure(self, path: str | os.PathLike, settings: MeasureSettings = MeasureSettings(),
                threads: int = 1) -> Latency:
        run = self.load(path, threads)
        times = []
        for _ in range(settings.rounds):
            times += time_runs(run, settings.warmup, settings.runs, settings.min_round_s)
        return summarize(times)


    # how `measure_op` times a single op: "wall" (whole session runs) or "kernel" (the
    # runtime's own per-node timers, without the per-call overhead a network pays once)
    op_timing: str = "wall"

    def measure_op(self, path: str | os.PathLike, settings: MeasureSettings = MeasureSettings(),
                   threads: int = 1) -> Latency:
        """Latency of a single-op file as the op costs inside a network (default: wall clock)."""
        return self.measure(path, settings, threads)


# module and class names as strings: a runtime is imported only when asked for
_BACKENDS = {
    "onnxruntime": ("autoslim_hw.profilers.onnxruntime_backend", "OnnxRuntimeBackend"),
    "litert": ("autoslim_hw.profilers.litert_backend", "LiteRTBackend"),
}


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise UserError(f"unknown runtime {name!r}; available: {', '.join(sorted(_BACKENDS))}")
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)()
