"""`autoslim-hw search` as a library call: find the lookup table (or profile it), load the
checkpoint's search split, run the greedy pass (resuming an interrupted one), write the result
file and its plots."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .._io import check_output, file_digest
from ..distributed import DistInfo, init_distributed, select_device, shutdown
from ..errors import UserError
from ..nn.supernet import Supernet
from ..search.costs import COSTS, CostModel, Target, check_feasible
from ..search.evaluate import Evaluator, bf16_is_fast
from ..search.greedy import CRITERIA, greedy_search
from ..search.policy import EXACT, FAST, StepPolicy
from ..search.result import load_result
from .common import checkpoint_splits, newest_checkpoint, open_checkpoint

BN_MODES = ("batch", "recalibrate")


def resolve_table(supernet: Supernet, checkpoint: Path, lut: Path | None, device: str | None, runtime: str | None,
                  needed: bool, profile_missing: bool, allow_mismatch: bool, log: Callable[[str], None] = print,
                  progress: bool = True):
    """(table, path) for the search, or (None, None) when no latency is asked for and none is found.
    Without `lut`: the shipped or ./luts table of this model, device and runtime measured on this
    CPU; with `profile_missing`, a missing one is built."""
    from ..lookup_tables import LatencyTable
    from ..lookup_tables.discover import (check_table_model, default_table_path, find_table, table_path,
                                          tables_of_other_hosts)

    from ..profilers.devices import get_device

    dev_file = device if device is not None and device.endswith(".json") else None
    if dev_file:
        device = get_device(dev_file).name  # a device file: its tables carry its name
    dev, rt = device or "cpu-1core", runtime or "onnxruntime"
    hint = f"autoslim-hw profile --checkpoint {checkpoint} --device {dev} --runtime {rt}"
    if lut is not None:
        lut = table_path(lut)
    else:
        lut = find_table(supernet, dev, rt)
        if lut is None and needed and profile_missing:
            from ..lookup_tables.build import build_table
            from ..profilers import get_backend

            lut = default_table_path(supernet, dev, rt)
            log(f"no lookup table for {supernet.spec.arch} on {dev} ({rt}): profiling it into {lut}")
            build_table(supernet, get_backend(rt, profiles=True), get_device(dev_file or dev), lut, resume=lut.exists(),
                        progress=progress, passes=2)
        if lut is None:
            if needed:
                others = tables_of_other_hosts(supernet, dev, rt)
                elsewhere = (f" ({others[0][0]} was measured on {others[0][1]}, not this CPU: use it with --lut "
                             f"{others[0][0]} --allow-mismatch)") if others else ""
                raise UserError(f"no lookup table for this model on {dev} with {rt}{elsewhere}; build it with "
                                f"`{hint}` or pass --profile-missing (or --lut FILE)")
            return None, None
        log(f"lookup table: {lut}")
    table = LatencyTable.load(lut).require_entries(lut)
    table.check_target(device, runtime, allow_mismatch, path=lut)
    check_table_model(table, supernet, lut, hint, allow_mismatch)
    return table, lut


def recalibration_loader(dataset, seed: int, batch_size: int = 256, batches: int = 10):
    """BN-recalibration images for --bn recalibrate: a seeded random subset, in a fixed order,
    so that every candidate (on every rank, before and after a resume) sees the same batches.
    A shuffling loader would draw a new order at each pass, i.e. for each candidate."""
    import torch

    from ..data import make_loader

    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(seed)))[:batch_size * batches]
    return make_loader(torch.utils.data.Subset(dataset, pick.tolist()), batch_size, shuffle=False)


def previous_run(out: Path, header: dict, resume: bool, restart: bool) -> dict | None:
    """The interrupted (or finished) search in `out` to continue, or None to start afresh."""
    if resume and restart:
        raise UserError("pass either --resume or --restart, not both")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass a file name for the result, e.g. {out / 'search.json'}")
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


def cost_name(cost: str) -> str:
    """The cost kind --cost names: its option's name (latency-ms, flops, params, memory) or its key."""
    names = {k.param.replace("_", "-"): k.name for k in COSTS.values()} | {k: k for k in COSTS}
    if cost not in names:
        raise UserError(f"--cost must be one of {', '.join(k.param.replace('_', '-') for k in COSTS.values())}, "
                        f"got {cost!r}")
    return names[cost]


def drop_per_cost_kind(targets: list[Target], has_table: bool) -> str:
    """The cost that --criterion drop-per-cost divides by when --cost does not say: latency when a
    target limits it (or, without targets, when there is a table), else the first kind the
    targets limit."""
    kinds = [k for t in targets for k in t.limits]
    if "latency_ms" in kinds:
        return "latency_ms"
    return kinds[0] if kinds else ("latency_ms" if has_table else "macs")


def search_policy(exact: bool, device) -> StepPolicy:
    """The paper's exact step, or the fast one, with bfloat16 only where it runs natively
    (elsewhere it is emulated and slower than float32)."""
    if exact:
        return EXACT
    policy = FAST
    if policy.precision == "bf16" and not bf16_is_fast(device):
        policy = replace(policy, precision="fp32")
    return policy


