"""What copying a single op's input in every run adds to its LiteRT time.

A layer inside a network reads the tensor the layer before it wrote; a single-op model
timed with `set_tensor` before every `invoke` also pays a copy of its whole input. For a
few MobileNetV2-224 layers, this times both ways, interleaved, medians of rounds.

    python benchmarks/litert_input_copy.py
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from autoslim_hw.lookup_tables.build import single_op_model
from autoslim_hw.lookup_tables.signatures import Signature
from autoslim_hw.profilers import MeasureSettings, get_backend
from autoslim_hw.profilers.devices import cpu_model, measurement_core

LAYERS = [Signature("dwconv", 112, 112, 144, 144, 3, 2, 1, 144, "relu6"),
          Signature("conv", 112, 112, 48, 24, 1, 1, 0, 1, "none"),
          Signature("conv", 56, 56, 24, 144, 1, 1, 0, 1, "relu6"),
          Signature("conv", 14, 14, 96, 576, 1, 1, 0, 1, "relu6")]


def main() -> None:
    os.sched_setaffinity(0, {measurement_core()})
    backend = get_backend("litert")
    settings = MeasureSettings(warmup=5, runs=50, rounds=3)
    print(f"{cpu_model()}, ai-edge-litert {backend.version()}, one thread, pinned core; median of 5 rounds")
    print(f"{'layer':45s} {'copy each run':>14s} {'input set once':>15s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for sig in LAYERS:
            model, shapes = single_op_model(sig)
            path = Path(tmp) / "op.tflite"
            backend.convert(model, shapes, path)
            copy, once = [], []
            for _ in range(5):
                copy.append(backend.measure(path, settings).median_ms)
                once.append(backend.measure_op(path, settings).median_ms)
            c, o = statistics.median(copy), statistics.median(once)
            print(f"{sig.key:45s} {c:11.3f} ms {o:12.3f} ms {c / o:6.2f}")


if __name__ == "__main__":
    main()
