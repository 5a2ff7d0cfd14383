"""Which greedy criterion picks better configs: the paper's smallest accuracy drop, or the
drop per millisecond saved (`--criterion drop-per-cost`)?

Runs both searches in one process on the same supernet, search images and lookup table,
for the same latency targets, then evaluates every selected config on the validation split
(BN recalibrated) and prints them side by side.

    python benchmarks/criterion_compare.py --checkpoint runs/demo/supernet.pt --fractions 0.75 0.6 0.45
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from autoslim_hw import search as S
from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint
from autoslim_hw.data import load_splits, make_loader
from autoslim_hw.lookup_tables import LatencyTable
from autoslim_hw.lookup_tables.discover import find_table
from autoslim_hw.nn.config import ChannelConfig
from autoslim_hw.nn.evaluate import evaluate_config
from autoslim_hw.train import TrainSettings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--lut", type=Path, default=None, help="default: the cpu-1core ONNX Runtime table for the model")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.6, 0.45],
                   help="targets as fractions of the latency range above the smallest config")
    p.add_argument("--search-images", type=int, default=96)
    args = p.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    supernet = model_from_checkpoint(ckpt)[0]
    lut = args.lut or find_table(supernet, "cpu-1core", "onnxruntime")
    table = LatencyTable.load(lut)
    s = TrainSettings(**{k: v for k, v in ckpt["settings"].items() if k in TrainSettings.__dataclass_fields__})
    splits = load_splits(s.data, data_dir=s.data_dir, input_size=supernet.spec.input_size,
                         in_chans=supernet.spec.in_chans, search_size=s.search_size, seed=s.seed, limit=s.limit)
    data = [next(iter(make_loader(splits.search, args.search_images, shuffle=False)))]
    calib = make_loader(splits.train_eval, 64, shuffle=True, seed=0)
    val = make_loader(splits.val, 256, shuffle=False)
    costs = S.CostModel(supernet, table)
    top, bottom = costs(supernet.space.largest())["latency_ms"], costs(supernet.space.smallest())["latency_ms"]
    targets = [S.Target.of(latency_ms=bottom + f * (top - bottom)) for f in args.fractions]
    picks = {}
    for criterion in ("drop", "drop-per-cost"):
        t0 = time.perf_counter()
        result = S.greedy_search(supernet, S.Evaluator(supernet, data), costs, targets, criterion=criterion,
                                 cost_kind="latency_ms")
        picks[criterion] = (result, time.perf_counter() - t0)
    print(f"model {supernet.spec.arch} @ {supernet.spec.input_size}px, table {lut}; "
          f"{args.search_images} search images; validation top-1 after BN recalibration (20 batches)")
    print(f"{'target ms':>9s} | {'criterion':14s} {'steps':>5s} {'pred ms':>8s} {'MACs':>8s} {'search %':>8s} {'val %':>6s}")
    for i, t in enumerate(targets):
        for criterion, (result, _) in picks.items():
            entry = result["targets"][i]
            cfg = ChannelConfig(entry["config"])
            val_top1 = evaluate_config(supernet, cfg, calib, val, 20)["top1"]
            print(f"{t.limits['latency_ms']:9.3f} | {criterion:14s} {entry['step']:5d} {entry['latency_ms']:8.3f} "
                  f"{entry['macs'] / 1e6:7.2f}M {entry['accuracy']:8.2f} {val_top1:6.2f}")
    for criterion, (result, secs) in picks.items():
        print(f"{criterion}: {len(result['trajectory'])} steps in {secs:.0f} s")


if __name__ == "__main__":
    main()
