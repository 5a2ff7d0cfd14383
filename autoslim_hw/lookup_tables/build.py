"""Build a table: measure every signature of a supernet's search space on one device,
then calibrate against whole sub-networks. Resumable: the table is written atomically
every few entries, and a resumed build measures only what is missing.
"""
from __future__ import annotations

import datetime
import os
import random
import tempfile
from pathlib import Path

from torch import nn

from .. import __version__
from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from ..profilers import Backend, MeasureSettings, pinned_to_core
from ..profilers.latency import HOST_STATISTIC
from ..profilers.devices import DeviceSpec, measurement_core
from .calibration import CalibrationSkipped, fit_calibration
from .networks import calibration_settings, measure_networks, sample_configs
from .signatures import Signature, enumerate_signatures
from .table import LatencyTable, model_key

_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
         "hardsigmoid": nn.Hardsigmoid}


class _Add(nn.Module):
    def forward(self, x, y):
        return x + y


class _Scale(nn.Module):
    """Squeeze-and-excitation's product: a feature map times one weight per channel."""

    def forward(self, x, s):
        return x * s


class _Shuffle(nn.Module):
    """ShuffleNet's channel shuffle of a map in `groups` groups."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _LayerNorm(nn.LayerNorm):
    """LayerNorm over the channels; `channels_first`: of an NCHW map, permuting around it."""

    def __init__(self, channels: int, channels_first: bool):
        super().__init__(channels)
        self.channels_first = channels_first

    def forward(self, x):
        if self.channels_first:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class _Permute(nn.Module):
    def __init__(self, to_last: bool):
        super().__init__()
        self.dims = (0, 2, 3, 1) if to_last else (0, 3, 1, 2)

    def forward(self, x):
        return x.permute(*self.dims)


class _GlobalPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def single_op_model(sig: Signature) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """The op as deployed (BN folded away, activation fused), and its input shapes."""
    if sig.op in ("conv", "dwconv", "gconv"):
        layers = [nn.Conv2d(sig.cin, sig.cout, sig.kernel, sig.stride, sig.padding, groups=sig.groups, bias=True)]
        shapes = [(1, sig.cin, sig.h, sig.w)]
    elif sig.op == "linear":  # on (1, C), or on each position of a channels-last map
        layers = [nn.Linear(sig.cin, sig.cout)]
        shapes = [(1, sig.cin) if (sig.h, sig.w) == (1, 1) else (1, sig.h, sig.w, sig.cin)]
    elif sig.op in ("ln", "ln2d"):
        shape = (1, sig.h, sig.w, sig.cin) if sig.op == "ln" else (1, sig.cin, sig.h, sig.w)
        return _LayerNorm(sig.cin, channels_first=sig.op == "ln2d").eval(), [shape]
    elif sig.op in ("nchw2nhwc", "nhwc2nchw"):
        to_last = sig.op == "nchw2nhwc"
        return _Permute(to_last), [(1, sig.cin, sig.h, sig.w) if to_last else (1, sig.h, sig.w, sig.cin)]
    elif sig.op == "add":
        return _Add(), [(1, sig.cin, sig.h, sig.w)] * 2
    elif sig.op == "gap":
        return _GlobalPool(), [(1, sig.cin, sig.h, sig.w)]
    elif sig.op == "scale":
        return _Scale(), [(1, sig.cin, sig.h, sig.w), (1, sig.cin, 1, 1)]
    elif sig.op == "shuffle":
        return _Shuffle(sig.groups), [(1, sig.cin, sig.h, sig.w)]
    else:
        raise ValueError(f"no single-op model for {sig.op}")
    if sig.act != "none":
        layers.append(_ACTS[sig.act]())
    return nn.Sequential(*layers).eval(), shapes


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_table(device: DeviceSpec, backend: Backend, settings: MeasureSettings) -> LatencyTable:
    """An empty table of `device` measured with `backend` on this host, in HOST_STATISTIC."""
    spec = device.to_dict()
    return table_for(spec, backend.name, backend.version(),
                     {"warmup": settings.warmup, "runs": settings.runs, "rounds": settings.rounds},
                     HOST_STATISTIC, op_timing=backend.op_timing,
                     cpu_model=spec["cpu_model"], cpu_id=spec["cpu_id"])


def table_for(device: dict, runtime: str, runtime_version: str, settings: dict, latency_statistic: str,
              **metadata) -> LatencyTable:
    """An empty table: the metadata every table has, plus `metadata` (op_timing, cpu_model,
    cpu_id, and what importers add). One place builds it for `profile` and `lut import` alike."""
    return LatencyTable({
        "device": device, "runtime": runtime, "runtime_version": runtime_version,
        "threads": device.get("threads", 1), "created": now(), "tool_version": __version__,
        "settings": settings,
        "latency_statistic": latency_statistic,  # of the runs, for ops and networks alike (profilers.latency)
        **metadata, "models": [],
    })


def _convert_op(backend_name: str, sig: dict, path: str) -> str:
    """Worker job: write one single-op model file (runs in another process)."""
    from ..profilers import get_backend

    model, shapes = single_op_model(Signature(**sig))
    return get_backend(backend_name).convert(model, shapes, path)


def _worker_init(cores: set[int]) -> None:
    import torch

    os.sched_setaffinity(0, cores)  # off the measurement core
    torch.set_num_threads(1)


def _converted_ops(backend: Backend, todo: list[Signature], workdir: Path, jobs: int, others: set[int]):
    """(signature, path of its file) in order. With jobs > 1, jobs - 1 worker processes write the
    files a few signatures ahead on the other cores while this process measures."""
    if jobs <= 1:
        for sig in todo:
            model, shapes = single_op_model(sig)
            path = workdir / f"op{backend.suffix}"
            backend.convert(model, shapes, path)
            yield sig, path
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    window = 4 * jobs  # files on disk at once: single 1.5x layers reach megabytes
    with ProcessPoolExecutor(jobs - 1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             initargs=(others,)) as pool:
        pending = []
        for i, sig in enumerate(todo):
            pending.append((sig, pool.submit(_convert_op, backend.name, sig.to_dict(),
                                             str(workdir / f"op{i}{backend.suffix}"))))
            if len(pending) >= window:
                sig0, fut = pending.pop(0)
                yield sig0, Path(fut.result())
        for sig0, fut in pending:
            yield sig0, Path(fut.result())


def build_table(supernet: Supernet, backend: Backend, device: DeviceSpec, out: Path, resume: bool = False,
                settings: MeasureSettings = MeasureSettings(), calibration_samples: int = 24,
                save_every: int = 25, progress: bool = True, jobs: int = 1, passes: int = 1,
                seed: int = 0, recalibrate: bool = False) -> LatencyTable:
    """Measure every signature `passes` times (each pass in its own random order; an entry is
    the median of its passes), then calibrate against whole sub-networks.

    Why random order: the ops of one layer family, measured back to back, would share one spell
    of the machine's speed drift (shared VMs drift for minutes at a time), biasing the whole family the
    same way; in random order each entry's drift is its own, and a network's sum of some fifty
    entries averages it out. Passes at different times average it further.
    jobs > 1: write the single-op files in jobs - 1 processes on the other cores while this
    one measures on its pinned core (faster builds; the writers share memory bandwidth).
    recalibrate: measure the calibration networks again and refit, even when the table has a
    calibration for this model (one from another session, or from an older version's timing)."""
    out = Path(out)
    if out.exists() and not resume:
        raise UserError(f"{out} exists; pass --resume to complete it or choose another --out")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if passes < 1:
        raise UserError(f"--passes must be at least 1, got {passes}")
    if resume and out.exists():
        table = LatencyTable.load(out)
        have = (table.metadata.get("device", {}).get("name"), table.metadata.get("runtime"))
        if have != (device.name, backend.name):
            raise UserError(f"--resume: {out} holds a table of {have[0]!r} with {have[1]!r}, not {device.name!r} "
                            f"with {backend.name!r}; profile into another --out")
        if table.other_host():
            raise UserError(f"--resume: {table.other_host()}; profile this host into another --out")
    else:
        table = new_table(device, backend, settings)
    key = model_key(supernet)
    if key not in [m["key"] for m in table.metadata["models"]]:
        table.metadata["models"].append({"key": key, "spec": supernet.spec.to_dict()})
    signatures = enumerate_signatures(supernet)
    rng = random.Random(seed)  # the same order again on resume
    todo = []
    for p in range(passes):
        batch = [s for s in signatures if table.passes(s.key) <= p]
        rng.shuffle(batch)
        todo += batch
    core = measurement_core() if device.pin_core else None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("profiling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[op]}"), disable=not progress)
    others = set(os.sched_getaffinity(0)) - ({core} if core is not None else set())
    if jobs > 1 and not others:
        raise UserError(f"--jobs {jobs} needs a core besides the measurement core {core}; use --jobs 1")
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(core), bar:
        task = bar.add_task("ops", total=len(todo), op="")
        for i, (sig, path) in enumerate(_converted_ops(backend, todo, Path(tmp), jobs, others)):
            lat = backend.measure_op(path, settings, device.threads)
            if jobs > 1:
                path.unlink()
            table.add(sig, lat.value(table.statistic), lat.p10_ms, lat.p90_ms)
            bar.update(task, advance=1, op=sig.key)
            if (i + 1) % save_every == 0:
                table.save(out)
        if todo or recalibrate:  # new measurements: a recorded validation was of the table before them
            table.metadata.pop("validation", None)
            table.metadata.pop("calibration_refit", None)
        table.order_entries([s.key for s in signatures])
        table.save(out)
        if recalibrate:
            table.calibrations.pop(key, None)
        if key not in table.calibrations and calibration_samples > 0:
            try:
                nets = bar.add_task("networks", total=max(calibration_samples, 2), op="calibration networks")
                table.calibrations[key] = calibrate(table, supernet, backend, device, calibration_samples,
                                                    Path(tmp), settings, progress=lambda k: bar.advance(nets, k))
                table.metadata.pop("calibration_skipped", None)
            except CalibrationSkipped as exc:
                table.metadata["calibration_skipped"] = f"{key}: {exc}"
            table.save(out)
    return table


