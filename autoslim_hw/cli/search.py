"""`search`: greedy slimming under latency, FLOPs, params and memory targets. Its target options
come from the cost-kind registry (`autoslim_hw.search.costs.COSTS`): one per kind."""
from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..search.costs import COSTS
from ._common import console


def _search(
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Supernet checkpoint (default: the newest runs/*/supernet.pt).")] = None,
    lut: Annotated[Optional[Path], typer.Option(
        help="Latency lookup table, a file or a shipped table's name (`autoslim-hw lut list`; default: the shipped "
             "or ./luts table for the model and device).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device of the table (default cpu-1core).")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="Runtime of the table (default onnxruntime).")] = None,
    criterion: Annotated[str, typer.Option(
        help="drop: smallest accuracy drop (the paper); drop-per-cost: drop per unit of --cost saved.")] = "drop",
    cost: Annotated[Optional[str], typer.Option(
        help="What drop-per-cost divides by: latency-ms | flops | params | memory (default: latency when a "
             "target limits it). --cost flops with --latency-ms targets is a FLOPs-guided search stopped at "
             "a latency.")] = None,
    bn: Annotated[str, typer.Option(
        help="batch: BN statistics of each search batch (the paper; enables the exact prefix cache); "
             "recalibrate: re-estimate BN on training images for every candidate.")] = "batch",
    batch_size: Annotated[int, typer.Option(help="Search batch size (the paper uses 2048 on GPUs).")] = 2048,
    batches: Annotated[Optional[int], typer.Option(help="Search batches to use (default: the whole search split).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Where the checkpoint's dataset lives now, if moved.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Result JSON (default: search.json next to the checkpoint).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted search (or extend one to new targets).")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard an interrupted search in --out and start over.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every candidate from the input (slower, same result).")] = False,
    exact: Annotated[bool, typer.Option(
        "--exact", help="The paper's step: every candidate scored in float32, one unit slimmed per step. "
                        "Without it a step re-scores only the promising candidates, slims several units while "
                        "far from every target, and computes in bfloat16 where the CPU does so natively: "
                        "many times faster, within the exact search's noise (benchmarks/RESULTS.md).")] = False,
    profile_missing: Annotated[bool, typer.Option("--profile-missing", help="Build the lookup table when none is found.")] = False,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Use a table of another device, runtime or model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the selected targets as JSON.")] = False,
    **limits,
):
    """Greedy slimming: from the largest config, repeatedly slim the channel unit whose accuracy
    drops least on the held-out search split, until every target is met. One pass serves all targets.

    Targets: repeat an option for several targets; options given once apply to every target
    (`--latency-ms 8 --latency-ms 5 --params 1M` = two targets, each also under 1M params).

    Time: a step costs one forward pass of the search images per candidate scored. The default
    policy scores a quarter of the candidates a step and slims up to a third of the units at once
    until the config nears a target, so a search takes minutes where `--exact` takes an hour.
    It sets its own thread count; torchrun splits the candidates across processes.

    Examples:

      autoslim-hw search --latency-ms 70

      autoslim-hw search --checkpoint runs/x/supernet.pt --flops 200M --flops 100M --out runs/x/search.json

    With the candidates split across 4 processes:

      torchrun --nproc_per_node 4 -m autoslim_hw search --latency-ms 20
    """
    from ..search.costs import targets_from_options
    from ..workflows.search import run_search

    targets = targets_from_options(**{k: v or () for k, v in limits.items()})
    bar = _Progress(quiet=as_json, targets=targets)
    try:
        run = run_search(targets, checkpoint, lut=lut, device=device, runtime=runtime, criterion=criterion, cost=cost,
                         bn=bn, batch_size=batch_size, batches=batches, data_dir=data_dir, out=out, resume=resume,
                         restart=restart, cache=not no_cache, profile_missing=profile_missing,
                         allow_mismatch=allow_mismatch, exact=exact, log=bar.log, on_start=bar.start,
                         on_step=bar.step)
    except KeyboardInterrupt:
        bar.stop()
        typer.echo(f"interrupted; the steps so far are in {bar.out or out or 'the result file'}: run the same "
                   "command with --resume to continue", err=True)
        raise typer.Exit(130) from None
    finally:
        bar.stop()
    if not run.info.is_main:
        return
    if as_json:
        print(json.dumps({"out": str(run.out), "targets": run.result["targets"]}))
    else:
        _print_targets(run.result, run.out)


class _Progress:
    """The search's progress: each step's time, the distance to the strictest target in its own
    unit, and an ETA (quiet under --json and on ranks other than the first)."""

    def __init__(self, quiet: bool, targets: list):
        self.quiet, self.targets, self.bar, self.task, self.out = quiet, targets, None, None, None
        self.first, self.started, self.last = None, None, None

    def log(self, text: str) -> None:
        if not self.quiet:
            console.print(text, soft_wrap=True, markup=False, highlight=False)

    def start(self, supernet, done: int, images: int, out: Path) -> None:
        self.out = out
        if self.quiet:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console.print(f"searching {supernet.spec.arch} on {images} held-out images; "
                      + ("; ".join(t.describe() for t in self.targets) or "no target: the whole trajectory"),
                      soft_wrap=True)
        self.bar = Progress(TextColumn("searching"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console)
        self.bar.start()
        self.task = self.bar.add_task("search", total=1.0, completed=0.0, status="")

    def step(self, step: dict) -> None:
        import math
        import time

        from ..search.costs import format_cost

        if self.bar is None:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first, self.started = step, now
        took = "" if self.last is None else f"{now - self.last:.1f}s/step, "
        self.last = now
        # the binding constraint of the strictest unmet target: furthest to go in log cost
        todo = [(math.log(step[k] / lim), k, lim) for t in self.targets if not t.met_by(step)
                for k, lim in [max(t.constraints, key=lambda c: step[c[0]] / c[1])] if step[k] is not None]
        if not todo:
            self.bar.update(self.task, completed=1.0, status=f"step {step['step']}: every target met")
            return
        _, kind, limit = max(todo)
        start = self.first[kind]
        done = 0.0 if start <= limit else min(1.0, math.log(start / step[kind]) / math.log(start / limit))
        eta = ""
        if done > 0.02 and self.started is not None:
            left = (now - self.started) * (1 - done) / done
            eta = f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        units = step.get("units") or [step["unit"]]
        self.bar.update(self.task, completed=done,
                        status=f"step {step['step']}: {took}top-1 {step['accuracy']:.1f}%, {COSTS[kind].label} "
                               f"{format_cost(kind, step[kind])} (target {format_cost(kind, limit)}){eta}; "
                               f"slimmed {len(units)} unit{'s' if len(units) > 1 else ''}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _print_targets(result: dict, out: Path) -> None:
    from ..search.costs import format_cost

    table = Table("target", "constraints", "step", "top-1 (search split)", *(k.label for k in COSTS.values()))
    for i, t in enumerate(result["targets"]):
        cons = ", ".join(f"{COSTS[k].label} <= {format_cost(k, v)}" for k, v in t["constraints"].items())
        if not t.get("met"):
            table.add_row(str(i), cons, "-", "not met", *([""] * len(COSTS)))
            continue
        table.add_row(str(i), cons, str(t["step"]), f"{t['accuracy']:.2f}%",
                      *(format_cost(k, t[k]) for k in COSTS))
    if result["targets"]:
        console.print(table)
    console.print(f"{len(result['trajectory'])} configs on the trajectory; wrote {out}, "
                  f"{out.with_name(out.stem + '_trajectory.png')}", soft_wrap=True)


def _with_cost_options(command):
    """`command` with one repeatable option per registered cost kind (--latency-ms, --flops, ...),
    passed to it in `**limits`: its signature is rewritten, which is what typer reads."""
    cost_params = [
        inspect.Parameter(kind.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Optional[list[str]], typer.Option(kind.option, help=kind.help)])
        for kind in COSTS.values()]
    hints = {name: p.annotation for name, p in inspect.signature(command, eval_str=True).parameters.items()}
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
           for p in inspect.signature(command).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]

    @functools.wraps(command)
    def wrapper(**kwargs):
        names = {k.param for k in COSTS.values()}
        return command(**{k: v for k, v in kwargs.items() if k not in names},
                       **{k: v for k, v in kwargs.items() if k in names})

    wrapper.__signature__ = inspect.Signature(cost_params + own)
    wrapper.__annotations__ = {}
    del wrapper.__wrapped__  # typer must read the new signature, not the template's
    return wrapper


search_cmd = _with_cost_options(_search)


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
