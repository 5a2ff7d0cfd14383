"""LiteRT (TFLite) on the CPU with its default XNNPACK delegate, fixed thread counts.

Files are written by `converters.tflite` without any converter package; a model with
an op the writer lacks falls back to litert-torch when it is installed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..errors import UnsupportedOperationError
from .base import Backend
from .latency import Latency, MeasureSettings, summarize, time_runs


class LiteRTBackend(Backend):
    name = "litert"
    suffix = ".tflite"
    op_timing = "invoke"  # single ops: wall clock of invoke, the input set once (see measure_op)

    def version(self) -> str:
        from importlib.metadata import version

        return version("ai-edge-litert")

    def convert(self, model, input_shapes, path) -> str:
        from ..converters.tflite import write_tflite

        try:
            return str(write_tflite(model, list(input_shapes), path))
        except UnsupportedOperationError as e:
            try:
                import litert_torch
            except ImportError:
                raise UnsupportedOperationError(
                    f"{e}; install the converter for other ops: pip install 'autoslim-hw[convert]'") from e
        import torch

        sample = tuple(torch.randn(s) for s in input_shapes)
        with atomic_path(path, suffix=".tflite") as tmp:
            litert_torch.convert(model.eval(), sample).export(tmp)
        return str(path)

    def interpreter(self, path: str | os.PathLike, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=threads)  # XNNPACK is applied by default
        interp.allocate_tensors()
        return interp

    def load(self, path, threads: int = 1, copy_input: bool = True):
        interp = self.interpreter(path, threads)
        rng = np.random.default_rng(0)
        feed = [(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
                for d in interp.get_input_details()]
        if not copy_input:
            for index, x in feed:
                interp.set_tensor(index, x)
            return interp.invoke

        def run():
            for index, x in feed:  # copy the input in each run, as ONNX Runtime's session.run does
                interp.set_tensor(index, x)
            interp.invoke()

        return run

    def run(self, path, inputs_nchw, threads: int = 1):
        return run_tflite(path, inputs_nchw, threads)

    def input_layout(self, path) -> str:
        return "NHWC" if _is_nhwc_file(path) else "NCHW"

    def measure_op(self, path, settings: MeasureSettings = MeasureSettings(), threads: int = 1) -> Latency:
        """Wall-clock time of `invoke` on a single-op file, its input set once: inside a network
        an op reads the tensor the op before it wrote, so copying its input in each run (a whole
        network does that once) adds a cost that grows with the input, for large inputs more than the
        op itself (benchmarks/litert_input_copy.py; benchmarks/NOTES.md).
        benchmark_model on phones also fills the inputs once."""
        run = self.load(path, threads, copy_input=False)
        times = []
        for _ in range(settings.rounds):
            times += time_runs(run, settings.warmup, settings.runs, settings.min_round_s)
        return summarize(times)


def _is_nhwc_file(path: str | os.PathLike) -> bool:
    """Files from converters.tflite say so; a converter's (the litert-torch fallback) keep PyTorch's layout."""
    from ai_edge_litert import schema_py_generated as fb

    from ..converters.tflite import NHWC_DESCRIPTION

    return fb.Model.GetRootAs(Path(path).read_bytes(), 0).Description() == NHWC_DESCRIPTION.encode()


def run_tflite(path: str | os.PathLike, inputs_nchw: list[np.ndarray], threads: int = 1) -> np.ndarray:
    """Run the file once on NCHW inputs and return its first output, 4-D outputs back in NCHW."""
    interp = LiteRTBackend().interpreter(path, threads)
    nhwc = _is_nhwc_file(path)
    for d, x in zip(interp.get_input_details(), inputs_nchw, strict=True):
        x = np.asarray(x, dtype=d["dtype"])
        interp.set_tensor(d["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc and x.ndim == 4 else x)
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    return y.transpose(0, 3, 1, 2) if nhwc and y.ndim == 4 else y
