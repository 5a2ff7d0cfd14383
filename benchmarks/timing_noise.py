"""How steady is this machine's timing? The noise floor every latency table lives on.

Times a few random MobileNetV2 sub-networks on one pinned core, in interleaved rounds, for
--seconds, and prints:
  - the spread of one network's round medians (what a single short measurement can be off by);
  - its drift: the median of the last third of the rounds over the first third;
  - repeatability: the networks measured in two separate interleaved sessions of --rounds
    rounds each, compared (sd of the ratio, Kendall's tau): the best any predictor can do.

    python benchmarks/timing_noise.py --runtime onnxruntime --seconds 120
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model
from autoslim_hw.profilers import get_backend
from autoslim_hw.profilers.latency import time_runs
from autoslim_hw.profilers.devices import cpu_model, measurement_core


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--networks", type=int, default=20)
    p.add_argument("--seconds", type=float, default=120, help="Length of the drift run.")
    p.add_argument("--rounds", type=int, default=6, help="Rounds per repeatability session.")
    p.add_argument("--runs", type=int, default=10, help="Timed runs per visit.")
    args = p.parse_args()

    os.sched_setaffinity(0, {measurement_core()})
    backend = get_backend(args.runtime)
    net = create_model("mobilenet_v2", input_size=args.input_size)
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for k in range(args.networks):
            path = Path(tmp) / f"n{k}{backend.suffix}"
            backend.convert(materialize(net, net.space.sample(rng)).eval(), [(1, 3, args.input_size, args.input_size)],
                            path)
            runs.append(backend.load(path, 1))
        for run in runs:
            time_runs(run, 5, 0)

        def session(rounds: int) -> np.ndarray:
            med = np.zeros((len(runs), rounds))
            for r in range(rounds):
                order = list(range(len(runs)))
                rng.shuffle(order)
                for i in order:
                    med[i, r] = np.median(time_runs(runs[i], 2, args.runs)) * 1e3
            return med

        t0, rounds = time.time(), []
        while time.time() - t0 < args.seconds:
            rounds.append(session(1)[:, 0])
        drift = np.array(rounds).T  # networks x rounds
        a, b = np.median(session(args.rounds), axis=1), np.median(session(args.rounds), axis=1)

    third = max(1, drift.shape[1] // 3)
    spread = np.percentile(drift, 95, axis=1) / np.percentile(drift, 5, axis=1) - 1
    later = np.median(drift[:, -third:], axis=1) / np.median(drift[:, :third], axis=1)
    ratio = a / b
    print(f"{cpu_model()}, {args.runtime} {backend.version()}, one pinned core, {args.networks} MobileNetV2-"
          f"{args.input_size} sub-networks, {drift.shape[1]} rounds in {args.seconds:.0f} s, load {os.getloadavg()}")
    print(f"round medians of one network, 5th to 95th percentile: {np.median(spread):.1%} apart (median network)")
    print(f"drift, last third of the rounds over the first: {np.median(later):.3f} (range {later.min():.3f} "
          f"to {later.max():.3f})")
    print(f"two sessions of {args.rounds} interleaved rounds: sd of the ratio {np.std(ratio) / np.mean(ratio):.2%}, "
          f"Kendall tau {kendalltau(a, b).statistic:.3f}")


if __name__ == "__main__":
    main()
