"""Which calibration makes a table predict networks best: how long the calibration networks
are timed, and which fit is laid on them?

One experiment on one table (its per-layer entries as measured): the table's calibration
networks and `--samples` random validation networks are timed together in interleaved rounds
(`--rounds`, as `build.CALIBRATION_ROUNDS`), so that a fit on the first predicts the second
without drift in between; then the calibration networks alone are timed again in
`--low-rounds` (what calibration used before), scaled to the first session by their median
ratio (drift, and the fastest of fewer runs being slower). For each calibration x each fit of
`table._MODELS`, the weights-beyond-a-knee fit (its nested leave-one-out) and the one
`fit_calibration` selects, it prints the fit's leave-one-out MAPE
on the calibration networks and its fidelity on the validation networks.

    OMP_NUM_THREADS=1 python benchmarks/calibration_fit.py --runtime litert
    OMP_NUM_THREADS=1 python benchmarks/calibration_fit.py --runtime onnxruntime
    OMP_NUM_THREADS=1 python benchmarks/calibration_fit.py --table TABLE --calibration 24 --samples 30
"""
from __future__ import annotations

import argparse
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from autoslim_hw.lookup_tables.networks import measure_networks, sample_configs
from autoslim_hw.lookup_tables.discover import find_table
from autoslim_hw.lookup_tables.discover import table_model as _table_model
from autoslim_hw.lookup_tables.calibration import (_MODELS, KNEE_TERMS, _knee_fit, _loo_mape, apply_calibration,
                                                   design_matrix, fit_calibration)
from autoslim_hw.lookup_tables.signatures import OP_GROUPS
from autoslim_hw.lookup_tables.table import LatencyTable
from autoslim_hw.lookup_tables.validate import fidelity
from autoslim_hw.models import create_model
from autoslim_hw.profilers import MeasureSettings, get_backend, pinned_to_core
from autoslim_hw.profilers.devices import cpu_id, cpu_model, measurement_core


def _fits(features: list[dict], measured: list[float]) -> dict[str, tuple[float, dict]]:
    """name -> (leave-one-out MAPE, a calibration dict apply_calibration takes)."""
    y = np.array(measured)
    out = {}
    for name, terms in {"one slope": [OP_GROUPS], **_MODELS}.items():
        x = design_matrix(features, terms)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        cal = {"coef": {t: float(c) for g, c in zip(terms, coef) for t in g}, "coef_intercept": float(coef[-1])}
        out[name] = (_loo_mape(x, y), cal)
    knee = _knee_fit(features, y)
    if knee is not None:
        loo, k, coef, _ = knee
        cal = {"knee_mb": k, "coef": {t: float(c) for g, c in zip(KNEE_TERMS, coef) for t in g},
               "coef_intercept": float(coef[-1])}
        out[f"sum+weights beyond {k:.2f} MB"] = (loo, cal)
    chosen = fit_calibration(features, measured)
    out[f"selected ({chosen.get('fit', 'one slope')})"] = (chosen.get("coef_loo_mape", chosen.get("loo_mape")), chosen)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", default="litert")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--table", type=Path, default=None,
                   help="Default: the shipped table of --model for this host. A table given here brings its own "
                        "model and runtime.")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--calibration", type=int, default=48)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--low-rounds", type=int, default=3)
    args = p.parse_args()

    if args.table:  # any model: the one the table was profiled for
        table = LatencyTable.load(args.table)
        path, net = args.table, _table_model(table, args.table)
    else:
        net = create_model(args.model, input_size=args.input_size)
        path = find_table(net, "cpu-1core", args.runtime)
        if path is None:
            raise SystemExit(f"no shipped {args.runtime} table of {args.model} for this host; pass --table")
        table = LatencyTable.load(path)
    backend = get_backend(table.metadata["runtime"])
    cal = sample_configs(net, args.calibration, seed=12345)
    rng = random.Random(7)
    val = [net.space.sample(rng) for _ in range(args.samples)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        both = measure_networks(net, cal + val, backend, Path(tmp), MeasureSettings(5, 20, args.rounds), 1,
                                statistic=table.statistic)
        low = measure_networks(net, cal, backend, Path(tmp), MeasureSettings(5, 20, args.low_rounds), 1,
                               statistic=table.statistic, seed=1)
    cal_hi, val_m = both[:len(cal)], np.array(both[len(cal):])
    scale = float(np.median(np.array(cal_hi) / np.array(low)))
    cal_lo = [m * scale for m in low]
    print(f"{cpu_model()} ({cpu_id()}, {platform.machine()}), {backend.name} {backend.version()}, one pinned core; "
          f"table {Path(path).name} ({table.statistic}); {len(cal)} calibration and {len(val)} validation "
          f"networks, {time.perf_counter() - t0:.0f} s; low-round session scaled by {scale:.3f}")
    features = [table.features(net, c) for c in cal]
    vfeatures = [table.features(net, c) for c in val]
    print(f"{'calibration timed in':22s} {'fit':38s} {'LOO MAPE':>9s} {'val MAPE':>9s} {'within 5%':>10s} {'tau':>6s}")
    for label, measured in ((f"{args.low_rounds} rounds", cal_lo), (f"{args.rounds} rounds", cal_hi)):
        for name, (loo, fit) in _fits(features, measured).items():
            f = fidelity([apply_calibration(fit, v) for v in vfeatures], val_m)
            print(f"{label:22s} {name:38s} {loo:8.2f}% {f['mape']:8.2f}% {f['within_5pct']:10.0%} "
                  f"{f['kendall_tau']:6.3f}")


if __name__ == "__main__":
    main()
