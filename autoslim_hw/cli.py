"""The `autoslim-hw` command line: a thin layer over the library.

Every command turns a `UserError` into one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ConfigError, UserError

app = typer.Typer(
    name="autoslim-hw",
    help="Hardware-aware channel-width search (AutoSlim) for CNNs: train a slimmable supernet, "
         "profile layers into latency lookup tables, search channel counts under latency/FLOPs/"
         "params/memory budgets, and export the smaller network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console()


def _version(value: bool):
    if value:
        console.print(f"autoslim-hw {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
):
    """autoslim-hw: AutoSlim channel search for real devices."""


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@app.command("models")
def models_cmd(
    pattern: Annotated[str, typer.Argument(help="Glob over model names, e.g. 'mobilenet*'.")] = "*",
):
    """List the built-in architectures (each builds as a supernet of width up to 1.5x)."""
    from .models import list_models, model_entry

    table = Table("model", "input", "classes", "description")
    for name in list_models(pattern):
        e = model_entry(name)
        table.add_row(name, f"{e.input_size}x{e.input_size}", str(e.num_classes), e.description)
    console.print(table)


def _load_config(supernet, width: Optional[float], channels: Optional[Path], layers: Optional[str]):
    from .nn.config import ChannelConfig

    given = [x is not None for x in (width, channels, layers)]
    if sum(given) > 1:
        raise UserError("give at most one of --width, --channels and --layers")
    if channels is not None:
        if not channels.is_file():
            raise UserError(f"channel config {channels} does not exist; write one with "
                            "`autoslim-hw search` or `ChannelConfig.to_json()`")
        from ._io import read_text

        return ChannelConfig.from_json(read_text(channels, "channel config"), supernet.space, strict=False)
    if layers is not None:
        try:
            values = json.loads(layers)
        except json.JSONDecodeError:
            raise ConfigError(f"--layers must be a JSON list of integers like \"[32, 16, 96, 24]\", got {layers!r}") from None
        if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
            raise ConfigError("--layers must be a JSON list of integers")
        return supernet.space.from_layer_list(values, strict=False)
    return supernet.space.uniform(1.0 if width is None else width)


@app.command("count")
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
    from .counting import count
    from .models import create_model

    if input_size is not None and input_size < 8:
        raise UserError(f"--input-size {input_size} is too small; use at least 8")
    supernet = create_model(model, width_max=width_max, input_size=input_size, num_classes=num_classes)
    config = _load_config(supernet, width, channels, layers)
    counts = count(supernet, config)
    if as_json:
        print(json.dumps({"model": model, "input_size": supernet.spec.input_size, **counts.to_dict(),
                          "layers": supernet.space.to_layer_list(config)}))
        return
    table = Table("model", "input", "MACs", "params", "memory (elements)", "peak activations")
    table.add_row(model, str(supernet.spec.input_size), _human(counts.macs), _human(counts.params),
                  _human(counts.memory), f"{counts.peak_activation_bytes / 2**20:.2f} MiB")
    console.print(table)


@app.command("units")
def units_cmd(
    model: Annotated[str, typer.Option(help="Built-in model name.")] = "mobilenet_v2",
    width_max: Annotated[float, typer.Option(help="Supernet's largest width multiplier.")] = 1.5,
    groups: Annotated[int, typer.Option(help="Width options per unit.")] = 10,
):
    """Show the channel units of a model: tied layers and width options."""
    from .models import create_model

    supernet = create_model(model, width_max=width_max, groups=groups)
    table = Table("unit", "base", "options", "tied conv/linear layers")
    for u in supernet.space.units.values():
        options = "fixed" if u.fixed else " ".join(map(str, u.options))
        table.add_row(u.name, str(u.base), options, ", ".join(u.layers) or "(network input)")
    console.print(table)
    console.print(f"{len(supernet.space.free_units)} free units, "
                  f"{float(supernet.space.size()):.3g} configs in the search space")


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="Run directory: supernet.pt, spec.json, metrics.jsonl, train.log.")] = Path("runs/supernet"),
    data: Annotated[str, typer.Option(help="digits (bundled, offline) | fashion-mnist | cifar10 | imagefolder:PATH")] = "digits",
    data_dir: Annotated[Optional[str], typer.Option(help="Where the dataset's files are (default: known locations).")] = None,
    model: Annotated[str, typer.Option(help="Built-in model (see `autoslim-hw models`).")] = "mobilenet_v2_cifar",
    width_mult: Annotated[Optional[float], typer.Option(help="Base width multiplier of MobileNetV2 models (smaller = faster).")] = None,
    width_max: Annotated[float, typer.Option(help="Largest width, in multiples of the base.")] = 1.5,
    groups: Annotated[int, typer.Option(help="Width options per channel unit.")] = 10,
    input_size: Annotated[Optional[int], typer.Option(help="Input resolution (default 32 for small datasets, 224 else).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size per process.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (SGD, nesterov momentum 0.9).")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="Weight decay on conv/linear weights (not BN, not biases).")] = 4e-5,
    schedule: Annotated[str, typer.Option(help="cosine | linear decay to zero.")] = "cosine",
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up epochs.")] = 0.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing for the largest config's loss.")] = 0.0,
    num_random: Annotated[int, typer.Option(help="Random configs per step besides the largest and smallest.")] = 2,
    no_distill: Annotated[bool, typer.Option("--no-distill", help="Train every config on labels instead of inplace distillation.")] = False,
    arch: Annotated[Optional[Path], typer.Option(help="Channel config JSON: retrain that subnet from scratch (plain training).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data order, init and config sampling (each rank adds its rank).")] = 0,
    save_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: once per epoch).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use only N training images (quick runs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
):
    """Train a slimmable supernet with the sandwich rule and inplace distillation.

    Each step trains the largest config on labels, and the smallest plus --num-random random
    nonuniform configs on the largest one's predictions. Run it on several processes with
    `torchrun --nproc_per_node N -m autoslim_hw train ...` (each rank samples other configs).

    Example: autoslim-hw train --data fashion-mnist --epochs 5 --out runs/fmnist
    """
    from .train import TrainSettings, train

    if schedule not in ("cosine", "linear"):
        raise UserError(f"--schedule must be cosine or linear, got {schedule!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UserError("--epochs and --batch-size must be >= 1 and --lr > 0")
    if (out / "supernet.pt").exists() and not resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    settings = TrainSettings(
        data=data, data_dir=data_dir, model=model, width_max=width_max, groups=groups, input_size=input_size,
        model_kwargs={} if width_mult is None else {"width_mult": width_mult}, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
        warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, num_random=num_random,
        distill=not no_distill, seed=seed, save_every=save_every, limit=limit,
        arch=None if arch is None else str(arch),
    )
    from .errors import interrupted_hint

    with interrupted_hint(f"the last checkpoint is in {out}: run the same command with --resume"):
        metrics = train(settings, out, resume=resume)
    if metrics:
        console.print(f"[bold]done[/bold]: {out / 'supernet.pt'}  " +
                      "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option(help="supernet.pt from `autoslim-hw train`.")],
    width: Annotated[Optional[float], typer.Option(help="Uniform width multiplier, e.g. 0.5.")] = None,
    channels: Annotated[Optional[Path], typer.Option(help="Channel config JSON.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layer-list form, e.g. \"[32, 16, ...]\".")] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset (default: the one it was trained on).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Where the dataset's files are.")] = None,
    calib_batches: Annotated[int, typer.Option(help="BN recalibration batches.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Accuracy of one config after BN recalibration on training data.

    Example: autoslim-hw eval --checkpoint runs/supernet/supernet.pt --width 0.5
    """
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .counting import count
    from .data import load_splits, make_loader
    from .train import evaluate, recalibrate_bn

    ckpt = load_checkpoint(checkpoint)
    supernet, saved_config, model = model_from_checkpoint(ckpt)
    settings = ckpt.get("settings", {})
    if saved_config is not None:  # a retrained subnet: its widths are fixed
        if any(x is not None for x in (width, channels, layers)):
            raise UserError(f"{checkpoint} holds a retrained subnet with fixed widths; drop --width/--channels/--layers")
        config = saved_config
    else:
        config = _load_config(supernet, width, channels, layers)
    splits = load_splits(data or settings.get("data", "digits"), data_dir=data_dir or settings.get("data_dir"),
                         input_size=supernet.spec.input_size, search_size=settings.get("search_size", 0.1),
                         seed=settings.get("seed", 0), limit=settings.get("limit"))
    calib = make_loader(splits.train_eval, 128, shuffle=True, seed=0)
    if model is supernet:
        supernet.set_config(config)
    recalibrate_bn(model, None, calib, calib_batches)
    topk = (1, 5) if supernet.spec.num_classes > 5 else (1,)
    result = evaluate(model, make_loader(splits.val, 256, shuffle=False), topk=topk)
    counts = count(supernet, config)
    record = {**{k: round(v, 3) for k, v in result.items()}, "macs": counts.macs, "params": counts.params,
              "memory": counts.memory}
    if as_json:
        print(json.dumps(record))
        return
    table = Table(*record.keys())
    table.add_row(*[_human(v) if isinstance(v, int) else f"{v:.2f}" for v in record.values()])
    console.print(table)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Run directory for the checkpoint, ONNX files and report.md.")] = Path("runs/demo"),
    data: Annotated[str, typer.Option(help="digits (bundled) | fashion-mnist | cifar10")] = "digits",
    model: Annotated[str, typer.Option(help="Built-in model.")] = "mobilenet_v2_cifar",
    quick: Annotated[bool, typer.Option("--quick", help="A smoke run of about a minute.")] = False,
):
    """The pipeline end to end on bundled data: train a supernet, build (or load) this host's
    latency lookup table, search channel counts for three latency targets, export the selected
    subnets to ONNX, measure them on one CPU core next to uniform-width baselines, write report.md.

    Interrupted? Run the same command again: every stage resumes.
    """
    from .demo import run_demo

    from .errors import interrupted_hint

    with interrupted_hint(f"run the same command again: the demo in {out} goes on where it stopped"):
        run_demo(out, data=data, model=model, quick=quick, console=console)


from .cli_lut import devices_cmd, lut_app, profile_cmd  # noqa: E402  (commands defined there)

app.command("devices")(devices_cmd)
app.command("profile")(profile_cmd)
app.add_typer(lut_app, name="lut")

from .cli_search import search_cmd  # noqa: E402

app.command("search")(search_cmd)

from .cli_export import export_cmd  # noqa: E402

app.command("export")(export_cmd)


def main() -> None:
    """Entry point: user errors become one line and exit code 2, never a traceback."""
    try:
        app()  # standalone: click reports usage errors itself, with exit code 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
