"""Greedy search with and without the exact prefix cache, in one run: MobileNetV2-CIFAR
(width 1.0, up to 1.5x) on the held-out digits search split at 32x32. Every step scores the
same candidates from the same state with both evaluators, alternating which goes first,
asserts identical scores, and takes the step both agree on; at the end the stepped
trajectory is checked against `greedy_search` itself.

    python benchmarks/search_speed.py [--steps 5] [--batch-size 64] [--batches 1]
                                      [--checkpoint runs/x/supernet.pt] [--threads N]

Without --checkpoint the supernet is randomly initialised with random BN affines (batch
statistics make candidates differ all the same; speed does not depend on the weights).

Goal (issue 7): the cached search >= 2x faster than the uncached one.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from autoslim_hw import search as S
from autoslim_hw.data import load_splits, make_loader
from autoslim_hw.models import create_model


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def build(args):
    if args.checkpoint:
        from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint

        net, _, _ = model_from_checkpoint(load_checkpoint(args.checkpoint))
        if (net.spec.input_size, net.spec.in_chans) != (args.input_size, 1):
            sys.exit(f"{args.checkpoint} is for {net.spec.in_chans}-channel {net.spec.input_size}px inputs; "
                     f"pass --input-size {net.spec.input_size} (digits are 1-channel)")
        return net
    torch.manual_seed(0)
    net = create_model("mobilenet_v2_cifar", input_size=args.input_size, width_mult=args.width_mult, in_chans=1,
                       num_classes=10)
    with torch.no_grad():  # random BN affines: candidates differ even untrained
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-verify", action="store_true", help="skip the final greedy_search re-run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()} ({os.cpu_count()} CPUs), "
          f"python {platform.python_version()}; load average {load()}")
    net = build(args)
    split = load_splits("digits", input_size=args.input_size, in_chans=1).search
    batches = [b for _, b in zip(range(args.batches), make_loader(split, args.batch_size, shuffle=False))]
    images = sum(len(y) for _, y in batches)
    costs = S.CostModel(net)
    largest = net.space.largest()
    print(f"model: mobilenet_v2_cifar width_mult {args.width_mult} (max 1.5x) at {args.input_size}px, "
          f"{costs(largest)['macs'] / 1e6:.1f}M MACs largest, {len(net.space.free_units)} free units; "
          f"{images} search images in {len(batches)} batch(es)")

    evaluators = {"cached": S.Evaluator(net, batches, cache=True), "uncached": S.Evaluator(net, batches, cache=False)}
    config, current = largest, evaluators["cached"].score(largest)
    assert (current.correct, current.loss_sum) == ((s := evaluators["uncached"].score(largest)).correct, s.loss_sum)
    elapsed = {k: 0.0 for k in evaluators}
    counted = {k: 0 for k in evaluators}
    units, ratios = [], []
    print(f"{'step':>4s} {'cands':>5s} {'cached s':>9s} {'uncached s':>10s} {'speedup':>8s}  slimmed")
    for step in range(1, args.steps + 1):
        cands = S.candidates_of(net, config)
        if not cands:
            break
        order = ["cached", "uncached"] if step % 2 else ["uncached", "cached"]
        scores, times = {}, {}
        for name in order:
            start = time.perf_counter()
            scores[name] = evaluators[name].scores(config, cands)
            times[name] = time.perf_counter() - start
            elapsed[name] += times[name]
            counted[name] += len(cands)
        same = [(a.correct, a.total, a.loss_sum) for a in scores["cached"]] == \
            [(b.correct, b.total, b.loss_sum) for b in scores["uncached"]]
        assert same, f"step {step}: cached and uncached scores differ"
        k = S.choose(current, scores["cached"], None)
        unit, config = cands[k]
        current = scores["cached"][k]
        units.append(unit)
        ratios.append(times["uncached"] / times["cached"])
        print(f"{step:4d} {len(cands):5d} {times['cached']:9.2f} {times['uncached']:10.2f} "
              f"{times['uncached'] / times['cached']:7.2f}x  {unit} (top-1 {current.accuracy:.1f}%)")

    if not args.no_verify:  # the stepped trajectory is the search's own
        ref = S.greedy_search(net, S.Evaluator(net, batches, cache=True), costs, [], max_steps=len(units))
        assert [s["unit"] for s in ref["trajectory"][1:]] == units, "trajectory differs from greedy_search"
        print("trajectory identical: cached == uncached == greedy_search (units, configs, scores)")
    rate = {k: counted[k] / elapsed[k] for k in elapsed}
    print(f"candidates evaluated per second: cached {rate['cached']:.2f}, uncached {rate['uncached']:.2f} "
          f"({counted['cached']} candidates x {images} images each)")
    print(f"total: cached {elapsed['cached']:.1f} s, uncached {elapsed['uncached']:.1f} s, "
          f"speedup {elapsed['uncached'] / elapsed['cached']:.2f}x (median per step {statistics.median(ratios):.2f}x; "
          f"goal >= 2x); load average now {load()}")


if __name__ == "__main__":
    main()
