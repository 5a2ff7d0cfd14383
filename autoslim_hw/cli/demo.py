"""`demo`: the whole pipeline on bundled data, in minutes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import console


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
    from ..errors import interrupted_hint
    from ..workflows.demo import run_demo

    with interrupted_hint(f"run the same command again: the demo in {out} goes on where it stopped"):
        run_demo(out, data=data, model=model, quick=quick, console=console)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