def calibrate(table: LatencyTable, supernet: Supernet, backend: Backend, device: DeviceSpec, samples: int,
              workdir: Path, settings: MeasureSettings, progress=None) -> dict:
    """Fit measured whole-network latency against the layer sums on `samples` sub-networks
    (CalibrationSkipped when no usable fit), timed in `calibration_settings(settings)`. The
    networks, their latencies and the rounds are kept: `validate_table` times networks the same
    way and measures a few of these again as anchors, to tell the table's error from the
    machine's drift since the build. `progress(k)`: k more networks measured."""
    configs = sample_configs(supernet, max(samples, 2), seed=12345)
    timing = calibration_settings(settings)
    measured = measure_networks(supernet, configs, backend, workdir, timing, device.threads,
                                statistic=table.statistic, progress=progress)
    fit = fit_calibration([table.features(supernet, cfg) for cfg in configs], measured)
    fit["settings"] = {"warmup": timing.warmup, "runs": timing.runs, "rounds": timing.rounds}
    fit["networks"] = [{"config": dict(cfg), "measured_ms": m} for cfg, m in zip(configs, measured)]
    return fit




def refit(table: LatencyTable, supernet: Supernet) -> tuple[dict | None, dict]:
    """Fit `supernet`'s calibration again, by the current method, on the calibration networks the
    table kept and their latencies as measured at the build (nothing is timed): (the old fit,
    the new one), the new one in the table. Raises CalibrationSkipped when no usable fit, and
    UserError when the table kept no networks for this model."""
    key = model_key(supernet)
    old = table.calibrations.get(key)
    nets = (old or {}).get("networks") or []
    if not nets:
        raise UserError(f"the table keeps no calibration networks of {key}: measure them with "
                        "`autoslim-hw profile ... --resume --recalibrate`")
    configs = [ChannelConfig(n["config"]) for n in nets]
    fit = fit_calibration([table.features(supernet, c) for c in configs], [n["measured_ms"] for n in nets])
    fit.update({k: old[k] for k in ("settings",) if k in old}, networks=nets)
    table.calibrations[key] = fit
    return old, fit


__all__ = ["build_table", "calibrate", "new_table", "refit", "table_for", "single_op_model"]
