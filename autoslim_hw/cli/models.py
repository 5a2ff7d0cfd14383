"""`models`, `units` and `count`: what the built-in architectures are, and what a config costs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import UserError
from ._common import console, human_count


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
    model: Annotated[str, typer.Option(help="Built-in model name (see `autoslim-hw models`).")] = "mobilenet_v2",
    width: Annotated[Optional[float], typer.Option(help="Uniform width multiplier, e.g. 0.5 (default 1.0).")] = None,
    channels: Annotated[Optional[Path], typer.Option(help="Channel config JSON (from search, or ChannelConfig.to_json).")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layer-list form of the AutoSlim releases, e.g. \"[32, 16, ...]\".")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Input resolution (default: the model's).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classifier outputs (default: the model's).")] = None,
    width_max: Annotated[float, typer.Option(help="Supernet's largest width multiplier.")] = 1.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """MACs, params and memory of a model at a channel config.

    Conventions follow the AutoSlim paper: conv/linear multiply-adds only; params
    include BN; memory = weights + feature maps, in elements.

    Example: autoslim-hw count --model mobilenet_v2 --width 1.0
    """
    from ..counting import count
    from ..models import create_model
    from ..workflows.common import config_from_options

    if input_size is not None and input_size < 8:
        raise UserError(f"--input-size {input_size} is too small; use at least 8")
    supernet = create_model(model, width_max=width_max, input_size=input_size, num_classes=num_classes)
    config = config_from_options(supernet, width, channels, layers)
    counts = count(supernet, config)
    if as_json:
        print(json.dumps({"model": model, "input_size": supernet.spec.input_size, **counts.to_dict(),
                          "layers": supernet.space.to_layer_list(config)}))
        return
    table = Table("model", "input", "MACs", "params", "memory (elements)", "peak activations")
    table.add_row(model, str(supernet.spec.input_size), human_count(counts.macs), human_count(counts.params),
                  human_count(counts.memory), f"{counts.peak_activation_bytes / 2**20:.2f} MiB")
    console.print(table)


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
