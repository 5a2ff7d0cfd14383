"""The `autoslim-hw` command line: a thin layer over `autoslim_hw.workflows`. Each command
parses its options, calls one library function and prints; every `UserError` becomes one line
on stderr and exit code 2."""
from __future__ import annotations

import math
import sys
from typing import Annotated, get_args

import typer

from .. import __version__, keep_freed_memory
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


def _floats(annotation) -> bool:
    return annotation is float or any(_floats(a) for a in get_args(annotation))


def refuse_non_finite(command) -> None:
    """One rule for every command: a float option given NaN or infinity is refused (a UserError,
    so one line and exit code 2) before the command runs. Ranges stay with each command."""
    for sub in getattr(command, "commands", {}).values():
        refuse_non_finite(sub)
    for param in command.params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or not _floats(descriptor.annotation):
            continue

        def check(ctx, p, value, inner=param.callback):
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    raise UserError(f"{p.opts[0]} must be a finite number, got {v}")
            return inner(ctx, p, value) if inner is not None else value

        param.callback = check


def main() -> None:
    """Entry point: user errors become one line and exit code 2, never a traceback."""
    import typer.main

    keep_freed_memory()  # a CLI process owns its heap: see autoslim_hw._process
    try:
        command = typer.main.get_command(app)
        refuse_non_finite(command)
        command()  # standalone: click reports usage errors itself, with exit code 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
