r"""Does the searched config beat uniform width when both are trained from scratch?

The AutoSlim paper's claim (CIFAR-10 MobileNetV2: 6.8/7.0/8.0% error at 88/59/28M MACs
against 8.1/8.6/10.4% for the default channel configs). For every met latency target of a
search result, retrain from scratch, with the same recipe and seeds:
  - the searched config;
  - the narrowest uniform-width config whose predicted latency is at least the searched
    config's (uniform gets at least the same budget),
and print the validation accuracy side by side. Killed, the same command goes on where it stopped.

    python benchmarks/search_vs_uniform.py --checkpoint runs/demo/supernet.pt \
        --search runs/demo/search.json --epochs 3 --seeds 0 1 --out runs/svu
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint
from autoslim_hw.lookup_tables import LatencyTable
from autoslim_hw.nn.config import ChannelConfig
from autoslim_hw.search import load_result, uniform_baseline
from autoslim_hw.train import TrainSettings
from autoslim_hw.workflows.train import run_training


def uniform_at_least(supernet, table, latency_ms: float) -> tuple[float, ChannelConfig, float]:
    def latency(cfg):
        return table.predict(supernet, cfg, memory=False).latency_ms

    found = uniform_baseline(supernet.space, latency, latency_ms, at_least=True)
    w, cfg = found if found is not None else (supernet.space.width_max, supernet.space.largest())
    return w, cfg, latency(cfg)


def finished(run: Path, epochs: int) -> dict | None:
    """The last epoch's metrics of a run that completed `epochs` (killed and restarted, the
    benchmark skips finished runs and resumes the interrupted one)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    last = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][-1:]
    return last[0] if last and last[0].get("epoch") == epochs else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--search", type=Path, required=True)
    p.add_argument("--lut", type=Path, default=None, help="default: the search result's table")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--limit", type=int, default=None,
                   help="training images per run (default: the supernet's own setting)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    supernet = model_from_checkpoint(ckpt)[0]
    result = load_result(args.search)
    table = LatencyTable.load(args.lut or result["lut"]["path"])
    base = TrainSettings(**{k: v for k, v in ckpt["settings"].items() if k in TrainSettings.__dataclass_fields__})
    if args.limit is not None:
        base = replace(base, limit=args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    for i, t in enumerate(result["targets"]):
        if not t.get("met"):
            continue
        searched = ChannelConfig(t["config"])
        pred = table.predict(supernet, searched).latency_ms
        w, uniform, upred = uniform_at_least(supernet, table, pred)
        for name, cfg, ms in ((f"target {i} searched", searched, pred), (f"target {i} uniform {w:.2f}x", uniform, upred)):
            path = args.out / f"{name.replace(' ', '_')}.json"
            path.write_text(cfg.to_json())
            accs = []
            for seed in args.seeds:
                s = replace(base, arch=str(path), epochs=args.epochs, lr=args.lr, seed=seed, num_random=0,
                            save_every=0)
                run = args.out / f"{name.replace(' ', '_')}-seed{seed}"
                m = finished(run, args.epochs) or run_training(s, run, resume=(run / "supernet.pt").exists(),
                                                               progress=False)
                accs.append(m["val_top1"])
            rows.append({"config": name, "predicted_ms": ms, "top1": accs, "mean": statistics.mean(accs)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'config':32s} {'pred ms':>8s} {'top-1 per seed':>24s} {'mean':>6s}")
    for r in rows:
        print(f"{r['config']:32s} {r['predicted_ms']:8.3f} {' '.join(f'{a:.2f}' for a in r['top1']):>24s} "
              f"{r['mean']:6.2f}")
    print(f"{args.epochs} epochs from scratch per run, seeds {args.seeds}, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
