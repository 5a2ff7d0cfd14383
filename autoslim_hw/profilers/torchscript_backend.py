"""TorchScript on the CPU: the exported subnet runs with torch alone, at a fixed thread count."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..converters.torchscript import load_torchscript, torchscript_input_shape, write_torchscript
from .base import Backend
from .latency import Latency, MeasureSettings


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchScriptBackend(Backend):
    name = "torchscript"
    suffix = ".pt"

    def version(self) -> str:
        return torch.__version__

    def convert(self, model, input_shapes, path) -> str:
        if len(input_shapes) != 1:
            raise ValueError("TorchScript export takes one input shape")
        return str(write_torchscript(model, path, tuple(input_shapes[0])))

    def load(self, path, threads: int = 1):
        model = load_torchscript(path)
        shape = torchscript_input_shape(path)
        if shape is None:
            raise ValueError(f"{path} does not record its input shape (not written by autoslim-hw)")
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))

        def run():
            with torch.inference_mode():
                model(x)

        return run

    def run(self, path, inputs_nchw, threads: int = 1):
        model = load_torchscript(path)
        with _threads(threads), torch.inference_mode():
            return model(*[torch.as_tensor(np.asarray(x)) for x in inputs_nchw]).numpy()

    def measure(self, path, settings: MeasureSettings = MeasureSettings(), threads: int = 1) -> Latency:
        with _threads(threads):
            return super().measure(path, settings, threads)

