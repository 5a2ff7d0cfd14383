"""Whole networks timed as the table's calibration networks were: the configs to time, how
to time them (interleaved rounds, chunks bridged), and anchors that tell the machine's drift."""
from __future__ import annotations

import random
from pathlib import Path

from ..nn.config import ChannelConfig
from ..nn.materialize import materialize
from ..nn.supernet import Supernet
from ..profilers import Backend, MeasureSettings, measure_interleaved
from ..profilers.latency import HOST_STATISTIC
from .table import LatencyTable, model_key


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
        cfg = space.sample(rng) if attempt % 2 else space.sample_around(rng)
        if cfg not in configs:
            configs.append(cfg)
    return configs[:n]


# Rounds (at least) in which calibration networks are timed. The calibration fits a few weights to
# a few dozen networks, so their measurement noise goes into every prediction the table makes;
# in noisy spells more rounds halve it (benchmarks/NOTES.md, "Calibration: networks timed in 12
# rounds"). About a minute more at 224.
CALIBRATION_ROUNDS = 12


def calibration_settings(settings: MeasureSettings) -> MeasureSettings:
    return MeasureSettings(settings.warmup, settings.runs, max(settings.rounds, CALIBRATION_ROUNDS),
                           settings.min_round_s)


def network_timing(table: LatencyTable, supernet: Supernet, rounds: int | None = None) -> MeasureSettings:
    """How to time networks to compare them with the table: as its calibration networks were
    (the fastest of more runs is faster, so anchors timed otherwise would read as drift), or,
    for tables that did not record it, in the table's own settings; `rounds`, when given,
    replaces their rounds."""
    cal = table.calibrations.get(model_key(supernet), {})
    s = cal.get("settings") or table.metadata["settings"]
    return MeasureSettings(s["warmup"], s["runs"], s["rounds"] if rounds is None else rounds)


# Calibration networks timed again beside the networks being compared. Their median slowdown is the
# drift: each is off by its own noise, so more of them average it out; 8 add 8% to a 100-network
# validation.
ANCHORS = 8


def anchors(table: LatencyTable, supernet: Supernet, n: int = ANCHORS) -> list[tuple[ChannelConfig, float]]:
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

    picks = anchors(table, supernet)
    lat = measure_networks(supernet, list(configs) + [a for a, _ in picks], backend, workdir, settings, threads,
                           seed=seed, chunk=chunk, progress=progress, statistic=table.statistic)
    factor = float(np.median([now / then for now, (_, then) in zip(lat[len(configs):], picks)])) if picks else None
    return lat[:len(configs)], factor


__all__ = ["measure_networks", "measure_with_anchors", "network_settings", "network_timing",
           "calibration_settings", "sample_configs", "anchors"]
