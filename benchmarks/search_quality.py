r"""Does the fast search find what the exact one finds? Side by side on several supernets.

For each seed: train a demo-size supernet (digits at 16 px, MobileNetV2-CIFAR with a 0.35x
base, the demo's settings), then search it twice for the same targets (50% and 20% of the
largest config's MACs, as the search-speed scenario), with the paper's exact step
(`--exact`) and with the default fast policy. Each pick is scored on the validation split
after BN recalibration. Prints, per seed and target, both picks' validation top-1 and their
difference, then the mean difference with its standard error over seeds, next to the noise a
pick's accuracy carries anyway: the binomial standard error of one validation score, the
spread of the exact picks across seeds, and the search's own noise: the exact step run again
with float32 sums in another order (channels-last layout), which changes nothing but rounding.

    python benchmarks/search_quality.py [--seeds 0 1 2] [--epochs 12] [--out runs/search_quality]

Supernets already in --out are reused (delete them to retrain).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from autoslim_hw.nn.config import ChannelConfig
from autoslim_hw.nn.evaluate import evaluate_config
from autoslim_hw.search.costs import Target
from autoslim_hw.train import train
from autoslim_hw.workflows.common import calibration_loader, checkpoint_splits, open_checkpoint
from autoslim_hw.workflows.demo import demo_settings
from autoslim_hw.workflows.search import run_search
from autoslim_hw.data import make_loader


def cpu() -> str:
    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    return f"{cpu_model()} ({cpu_id()})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.2], help="targets, of the largest MACs")
    ap.add_argument("--out", type=Path, default=Path("runs/search_quality"))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help='another policy to compare, the fast one with these fields changed, e.g. '
                         'lazy_only=\'{"max_units": 0}\' (repeatable)')
    args = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu()}, load {os.getloadavg()[0]:.2f}")
    from autoslim_hw.search.evaluate import bf16_is_fast
    from autoslim_hw.search.policy import EXACT, FAST

    fast = FAST if bf16_is_fast() else replace(FAST, precision="fp32")
    # the exact step in channels-last float32: the same algorithm, sums in another order (differences
    # in the 6th digit); how far its picks land from the exact ones is the search's own noise
    modes = {"exact": EXACT, "fast": fast,
             "exact_cl": replace(EXACT, name="exact_cl", channels_last=True)}
    for v in args.variant:
        name, _, fields = v.partition("=")
        modes[name] = replace(fast, name=name, **json.loads(fields))
    rows = []
    for seed in args.seeds:
        run = args.out / f"seed{seed}"
        settings = replace(demo_settings("digits", "mobilenet_v2_cifar", quick=False), seed=seed, epochs=args.epochs)
        if not (run / "supernet.pt").exists():
            t = time.perf_counter()
            train(settings, run, progress=False)
            print(f"seed {seed}: supernet trained in {time.perf_counter() - t:.0f} s", flush=True)
        ck = open_checkpoint(run / "supernet.pt")
        largest = ck.supernet.space.largest()
        from autoslim_hw.counting import count

        top = count(ck.supernet, largest).macs
        targets = [Target.of(macs=round(f * top)) for f in args.fractions]
        splits = checkpoint_splits(ck.settings, ck.supernet)
        val = make_loader(splits.val, 256, shuffle=False)
        picks = {}
        for mode, policy in modes.items():
            t = time.perf_counter()
            result = run_search(targets, run / "supernet.pt", policy=policy, batch_size=2048,
                                out=run / f"search-{mode}.json", restart=True, log=lambda _: None, plots=False).result
            took = time.perf_counter() - t
            evals = sum(s["candidates_evaluated"] for s in result["trajectory"])
            picks[mode] = (result, took, evals)
            print(f"seed {seed} {mode}: {took:.0f} s, {len(result['trajectory'])} configs, {evals} evaluations",
                  flush=True)
        supernet = open_checkpoint(run / "supernet.pt").supernet  # fresh weights for BN recalibration
        for i, f in enumerate(args.fractions):
            row = {"seed": seed, "target": f}
            for mode, (result, took, evals) in picks.items():
                entry = result["targets"][i]
                cfg = ChannelConfig(entry["config"])
                calib = calibration_loader(splits, seed=0, batch_size=64)  # the same batches for every pick
                row[mode] = evaluate_config(supernet, cfg, calib, val, 20)["top1"]
                row[f"{mode}_search"] = entry["accuracy"]
                row[f"{mode}_macs"] = entry["macs"]
                row[f"{mode}_s"], row[f"{mode}_evals"] = took, evals
            rows.append(row)
            print(f"seed {seed} target {f:.0%} MACs: " + ", ".join(
                f"{m} {row[m]:.2f}% ({row[m + '_macs'] / 1e6:.2f}M)" for m in modes), flush=True)
    n_val = len(checkpoint_splits(ck.settings, ck.supernet).val)
    others = [m for m in modes if m != "exact"]
    print("\n| target | seed | exact top-1 | " + " | ".join(f"{m} top-1 | {m} - exact" for m in others) + " |")
    print("|---|---|---|" + "---|---|" * len(others))
    for r in rows:
        print(f"| {r['target']:.0%} MACs | {r['seed']} | {r['exact']:.2f} | "
              + " | ".join(f"{r[m]:.2f} | {r[m] - r['exact']:+.2f}" for m in others) + " |")
    for f in args.fractions:
        sel = [r for r in rows if r["target"] == f]
        p = statistics.mean(r["exact"] for r in sel) / 100
        binom = 100 * math.sqrt(p * (1 - p) / n_val)
        spread = max(r["exact"] for r in sel) - min(r["exact"] for r in sel)
        for m in others:
            d = [r[m] - r["exact"] for r in sel]
            se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
            print(f"target {f:.0%}, {m}: {m} - exact {statistics.mean(d):+.2f} points (standard error over seeds "
                  f"{se:.2f})")
        print(f"target {f:.0%}: one validation score's standard error {binom:.2f} ({n_val} images); exact picks "
              f"across seeds span {spread:.2f}")
    first = [r for r in rows if r["target"] == args.fractions[0]]
    for m in modes:
        t, e = sum(r[f"{m}_s"] for r in first), sum(r[f"{m}_evals"] for r in first)
        print(f"search time over seeds, {m}: {t:.0f} s, {e} candidate evaluations")
    (args.out / "quality.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
