r"""How well a supernet's accuracy predicts retrained accuracy: the search's own fidelity figure.

The greedy search ranks configs by their accuracy on the supernet's shared weights (after BN
recalibration). That ranking is only useful if it is the ranking the same configs would have
when trained on their own. For configs spread over the cost range (uniform widths and random
nonuniform ones), this measures both numbers:

- the supernet-weight accuracy, BN recalibrated (what the search sees);
- the accuracy when the config is retrained from scratch (`train --arch`), for several seeds;

and prints the Kendall tau between them, next to the tau between two retraining seeds (the
ceiling: how well one retraining predicts another) and the spread of the retrained runs.

    python benchmarks/proxy_fidelity.py CHECKPOINT [--configs 10] [--seeds 0 1] [--epochs 15]
        [--out runs/proxy_fidelity]

Retrained runs already in --out are reused, so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from scipy.stats import kendalltau

from autoslim_hw.counting import count
from autoslim_hw.data import make_loader
from autoslim_hw.nn.config import ChannelConfig
from autoslim_hw.nn.evaluate import evaluate_config
from autoslim_hw.train import TrainSettings, train
from autoslim_hw.workflows.common import calibration_loader, checkpoint_splits, open_checkpoint


def spread_configs(space, n: int, seed: int = 0) -> list[tuple[str, ChannelConfig]]:
    """About half uniform widths (evenly over the ladder), the rest random configs at random
    overall widths (ChannelSpace.sample_around): n distinct configs over the whole cost range."""
    ladder = space.uniform_ladder(step=0.05)
    n_uniform = (n + 1) // 2
    picks = [ladder[round(i * (len(ladder) - 1) / max(1, n_uniform - 1))] for i in range(n_uniform)]
    out = [(f"uniform {w:.2f}x", cfg) for w, cfg in picks]
    rng = random.Random(seed)
    seen = {cfg for _, cfg in out}
    while len(out) < n:
        cfg = space.sample_around(rng)
        if cfg not in seen:
            seen.add(cfg)
            out.append((f"random {len(out) - n_uniform}", cfg))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=15, help="retraining epochs per config")
    ap.add_argument("--out", type=Path, default=Path("runs/proxy_fidelity"))
    args = ap.parse_args()
    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {cpu_model()} ({cpu_id()}); {time.strftime('%Y-%m-%d')}")
    ck = open_checkpoint(args.checkpoint)
    net, settings = ck.supernet, ck.settings
    splits = checkpoint_splits(settings, net)
    calib, val = calibration_loader(splits, seed=0), make_loader(splits.val, 256, shuffle=False)
    base = TrainSettings(**{k: v for k, v in settings.items() if k in TrainSettings.__dataclass_fields__})
    rows = []
    for name, cfg in spread_configs(net.space, args.configs):
        proxy = evaluate_config(net, cfg, calib, val, settings.get("eval_batches", 20))["top1"]
        retrained = []
        for seed in args.seeds:
            run = args.out / f"{name.replace(' ', '_')}-seed{seed}"
            done = run / "done.json"
            if not done.exists():
                s = replace(base, epochs=args.epochs, seed=seed, arch=name, batch_size=None, lr=None,
                            warmup_epochs=None)
                m = train(s, run, progress=False, arch=cfg)
                done.write_text(json.dumps(m))
            retrained.append(json.loads(done.read_text())["val_top1"])
        rows.append({"name": name, "macs": count(net, cfg).macs, "proxy": proxy, "retrained": retrained})
        print(f"{name:14s} {rows[-1]['macs'] / 1e6:7.2f}M MACs  supernet {proxy:6.2f}  retrained "
              + " ".join(f"{a:6.2f}" for a in retrained), flush=True)
    rows.sort(key=lambda r: r["macs"])
    proxy = [r["proxy"] for r in rows]
    mean = [statistics.mean(r["retrained"]) for r in rows]
    tau = kendalltau(proxy, mean).statistic
    per_seed = [kendalltau(proxy, [r["retrained"][i] for r in rows]).statistic for i in range(len(args.seeds))]
    between = [kendalltau([r["retrained"][i] for r in rows], [r["retrained"][j] for r in rows]).statistic
               for i, j in itertools.combinations(range(len(args.seeds)), 2)]
    sd = [statistics.stdev(r["retrained"]) for r in rows] if len(args.seeds) > 1 else [0.0]
    macs_tau = kendalltau([r["macs"] for r in rows], mean).statistic
    print(f"\nKendall tau, supernet accuracy vs mean retrained accuracy: {tau:.3f} "
          f"(per seed: {', '.join(f'{t:.3f}' for t in per_seed)})")
    if between:
        print(f"Kendall tau between retraining seeds (the ceiling): {', '.join(f'{t:.3f}' for t in between)}")
    print(f"retrained accuracy: seed standard deviation per config, median {statistics.median(sd):.2f} points, "
          f"max {max(sd):.2f}")
    print(f"for comparison, Kendall tau of MACs alone vs retrained accuracy: {macs_tau:.3f}")
    (args.out / "proxy_fidelity.json").write_text(json.dumps({"rows": rows, "tau": tau, "per_seed": per_seed,
                                                                "between_seeds": between}, indent=1))


if __name__ == "__main__":
    main()
