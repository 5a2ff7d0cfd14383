"""Images/s of one sandwich step (largest + smallest + 2 random configs, distillation)
vs 4 plain forward+backward passes of the largest config, side by side in one run.

    python benchmarks/train_throughput.py [--batch-size 64] [--rounds 5] [--iters 3]

MobileNetV2-CIFAR 1.5x supernet, 32x32 inputs, CPU. The sandwich step costs less than
4 largest passes because three of its four configs are narrower; the ratio says how much.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from autoslim_hw.models import create_model
from autoslim_hw.train import sandwich_backward, sandwich_configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = create_model("mobilenet_v2_cifar").train()
    x, y = torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))
    rng = random.Random(0)

    def sandwich():
        net.zero_grad(set_to_none=True)
        sandwich_backward(net, net, sandwich_configs(net.space, rng, 2), x, y)

    def four_largest():
        net.zero_grad(set_to_none=True)
        net.set_config(net.space.largest())
        for _ in range(4):
            F.cross_entropy(net(x), y).backward()

    def timed(fn) -> float:
        t = time.perf_counter()
        for _ in range(args.iters):
            fn()
        return (time.perf_counter() - t) / args.iters

    timed(sandwich), timed(four_largest)  # warm-up
    a, b = [], []
    for r in range(args.rounds):
        order = [(sandwich, a), (four_largest, b)] if r % 2 == 0 else [(four_largest, b), (sandwich, a)]
        for fn, out in order:
            out.append(timed(fn))
    sa, sb = statistics.median(a), statistics.median(b)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"sandwich step (4 configs):        {sa * 1e3:8.1f} ms/step  {args.batch_size / sa:7.1f} img/s")
    print(f"4 x largest forward+backward:     {sb * 1e3:8.1f} ms/step  {args.batch_size / sb:7.1f} img/s")
    print(f"sandwich / 4-largest time ratio:  {sa / sb:.2f}")


if __name__ == "__main__":
    main()
