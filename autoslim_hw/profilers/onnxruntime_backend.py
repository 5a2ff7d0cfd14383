"""ONNX Runtime on the CPU: legacy exporter, graph optimizations on, fixed thread counts."""
from __future__ import annotations

import os

import numpy as np

from ..export import export_onnx
from .base import Backend


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    suffix = ".onnx"

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def convert(self, model, input_shapes, path) -> str:
        return str(export_onnx(model, path, list(input_shapes)))

    def session(self, path: str | os.PathLike, threads: int = 1, profile: bool = False):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = profile
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def load(self, path, threads: int = 1):
        sess = self.session(path, threads)
        rng = np.random.default_rng(0)
        feed = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                for i in sess.get_inputs()}
        return lambda: sess.run(None, feed)
