r"""Does every width of a supernet learn? Accuracy after BN recalibration of every uniform width
(0.15x to 1.5x of the base, on the search grid) and of random nonuniform configs: around a
random overall width (as training draws them) and per unit (the paper's sampling).

A good supernet's accuracy rises with width (give or take noise); a dip in the middle means
the widths the greedy search walks through were badly trained, and its choices are noise.
The same table is `autoslim-hw eval --checkpoint C --widths`; this script adds a markdown table
for RESULTS and the machine.

    python benchmarks/supernet_widths.py CHECKPOINT [--random 5] [--calib-batches 20] [--plot widths.png]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from autoslim_hw._process import keep_freed_memory
from autoslim_hw.workflows.evaluate import plot_width_profile, width_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--random", type=int, default=5, help="random configs of each kind")
    ap.add_argument("--calib-batches", type=int, default=20)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    keep_freed_memory()  # as the command line does: without it, most of the time went to page faults
    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {cpu_model()} ({cpu_id()}); {time.strftime('%Y-%m-%d')}")
    prof = width_profile(args.checkpoint, args.random, args.calib_batches)
    print("| config | MACs | top-1 % |\n|---|---|---|")
    for r in prof["rows"]:
        print(f"| {r['name']} | {r['macs'] / 1e6:.2f}M | {r['top1']:.2f} |")
    print(f"largest fall of accuracy as the uniform width grows: {prof['largest_fall']:.2f} points (one score's "
          f"standard error {prof['score_se']:.2f} on {prof['val_images']} images)")
    if args.json:
        args.json.write_text(json.dumps(prof, indent=1))
    if args.plot:
        plot_width_profile(prof, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
