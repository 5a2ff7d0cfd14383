"""What a measurement is: a latency summary of timed runs, the settings runs are timed with,
and the timing loop itself."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

# What a measured latency means. Noise on a shared machine is one-sided (neighbours, interrupts
# and slow spells only ever add time) and comes in spells of seconds, so the fast end of the runs
# is what the hardware does with the model, and it repeats: "min", the fastest of all timed runs,
# is what host tables hold (benchmarks/NOTES.md, "Latency statistic" compares the choices).
# "p10" (the 10th percentile): host tables built before that; "median": older tables, and phone
# tables, where benchmark_model prints only the mean and the median.
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


def time_runs(fn: Callable[[], object], warmup: int, runs: int, min_time_s: float = 0.0,
              max_time_s: float = float("inf")) -> list[float]:
    """Seconds of each timed run: at least `runs` of them and at least `min_time_s` in all
    (stopping past `max_time_s`), after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    out = []
    start = time.perf_counter()
    while len(out) < runs or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        if t - start > max_time_s:
            break
    return out
