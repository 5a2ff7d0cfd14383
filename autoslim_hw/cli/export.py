"""`export`: write one searched subnet as a deployable file (any registered runtime's format, or
a subnet checkpoint), check it against PyTorch and time it on one core."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..profilers.base import list_backends
from ._common import human_bytes, human_count

console = Console(highlight=False, soft_wrap=True)


def export_cmd(
    checkpoint: Annotated[Path, typer.Option(
        help="supernet.pt from `autoslim-hw train` (a supernet, or a subnet retrained with --arch).")],
    config: Annotated[Optional[Path], typer.Option(
        help="Search result JSON (`autoslim-hw search`; pick the target with --target) or a channel config "
             "JSON. Leave out for a retrained subnet checkpoint.")] = None,
    target: Annotated[Optional[int], typer.Option(
        help="Index of the target in the search result (needed when it has several).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help=" | ".join(f"{e.file_format} ({e.description})" for e in list_backends())
        + " | checkpoint (an autoslim-hw subnet checkpoint, for `autoslim-hw eval`).")] = "onnx",
    out: Annotated[Optional[Path], typer.Option(
        help="Output file (default: subnet[-targetN].onnx, .tflite, .pt or -ckpt.pt next to the checkpoint); parent folders are created.")] = None,
    measure: Annotated[bool, typer.Option(
        "--measure/--no-measure", help="Time the file on one pinned core and compare with the lookup table.")] = True,
    lut: Annotated[Optional[Path], typer.Option(
        help="Lookup table for the predicted latency, a file or a shipped table's name (`autoslim-hw lut list`; "
             "default: the search's, when it is for this format's runtime).")] = None,
    calib_batches: Annotated[int, typer.Option(
        help="Training batches (of 128) to re-estimate BN statistics of a supernet's subnet with.")] = 20,
    data_dir: Annotated[Optional[str], typer.Option(help="Where the checkpoint's dataset lives now, if moved.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Export a searched subnet as a deployable file: the plain smaller network (no autoslim-hw
    code in it) with the supernet's weights, BN re-estimated for its widths, or a retrained
    subnet's own weights. Then check its output against PyTorch and time it on one core.

    Examples:

      autoslim-hw export --checkpoint runs/x/supernet.pt --config runs/x/search.json --target 0 --out runs/x/t0.onnx

      autoslim-hw export --checkpoint runs/x/supernet.pt --config runs/x/search.json --target 1 --format tflite

      autoslim-hw export --checkpoint runs/retrain/supernet.pt --format torch --out model.pt
    """
    from ..counting import count
    from ..search.costs import COSTS, format_cost
    from ..workflows.export import (check_export, describe_target, export_subnet, measure_export,
                                    predict_export_latency)

    info = export_subnet(checkpoint, config, target, fmt, out, calib_batches, data_dir)
    counts = count(info.supernet, info.config)
    record: dict = {
        "out": str(info.path), "format": info.fmt, "checkpoint": str(info.checkpoint), "kind": info.kind,
        "config_source": None if config is None else str(config), "target": info.target,
        "config": dict(info.config), "layers": info.supernet.space.to_layer_list(info.config),
        "input_shape": list(info.input_shape), "input_layout": "NHWC" if info.nhwc else "NCHW",
        "bn_recalibrated_batches": info.calib_batches, "params": counts.params, "macs": counts.macs,
        "file_bytes": info.path.stat().st_size,
    }
    record.update(check_export(info))
    record.update(latency_ms=None, p10_ms=None, p90_ms=None, runtime=info.runtime, core=None,
                  predicted_latency_ms=None, predicted_statistic=None, measured_as_predicted_ms=None, lut=None)
    prediction = None
    if measure:
        latency, core = measure_export(info)
        record.update(latency_ms=latency.median_ms, p10_ms=latency.p10_ms, p90_ms=latency.p90_ms, core=core)
        prediction = predict_export_latency(info, lut)
        record.update(predicted_latency_ms=prediction.get("latency_ms"), predicted_statistic=prediction.get("statistic"),
                      lut=prediction.get("lut"))
        if prediction.get("statistic"):  # what to compare the prediction with
            record["measured_as_predicted_ms"] = latency.value(prediction["statistic"])
    record["warnings"] = list(info.warnings)
    if as_json:
        print(json.dumps(record))
        return

    what = "the subnet"
    if info.target is not None:
        what = f"target {info.target} ({describe_target(info.target_entry)})"
    console.print(f"[bold]exported[/bold] {what} of {info.checkpoint} as {info.fmt}: {info.path}")
    if info.target_entry is not None:
        e = info.target_entry
        console.print("  search: " + (f"top-1 {e['accuracy']:.2f}% on the search split, " if e.get("accuracy") is not None else "")
                      + ", ".join(f"{COSTS[k].label} {format_cost(k, e.get(k))}" for k in COSTS if e.get(k) is not None))
    if info.kind == "supernet":
        if info.calib_batches:
            console.print(f"  BN statistics re-estimated for these widths on {info.calib_batches} batches of "
                          f"{info.calib_data} training images (a slimmable supernet's shared statistics are "
                          "only valid after that)")
    else:
        console.print("  a subnet checkpoint (retrained, or exported earlier): its weights and BN statistics, unchanged")
    if info.fmt == "tflite":
        console.print("  input layout: " + ("NHWC " + str([info.input_shape[i] for i in (0, 2, 3, 1)])
                                            + " (LiteRT's layout; transpose NCHW images before feeding)"
                                            if info.nhwc else "NCHW " + str(list(info.input_shape))))
    else:
        console.print(f"  input: NCHW {list(info.input_shape)}")
    console.print(f"  params {human_count(counts.params)}, MACs {human_count(counts.macs)}, file {human_bytes(record['file_bytes'])}")
    console.print(f"  check: max abs diff vs PyTorch {record['max_abs_diff']:.2e} "
                  f"(relative {record['max_rel_diff']:.2e}) on a random input")
    if measure:
        core = "" if record["core"] is None else f", pinned to core {record['core']}"
        line = (f"  latency ({info.runtime}, 1 thread{core}): median {record['latency_ms']:.3f} ms "
                f"(p10 {record['p10_ms']:.3f}, p90 {record['p90_ms']:.3f})")
        if prediction.get("latency_ms") is not None:
            line += (f"; lookup table predicts {prediction['statistic']} {prediction['latency_ms']:.3f} ms "
                     f"(measured {prediction['statistic']} {record['measured_as_predicted_ms']:.3f}) "
                     f"({prediction['device']}, {prediction['runtime']}: {prediction['lut']})")
        else:
            line += f"; no prediction: {prediction.get('reason')}"
        console.print(line)
    for w in info.warnings:
        console.print(f"  [yellow]warning[/yellow]: {w}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
