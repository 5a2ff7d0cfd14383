r"""What the command line's process settings (autoslim_hw._process) buy, measured on the search's
own forward pass: MobileNetV2-CIFAR at 1.5x (195.2M MACs, 32 px), 144 images in one batch, as
`autoslim-hw search` scores a candidate (bfloat16 and channels-last where the CPU runs them
natively, else float32).

1. keep_freed_memory (glibc mallopt): each setting in its own process (it cannot be undone),
   alternated A B A B; time per forward, system time and minor page faults per forward.
2. OMP_WAIT_POLICY: PASSIVE (the default the package sets) against ACTIVE (OpenMP's spinning),
   on a quiet machine and with a competing busy process on one core, alternated.

    python benchmarks/process_settings.py [--rounds 2] [--forwards 8]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def child(mallopt: bool, forwards: int) -> dict:
    import resource

    if mallopt:
        from autoslim_hw._process import keep_freed_memory

        assert keep_freed_memory()
    import torch

    from autoslim_hw.models import create_model
    from autoslim_hw.search.evaluate import Evaluator, bf16_is_fast

    torch.manual_seed(0)
    net = create_model("mobilenet_v2_cifar", input_size=32, num_classes=10)
    batches = [(torch.randn(144, 3, 32, 32), torch.randint(0, 10, (144,)))]
    fast = bf16_is_fast()
    ev = Evaluator(net, batches, precision="bf16" if fast else "fp32", channels_last=fast)
    largest = net.space.largest()
    ev.score(largest)  # warm-up
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(forwards):
        ev.score(largest)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    return {"s": (t1 - t0) / forwards, "sys": (r1.ru_stime - r0.ru_stime) / forwards,
            "faults": (r1.ru_minflt - r0.ru_minflt) / forwards, "precision": "bf16" if fast else "fp32"}


def run(mallopt: bool, forwards: int, policy: str) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run([sys.executable, __file__, "--child", str(int(mallopt)), "--forwards", str(forwards)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--forwards", type=int, default=8)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(bool(args.child), args.forwards)))
        return
    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {cpu_model()} ({cpu_id()}), {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
    rows: dict = {}
    for _ in range(args.rounds):
        for mallopt in (False, True):
            rows.setdefault(mallopt, []).append(run(mallopt, args.forwards, "PASSIVE"))
    prec = rows[True][0]["precision"]
    print(f"\n1. keep_freed_memory, {prec}, per forward (median of {args.rounds} processes, OMP_WAIT_POLICY=PASSIVE):")
    for mallopt, name in ((False, "glibc defaults"), (True, "keep_freed_memory")):
        r = rows[mallopt]
        print(f"   {name:18s} {statistics.median(x['s'] for x in r):.3f} s, system "
              f"{statistics.median(x['sys'] for x in r):.3f} s, {statistics.median(x['faults'] for x in r):,.0f} "
              "minor faults")
    base, new = (statistics.median(x["s"] for x in rows[m]) for m in (False, True))
    print(f"   speed-up {base / new:.2f}x")
    print("\n2. OMP_WAIT_POLICY, with keep_freed_memory, per forward:")
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            got: dict = {}
            for _ in range(args.rounds):
                for policy in ("ACTIVE", "PASSIVE"):
                    got.setdefault(policy, []).append(run(True, args.forwards, policy)["s"])
        finally:
            if hog:
                hog.kill()
        a, p = statistics.median(got["ACTIVE"]), statistics.median(got["PASSIVE"])
        print(f"   {'one core busy with another process' if busy else 'quiet machine':36s} ACTIVE {a:.3f} s, "
              f"PASSIVE {p:.3f} s: PASSIVE {a / p:.2f}x as fast")


if __name__ == "__main__":
    main()
