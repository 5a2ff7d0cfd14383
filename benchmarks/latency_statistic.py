"""Which statistic of the timed runs makes the best lookup table: the median, the 10th or the
2nd percentile, or the fastest run?

One experiment, every run kept: each signature of the model's search space is measured
`--passes` times in random order (as `build_table` does), then the calibration networks and
`--samples` validation networks are timed together in interleaved rounds, in two sessions.
From these same runs it then builds a table per statistic and prints, side by side:

1. how well the two sessions of the networks agree by each statistic (the ceiling of any
   predictor: MAPE after scaling to the same mean, and Kendall tau),
2. for each pair (statistic of single ops, statistic of networks): the calibration fit, and
   the fidelity of the calibrated table against the first session of the validation networks.

"before" is what tables held until schema 2: for single ops the backend's central value
(ONNX Runtime: trimmed mean of the kernel times; LiteRT: median), for networks the median
of the round medians.

    OMP_NUM_THREADS=1 python benchmarks/latency_statistic.py --runtime onnxruntime --passes 4 --rounds 6
    OMP_NUM_THREADS=1 python benchmarks/latency_statistic.py --runtime litert --passes 2 --rounds 3
"""
from __future__ import annotations

import argparse
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from autoslim_hw.nn.materialize import materialize
from autoslim_hw.lookup_tables.build import new_table, single_op_model
from autoslim_hw.lookup_tables.networks import network_settings, sample_configs
from autoslim_hw.lookup_tables.signatures import enumerate_signatures
from autoslim_hw.lookup_tables.calibration import apply_calibration, fit_calibration
from autoslim_hw.lookup_tables.validate import fidelity
from autoslim_hw.models import create_model
from autoslim_hw.profilers import MeasureSettings, get_backend, pinned_to_core
from autoslim_hw.profilers import measure_interleaved
from autoslim_hw.profilers.devices import cpu_id, cpu_model, get_device, measurement_core

def _pct(q: float):
    return lambda lat: float(np.percentile(lat.runs_ms, q))


# "min": the fastest run as the backend reports it (ONNX Runtime: between whole microseconds, see
# onnxruntime_backend._fastest); "min, whole us": the fastest count itself
OP_STATS = {"before": lambda lat: lat.median_ms, "p10": lambda lat: lat.p10_ms, "p2": _pct(2),
            "min, whole us": _pct(0), "min": lambda lat: lat.value("min")}


def _net_stats(runs: int) -> dict:
    def round_medians(lat):
        r = np.array(lat.runs_ms).reshape(-1, runs)  # min_round_s=0: exactly `runs` runs a round
        return float(np.median(np.median(r, axis=1)))

    return {"before (median of round medians)": round_medians,
            "median of all runs": lambda lat: lat.median_ms, "p10 of all runs": lambda lat: lat.p10_ms,
            "p2 of all runs": _pct(2), "fastest run": _pct(0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--width-mult", type=float, default=None)
    p.add_argument("--in-chans", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=6, help="Rounds per op (networks: twice as many).")
    p.add_argument("--calibration", type=int, default=48)
    p.add_argument("--samples", type=int, default=100)
    args = p.parse_args()

    kwargs = {k: v for k, v in (("width_mult", args.width_mult), ("in_chans", args.in_chans),
                                ("num_classes", args.num_classes)) if v is not None}
    net = create_model(args.model, input_size=args.input_size, **kwargs)
    backend, device = get_backend(args.runtime), get_device("cpu-1core")
    settings = MeasureSettings(warmup=5, runs=20, rounds=args.rounds, min_round_s=0)
    sigs = enumerate_signatures(net)
    rng = random.Random(0)
    op_runs: list[tuple] = []  # (signature, Latency) per pass
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        for k in range(args.passes):
            order = sigs[:]
            rng.shuffle(order)
            for i, sig in enumerate(order):
                model, shapes = single_op_model(sig)
                path = backend.convert(model, shapes, Path(tmp) / f"op{backend.suffix}")
                op_runs.append((sig, backend.measure_op(path, settings, device.threads)))
                if i % 200 == 0:
                    print(f"pass {k + 1}/{args.passes}: {i}/{len(order)} ops, {time.perf_counter() - t0:.0f} s",
                          flush=True)
        cal = sample_configs(net, args.calibration, seed=12345)
        vrng = random.Random(7)
        val = [net.space.sample(vrng) for _ in range(args.samples)]
        shape = (1, net.spec.in_chans, net.spec.input_size, net.spec.input_size)
        paths = []
        for i, cfg in enumerate(cal + val):
            paths.append(Path(tmp) / f"net{i}{backend.suffix}")
            backend.convert(materialize(net, cfg).eval(), [shape], paths[-1])
        nsettings = network_settings(settings)
        sessions = []
        for s in range(2):  # all networks in one chunk: the statistic is the question, not the chunking
            sessions.append(measure_interleaved(backend, paths, nsettings, device.threads, seed=s, chunk=len(paths)))
            print(f"networks, session {s + 1}/2: {time.perf_counter() - t0:.0f} s", flush=True)

    ncal = len(cal)
    net_stats = _net_stats(nsettings.runs)
    print(f"\n{cpu_model()} ({cpu_id()}, {platform.machine()}), {backend.name} {backend.version()}, one pinned core; "
          f"{args.model}-{args.input_size}: {len(sigs)} signatures x {args.passes} passes, {ncal} calibration + "
          f"{len(val)} validation networks, {nsettings.rounds} rounds x {nsettings.runs} runs, 2 sessions; "
          f"{(time.perf_counter() - t0) / 60:.1f} min")
    print("\nthe same networks measured in two sessions (all of them):")
    print(f"{'network statistic':34s} {'MAPE':>6s} {'tau':>6s}")
    for name, f in net_stats.items():
        a, b = (np.array([f(lat) for lat in sess]) for sess in sessions)
        r = fidelity(b * a.mean() / b.mean(), a)
        print(f"{name:34s} {r['mape']:5.2f}% {r['kendall_tau']:6.3f}")
    print("\ncalibrated table against the first session of the validation networks:")
    print(f"{'ops':13s} {'networks':34s} {'fit':>15s} {'r2':>6s} {'LOO':>6s} | {'MAPE':>6s} {'max':>6s} "
          f"{'in 5%':>6s} {'in 10%':>6s} {'tau':>6s}")
    for oname, of in OP_STATS.items():
        table = new_table(device, backend, settings)
        for sig, lat in op_runs:
            table.add(sig, of(lat), lat.p10_ms, lat.p90_ms)
        fcal = [table.features(net, c) for c in cal]
        fval = [table.features(net, c) for c in val]
        for nname, nf in net_stats.items():
            m = np.array([nf(lat) for lat in sessions[0]])
            fit = fit_calibration(fcal, list(m[:ncal]))
            pred = [apply_calibration(fit, f) for f in fval]
            r = fidelity(pred, m[ncal:])
            print(f"{oname:13s} {nname:34s} {fit.get('fit', 'one slope'):>15s} {fit.get('coef_r2', fit['r2']):6.3f} "
                  f"{fit.get('coef_loo_mape', fit['loo_mape']):5.2f}% | {r['mape']:5.2f}% {r['max_error']:5.1f}% "
                  f"{r['within_5pct']:6.0%} {r['within_10pct']:6.0%} {r['kendall_tau']:6.3f}")


if __name__ == "__main__":
    main()
