"""ONNX Runtime on the CPU: legacy exporter, graph optimizations on, fixed thread counts."""
from __future__ import annotations

import bisect
import json
import os
import tempfile

import numpy as np

from ..converters.onnx import export_onnx
from .base import Backend
from .latency import Latency, MeasureSettings, summarize_ms


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    suffix = ".onnx"

    op_timing = "kernel"

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def convert(self, model, input_shapes, path) -> str:
        return str(export_onnx(model, path, list(input_shapes)))

    def session(self, path: str | os.PathLike, threads: int = 1, profile: bool = False,
                profile_prefix: str | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = profile
        if profile_prefix is not None:
            opts.profile_file_prefix = profile_prefix
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def load(self, path, threads: int = 1):
        sess = self.session(path, threads)
        feed = random_feed(sess)
        return lambda: sess.run(None, feed)

    def run(self, path, inputs_nchw, threads: int = 1):
        sess = self.session(path, threads)
        return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs_nchw, strict=True)})[0]

    def profile_events(self, path, runs: int, threads: int = 1) -> list[dict]:
        """ONNX Runtime's profile (its JSON events) of `runs` runs of the model on a random input,
        from a profiling session of its own (profiling slows the runs it times)."""
        with tempfile.TemporaryDirectory() as tmp:
            sess = self.session(path, threads, profile=True, profile_prefix=os.path.join(tmp, "ort"))
            feed = random_feed(sess)
            for _ in range(runs):
                sess.run(None, feed)
            with open(sess.end_profiling()) as f:
                return json.load(f)

    def measure_op(self, path, settings: MeasureSettings = MeasureSettings(), threads: int = 1) -> Latency:
        """Kernel time of a single-op model from ONNX Runtime's profiler: per run, the sum of the
        durations of its compute nodes. A whole session run of a one-op model also pays the
        call overhead, the input copy and NCHWc layout reorders around the op, which inside a
        network are paid once or not at all; summing wall-clock single-op times overcounts those
        64 times for MobileNetV2 (see benchmarks/NOTES.md). Its median is the trimmed mean of the
        runs' sums and its fastest run is read between whole microseconds (see below); p10 and
        p90 are the sums' own."""
        events = self.profile_events(path, settings.rounds * settings.runs + settings.warmup, threads)
        # layout changes at the op's borders (Reorder*) are left out: inside a network they mostly vanish
        kernels = [ms for op_type, ms in kernel_times_by_run(events, settings.warmup) if not op_type.startswith("Reorder")]
        sums = [sum(per_run) for per_run in zip(*kernels)]
        # ONNX Runtime's timers count whole microseconds, and a small op takes two or three: the
        # median of such counts is off by up to a third. Their trimmed mean is not (the run-to-run
        # jitter spreads the counts over neighbouring microseconds), and for long ops it is the median.
        lat = summarize_ms(sums)
        return Latency(_trimmed_mean(sums), lat.p10_ms, lat.p90_ms, lat.runs, lat.runs_ms, _fastest(sums))


def kernel_times_by_run(events: list[dict], warmup: int) -> list[tuple[str, list[float]]]:
    """From ONNX Runtime's profile (`events`, its JSON): per compute kernel, in the order the
    first timed run executed them, its op type and its time (ms) in each run after `warmup`."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:]
    starts = [r[0] for r in runs]
    per_run: dict[str, list[float]] = {}
    first: dict[str, tuple[float, str]] = {}  # kernel -> (when the first run started it, op type)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i >= 0 and e["ts"] <= runs[i][1]:
            per_run.setdefault(e["name"], [0.0] * len(runs))[i] += e["dur"] / 1e3
            first.setdefault(e["name"], (e["ts"], e.get("args", {}).get("op_name", "")))
    return [(first[k][1], per_run[k]) for k in sorted(per_run, key=lambda k: first[k][0])]


def _fastest(sums_ms: list[float]) -> float:
    """The fastest run, between whole microseconds: an op of 2.4 us is counted 2 or 3 us (60:40)
    in its fast runs, so the fastest count alone reads 2. The share of counts one microsecond
    above the fastest, among those two counts, is the fraction it drops."""
    us = [round(s * 1e3) for s in sums_ms]
    low = min(us)
    at, above = us.count(low), us.count(low + 1)
    return (low + above / (at + above)) / 1e3


def _trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """Mean of the values between the `cut` and 1 - `cut` quantiles (outliers left out)."""
    v = sorted(values)
    k = int(len(v) * cut)
    middle = v[k:len(v) - k] or v
    return sum(middle) / len(middle)


# numpy types of the ONNX tensor types a feed may need
_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def random_feed(sess, seed: int = 0) -> dict:
    """A random input for every input of the session (dynamic dimensions as 1): normal floats,
    0/1 integers."""
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dtype = _NP_TYPES.get(i.type, np.float32)
        data = rng.standard_normal(shape) if np.issubdtype(dtype, np.floating) else rng.integers(0, 2, shape)
        feed[i.name] = data.astype(dtype)
    return feed
