"""The `autoslim-hw` command line: a thin layer over `autoslim_hw.workflows`. Each command
parses its options, calls one library function and prints; every `UserError` becomes one line
on stderr and exit code 2."""
from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import UserError
from ._common import console

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


from . import demo, export, lut, models, search, train  # noqa: E402  (each registers its commands)

for module in (demo, models, train, search, export, lut):
    module.register(app)


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
