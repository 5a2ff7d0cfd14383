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
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs [default: digits 40, fashion-mnist 10, cifar10 and folders 30].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size per process [default: 128, halved (to 16 at least) until an epoch has 50 steps].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate, SGD with nesterov momentum 0.9 [default: 0.14 x sqrt(total batch / 128), 0.05 at batch 16; half that with --arch].")] = None,
    weight_decay: Annotated[float, typer.Option(help="Weight decay on conv/linear weights (not BN, not biases).")] = 4e-5,
    schedule: Annotated[str, typer.Option(help="cosine | linear decay to zero.")] = "cosine",
    warmup_epochs: Annotated[Optional[float], typer.Option(help="Linear warm-up epochs [default: 5% of training, 0.5 to 2].")] = None,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing for the largest config's loss.")] = 0.0,
    num_random: Annotated[int, typer.Option(help="Random configs per step besides the largest and smallest.")] = 2,
    sampling: Annotated[str, typer.Option(help="How random configs are drawn: around (each around a random overall width, near-uniform) | per-unit (each unit independently: the paper's) | uniform (one multiplier for all units).")] = "around",
    no_distill: Annotated[bool, typer.Option("--no-distill", help="Train every config on labels instead of inplace distillation.")] = False,
    label_weight: Annotated[float, typer.Option(help="Share of the labels' loss in the distilled configs' loss; the rest is the largest config's predictions (0: the paper's pure inplace distillation). Half of each trains short runs far better, and long ones as well.")] = 0.5,
    zero_init_residual: Annotated[bool, typer.Option(help="Start every residual block as the identity (its branch's last BatchNorm scale at 0, as BigNAS and torchvision's ResNets do). Narrow and middle widths then learn far faster in short runs (benchmarks/RESULTS.md, \"Supernet quality\"). Supernets only; a retrained subnet (--arch) starts as torchvision's models do.")] = True,
    arch: Annotated[Optional[Path], typer.Option(help="Channel config JSON: retrain that subnet from scratch (plain training).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data order, init and config sampling (each rank adds its rank).")] = 0,
    save_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: once per epoch).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use only N training images (quick runs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
):
    """Train a slimmable supernet with the sandwich rule and inplace distillation.

    Each step trains the largest config on labels, and the smallest plus --num-random random
    nonuniform configs on the largest one's predictions and the labels (--label-weight). Run it on several processes with
    `torchrun --nproc_per_node N -m autoslim_hw train ...` (each rank samples other configs).

    The defaults train without tuning: the batch shrinks on small datasets so that an epoch has
    enough steps, the learning rate follows the batch (each config's loss counts 1/(2 +
    --num-random), so it is the rate of one network), a short warm-up avoids the early
    divergence of the widest configs, and residual blocks start as the identity. Epochs are
    per dataset; fewer train the largest and smallest configs well before the middle widths
    (check with benchmarks/supernet_widths.py).

    Example: autoslim-hw train --data fashion-mnist --out runs/fmnist
    """
    from ..errors import interrupted_hint
    from ..train import TrainSettings
    from ..workflows.train import run_training

    if (out / "supernet.pt").exists() and not resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    settings = TrainSettings(
        data=data, data_dir=data_dir, model=model, width_max=width_max, groups=groups, input_size=input_size,
        model_kwargs={} if width_mult is None else {"width_mult": width_mult}, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
        warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, num_random=num_random,
        sampling=sampling, label_weight=label_weight, zero_init_residual=zero_init_residual,
        distill=not no_distill, seed=seed, save_every=save_every, limit=limit,
        arch=None if arch is None else str(arch),
    )
    settings.check()
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
    widths: Annotated[bool, typer.Option("--widths", help="Is every width trained? Every uniform width of the grid and --random random configs of two kinds, in one table.")] = False,
    random_configs: Annotated[int, typer.Option("--random", help="With --widths: random configs of each kind.")] = 5,
    plot: Annotated[Optional[Path], typer.Option(help="With --widths: also draw top-1 against MACs into this PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Accuracy of one config after BN recalibration on training data, or with --widths of
    every uniform width and random configs: a good supernet's accuracy rises with width (a drop
    larger than a few standard errors of one score means the middle widths are undertrained:
    train longer).

    Examples:

      autoslim-hw eval --checkpoint runs/supernet/supernet.pt --width 0.5

      autoslim-hw eval --checkpoint runs/supernet/supernet.pt --widths --plot widths.png
    """
    from ..workflows.evaluate import evaluate_checkpoint

    if widths:
        _width_table(checkpoint, random_configs, calib_batches, data_dir, plot, as_json)
        return
    record = evaluate_checkpoint(checkpoint, width, channels, layers, data, data_dir, calib_batches)
    if as_json:
        print(json.dumps(record))
        return
    table = Table(*record.keys())
    table.add_row(*[human_count(v) if isinstance(v, int) else f"{v:.2f}" for v in record.values()])
    console.print(table)


def _width_table(checkpoint, n_random, calib_batches, data_dir, plot, as_json) -> None:
    from rich.progress import Progress

    from ..workflows.evaluate import plot_width_profile, width_profile

    if plot is not None:
        from .._io import check_output

        check_output(plot, "file", "--plot")
    with Progress(console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("evaluating", total=None)
        prof = width_profile(checkpoint, n_random, calib_batches, data_dir=data_dir,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    if plot is not None:
        plot_width_profile(prof, plot)
    if as_json:
        print(json.dumps(prof))
        return
    table = Table("config", "MACs", "top-1 %")
    for r in prof["rows"]:
        table.add_row(r["name"], human_count(r["macs"]), f"{r['top1']:.2f}")
    console.print(table)
    verdict = "ok" if prof["largest_fall"] <= 3 * prof["score_se"] else "a dip: the middle widths are undertrained"
    console.print(f"largest fall of top-1 as the uniform width grows: {prof['largest_fall']:.2f} points; one score's "
                  f"standard error {prof['score_se']:.2f} on {prof['val_images']} images: {verdict}")
    if plot is not None:
        console.print(f"plot: {plot}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
