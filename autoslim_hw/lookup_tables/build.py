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
from ..profilers.base import HOST_STATISTIC, Backend, MeasureSettings, measure_interleaved, pinned_to_core
from ..profilers.devices import DeviceSpec, measurement_core
from .signatures import Signature, enumerate_signatures
from .table import CalibrationSkipped, LatencyTable, fidelity, fit_calibration, model_key

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
    spec = device.to_dict()
    return LatencyTable({
        "device": spec, "runtime": backend.name, "runtime_version": backend.version(),
        "cpu_model": spec["cpu_model"], "cpu_id": spec["cpu_id"], "threads": device.threads,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "settings": {"warmup": settings.warmup, "runs": settings.runs, "rounds": settings.rounds},
        "latency_statistic": HOST_STATISTIC,  # of the runs, for ops and networks alike (see profilers.base)
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
                save_every: int = 25, progress: bool = True, jobs: int = 1, passes: int = 1,
                seed: int = 0, recalibrate: bool = False) -> LatencyTable:
    """Measure every signature `passes` times (each pass in its own random order; an entry is
    the median of its passes), then calibrate against whole sub-networks.

    Why random order: the ops of one layer family, measured back to back, would share one spell
    of the machine's speed drift (5-10% over minutes on shared VMs), biasing the whole family the
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


def network_settings(settings: MeasureSettings) -> MeasureSettings:
    """Whole networks are timed in interleaved rounds (see `measure_interleaved`): twice the
    rounds of half the runs, about the same time as a single op's measurement."""
    return MeasureSettings(settings.warmup, max(5, settings.runs // 2), 2 * settings.rounds, settings.min_round_s)


def measure_networks(supernet: Supernet, configs: list, backend: Backend, workdir: Path, settings: MeasureSettings,
                     threads: int, seed: int = 0, chunk: int = 25, progress=None, bridges: int = 3,
                     statistic: str = HOST_STATISTIC) -> list[float]:
    """Latency (ms, in `statistic`: see profilers.base) of each config's materialized subnet,
    timed in interleaved rounds (`chunk` networks loaded at once, chunks bridged: see
    `measure_interleaved`)."""
    spec = supernet.spec
    shape = (1, spec.in_chans, spec.input_size, spec.input_size)
    paths = []
    for i, cfg in enumerate(configs):
        paths.append(workdir / f"net{i}{backend.suffix}")
        backend.convert(materialize(supernet, cfg).eval(), [shape], paths[-1])
    try:
        lats = measure_interleaved(backend, paths, network_settings(settings), threads, seed=seed, chunk=chunk,
                                   progress=progress, bridges=bridges, statistic=statistic)
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
    return [lat.value(statistic) for lat in lats]


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


# Rounds (at least) in which calibration networks are timed. The calibration fits a few weights to
# a few dozen networks, so their measurement noise goes into every prediction the table makes. The
# shipped LiteRT MobileNetV2-224 table's networks, timed in 3 rounds in a noisy spell, fit each
# other to 2.72% (leave one out); recalibrated in 12, to 1.37%. In quiet spells it matters little
# (benchmarks/RESULTS.md, calibration_fit.py). About a minute more at 224.
CALIBRATION_ROUNDS = 12


def calibration_settings(settings: MeasureSettings) -> MeasureSettings:
    return MeasureSettings(settings.warmup, settings.runs, max(settings.rounds, CALIBRATION_ROUNDS),
                           settings.min_round_s)


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


def network_timing(table: LatencyTable, supernet: Supernet, rounds: int | None = None) -> MeasureSettings:
    """How to time networks to compare them with the table: as its calibration networks were
    (the fastest of more runs is faster, so anchors timed otherwise would read as drift), or,
    for tables that did not record it, in the table's own settings; `rounds`, when given,
    replaces their rounds."""
    cal = table.calibrations.get(model_key(supernet), {})
    s = cal.get("settings") or table.metadata["settings"]
    return MeasureSettings(s["warmup"], s["runs"], s["rounds"] if rounds is None else rounds)


# Calibration networks timed again beside the networks being compared. Their median slowdown is the
# drift: each is off by its own noise (about 1% now and then at 224), so more of them average it
# out; 8 add 8% to a 100-network validation.
ANCHORS = 8


def _anchors(table: LatencyTable, supernet: Supernet, n: int = ANCHORS) -> list[tuple[ChannelConfig, float]]:
    """n calibration networks spread over their latency range, with the latency measured at build."""
    nets = sorted(table.calibrations.get(model_key(supernet), {}).get("networks", []), key=lambda x: x["measured_ms"])
    picks = nets if len(nets) < n else [nets[round((k + 0.5) * len(nets) / n - 0.5)] for k in range(n)]
    return [(ChannelConfig(x["config"]), x["measured_ms"]) for x in picks]


def measure_with_anchors(table: LatencyTable, supernet: Supernet, configs: list, backend: Backend, workdir: Path,
                         settings: MeasureSettings, threads: int, seed: int = 0, chunk: int = 25,
                         progress=None) -> tuple[list[float], float | None]:
    """Latencies of `configs` (in the table's statistic) timed in interleaved rounds together with
    a few of the table's calibration networks (anchors), and the machine's speed against the
    build: the anchors' median ratio of now to then (> 1: slower now; None when the table kept
    no networks)."""
    import numpy as np

    anchors = _anchors(table, supernet)
    lat = measure_networks(supernet, list(configs) + [a for a, _ in anchors], backend, workdir, settings, threads,
                           seed=seed, chunk=chunk, progress=progress, statistic=table.statistic)
    factor = float(np.median([now / then for now, (_, then) in zip(lat[len(configs):], anchors)])) if anchors else None
    return lat[:len(configs)], factor


def validate_table(table: LatencyTable, supernet: Supernet, backend: Backend, device: DeviceSpec, samples: int,
                   settings: MeasureSettings | None = None, seed: int = 7, progress: bool = True,
                   chunk: int = 25) -> dict:
    """Measure random sub-networks end to end and compare with the table's predictions
    (timed in `settings`, by default as the calibration networks were: `network_timing`).

    The networks and a few of the table's calibration networks (anchors) are timed together
    with `measure_with_anchors` (`chunk` loaded at once, chunks bridged): the anchors' slowdown
    since the build is the machine's drift (`speed_factor`, > 1: slower now); `adjusted` gives
    the same statistics for latencies divided by it, i.e. the table's own error. The top-level
    statistics compare with the raw measured latencies."""
    import numpy as np
    from rich.progress import Progress

    settings = settings or network_timing(table, supernet)
    core = measurement_core() if device.pin_core else None
    rng = random.Random(seed)
    configs = [supernet.space.sample(rng) for _ in range(samples)]
    predicted = [table.predict(supernet, cfg, memory=False).latency_ms for cfg in configs]
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(core), Progress(disable=not progress) as bar:
        task = bar.add_task("validating", total=samples + len(_anchors(table, supernet)))
        measured, factor = measure_with_anchors(table, supernet, configs, backend, Path(tmp), settings, device.threads,
                                                seed=seed, chunk=chunk, progress=lambda k: bar.advance(task, k))
    p, m = np.array(predicted), np.array(measured)
    out = {**fidelity(p, m), "samples": samples, "statistic": table.statistic, "predicted_ms": p.tolist(),
           "measured_ms": m.tolist()}
    if factor is not None:
        out["speed_factor"] = factor
        out["adjusted"] = fidelity(p, m / factor)
    return out


__all__ = ["build_table", "validate_table", "measure_with_anchors", "network_timing", "single_op_model", "calibrate"]
