"""The runtime interface (nn-Meter's shape): a backend converts a plain PyTorch model into its
runtime's file, loads and times that file, and runs it for checks. Backends are found by name
in a registry that holds module and class names as strings, so a runtime is imported only when
used. Adding a runtime is one `RuntimeEntry` below plus its module."""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass

from ..errors import UserError
from .latency import Latency, MeasureSettings, summarize, time_runs

class Backend:
    """A runtime: turn a plain PyTorch model into its file, time that file, run it."""

    name: str = ""
    suffix: str = ""
    # how `measure_op` times a single op: "wall" (whole runs), "kernel" (the runtime's own
    # per-node timers, without the per-call overhead a network pays once) or "invoke"
    op_timing: str = "wall"

    def version(self) -> str:
        raise NotImplementedError

    def convert(self, model, input_shapes: list[tuple[int, ...]], path: str | os.PathLike) -> str:
        """Write `model` (plain PyTorch, eval mode, NCHW inputs) as this runtime's file."""
        raise NotImplementedError

    def load(self, path: str | os.PathLike, threads: int = 1):
        """A callable running one inference on a fixed random input."""
        raise NotImplementedError

    def run(self, path: str | os.PathLike, inputs_nchw: list, threads: int = 1):
        """The file's first output (a numpy array, 4-D outputs in NCHW) on NCHW numpy inputs."""
        raise NotImplementedError

    def input_layout(self, path: str | os.PathLike) -> str:
        """"NCHW" or "NHWC": the layout of the file's 4-D inputs and outputs."""
        return "NCHW"

    def measure(self, path: str | os.PathLike, settings: MeasureSettings = MeasureSettings(),
                threads: int = 1) -> Latency:
        run = self.load(path, threads)
        times = []
        for _ in range(settings.rounds):
            times += time_runs(run, settings.warmup, settings.runs, settings.min_round_s)
        return summarize(times)

    def measure_op(self, path: str | os.PathLike, settings: MeasureSettings = MeasureSettings(),
                   threads: int = 1) -> Latency:
        """Latency of a single-op file as the op costs inside a network (default: wall clock)."""
        return self.measure(path, settings, threads)


@dataclass(frozen=True)
class RuntimeEntry:
    """A runtime in the registry: what commands may list without importing it."""

    name: str  # --runtime NAME
    file_format: str  # --format NAME of `export`
    suffix: str
    module: str  # where the Backend subclass lives, imported on use
    cls: str
    label: str  # in sentences: "ONNX Runtime"
    description: str
    profiles: bool = True  # builds lookup tables (profile, lut validate)
    phone: bool = False  # bundles for a phone's benchmark tool (lut bundle)


_REGISTRY: dict[str, RuntimeEntry] = {}


def register_backend(entry: RuntimeEntry) -> RuntimeEntry:
    _REGISTRY[entry.name] = entry
    return entry


register_backend(RuntimeEntry("onnxruntime", "onnx", ".onnx", "autoslim_hw.profilers.onnxruntime_backend",
                              "OnnxRuntimeBackend", "ONNX Runtime", "ONNX Runtime, CPU execution provider"))
register_backend(RuntimeEntry("litert", "tflite", ".tflite", "autoslim_hw.profilers.litert_backend",
                              "LiteRTBackend", "LiteRT", "LiteRT (TensorFlow Lite) with XNNPACK; NHWC files", phone=True))
register_backend(RuntimeEntry("torchscript", "torch", ".pt", "autoslim_hw.profilers.torchscript_backend",
                              "TorchScriptBackend", "TorchScript", "TorchScript: runs with torch alone", profiles=False))


def list_backends(profiles: bool | None = None, phone: bool | None = None) -> list[RuntimeEntry]:
    """Registered runtimes, optionally only those that build tables or bundle for phones."""
    return [e for e in _REGISTRY.values()
            if (profiles is None or e.profiles == profiles) and (phone is None or e.phone == phone)]


def backend_entry(name: str, profiles: bool = False) -> RuntimeEntry:
    """The registry entry of `name`; with `profiles`, only runtimes that build tables qualify."""
    choices = [e.name for e in list_backends(profiles=True if profiles else None)]
    if name not in choices:
        close = difflib.get_close_matches(str(name), choices, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown runtime {name!r}{hint}; available: {', '.join(choices)}")
    return _REGISTRY[name]


def get_backend(name: str, profiles: bool = False) -> Backend:
    entry = backend_entry(name, profiles)
    return getattr(importlib.import_module(entry.module), entry.cls)()


def backend_for_format(file_format: str) -> RuntimeEntry | None:
    return next((e for e in _REGISTRY.values() if e.file_format == file_format), None)
