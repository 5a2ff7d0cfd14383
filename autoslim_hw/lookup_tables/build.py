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
from ..export import materialize
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from ..profilers.base import Backend, MeasureSettings, pinned_to_core
from ..profilers.devices import DeviceSpec, measurement_core
from .signatures import Signature, enumerate_signatures
from .table import LatencyTable, fit_calibration, model_key

_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}


class _Add(nn.Module):
    def forward(self, x, y):
        return x + y


class _GlobalPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def single_op_model(sig: Signature) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """The op as deployed (BN folded away, activation fused), and its input shapes."""
    if sig.op in ("conv", "dwconv"):
        layers = [nn.Conv2d(sig.cin, sig.cout, sig.kernel, sig.stride, sig.padding, groups=sig.groups, bias=True)]
        shapes = [(1, sig.cin, sig.h, sig.w)]
    elif sig.op == "linear":
        layers, shapes = [nn.Linear(sig.cin, sig.cout)], [(1, sig.cin)]
    elif sig.op == "add":
        return _Add(), [(1, sig.cin, sig.h, sig.w)] * 2
    elif sig.op == "gap":
        return _GlobalPool(), [(1, sig.cin, sig.h, sig.w)]
    else:
        raise ValueError(f"no single-op model for {sig.op}")
    if sig.act != "none":
        layers.append(_ACTS[sig.act]())
    return nn.Sequential(*layers).eval(), shapes


def new_table(device: DeviceSpec, backend: Backend, settings: MeasureSettings) -> LatencyTable:
    return LatencyTable({
        "device": device.to_dict(), "runtime": backend.name, "runtime_version": backend.version(),
        "cpu_model": device.to_dict()["cpu_model"], "threads": device.threads,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "settings": {"warmup": settings.warmup, "runs": settings.runs, "rounds": settings.rounds},
        "op_timing": backend.op_timing,  # kernel: the runtime's per-node timers; wall: whole single-op runs
        "models": [],
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
                save_every: int = 25, progress: bool = True, jobs: int = 1) -> LatencyTable:
    """jobs > 1: write the single-op files in jobs - 1 processes on the other cores while this
    one measures on its pinned core (faster builds; the writers share memory bandwidth)."""
    out = Path(out)
    if out.exists() and not resume:
        raise UserError(f"{out} exists; pass --resume to complete it or choose another --out")
    if resume and out.exists():
        table = LatencyTable.load(out)
        table.check_target(device.name, backend.name)
    else:
        table = new_table(device, backend, settings)
    key = model_key(supernet)
    if key not in [m["key"] for m in table.metadata["models"]]:
        table.metadata["models"].append({"key": key, "spec": supernet.spec.to_dict()})
    todo = [s for s in enumerate_signatures(supernet) if s.key not in table.entries]
    core = measurement_core() if device.pin_core else None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("profiling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[op]}"), disable=not progress)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    others = set(os.sched_getaffinity(0)) - ({core} if core is not None else set())
    if jobs > 1 and not others:
        raise UserError(f"--jobs {jobs} needs a core besides the measurement core {core}; use --jobs 1")
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(core), bar:
        task = bar.add_task("ops", total=len(todo), op="")
        for i, (sig, path) in enumerate(_converted_ops(backend, todo, Path(tmp), jobs, others)):
            lat = backend.measure_op(path, settings, device.threads)
            if jobs > 1:
                path.unlink()
            table.add(sig, lat.median_ms, lat.p10_ms, lat.p90_ms)
            bar.update(task, advance=1, op=sig.key)
            if (i + 1) % save_every == 0:
                table.save(out)
        table.save(out)
        if key not in table.calibrations and calibration_samples > 0:
            table.calibrations[key] = calibrate(table, supernet, backend, device, calibration_samples, Path(tmp),
                                                settings)
            table.save(out)
    return table


def measure_network(supernet: Supernet, config, backend: Backend, workdir: Path, settings: MeasureSettings,
                    threads: int) -> float:
    spec = supernet.spec
    shape = (1, spec.in_chans, spec.input_size, spec.input_size)
    path = workdir / f"net{backend.suffix}"
    backend.convert(materialize(supernet, config).eval(), [shape], path)
    return backend.measure(path, settings, threads).median_ms


def sample_configs(supernet: Supernet, n: int, seed: int = 0) -> list:
    """The smallest, the largest and random configs between: a calibration spread over the range.
    Half are drawn around a random overall width (what a search trajectory passes through),
    half uniformly per unit (what `lut validate` draws)."""
    rng = random.Random(seed)
    space = supernet.space
    configs = [space.smallest(), space.largest()]
    for attempt in range(50 * n):  # distinct configs while the space has them
        if len(configs) >= n:
            break
        if attempt % 2:
            cfg = space.sample(rng)
        else:
            level = rng.random()
            widths = {}
            for u in space.free_units:
                i = round(level * (len(u.options) - 1) + rng.gauss(0, 1.5))
                widths[u.name] = u.options[min(max(i, 0), len(u.options) - 1)]
            cfg = ChannelConfig(widths)
        if cfg not in configs:
            configs.append(cfg)
    return configs[:n]


def calibrate(table: LatencyTable, supernet: Supernet, backend: Backend, device: DeviceSpec, samples: int,
              workdir: Path, settings: MeasureSettings) -> dict:
    """Fit measured whole-network latency against the layer sums on `samples` sub-networks."""
    sums, measured = [], []
    for cfg in sample_configs(supernet, max(samples, 2), seed=12345):
        sums.append(table.layer_sums(supernet, cfg)[0])
        measured.append(measure_network(supernet, cfg, backend, workdir, settings, device.threads))
    return fit_calibration(sums, measured)


def validate_table(table: LatencyTable, supernet: Supernet, backend: Backend, device: DeviceSpec, samples: int,
                   settings: MeasureSettings = MeasureSettings(), seed: int = 7, progress: bool = True) -> dict:
    """Measure random sub-networks end to end and compare with the table's predictions."""
    import numpy as np
    from scipy.stats import kendalltau

    core = measurement_core() if device.pin_core else None
    rng = random.Random(seed)
    predicted, measured = [], []
    from rich.progress import track

    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(core):
        for _ in track(range(samples), description="validating", disable=not progress):
            cfg = supernet.space.sample(rng)
            predicted.append(table.predict(supernet, cfg).latency_ms)
            measured.append(measure_network(supernet, cfg, backend, Path(tmp), settings, device.threads))
    p, m = np.array(predicted), np.array(measured)
    err = np.abs(p - m) / m * 100
    tau = kendalltau(p, m).statistic if samples > 1 else float("nan")
    return {"mape": float(err.mean()), "max_error": float(err.max()), "kendall_tau": float(tau),
            "within_5pct": float((err <= 5).mean()), "within_10pct": float((err <= 10).mean()),
            "samples": samples, "predicted_ms": p.tolist(), "measured_ms": m.tolist()}


__all__ = ["build_table", "validate_table", "single_op_model", "calibrate"]
