"""TFLite `benchmark_model`'s output: parsed (`parse_benchmark_output`) and written
(`format_benchmark_output`, by the local runner), and its numbers as a table entry.

The format is the one of TensorFlow's tensorflow/lite/tools/benchmark/benchmark_model.cc
(BenchmarkModel::Run and BenchmarkLoggingListener::OnBenchmarkEnd) and of the `Stat`
statistics printer (tensorflow/core/util/stats_calculator.h, Stat::OutputToStream): per run
phase one line `count=N first=F curr=C min=A max=B avg=M std=S` (recent builds add `p5= median=
p95=`; `count=N curr=C` when all runs took the same time), then
`Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): M`
and, where memory is measurable,
`Memory footprint delta from the start of the tool (MB): init=X overall=Y`.
Lines carry an `INFO: ` prefix in recent builds and a logcat prefix when copied from logcat.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from ...errors import UserError
from .bundle import BundleSettings

# benchmark_model reports the mean and the (population) standard deviation of the timed runs;
# for a normal distribution the 10th and 90th percentiles lie 1.2816 std either side of the mean
_Z10 = 1.2815515655446004

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf"
_TIMINGS = re.compile(r"Inference timings in us: Init: (?P<init>{n}), First inference: (?P<first>{n}), "
                      r"Warmup \(avg\): (?P<warmup>{n}), Inference \(avg\): (?P<avg>{n})".format(n=_NUM))
_MEMORY = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=(?P<init>{n}) "
                     r"overall=(?P<overall>{n})".format(n=_NUM))
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{n})".format(n=_NUM))
_PAIR = re.compile(r"\b(count|first|curr|min|max|avg|std|p5|median|p95)=(" + _NUM + ")")
_ERROR_HINTS = re.compile(r"\bERROR\b|\berror\b|[Ff]ailed|not found|No such file|denied|Aborted|Segmentation|"
                          r"can't|cannot|CANNOT LINK")


def first_error_line(text: str) -> str:
    """The line that best says why benchmark_model did not finish."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern in (re.compile(r"\bERROR\b|^E |\sE tflite"), _ERROR_HINTS):
        for ln in lines:
            if pattern.search(ln):
                return ln[:200]
    return lines[-1][:200] if lines else "the output is empty"


def parse_benchmark_output(text: str, source: str = "benchmark output") -> dict:
    """The numbers of one benchmark_model run, in milliseconds (MB for memory).

    Returns avg_ms (its "Inference (avg)"), min_ms, max_ms, std_ms and count (of the timed
    runs' statistics line), median_ms (recent builds only), init_ms, first_ms (the first
    warmup run), warmup_avg_ms, memory_init_mb / memory_overall_mb / peak_memory_mb: None where
    the output does not have them; below_resolution: every timed run read 0 us. A run without
    inference timings (the model failed to load or to run on the phone) raises a one-line
    UserError naming `source`."""
    lines = text.splitlines()
    t_idx = max((i for i, ln in enumerate(lines) if _TIMINGS.search(ln)), default=None)
    if t_idx is None or "Benchmarking failed" in text:
        raise UserError(f"{source}: benchmark_model did not finish (no inference timings): {first_error_line(text)}")
    m = _TIMINGS.search(lines[t_idx])
    avg_us = float(m["avg"])
    stats = _timed_run_stats(lines[:t_idx])
    below_resolution = avg_us == 0 and stats is not None  # count > 0: runs, each under a microsecond
    if below_resolution:
        # benchmark_model keeps whole microseconds: a tiny layer on a fast core reads 0 in every
        # run; half the resolution is the honest estimate (off by at most 0.5 us)
        avg_us = 0.5
    if not math.isfinite(avg_us) or avg_us <= 0:
        raise UserError(f"{source}: benchmark_model reported no timed runs (Inference (avg): {m['avg']})")
    out = {"avg_ms": avg_us / 1e3, "below_resolution": below_resolution, "init_ms": float(m["init"]) / 1e3,
           "first_ms": float(m["first"]) / 1e3,
           "warmup_avg_ms": float(m["warmup"]) / 1e3, "min_ms": None, "max_ms": None, "std_ms": None,
           "median_ms": None, "count": None, "memory_init_mb": None, "memory_overall_mb": None,
           "peak_memory_mb": None}
    if stats:
        count = int(float(stats["count"])) if "count" in stats else None
        if "min" not in stats and "curr" in stats:  # "count=N curr=C(all same)"
            stats.update(min=stats["curr"], max=stats["curr"], std="0")
        out.update(count=count, min_ms=_ms(stats.get("min")), max_ms=_ms(stats.get("max")),
                   std_ms=_ms(stats.get("std")), median_ms=_ms(stats.get("median")))
        if out["median_ms"] is None and count == 1:
            out["median_ms"] = out["min_ms"]
    for ln in lines[t_idx:]:
        if (mm := _MEMORY.search(ln)):
            out["memory_init_mb"], out["memory_overall_mb"] = float(mm["init"]), float(mm["overall"])
        if (pk := _PEAK.search(ln)):
            out["peak_memory_mb"] = float(pk["peak"])
    return out


