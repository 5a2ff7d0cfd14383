"""`autoslim-hw search`: greedy slimming of a trained supernet under latency, FLOPs,
params and memory targets (registered by cli.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError

console = Console()


def newest_checkpoint(root: Path = Path("runs")) -> Path:
    found = sorted(root.glob("*/supernet.pt"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise UserError("no checkpoint under ./runs; train one with `autoslim-hw train --out runs/NAME` "
                        "(or `autoslim-hw demo`), or pass --checkpoint")
    return found[-1]


def resolve_table(supernet, checkpoint: Path, lut: Optional[Path], device: Optional[str], runtime: Optional[str],
                  needed: bool, profile_missing: bool, allow_mismatch: bool, quiet: bool):
    """(table, path) for the search, or (None, None) when no latency is asked for and none is found."""
    from .lookup_tables import LatencyTable
    from .lookup_tables.discover import check_table_model, default_table_path, find_table

    dev, rt = device or "cpu-1core", runtime or "onnxruntime"
    hint = f"autoslim-hw profile --checkpoint {checkpoint} --device {dev} --runtime {rt}"
    if lut is None:
        lut = find_table(supernet, dev, rt)
        if lut is None and needed and profile_missing:
            from .lookup_tables.build import build_table
            from .profilers import get_backend
            from .profilers.devices import get_device

            lut = default_table_path(supernet, dev, rt)
            if not quiet:
                console.print(f"no lookup table for {supernet.spec.arch} on {dev} ({rt}): profiling it into {lut}")
            build_table(supernet, get_backend(rt), get_device(dev), lut, resume=lut.exists(), progress=not quiet,
                        passes=2)
        if lut is None:
            if needed:
                from .lookup_tables.discover import tables_of_other_hosts

                others = tables_of_other_hosts(supernet, dev, rt)
                elsewhere = (f" ({others[0][0]} was measured on {others[0][1]}, not this CPU: use it with --lut "
                             f"{others[0][0]} --allow-mismatch)") if others else ""
                raise UserError(f"no lookup table for this model on {dev} with {rt}{elsewhere}; build it with "
                                f"`{hint}` or pass --profile-missing (or --lut FILE)")
            return None, None
        if not quiet:
            console.print(f"lookup table: {lut}")
    table = LatencyTable.load(lut)
    md = table.metadata
    table.check_target(device or md["device"]["name"], runtime or md["runtime"], allow_mismatch)
    check_table_model(table, supernet, lut, hint, allow_mismatch)
    return table, lut


def search_cmd(
    latency_ms: Annotated[Optional[list[str]], typer.Option(
        "--latency-ms", help="Latency limit in ms, predicted by the lookup table. Repeat for several targets.")] = None,
    flops: Annotated[Optional[list[str]], typer.Option(
        help="Multiply-add limit (the 'FLOPs' of the AutoSlim and MobileNet papers), e.g. 200M.")] = None,
    params: Annotated[Optional[list[str]], typer.Option(help="Parameter limit, e.g. 2M.")] = None,
    memory: Annotated[Optional[list[str]], typer.Option(
        help="Memory limit in bytes (float32 weights + peak live activations at batch 1), e.g. 9MiB.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Supernet checkpoint (default: the newest runs/*/supernet.pt).")] = None,
    lut: Annotated[Optional[Path], typer.Option(
        help="Latency lookup table (default: the shipped or ./luts table for the model and device).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device of the table (default cpu-1core).")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="Runtime of the table (default onnxruntime).")] = None,
    criterion: Annotated[str, typer.Option(
        help="drop: smallest accuracy drop (the paper); drop-per-cost: drop per unit of cost saved.")] = "drop",
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
    profile_missing: Annotated[bool, typer.Option("--profile-missing", help="Build the lookup table when none is found.")] = False,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Use a table of another device, runtime or model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the selected targets as JSON.")] = False,
):
    """Greedy slimming: from the largest config, repeatedly slim the channel unit whose accuracy
    drops least on the held-out search split, until every target is met. One pass serves all targets.

    Targets: repeat an option for several targets; options given once apply to every target
    (`--latency-ms 8 --latency-ms 5 --params 1M` = two targets, each also under 1M params).

    Examples:

      autoslim-hw search --latency-ms 70

      autoslim-hw search --checkpoint runs/x/supernet.pt --flops 200M --flops 100M --out runs/x/search.json

    With the candidates split across 4 processes:

      torchrun --nproc_per_node 4 -m autoslim_hw search --latency-ms 20
    """
    import torch

    from . import search as S
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .train import TrainSettings, _device, init_distributed

    info = init_distributed()
    quiet = as_json or not info.is_main
    targets = S.targets_from_options(latency_ms or (), flops or (), params or (), memory or ())
    if criterion not in ("drop", "drop-per-cost"):  # before loading anything
        raise UserError(f"--criterion must be 'drop' or 'drop-per-cost', got {criterion!r}")
    if bn not in ("batch", "recalibrate"):
        raise UserError(f"--bn must be 'batch' or 'recalibrate', got {bn!r}")
    if batch_size < 1 or (batches is not None and batches < 1):
        raise UserError("--batch-size and --batches must be at least 1")
    if checkpoint is None:
        checkpoint = newest_checkpoint()
        if not quiet:
            console.print(f"checkpoint: {checkpoint} (the newest under runs/)")
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != "supernet":
        raise UserError(f"{checkpoint} holds a retrained subnet, not a supernet; search needs the supernet.pt "
                        "written by `autoslim-hw train`")
    supernet, _, _ = model_from_checkpoint(ckpt)
    needs_latency = any("latency_ms" in t.limits for t in targets)
    table, lut_path = resolve_table(supernet, checkpoint, lut, device, runtime, needs_latency, profile_missing,
                                    allow_mismatch, quiet)
    costs = S.CostModel(supernet, table)
    S.check_feasible(targets, costs)
    cost_kind = None
    if criterion == "drop-per-cost":
        kinds = [k for t in targets for k in t.limits]
        cost_kind = "latency_ms" if "latency_ms" in kinds else (kinds[0] if kinds else
                                                                   ("latency_ms" if table else "macs"))

    settings = TrainSettings(**{k: v for k, v in ckpt["settings"].items() if k in TrainSettings.__dataclass_fields__})
    out = out or checkpoint.parent / "search.json"
    header = {
        "model": supernet.spec.to_dict(),
        "checkpoint": {"path": str(checkpoint), "sha256": S.file_digest(checkpoint)},
        "lut": None if table is None else {"path": str(lut_path), "sha256": S.file_digest(lut_path),
                                           "device": table.metadata["device"]["name"],
                                           "runtime": table.metadata["runtime"]},
        "settings": {"criterion": criterion, "cost": cost_kind, "bn": bn, "batch_size": batch_size,
                     "batches": batches, "data": settings.data, "search_size": settings.search_size,
                     "seed": settings.seed},
    }
    previous = _previous_run(out, header, resume, restart)

    from .data import load_splits, make_loader

    dev = _device(info)
    splits = load_splits(settings.data, data_dir=data_dir or settings.data_dir, input_size=supernet.spec.input_size,
                         in_chans=supernet.spec.in_chans, search_size=settings.search_size, seed=settings.seed,
                         limit=settings.limit)
    loader = make_loader(splits.search, batch_size, shuffle=False)
    data = [b for i, b in zip(range(batches or len(loader)), loader)]
    calib = calibration_loader(splits.train_eval, settings.seed) if bn == "recalibrate" else None
    supernet.to(dev)
    evaluator = S.Evaluator(supernet, data, dev, cache=not no_cache, bn=bn, calib_loader=calib)
    if not quiet:
        n = sum(len(y) for _, y in data)
        console.print(f"searching {supernet.spec.arch} on {n} held-out {settings.data} images; "
                      + ("; ".join(t.describe() for t in targets) or "no target: the whole trajectory"))

    result = _run_with_progress(S, supernet, evaluator, costs, targets, out, header, criterion, cost_kind,
                                previous, info, quiet)
    if info.is_main:
        from .plots import search_plots

        search_plots(supernet, result, out)
    if as_json and info.is_main:
        print(json.dumps({"out": str(out), "targets": result["targets"]}))
    elif not quiet:
        _print_targets(S, result, out)
    if info.world_size > 1:
        torch.distributed.destroy_process_group()


def calibration_loader(dataset, seed: int, batch_size: int = 256, batches: int = 10):
    """BN-recalibration images for --bn recalibrate: a seeded random subset, in a fixed order,
    so that every candidate (on every rank, before and after a resume) sees the same batches.
    A shuffling loader would draw a new order at each pass, i.e. for each candidate."""
    import torch

    from .data import make_loader

    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(seed)))[:batch_size * batches]
    return make_loader(torch.utils.data.Subset(dataset, pick.tolist()), batch_size, shuffle=False)


def _previous_run(out: Path, header: dict, resume: bool, restart: bool) -> Optional[dict]:
    from .search import load_result

    if resume and restart:
        raise UserError("pass either --resume or --restart, not both")
    if not out.exists():
        if resume:
            raise UserError(f"--resume: there is no search in {out}; start without --resume")
        return None
    if restart:
        return None
    data = load_result(out)
    if not resume:
        if data.get("status") != "done":
            raise UserError(f"{out} holds an interrupted search; pass --resume to continue it or --restart "
                            "to start over")
        return None  # a finished search is simply replaced
    def same(key: str) -> bool:  # files by content: a resume may name them relatively or absolutely
        if key in ("checkpoint", "lut") and data.get(key) and header[key]:
            return data[key].get("sha256") == header[key].get("sha256") and \
                {k: v for k, v in data[key].items() if k not in ("path", "sha256")} == \
                {k: v for k, v in header[key].items() if k not in ("path", "sha256")}
        return data.get(key) == header[key]

    diffs = [k for k in ("model", "checkpoint", "lut", "settings") if not same(k)]
    if diffs:
        raise UserError(f"--resume: {out} was searched with a different {', '.join(diffs)}; use the same options "
                        "or another --out")
    return data


def _run_with_progress(S, supernet, evaluator, costs, targets, out, header, criterion, cost_kind, previous,
                       info, quiet):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    space = supernet.space
    total = sum(u.options.index(u.max) for u in space.free_units) + 1  # every step of a full pass
    bar = Progress(TextColumn("searching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[status]}"), disable=quiet, console=console)
    done = len(previous["trajectory"]) if previous else 0

    def on_step(step: dict) -> None:
        lat = "" if step["latency_ms"] is None else f" {step['latency_ms']:.2f} ms"
        bar.update(task, completed=step["step"] + 1,
                   status=f"top-1 {step['accuracy']:.1f}%{lat} {step['macs'] / 1e6:.1f}M MACs "
                          f"(slimmed {step['unit']})")

    with bar:
        task = bar.add_task("search", total=total, completed=done, status="")
        try:
            return S.greedy_search(supernet, evaluator, costs, targets, out, header, criterion, cost_kind,
                                   previous, info.rank, info.world_size, on_step=on_step)
        except KeyboardInterrupt:
            bar.stop()
            typer.echo(f"interrupted; the steps so far are in {out}: run the same command with --resume "
                       "to continue", err=True)
            raise typer.Exit(130) from None


def _print_targets(S, result: dict, out: Path) -> None:
    table = Table("target", "constraints", "step", "top-1 (search split)", "latency", "MACs", "params", "memory")
    for i, t in enumerate(result["targets"]):
        cons = ", ".join(f"{S._LABELS[k]} <= {S.format_cost(k, v)}" for k, v in t["constraints"].items())
        if not t.get("met"):
            table.add_row(str(i), cons, "-", "not met", "", "", "", "")
            continue
        table.add_row(str(i), cons, str(t["step"]), f"{t['accuracy']:.2f}%",
                      *(S.format_cost(k, t[k]) for k in S.COST_KINDS))
    if result["targets"]:
        console.print(table)
    steps = result["trajectory"]
    console.print(f"{len(steps)} configs on the trajectory; wrote {out}, "
                  f"{out.with_name(out.stem + '_trajectory.png')}")