@dataclass
class SearchRun:
    result: dict
    out: Path
    supernet: Supernet
    checkpoint: Path
    images: int  # held-out images each candidate is scored on
    info: DistInfo


def run_search(targets: list[Target], checkpoint: Path | None = None, *, lut: Path | None = None,
               device: str | None = None, runtime: str | None = None, criterion: str = "drop",
               cost: str | None = None, bn: str = "batch",
               batch_size: int = 2048, batches: int | None = None, data_dir: str | None = None,
               out: Path | None = None, resume: bool = False, restart: bool = False, cache: bool = True,
               profile_missing: bool = False, allow_mismatch: bool = False, exact: bool = False,
               policy: StepPolicy | None = None,
               log: Callable[[str], None] = print, on_start: Callable[[Supernet, int, int, Path], None] | None = None,
               on_step: Callable[[dict], None] | None = None, plots: bool = True) -> SearchRun:
    """Greedy slimming of a checkpoint's supernet until every target is met; the result is written
    to `out` (default: search.json next to the checkpoint) after every step. `on_start(supernet,
    steps done, images, result file)` and `on_step(step record)` report progress; `log` gets one-line notes.
    `criterion` "drop-per-cost" divides each candidate's accuracy drop by the `cost` it saves
    (default: latency when a target limits it). `exact`: the paper's step (every candidate scored in float32, one unit per step); by default
    the faster policy of search.policy (`policy` gives another). Under torchrun every rank scores
    its share of the candidates."""
    if criterion not in CRITERIA:  # before loading anything
        raise UserError(f"--criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if cost is not None and criterion != "drop-per-cost":
        raise UserError("--cost picks what --criterion drop-per-cost divides by; add --criterion drop-per-cost")
    cost = None if cost is None else cost_name(cost)
    if bn not in BN_MODES:
        raise UserError(f"--bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if batch_size < 1 or (batches is not None and batches < 1):
        raise UserError("--batch-size and --batches must be at least 1")
    info = init_distributed()
    quiet_log = log if info.is_main else (lambda _: None)
    if checkpoint is None:
        checkpoint = newest_checkpoint()
        quiet_log(f"checkpoint: {checkpoint} (the newest under runs/)")
    loaded = open_checkpoint(checkpoint, expect="supernet")
    supernet = loaded.supernet
    limited = {k for t in targets for k in t.limits} | ({cost} if cost else set())
    needs_table = any(COSTS[k].needs_table for k in limited)
    table, lut_path = resolve_table(supernet, checkpoint, lut, device, runtime, needs_table, profile_missing,
                                    allow_mismatch, quiet_log, progress=info.is_main)
    costs = CostModel(supernet, table)
    check_feasible(targets, costs)
    cost_kind = (cost or drop_per_cost_kind(targets, table is not None)) if criterion == "drop-per-cost" else None

    settings = loaded.settings
    out = Path(out) if out is not None else checkpoint.parent / "search.json"
    if not out.is_dir():  # previous_run says what a directory should be instead
        check_output(out, "file")
    policy = policy or search_policy(exact, select_device(info))
    header = {
        "model": supernet.spec.to_dict(),
        "checkpoint": {"path": str(checkpoint), "sha256": file_digest(checkpoint)},
        "lut": None if table is None else {"path": str(lut_path), "sha256": file_digest(lut_path),
                                           "device": table.metadata["device"]["name"],
                                           "runtime": table.metadata["runtime"]},
        "costs": {k.name: k.help for k in COSTS.values()},  # what each cost field of the file measures
        "settings": {"criterion": criterion, "cost": cost_kind, "bn": bn, "batch_size": batch_size,
                     "batches": batches, "data": settings.get("data", "digits"),
                     "search_size": settings.get("search_size", 0.1), "seed": settings.get("seed", 0),
                     "policy": policy.to_dict()},
    }
    previous = previous_run(out, header, resume, restart)

    from ..data import make_loader

    dev = select_device(info)
    splits = checkpoint_splits(settings, supernet, data_dir=data_dir)
    loader = make_loader(splits.search, batch_size, shuffle=False)
    data = [b for _, b in zip(range(batches or len(loader)), loader)]
    calib = recalibration_loader(splits.train_eval, settings.get("seed", 0)) if bn == "recalibrate" else None
    supernet.to(dev)
    evaluator = Evaluator(supernet, data, dev, cache=cache, bn=bn, calib_loader=calib, precision=policy.precision,
                          channels_last=policy.channels_last)
    images = sum(len(y) for _, y in data)
    if on_start is not None and info.is_main:
        on_start(supernet, len(previous["trajectory"]) if previous else 0, images, out)
    try:
        result = greedy_search(supernet, evaluator, costs, targets, out, header, criterion, cost_kind, previous,
                               info.rank, info.world_size, on_step=on_step if info.is_main else None, policy=policy)
        if plots and info.is_main:
            from .plots import search_plots

            search_plots(supernet, result, out)
    finally:
        shutdown(info)
    return SearchRun(result, out, supernet, checkpoint, images, info)
