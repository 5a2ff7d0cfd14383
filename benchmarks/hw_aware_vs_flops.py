r"""Does hardware-aware search pay? Accuracy per *measured* millisecond of four families of
configs at the same latency targets, each retrained from scratch with several seeds:

  (a) paper           the AutoSlim criterion (smallest accuracy drop), stopped at each latency target;
  (b) latency-guided  smallest drop per predicted millisecond saved (--criterion drop-per-cost);
  (c) flops-guided    smallest drop per MAC saved (--cost flops), stopped at the same latency;
  (d) uniform         the widest uniform width whose predicted latency is within the target.

Every pick is exported to ONNX and timed on one pinned core, all in interleaved rounds with the
table's calibration networks (so a drifting machine slows every pick alike), then retrained from
scratch (`train --arch` recipe) with each seed. Printed: mean +- sd top-1 per family and target,
the paired difference against uniform (same seed, same target) with its sd, and a plot of
accuracy against measured latency. Killed, the same command goes on where it stopped (searches
resume, finished retrainings are kept).

    python benchmarks/hw_aware_vs_flops.py --checkpoint runs/c10/supernet.pt \
        --fractions 0.75 0.5 0.3 --seeds 0 1 2 --epochs 6 --limit 10000 --out runs/hw_vs_flops
    (training and search run on a CUDA GPU where there is one; --lut names a table, else this host's
    cpu-1core ONNX Runtime table is found or profiled)
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from search_vs_uniform import finished  # the script's folder is on sys.path

FAMILIES = (("paper", "drop", None), ("latency-guided", "drop-per-cost", "latency-ms"),
            ("flops-guided", "drop-per-cost", "flops"))


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a supernet (autoslim-hw train)")
    p.add_argument("--lut", type=Path, default=None)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.3],
                   help="latency targets as fractions of the way from the smallest to the largest config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6, help="retraining epochs")
    p.add_argument("--limit", type=int, default=None, help="retraining images (default: the supernet's)")
    p.add_argument("--search-batches", type=int, default=None, help="search images, in batches of 2048")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    from autoslim_hw._process import keep_freed_memory

    keep_freed_memory()
    from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint
    from autoslim_hw.lookup_tables.networks import measure_with_anchors, network_timing
    from autoslim_hw.nn.config import ChannelConfig
    from autoslim_hw.profilers import get_backend, pinned_to_core
    from autoslim_hw.profilers.devices import cpu_id, cpu_model, measurement_core
    from autoslim_hw.search.costs import CostModel, Target, uniform_baseline
    from autoslim_hw.train import TrainSettings
    from autoslim_hw.workflows.plots import families_plot
    from autoslim_hw.workflows.search import resolve_table, run_search
    from autoslim_hw.workflows.train import run_training

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {cpu_model()} ({cpu_id()}); {time.strftime('%Y-%m-%d')}", flush=True)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(args.checkpoint)
    supernet = model_from_checkpoint(ckpt)[0]

    # 1. the table (this host's, profiled if missing), the targets, and the three searches
    table, lut = resolve_table(supernet, args.checkpoint, args.lut, None, None, needed=True, profile_missing=True,
                               allow_mismatch=args.lut is not None, log=print)
    costs = CostModel(supernet, table)
    top, bottom = (costs(c)["latency_ms"] for c in (supernet.space.largest(), supernet.space.smallest()))
    targets = [Target.of(latency_ms=round(bottom + f * (top - bottom), 4)) for f in args.fractions]
    print("targets: " + "; ".join(t.describe() for t in targets) + f" (range {bottom:.3f}-{top:.3f} ms)")
    results = {}
    for family, criterion, cost in FAMILIES:
        path = args.out / f"search_{family}.json"
        ts = time.perf_counter()
        run = run_search(targets, args.checkpoint, lut=lut, criterion=criterion, cost=cost, out=path,
                         batches=args.search_batches, resume=path.exists(), log=lambda _: None,
                         plots=family == "paper")
        results[family] = run.result
        print(f"search {family}: {len(run.result['trajectory'])} steps, {time.perf_counter() - ts:.0f} s "
              f"({run.images} images)", flush=True)

    def latency(cfg):
        return table.predict(supernet, cfg, memory=False).latency_ms

    # 2. the picks, and the uniform baseline at each target
    picks = []  # (family, target index, config)
    for i, t in enumerate(targets):
        limit = t.limits["latency_ms"]
        for family, *_ in FAMILIES:
            picks.append((family, i, ChannelConfig(results[family]["targets"][i]["config"])))
        base = uniform_baseline(supernet.space, latency, limit)
        if base is not None:
            picks.append((f"uniform {base[0]:.2f}x", i, base[1]))

    # 3. every pick exported and timed on one core, interleaved with the table's calibration networks
    measured_path = args.out / "measured.json"
    keys = [f"{f}|{i}" for f, i, _ in picks]
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else {}
    if set(measured.get("keys", [])) != set(keys):
        backend = get_backend(table.metadata["runtime"])
        with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
            ms, factor = measure_with_anchors(table, supernet, [c for _, _, c in picks], backend, Path(tmp),
                                              network_timing(table, supernet), 1)
        measured = {"keys": keys, "ms": dict(zip(keys, ms)), "factor": factor}
        measured_path.write_text(json.dumps(measured, indent=1))

    # 4. retraining from scratch, each pick with each seed
    base = TrainSettings(**{k: v for k, v in ckpt["settings"].items() if k in TrainSettings.__dataclass_fields__})
    base = replace(base, num_random=0, save_every=0, lr=None, batch_size=None, warmup_epochs=None,
                   epochs=args.epochs, **({"limit": args.limit} if args.limit else {}))
    rows = []
    for family, i, cfg in picks:
        name = f"{family.split()[0]}-t{i}"
        arch = args.out / f"{name}.json"
        arch.write_text(cfg.to_json())
        accs = []
        for seed in args.seeds:
            run_dir = args.out / f"{name}-seed{seed}"
            m = finished(run_dir, args.epochs) or run_training(replace(base, arch=str(arch), seed=seed), run_dir,
                                                               resume=(run_dir / "supernet.pt").exists(), progress=False)
            accs.append(m["val_top1"])
        c = costs(cfg)
        rows.append({"family": family, "target": i, "limit_ms": targets[i].limits["latency_ms"],
                     "predicted_ms": c["latency_ms"], "measured_ms": measured["ms"][f"{family}|{i}"],
                     "macs": c["macs"], "top1": accs})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))

    # 5. the table, paired against uniform, and the plot
    print("\n| target | family | measured ms | MACs | top-1 mean +- sd | vs uniform (paired, mean +- sd) |")
    print("|---|---|---|---|---|---|")
    for i, t in enumerate(targets):
        uni = next((r for r in rows if r["target"] == i and r["family"].startswith("uniform")), None)
        for r in (r for r in rows if r["target"] == i):
            diff = "-"
            if uni is not None and r is not uni:
                d = [a - b for a, b in zip(r["top1"], uni["top1"])]
                diff = f"{statistics.mean(d):+.2f} +- {sd(d):.2f}"
            print(f"| {t.limits['latency_ms']:.3f} ms | {r['family']} | {r['measured_ms']:.3f} | "
                  f"{r['macs'] / 1e6:.2f}M | {statistics.mean(r['top1']):.2f} +- {sd(r['top1']):.2f} | {diff} |")
    factor = measured.get("factor")
    print(f"\nmeasured with the table's calibration networks alongside: they ran {factor:.2f}x their build time"
          if factor else "")
    plot = families_plot([(r["family"].split()[0], r["measured_ms"], statistics.mean(r["top1"])) for r in rows],
                         args.out / "accuracy_vs_latency.png",
                         f"retrained {args.epochs} epochs, mean of seeds {args.seeds}")
    print(f"plot: {plot}; {time.perf_counter() - t0:.0f} s in all, retraining {args.epochs} epochs, seeds {args.seeds}")


if __name__ == "__main__":
    main()
