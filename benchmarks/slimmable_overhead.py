"""Forward+backward time of the supernet at a config vs the materialized plain model
of the same widths, side by side in one run (interleaved rounds, medians).

    python benchmarks/slimmable_overhead.py [--rounds 7] [--iters 5]

Goal (issue 3): overhead <= 10%.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model


def step_time(model, x, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    return (time.perf_counter() - start) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'case':34s} {'supernet ms':>12s} {'plain ms':>10s} {'overhead':>9s}")
    for model_name, size, batch in (("mobilenet_v2_cifar", 32, 64), ("mobilenet_v2", 224, 8)):
        net = create_model(model_name).train()
        x = torch.randn(batch, 3, size, size)
        for width in (0.5, 1.0, 1.5):
            cfg = net.space.uniform(width)
            net.set_config(cfg)
            plain = materialize(net, cfg).train()
            step_time(net, x, 2), step_time(plain, x, 2)  # warm-up
            sup, pla = [], []
            for r in range(args.rounds):  # interleave, alternating who goes first
                pair = [(net, sup), (plain, pla)] if r % 2 == 0 else [(plain, pla), (net, sup)]
                for model, out in pair:
                    out.append(step_time(model, x, args.iters))
            s, p = statistics.median(sup) * 1e3, statistics.median(pla) * 1e3
            case = f"{model_name} {size}px b{batch} {width}x"
            print(f"{case:34s} {s:12.1f} {p:10.1f} {100 * (s / p - 1):+8.1f}%")


if __name__ == "__main__":
    main()
