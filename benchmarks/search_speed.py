r"""How long a search takes: the fixed scenario of issue 19, the exact search against the default,
as whole processes, and per-step times at 224 px.

Scenario (a new user on a 2-core machine):

    autoslim-hw train --model mobilenet_v2_cifar --data digits --epochs 1 --out RUN
    autoslim-hw search --checkpoint RUN/supernet.pt --flops 98054016 --flops 39221606

the targets being 50% and 20% of the 1.5x supernet's 195.2M MACs, on the 144 held-out digits
images. The search is timed as a whole process (start-up included), with `--exact` (the paper's
step: the algorithm before the fast policy, trajectory unchanged bit for bit) and with the
defaults, in the same run. Then MobileNetV2 at 224 px (random weights, random BN affines, 64
random images: speed does not depend on the weights): the time of a step, exact and fast.

    python benchmarks/search_speed.py [--run runs/speed] [--skip-exact] [--steps-224 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

SCENARIO = ["--flops", "98054016", "--flops", "39221606"]


def cli(*args, log: Path | None = None) -> float:
    """Wall seconds of one `autoslim-hw` process."""
    start = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as out:
        r = subprocess.run([sys.executable, "-m", "autoslim_hw", *map(str, args)], stdout=out, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"autoslim-hw {' '.join(map(str, args))} failed (exit {r.returncode}); see {log}")
    return time.perf_counter() - start


def per_step_224(steps: int) -> dict:
    import torch

    from autoslim_hw.models import create_model
    from autoslim_hw.search import CostModel, Evaluator, greedy_search
    from autoslim_hw.search.evaluate import bf16_is_fast
    from autoslim_hw.search.policy import EXACT, FAST

    torch.manual_seed(0)
    net = create_model("mobilenet_v2", input_size=224, num_classes=1000)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 3, 224, 224, generator=g), torch.randint(0, 1000, (64,), generator=g))]
    out = {}
    for name, policy in (("exact", EXACT), ("fast", FAST)):
        precision = policy.precision if bf16_is_fast() else "fp32"
        ev = Evaluator(net, batches, precision=precision, channels_last=policy.channels_last)
        times = []
        last = [time.perf_counter()]

        def on_step(step):
            now = time.perf_counter()
            if step["step"] > 0:
                times.append((now - last[0], step["candidates_evaluated"]))
            last[0] = now

        # a far target, so the fast policy takes its far-from-target steps
        top = CostModel(net)(net.space.largest())["macs"]
        from autoslim_hw.search import Target

        greedy_search(net, ev, CostModel(net), [Target.of(macs=0.3 * top)], max_steps=steps, on_step=on_step,
                      policy=policy)
        out[name] = times
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/speed"), help="where the scenario's supernet goes")
    ap.add_argument("--skip-exact", action="store_true", help="time only the default search (the exact one takes an hour)")
    ap.add_argument("--steps-224", type=int, default=2)
    args = ap.parse_args()
    import torch

    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {cpu_model()} ({cpu_id()}), python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    ckpt = args.run / "supernet.pt"
    if not ckpt.exists():
        args.run.parent.mkdir(parents=True, exist_ok=True)
        t = cli("train", "--model", "mobilenet_v2_cifar", "--data", "digits", "--epochs", "1", "--out", args.run,
                log=args.run.parent / f"{args.run.name}-train.log")
        print(f"trained the scenario's supernet in {t:.0f} s")
    times = {}
    for mode in (["default"] if args.skip_exact else ["default", "exact"]):
        out = args.run / f"search-{mode}.json"
        extra = ["--exact"] if mode == "exact" else []
        out.unlink(missing_ok=True)
        times[mode] = cli("search", "--checkpoint", ckpt, *SCENARIO, *extra, "--out", out,
                          log=args.run / f"search-{mode}.log")
        result = json.loads(out.read_text())
        evals = sum(s["candidates_evaluated"] for s in result["trajectory"])
        picks = ", ".join(f"{t['macs'] / 1e6:.2f}M MACs at step {t['step']}" for t in result["targets"])
        print(f"search {mode}: {times[mode]:.1f} s wall, {len(result['trajectory'])} configs, {evals} candidate "
              f"evaluations; picks: {picks}", flush=True)
    if "exact" in times:
        print(f"scenario: exact {times['exact']:.0f} s, default {times['default']:.0f} s: "
              f"{times['exact'] / times['default']:.1f}x faster (goal: <= 90 s)")
    if args.steps_224:
        steps = per_step_224(args.steps_224)
        for mode, rows in steps.items():
            print(f"MobileNetV2-224, 64 images, {mode}: " +
                  ", ".join(f"{t:.1f} s ({n} candidates)" for t, n in rows))
        ex = sum(t for t, _ in steps["exact"]) / len(steps["exact"])
        fa = sum(t for t, _ in steps["fast"]) / len(steps["fast"])
        print(f"MobileNetV2-224 per step: exact {ex:.1f} s, fast {fa:.1f} s ({ex / fa:.1f}x)")


if __name__ == "__main__":
    main()
