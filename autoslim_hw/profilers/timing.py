"""Timing several models against each other (interleaved rounds, bridged chunks), pinned to a core."""
from __future__ import annotations

import contextlib
import os
import random
import statistics
from typing import Callable, Iterator

from ..errors import UserError
from .base import Backend
from .latency import HOST_STATISTIC, Latency, MeasureSettings, summarize, time_runs


def measure_interleaved(backend: Backend, paths: list, settings: MeasureSettings, threads: int = 1,
                        seed: int = 0, chunk: int = 25, progress: Callable[[int], None] | None = None,
                        bridges: int = 3, statistic: str = HOST_STATISTIC) -> list[Latency]:
    """Latency of several model files, timed in `settings.rounds` rounds that each visit every
    model once, in a fresh random order; a model's latency summarizes all its runs of all rounds.

    Why: a shared VM or a laptop drifts in speed over minutes (neighbours, thermal limits).
    Timed back to back, a model caught in a slow spell is off by that much; timed in interleaved
    rounds, every model sees the same mix of spells, and comparisons between them hold. At most
    `chunk` models are loaded at once (memory). When they take several chunks, `bridges` models
    of the first chunk, spread over its latency range, are timed again in each later chunk,
    whose latencies are then scaled by how much faster its bridges ran (by `statistic`) than in
    the first: two chunks timed a minute apart can differ by more than the networks being
    compared (benchmarks/NOTES.md, "Chunk bridges"). `progress(k)` is called as models finish."""
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


def _interleaved_chunk(backend: Backend, paths: list, idx: list[int], settings: MeasureSettings, threads: int,
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
