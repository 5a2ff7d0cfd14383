"""`models`, `units` and `count`: what the built-in architectures are, and what a config costs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._common import console, human_bytes, human_count, say


def models_cmd(
    pattern: Annotated[str, typer.Argument(help="Glob over model names, e.g. 'mobilenet*'.")] = "*",
):
    """List the built-in architectures (each builds as a supernet of width up to 1.5x)."""
    from ..models import list_models, model_entry

    table = Table("model", "input", "classes", "description")
    for name in list_models(pattern):
        e = model_entry(name)
        table.add_row(name, f"{e.input_size}x{e.input_size}", str(e.num_classes), e.description)
    console.print(table)


def count_cmd(
    model: Annotated[Optional[str], typer.Option(
        help="Built-in model name (see `autoslim-hw models`). Default: the model of --checkpoint, of a search "
             "result given with --channels, or of --lut; else mobilenet_v2.")] = None,
    width: Annotated[Optional[float], typer.Option(
        help="Uniform width multiplier, e.g. 0.5: every unit's channels x width, rounded to a multiple of 8 "
             "(AutoSlim's uniform baseline). Add --published for the architecture's own rule. Without --width, "
             "--channels or --layers: the model as built, its 1.0x as published.")] = None,
    published: Annotated[bool, typer.Option(
        "--published", help="Read --width by the architecture's published rule (torchvision's width_mult for "
                            "MobileNetV2 and MNASNet, the paper's for MobileNetV1: e.g. MobileNetV2 0.75x is "
                            "209M MACs, its last conv kept at 1280).")] = False,
    channels: Annotated[Optional[Path], typer.Option(
        help="Channel config JSON, or a search result (`autoslim-hw search`; pick the target with --target).")] = None,
    target: Annotated[Optional[int], typer.Option(help="Index of the target in a search result given with --channels.")] = None,
    layers: Annotated[Optional[str], typer.Option(
        help="Layer-list form of the AutoSlim releases, e.g. \"[32, 16, ...]\"; widths off the search grid are "
             "counted as given.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Count the supernet of this checkpoint.")] = None,
    lut: Annotated[Optional[Path], typer.Option(
        help="Lookup table, a file or a shipped table's name (`autoslim-hw lut list`): add the latency it "
             "predicts for the config.")] = None,
    device: Annotated[Optional[str], typer.Option(help="With --lut: refuse a table of another device.")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="With --lut: refuse a table of another runtime.")] = None,
    allow_mismatch: Annotated[bool, typer.Option(
        "--allow-mismatch", help="Predict with a table profiled for another model or input size.")] = False,
    input_size: Annotated[Optional[int], typer.Option(help="Input resolution (default: the model's).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classifier outputs (default: the model's).")] = None,
    width_max: Annotated[float, typer.Option(help="Supernet's largest width multiplier.")] = 1.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """MACs, params and memory of a model at a channel config, and with --lut its predicted latency.

    Conventions follow the AutoSlim paper: MACs count conv/linear multiply-adds only; params
    include BN; memory is the paper's Table 1 measure (parameters + every conv/linear output,
    in elements). What a deployed network holds is shown beside it: the peak of live float32
    activations, and "deployed" = BN-folded weights + that peak (what `search --memory` limits).

    Examples:

      autoslim-hw count --model mobilenet_v2 --width 0.75 --published

      autoslim-hw count --channels runs/x/search.json --target 1 --lut luts/my-table.json --json

      autoslim-hw count --lut mobilenet_v2-224-cpu-1core-onnxruntime-intel-xeon-f6m167.json.gz --width 0.5
    """
    from ..workflows.count import count_config

    r = count_config(model, width, published, channels, target, layers, checkpoint, lut, device, runtime,
                     allow_mismatch, input_size, num_classes, width_max)
    if as_json:
        print(json.dumps(r.to_dict()))
        return
    table = Table(title=f"{r.model} at {r.input_size} px", show_header=False, box=None, title_justify="left")
    table.add_row("MACs", human_count(r.macs))
    table.add_row("params", human_count(r.params))
    table.add_row("memory (paper)", f"{human_count(r.memory)} elements (parameters + conv/linear outputs)")
    table.add_row("peak activations", human_bytes(r.peak_activation_bytes))
    table.add_row("deployed", f"{human_bytes(r.deployed_memory_bytes)} (BN-folded weights + peak activations)")
    if r.latency_ms is not None:
        table.add_row("latency", f"{r.latency_ms:.3f} ms ({r.lut_device}, {r.lut_runtime}; "
                                 f"{'calibrated, ' if r.calibrated else ''}layer sum {r.layer_sum_ms:.3f} ms)")
    console.print(table)
    if r.width_rule:
        say(f"width rule: {r.width_rule}")
    if r.lut:
        say(f"lookup table: {r.lut}")
    for note in r.notes:
        say(f"note: {note}")


def units_cmd(
    model: Annotated[str, typer.Option(help="Built-in model name.")] = "mobilenet_v2",
    width_max: Annotated[float, typer.Option(help="Supernet's largest width multiplier.")] = 1.5,
    groups: Annotated[int, typer.Option(help="Width options per unit.")] = 10,
):
    """Show the channel units of a model: tied layers and width options."""
    from ..models import create_model

    supernet = create_model(model, width_max=width_max, groups=groups)
    table = Table("unit", "base", "options", "tied conv/linear layers")
    for u in supernet.space.units.values():
        options = "fixed" if u.fixed else " ".join(map(str, u.options))
        table.add_row(u.name, str(u.base), options, ", ".join(u.layers) or "(network input)")
    console.print(table)
    console.print(f"{len(supernet.space.free_units)} free units, "
                  f"{float(supernet.space.size()):.3g} configs in the search space")


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("count")(count_cmd)
    app.command("units")(units_cmd)