def _ms(value: str | None) -> float | None:
    return None if value is None else float(value) / 1e3


def _timed_run_stats(lines: list[str]) -> dict | None:
    """The statistics line of the timed runs: the first `count=` line after the last
    "Running benchmark for at least" line; without such lines (a logcat excerpt), the last
    `count=` line that is not op-profiling output."""
    start = max((i for i, ln in enumerate(lines) if "Running benchmark for at least" in ln), default=None)
    candidates = lines[start + 1:] if start is not None else reversed(lines)
    for ln in candidates:
        if "count=" in ln and "Timings (microseconds)" not in ln and "Memory (bytes)" not in ln:
            pairs = dict(_PAIR.findall(ln))
            if "count" in pairs and int(float(pairs["count"])) > 0:
                return pairs
    return None


def _stat_line(us: list[int]) -> str:
    """Stat<int64_t>::OutputToStream of a recent build: count first curr min max avg std p5 median p95."""
    if not us:
        return "count=0"
    srt = sorted(us)
    pct = " ".join(f"{k}={srt[min(len(srt) - 1, int(q * len(srt)))]}" for k, q in
                   (("p5", 0.05), ("median", 0.5), ("p95", 0.95)))
    if srt[0] == srt[-1]:
        return f"count={len(us)} curr={us[-1]}" + ("(all same)" if len(us) > 1 else "") + f" {pct}"
    avg = sum(us) / len(us)
    std = int(math.sqrt(max(sum(x * x for x in us) / len(us) - avg * avg, 0.0)))
    return (f"count={len(us)} first={us[0]} curr={us[-1]} min={srt[0]} max={srt[-1]} avg={avg:g} std={std} {pct}")


def format_benchmark_output(graph: str, settings: BundleSettings, init_us: int, warmup_us: list[int],
                            timed_us: list[int], model_size_mb: float, mem_init_mb: float | None = None,
                            mem_overall_mb: float | None = None) -> str:
    """benchmark_model's log for one run (what it prints with --num_threads=1 and the bundle's
    flags), from measured numbers: init time and per-run times in microseconds."""
    s = settings
    phase = "Running benchmark for at least {} iterations and at least {:g} seconds but terminate if exceeding {:g} seconds."
    lines = ["STARTING!", "Log parameter values verbosely: [0]", f"Min num runs: [{s.num_runs}]",
             f"Min runs duration (seconds): [{s.min_secs:g}]", f"Num threads: [{s.num_threads}]",
             f"Min warmup runs: [{s.warmup_runs}]", f"Min warmup runs duration (seconds): [{s.warmup_min_secs:g}]",
             f"Graph: [{graph}]", f"Use xnnpack: [{int(s.use_xnnpack)}]", f"Loaded model {graph}",
             "Initialized TensorFlow Lite runtime.", f"The input model file size (MB): {model_size_mb:g}",
             f"Initialized session in {init_us / 1e3:g}ms.",
             phase.format(s.warmup_runs, s.warmup_min_secs, s.max_secs), _stat_line(warmup_us) + "\n",
             phase.format(s.num_runs, s.min_secs, s.max_secs), _stat_line(timed_us) + "\n"]
    w_avg = sum(warmup_us) / len(warmup_us) if warmup_us else float("nan")
    t_avg = sum(timed_us) / len(timed_us) if timed_us else float("nan")
    lines.append(f"Inference timings in us: Init: {init_us}, First inference: {warmup_us[0] if warmup_us else 0}, "
                 f"Warmup (avg): {w_avg:g}, Inference (avg): {t_avg:g}")
    if mem_init_mb is not None and mem_overall_mb is not None:
        lines += [("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
                   "to the actual memory footprint of the model at runtime. Take the information at your discretion."),
                  (f"Memory footprint delta from the start of the tool (MB): init={mem_init_mb:g} "
                   f"overall={mem_overall_mb:g}")]
    return "".join(f"INFO: {ln}\n" for ln in lines)


def result_complete(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return "Inference timings in us" in text and "Benchmarking failed" not in text


def latency_of(r: dict) -> tuple[float, float, float]:
    """(median, p10, p90) in ms. benchmark_model prints the median in whole microseconds: under
    10 us that rounding is over 5%, so such ops (single tiny layers) take its mean, printed
    with decimals."""
    small = r["median_ms"] is not None and r["median_ms"] < 0.010 and r["avg_ms"] is not None
    mid = r["median_ms"] if r["median_ms"] is not None and not small else r["avg_ms"]
    if r["std_ms"] is None:
        return mid, mid, mid
    lo, hi = r["avg_ms"] - _Z10 * r["std_ms"], r["avg_ms"] + _Z10 * r["std_ms"]
    if r["min_ms"] is not None and r["max_ms"] is not None:
        lo, hi = max(lo, r["min_ms"]), min(hi, r["max_ms"])
    return mid, min(lo, mid), max(hi, mid)
