"""Does a calibration with per-op corrections predict whole networks better, and what does it
need? One measurement on one table (its per-layer entries as measured):

- 48 calibration networks (`sample_configs`, as `profile --calibration 48` draws them; the
  first 24 are what the default `--calibration 24` draws), or with `--stored` the table's own
  calibration networks, fit on their measurements from the build (the shipped fit is compared
  with refits of the same data; the networks are timed again only to tell the drift since),
- `--samples` random networks (as `lut validate` draws them),
- `--paths` x `--steps` search-like networks: paths from the largest config, each step
  slimming one random unit by one option (what a greedy search passes through: most units
  wide, a few slimmed),

all timed together in interleaved rounds (12, as calibration networks are timed), then the
random and search-like networks a second time in a new order: the machine's repeatability, the
floor no fit can beat. Then, per fit (24 networks, the selected fit; 48 without per-op
corrections; 48 with them where the selection adopts them), its fidelity on both sets.

    OMP_NUM_THREADS=1 python benchmarks/per_op_calibration.py --table TABLE [--samples 100] [--stored]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from autoslim_hw.lookup_tables.calibration import apply_calibration, fit_calibration
from autoslim_hw.lookup_tables.discover import table_model, table_path
from autoslim_hw.lookup_tables.networks import calibration_settings, measure_networks, sample_configs
from autoslim_hw.lookup_tables.table import LatencyTable, model_key
from autoslim_hw.lookup_tables.validate import fidelity
from autoslim_hw.nn.config import ChannelConfig
from autoslim_hw.profilers import MeasureSettings, get_backend, pinned_to_core
from autoslim_hw.profilers.devices import cpu_id, cpu_model, measurement_core


def slimming_paths(space, paths: int, steps: int, seed: int = 3) -> list[ChannelConfig]:
    """Configs along random slimming paths from the largest: each step one random unit (that can
    still shrink) one option narrower; `steps` configs spread along each path to the smallest."""
    rng = random.Random(seed)
    out = []
    for _ in range(paths):
        widths = dict(space.largest())
        path = []
        while True:
            can = [u for u in space.free_units if u.options.index(widths[u.name]) > 0]
            if not can:
                break
            u = rng.choice(can)
            widths[u.name] = u.options[u.options.index(widths[u.name]) - 1]
            path.append(ChannelConfig(dict(widths)))
        out += [path[round(i * (len(path) - 1) / max(steps - 1, 1))] for i in range(steps)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, help="A table file, or a shipped table's name (lut list).")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--paths", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--stored", action="store_true",
                   help="Calibrate on the table's own calibration networks as measured at its build (not timed "
                        "again for the fit): compares the shipped fit with refits of the same measurements.")
    p.add_argument("--save", type=Path, default=None, help="Write the configs and measurements (JSON) here.")
    args = p.parse_args()

    path = table_path(args.table)
    table = LatencyTable.load(path)
    net = table_model(table, path)
    backend = get_backend(table.metadata["runtime"])
    stored = table.calibrations.get(model_key(net), {}) if args.stored else {}
    if args.stored and len(stored.get("networks", [])) < 24:
        raise SystemExit(f"{path} keeps {len(stored.get('networks', []))} calibration networks; --stored needs 24 or more")
    cal = [ChannelConfig(n["config"]) for n in stored["networks"]] if args.stored else sample_configs(net, 48, seed=12345)
    rng = random.Random(7)
    val = [net.space.sample(rng) for _ in range(args.samples)]
    trail = slimming_paths(net.space, args.paths, args.steps)
    timing = calibration_settings(MeasureSettings(**table.metadata["settings"]))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        first = measure_networks(net, cal + val + trail, backend, Path(tmp), timing, 1, statistic=table.statistic)
        again = measure_networks(net, val + trail, backend, Path(tmp), timing, 1, statistic=table.statistic, seed=1)
    m_cal, factor = first[:len(cal)], 1.0
    if args.stored:  # fit on the build's measurements; predictions x the machine's drift since
        then = [n["measured_ms"] for n in stored["networks"]]
        factor = float(np.median(np.array(m_cal) / np.array(then)))
        m_cal = then
    if args.save:
        args.save.write_text(json.dumps({"table": str(path), "configs": [dict(c) for c in cal + val + trail],
                                         "sets": [len(cal), len(val), len(trail)], "first": first, "again": again}))
    sets = {"random": (val, np.array(first[len(cal):len(cal) + len(val)]), np.array(again[:len(val)])),
            "search-like": (trail, np.array(first[len(cal) + len(val):]), np.array(again[len(val):]))}
    print(f"{cpu_model()} ({cpu_id()}, {platform.machine()}), {backend.name} {backend.version()}, one pinned core; "
          f"table {Path(path).name} ({table.statistic}); 48 calibration, {len(val)} random and {len(trail)} "
          f"search-like networks ({min(first):.3f}-{max(first):.3f} ms), {time.perf_counter() - t0:.0f} s"
          + (f"; fits on the build's calibration measurements, predictions x {factor:.3f} (the calibration "
             "networks' median slowdown since)" if args.stored else ""))
    feats = {id(c): table.features(net, c) for c in cal + val + trail}
    no_ops = [{k: v for k, v in feats[id(c)].items() if k != "ops"} for c in cal]
    n = len(cal)
    fits = {**({"as shipped": stored} if args.stored else {}),
            "24 networks": fit_calibration([feats[id(c)] for c in cal[:24]], m_cal[:24]),
            f"{n}, no per-op": fit_calibration(no_ops, m_cal),
            f"{n}, selected": fit_calibration([feats[id(c)] for c in cal], m_cal)}
    print(f"{'calibration':44s} {'fit chosen':48s} {'LOO':>6s}  " +
          "  ".join(f"{name + ': MAPE, max, <=5%, tau':36s}" for name in sets))
    for label, fit in fits.items():
        cells = []
        for configs, measured, _ in sets.values():
            f = fidelity([factor * apply_calibration(fit, feats[id(c)]) for c in configs], measured)
            cells.append(f"{f['mape']:6.2f}% {f['max_error']:6.1f}% {f['within_5pct']:5.0%} {f['kendall_tau']:6.3f}"
                         + " " * 9)
        loo = fit.get("coef_loo_mape", fit.get("loo_mape", float("nan")))
        if "per_op_loo_mape" in fit:
            label += f" (per-op tried: {fit['per_op_loo_mape']:.2f}%)"
        print(f"{label:44s} {fit.get('fit', 'one slope'):48s} {loo:5.2f}%  " + "  ".join(cells))
    cells = []
    for _, measured, repeat in sets.values():
        f = fidelity(repeat, measured)
        cells.append(f"{f['mape']:6.2f}% {f['max_error']:6.1f}% {f['within_5pct']:5.0%} {f['kendall_tau']:6.3f}" + " " * 9)
    print(f"{'measured twice':44s} {'(the floor)':48s} {'':6s}  " + "  ".join(cells))
    scale = {k: float(np.median(r / m)) for k, (_, m, r) in sets.items()}
    print("second measurement / first (median): " + ", ".join(f"{k} {v:.3f}" for k, v in scale.items()))


if __name__ == "__main__":
    main()
