"""`autoslim-hw demo`: the pipeline end to end on bundled data, in minutes.

What runs today: train a small MobileNetV2-CIFAR supernet on scikit-learn's
digits (offline), evaluate configs of several widths after BN recalibration,
count them, export each to ONNX and measure it on one pinned CPU core with
ONNX Runtime, and write `report.md` with a plot.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .counting import count
from ._io import atomic_write_bytes
from .export import materialize
from .profilers import MeasureSettings, get_backend, pinned_to_core
from .profilers.devices import measurement_core
from .train import TrainSettings, evaluate_config, train


@dataclass
class DemoRow:
    name: str
    macs: int
    params: int
    memory: int
    top1: float
    latency_ms: float
    onnx_bytes: int


def run_demo(out: Path, data: str = "digits", model: str = "mobilenet_v2_cifar", quick: bool = False,
             console: Console | None = None) -> list[DemoRow]:
    from .data import dataset_info
    from .models import model_entry

    console = console or Console()
    dataset_info(data), model_entry(model)  # bad names fail here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    settings = TrainSettings(
        data=data, model=model, epochs=2 if quick else 10, batch_size=64, lr=0.05,
        input_size=16 if data == "digits" else None,  # digits are 8x8: 16px keeps the demo fast
        model_kwargs={"width_mult": 0.5} if model.startswith("mobilenet_v2") else {},
        limit=600 if quick else None, num_random=1 if quick else 2, eval_batches=5, seed=0,
    )
    resume = (out / "supernet.pt").exists()
    console.rule("1/3 train the supernet (sandwich rule + inplace distillation)")
    train(settings, out, resume=resume)

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data import load_splits, make_loader

    supernet, _, _ = model_from_checkpoint(load_checkpoint(out / "supernet.pt"))
    splits = load_splits(data, input_size=supernet.spec.input_size, seed=0, limit=settings.limit)
    calib = make_loader(splits.train_eval, 64, shuffle=True, seed=0)
    val = make_loader(splits.val, 256, shuffle=False)

    console.rule("2/3 evaluate configs (BN recalibrated) and measure them on one core")
    space = supernet.space
    configs = {f"uniform {w}x": space.uniform(w, snap=True) for w in (0.15, 0.5, 1.0, 1.5)}
    configs["random nonuniform"] = space.sample(random.Random(1))
    backend = get_backend("onnxruntime")
    measure = MeasureSettings(warmup=5, runs=10 if quick else 30, rounds=2 if quick else 3)
    shape = (1, supernet.spec.in_chans, supernet.spec.input_size, supernet.spec.input_size)
    rows = []
    for name, cfg in configs.items():
        acc = evaluate_config(supernet, cfg, calib, val, settings.eval_batches)["top1"]
        counts = count(supernet, cfg)
        path = out / "onnx" / f"{name.replace(' ', '_')}.onnx"
        backend.convert(materialize(supernet, cfg).eval(), [shape], path)
        with pinned_to_core(measurement_core()):
            latency = backend.measure(path, measure)
        rows.append(DemoRow(name, counts.macs, counts.params, counts.memory, acc, latency.median_ms,
                            path.stat().st_size))
        (out / "configs").mkdir(exist_ok=True)
        atomic_write_bytes(out / "configs" / f"{name.replace(' ', '_')}.json", cfg.to_json().encode())

    console.rule("3/3 report")
    table = Table("config", "MACs", "params", "memory", "top-1 %", "ORT 1-core ms", "ONNX KB")
    for r in rows:
        table.add_row(r.name, f"{r.macs / 1e6:.2f}M", f"{r.params / 1e3:.1f}K", f"{r.memory / 1e3:.1f}K",
                      f"{r.top1:.1f}", f"{r.latency_ms:.3f}", f"{r.onnx_bytes / 1024:.0f}")
    console.print(table)
    _write_report(out, rows, settings, backend.version())
    console.print(f"report: {out / 'report.md'}")
    return rows


def _write_report(out: Path, rows: list[DemoRow], settings: TrainSettings, ort_version: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter([r.latency_ms for r in rows], [r.top1 for r in rows])
    for r in rows:
        ax.annotate(r.name, (r.latency_ms, r.top1), fontsize=7)
    ax.set_xlabel("ONNX Runtime latency, 1 core (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{settings.model} supernet on {settings.data}")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_latency.png", dpi=120)
    plt.close(fig)
    lines = [f"# autoslim-hw demo: {settings.model} on {settings.data}", "",
             f"Supernet trained {settings.epochs} epochs with the sandwich rule; accuracy after BN "
             f"recalibration; latency: ONNX Runtime {ort_version}, one thread, process pinned to one core.", "",
             "| config | MACs | params | memory (elements) | top-1 % | latency ms | ONNX bytes |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.macs} | {r.params} | {r.memory} | {r.top1:.2f} | {r.latency_ms:.3f} | {r.onnx_bytes} |"
              for r in rows]
    lines += ["", "![accuracy vs latency](accuracy_vs_latency.png)", "",
              "Settings: `" + json.dumps(settings.to_dict()) + "`", ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
