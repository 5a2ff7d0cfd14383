"""`train` and `eval`: train a supernet (or retrain a searched subnet), and measure a config's accuracy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import UserError
from ._common import console, human_count


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
    from ..errors import interrupted_hint
    from ..train import TrainSettings
    from ..workflows.train import run_training

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
    with interrupted_hint(f"the last checkpoint is in {out}: run the same command with --resume"):
        metrics = run_training(settings, out, resume=resume)
    if metrics:
        console.print(f"[bold]done[/bold]: {out / 'supernet.pt'}  " +
                      "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))


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
    from ..workflows.evaluate import evaluate_checkpoint

    record = evaluate_checkpoint(checkpoint, width, channels, layers, data, data_dir, calib_batches)
    if as_json:
        print(json.dumps(record))
        return
    table = Table(*record.keys())
    table.add_row(*[human_count(v) if isinstance(v, int) else f"{v:.2f}" for v in record.values()])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
