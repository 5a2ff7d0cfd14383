"""`autoslim-hw demo`: the whole pipeline on bundled data, in minutes.

1. train a small MobileNetV2-CIFAR supernet on scikit-learn's digits (offline);
2. load this host's cpu-1core ONNX Runtime lookup table for it, or profile one;
3. validate the table on a few random sub-networks;
4. run the greedy search for three latency targets spread over the achievable range, with each
   criterion: the paper's (smallest accuracy drop), latency-guided (smallest drop per
   millisecond saved) and FLOPs-guided (smallest drop per MAC saved), each stopped at the same
   predicted latency;
5. export each selected config to ONNX, measure its real single-core latency and its
   accuracy, next to the uniform-width config of the same predicted budget;
6. write `report.md` with the plots.

Every stage resumes: run the demo again after an interruption and it goes on.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .._io import atomic_write_bytes
from ..errors import UserError
from ..nn.evaluate import evaluate_config
from ..nn.materialize import materialize
from ..profilers import MeasureSettings, get_backend, pinned_to_core
from ..search.costs import UNIFORM_RULE
from ..profilers.latency import STATISTIC_TEXT
from ..profilers.devices import measurement_core
from ..train import TrainSettings, train

DEVICE, RUNTIME = "cpu-1core", "onnxruntime"
# (row name, --criterion, --cost, result file): the searches the demo compares at each latency target
FAMILIES = (("paper", "drop", None, "search.json"),
            ("latency-guided", "drop-per-cost", "latency-ms", "search_per_ms.json"),
            ("flops-guided", "drop-per-cost", "flops", "search_per_mac.json"))


@dataclass
class DemoRow:
    name: str  # "target 0" or "uniform 0.70x"
    limit_ms: float | None  # the latency target it was chosen for
    predicted_ms: float
    measured_ms: float
    # measured_ms over the machine's slowdown since the table was built (the table's own
    # calibration networks, timed in the same rounds): the table's error without the drift
    at_build_speed_ms: float | None
    macs: int
    params: int
    memory: int  # deployed bytes: BN-folded float32 weights + peak live activations
    top1: float  # validation split, BN recalibrated
    onnx_bytes: int


def demo_settings(data: str, model: str, quick: bool) -> TrainSettings:
    return TrainSettings(
        data=data, model=model, epochs=3 if quick else 12,  # batch, learning rate, warm-up: train's defaults
        input_size=16 if data == "digits" else None,  # digits are 8x8: 16px keeps the demo fast
        model_kwargs={"width_mult": 0.35} if model.startswith("mobilenet_v2") else {},
        limit=600 if quick else None, eval_batches=5, seed=0,
    )


def run_demo(out: Path, data: str = "digits", model: str = "mobilenet_v2_cifar", quick: bool = False,
             console: Console | None = None) -> dict:
    from ..data import dataset_info
    from ..models import model_entry

    console = console or Console()
    dataset_info(data), model_entry(model)  # bad names fail here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(data, model, quick)
    console.rule("1/5 train the supernet (sandwich rule + inplace distillation)")
    train(settings, out, resume=(out / "supernet.pt").exists())

    from ..data import make_loader
    from .common import calibration_loader, checkpoint_splits, open_checkpoint

    loaded = open_checkpoint(out / "supernet.pt")
    supernet = loaded.supernet
    splits = checkpoint_splits(loaded.settings, supernet)
    calib = calibration_loader(splits, seed=0, batch_size=64)
    val = make_loader(splits.val, 256, shuffle=False)
    console.rule("2/5 latency lookup table (this host, one core, ONNX Runtime)")
    table, lut_path = _lookup_table(supernet, out, quick, console)
    from ..lookup_tables.networks import network_timing

    measure = network_timing(table, supernet)  # networks timed as the table's calibration networks were
    console.rule("3/5 validate the table on random sub-networks")
    validation = _validate(table, supernet, out, lut_path, 6 if quick else 12, measure)
    console.print(f"MAPE {validation['mape']:.1f}%, within 10%: {validation['within_10pct']:.0%}, "
                  f"Kendall tau {validation['kendall_tau']:.2f} on {validation['samples']} networks")

    console.rule("4/5 greedy search for three latency targets: the paper's, latency-guided, FLOPs-guided")
    results = _search(supernet, table, lut_path, out, quick, console)
    result = results["paper"]

    console.rule("5/5 export the selected configs and measure them")
    rows, factor = _export_and_measure(supernet, table, results, calib, val, settings, out, measure, console)
    _print_rows(rows, console)
    summary = {"rows": [asdict(r) for r in rows], "validation": validation, "lut": str(lut_path),
               "search": str(out / "search.json"), "searches": {name: str(out / f) for name, _, _, f in FAMILIES},
               "speed_factor": factor}
    _write_report(out, rows, settings, result, validation, lut_path, factor, table.statistic)
    from .plots import families_plot

    families_plot([(r.name.rsplit(" ", 1)[0] if not r.name.startswith("uniform") else "uniform", r.measured_ms,
                    r.top1) for r in rows], out / "demo_families.png",
                  f"{settings.model} on {settings.data}: supernet weights, BN recalibrated")
    atomic_write_bytes(out / "demo.json", (json.dumps(summary, indent=1) + "\n").encode())
    console.print(f"report: {out / 'report.md'}")
    return summary


def _lookup_table(supernet, out: Path, quick: bool, console: Console):
    """A table measured on this very CPU: a shipped one when the CPU matches, else profiled."""
    from ..lookup_tables import LatencyTable
    from ..lookup_tables.build import build_table
    from ..lookup_tables.discover import find_table
    from ..profilers.devices import cpu_id, cpu_model, get_device

    path = out / "lut.json"
    found = find_table(supernet, DEVICE, RUNTIME)  # measured on this CPU model
    if found is not None and not path.exists():
        table = LatencyTable.load(found)
        # one CPU model name covers machines of different speeds: check two networks first
        error = _spot_check(table, supernet)
        if error <= 0.10:
            console.print(f"using the shipped table {found} (this CPU model; spot check within {error:.0%})")
            return table, found
        console.print(f"the shipped table {found.name} is off by {error:.0%} on this host; profiling it")
    elif found is None and not path.exists():
        console.print(f"no shipped table was measured on this CPU ({cpu_model()}, {cpu_id()}); profiling one")
    settings = MeasureSettings(warmup=3, runs=10, rounds=2) if quick else MeasureSettings(warmup=5, runs=20, rounds=3)
    table = build_table(supernet, get_backend(RUNTIME), get_device(DEVICE), path, resume=path.exists(),
                        settings=settings, calibration_samples=12 if quick else 24)
    return table, path


def _spot_check(table, supernet) -> float:
    """Largest relative error of the table on a mid-width and the largest config, measured here."""
    import tempfile

    from ..lookup_tables.networks import measure_networks, network_timing

    configs = [supernet.space.uniform(0.75, snap=True), supernet.space.largest()]
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        measured = measure_networks(supernet, configs, get_backend(RUNTIME), Path(tmp),
                                    network_timing(table, supernet), 1, statistic=table.statistic)
    return max(abs(table.predict(supernet, cfg, memory=False).latency_ms - m) / m for cfg, m in zip(configs, measured))


def _validate(table, supernet, out: Path, lut_path: Path, samples: int, measure: MeasureSettings) -> dict:
    from ..lookup_tables.validate import validate_table
    from ..profilers.devices import get_device
    from .plots import validation_scatter

    result = validate_table(table, supernet, get_backend(RUNTIME), get_device(DEVICE), samples, measure)
    validation_scatter(result, out / "lut_validation.png", f"{supernet.spec.arch} on {DEVICE} ({RUNTIME})")
    return result


def _search(supernet, table, lut_path: Path, out: Path, quick: bool, console: Console):
    from rich.progress import Progress

    from ..search.costs import CostModel, Target
    from .search import run_search

    costs = CostModel(supernet, table)
    top, bottom = costs(supernet.space.largest())["latency_ms"], costs(supernet.space.smallest())["latency_ms"]
    # three targets spread over the upper part of the range (the lower part takes many more steps)
    fractions = (0.9, 0.82, 0.75) if quick else (0.75, 0.6, 0.45)
    targets = [Target.of(latency_ms=round(bottom + f * (top - bottom), 4)) for f in fractions]
    console.print("targets: " + "; ".join(t.describe() for t in targets)
                  + f" (the range is {bottom:.3f} to {top:.3f} ms)")
    batch = 32 if quick else 96  # BN statistics per batch of held-out images
    results = {}
    for family, criterion, cost, file in FAMILIES:
        path = out / file
        with Progress(console=console) as bar:
            task = bar.add_task(family, total=None)

            def on_step(step: dict, task=task, bar=bar, family=family) -> None:
                bar.update(task, description=f"{family} step {step['step']}: top-1 {step['accuracy']:.1f}%, "
                                             f"{step['latency_ms']:.3f} ms")

            def search(resume: bool, restart: bool, path=path, criterion=criterion, cost=cost, on_step=on_step):
                return run_search(targets, out / "supernet.pt", lut=lut_path, device=DEVICE, runtime=RUNTIME,
                                  criterion=criterion, cost=cost, batch_size=batch, batches=1, out=path,
                                  resume=resume, restart=restart, allow_mismatch=True, log=lambda _: None,
                                  on_step=on_step, plots=family == "paper")

            try:
                run = search(resume=path.exists(), restart=False)
            except UserError:  # a search of another checkpoint, table or setup is in the way: start over
                if not path.exists():
                    raise
                run = search(resume=False, restart=True)
        results[family] = run.result
    return results


def _export_and_measure(supernet, table, results: dict, calib, val, settings: TrainSettings, out: Path,
                        measure: MeasureSettings, console: Console) -> tuple[list[DemoRow], float | None]:
    from ..counting import count, deployed_memory_bytes
    from ..nn.config import ChannelConfig
    from ..search.costs import uniform_baseline

    space = supernet.space
    backend = get_backend(RUNTIME)
    shape = (1, supernet.spec.in_chans, supernet.spec.input_size, supernet.spec.input_size)
    def latency(cfg):
        return table.predict(supernet, cfg, memory=False).latency_ms

    plan = []
    for i, t in enumerate(results["paper"]["targets"]):
        limit = t["constraints"]["latency_ms"]
        for family, *_ in FAMILIES:  # each search's pick at this target
            plan.append((f"{family} {i}", limit, ChannelConfig(results[family]["targets"][i]["config"])))
        # the widest uniform config under the same predicted budget: what people do without a search
        baseline = uniform_baseline(space, latency, limit)
        if baseline is not None:
            plan.append((f"uniform {baseline[0]:.2f}x", limit, baseline[1]))
    rows = []
    (out / "onnx").mkdir(exist_ok=True)
    for name, limit, cfg in plan:
        top1 = evaluate_config(supernet, cfg, calib, val, settings.eval_batches)["top1"]  # leaves BN calibrated
        path = out / "onnx" / f"{name.replace(' ', '_')}.onnx"
        backend.convert(materialize(supernet, cfg).eval(), [shape], path)
        atomic_write_bytes(out / "onnx" / f"{name.replace(' ', '_')}.json", cfg.to_json().encode())
        c = count(supernet, cfg)
        rows.append(DemoRow(name, limit, latency(cfg), 0.0, None, c.macs, c.params,
                            deployed_memory_bytes(supernet, cfg, counts=c), top1, path.stat().st_size))
    # all of them in interleaved rounds: the machine's speed drifts for minutes at a time on
    # shared VMs, and back to back the configs would each be timed in another spell
    import tempfile

    from ..lookup_tables.networks import measure_with_anchors

    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        measured, factor = measure_with_anchors(table, supernet, [cfg for _, _, cfg in plan], backend, Path(tmp),
                                                measure, 1)
    for row, ms in zip(rows, measured):
        row.measured_ms = ms
        row.at_build_speed_ms = ms / factor if factor else None
        console.print(f"{row.name}: predicted {row.predicted_ms:.3f} ms, measured {ms:.3f} ms, top-1 {row.top1:.1f}%")
    if factor and abs(factor - 1) > 0.10:  # the picks still rank right, but their absolute times are not the table's
        console.print(f"[yellow]this host runs {abs(factor - 1):.0%} {'slower' if factor > 1 else 'faster'} now "
                      f"than when the table was measured (its calibration networks, timed alongside): busier, "
                      f"or another machine; `autoslim-hw profile` on a quiet machine rebuilds the table[/yellow]")
    return rows, factor


def _print_rows(rows: list[DemoRow], console: Console) -> None:
    table = Table("config", "target ms", "predicted ms", "measured ms", "at build speed", "MACs", "params", "deployed memory",
                  "top-1 %")
    for r in rows:
        table.add_row(r.name, f"{r.limit_ms:.3f}", f"{r.predicted_ms:.3f}", f"{r.measured_ms:.3f}",
                      "-" if r.at_build_speed_ms is None else f"{r.at_build_speed_ms:.3f}",
                      f"{r.macs / 1e6:.2f}M", f"{r.params / 1e3:.1f}K", f"{r.memory / 2 ** 10:.0f} KiB",
                      f"{r.top1:.1f}")
    console.print(table)


def _write_report(out: Path, rows: list[DemoRow], settings: TrainSettings, result: dict, validation: dict,
                  lut_path: Path, factor: float | None, statistic: str) -> None:
    from ..lookup_tables.networks import ANCHORS

    backend = get_backend(RUNTIME)
    lines = [
        f"# autoslim-hw demo: {settings.model} on {settings.data}", "",
        f"Supernet: {settings.epochs} epochs, sandwich rule with inplace distillation, "
        f"input {result['model']['input_size']}px. Latency: ONNX Runtime {backend.version()}, one thread, "
        f"process pinned to one core; predictions from `{lut_path}`.", "",
        "## Searched configs against uniform width at the same predicted budget", "",
        "At each latency target: *paper* is the AutoSlim criterion (slim the unit whose cut costs the least "
        "accuracy; cost only decides where to stop), *latency-guided* the least accuracy per predicted "
        "millisecond saved, *flops-guided* the least accuracy per MAC saved (stopped at the same predicted "
        f"latency), *uniform* the widest uniform width within the target ({UNIFORM_RULE}).", "",
        "![accuracy against measured latency](demo_families.png)", "",
        "Accuracy: top-1 on the validation split after BN recalibration (supernet weights, not retrained). "
        f"Latency: all configs timed in interleaved rounds ({STATISTIC_TEXT[statistic]}, as the table measures), together with {ANCHORS} of the "
        "table's calibration networks: " + (f"those ran {factor:.2f}x their time at the table's build, and "
        "*at build speed* divides by that (the table's own error, without the machine's drift)."
        if factor else "(the table kept none)."), "",
        "| config | target ms | predicted ms | measured ms | error | at build speed | MACs | params | deployed memory KiB "
        "| top-1 % | ONNX bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = (r.predicted_ms - r.measured_ms) / r.measured_ms * 100
        adj = "-" if r.at_build_speed_ms is None else f"{r.at_build_speed_ms:.3f}"
        lines.append(f"| {r.name} | {r.limit_ms:.3f} | {r.predicted_ms:.3f} | {r.measured_ms:.3f} | {err:+.1f}% | {adj} | "
                     f"{r.macs} | {r.params} | {r.memory / 2 ** 10:.0f} | {r.top1:.2f} | {r.onnx_bytes} |")
    lines += ["", "## Greedy search", "", f"{len(result['trajectory'])} configs on the trajectory "
              "(accuracy on the held-out search split, BN statistics of the search batch).", "",
              "![search trajectory](search_trajectory.png)", "", "![channels per layer](search_channels.png)", "",
              "## Lookup table", "",
              f"{validation['samples']} random sub-networks measured end to end: MAPE {validation['mape']:.1f}%, "
              f"max error {validation['max_error']:.1f}%, within 10%: {validation['within_10pct']:.0%}, "
              f"Kendall tau {validation['kendall_tau']:.2f}.", "",
              "![predicted vs measured](lut_validation.png)", "",
              "Training settings: `" + json.dumps(settings.to_dict()) + "`", ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
