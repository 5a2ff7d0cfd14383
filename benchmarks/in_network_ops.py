r"""Where a lookup table's layer sum differs from the network: each op timed inside networks.

A table times each op alone, in a loop. Inside a network the same op finds other data in the
caches: its input was just written by the op before it, and its weights were evicted by the
rest of the network since the last inference. ONNX Runtime's profiler times every kernel of a
whole network (a session separate from any timed one); this script profiles `--networks`
random sub-networks, matches their kernels to the model's deployed ops (in order; a residual add
is fused into the conv before it, so its table entry is added to that conv's), and prints, per
op of the model, the median ratio of its in-network kernel time to its table entry, and how
many milliseconds it adds to the network beyond its entry on average.

    OMP_NUM_THREADS=1 python benchmarks/in_network_ops.py --lut autoslim_hw/lookup_tables/data/\
mobilenet_v2-224-cpu-1core-onnxruntime-amd-epyc-f25m17.json.gz --networks 20
"""
from __future__ import annotations

import argparse
import platform
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from autoslim_hw.nn.materialize import materialize
from autoslim_hw.lookup_tables import LatencyTable, config_signatures, deployed_ops
from autoslim_hw.models import create_model
from autoslim_hw.profilers import get_backend, pinned_to_core
from autoslim_hw.profilers.devices import cpu_id, cpu_model, measurement_core
from autoslim_hw.profilers.onnxruntime_backend import kernel_times_by_run

_NOT_OPS = ("Reorder", "Flatten", "Reshape", "Transpose")  # layout glue, in no table entry


def kernel_times(backend, path: str, runs: int, warmup: int = 10) -> list[tuple[str, float]]:
    """(ONNX op type, fastest time in ms over `runs` profiled runs) per compute kernel, in order."""
    events = backend.profile_events(path, warmup + runs)
    return [(op_type, min(ms)) for op_type, ms in kernel_times_by_run(events, warmup) if not op_type.startswith(_NOT_OPS)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lut", type=Path, required=True, help="An ONNX Runtime MobileNetV2-224 table.")
    p.add_argument("--networks", type=int, default=20)
    p.add_argument("--runs", type=int, default=60)
    args = p.parse_args()

    table = LatencyTable.load(args.lut)
    if table.metadata.get("runtime") != "onnxruntime":
        raise SystemExit("in_network_ops.py: needs an onnxruntime table (ONNX Runtime's profiler times the kernels)")
    net = create_model("mobilenet_v2", input_size=224)
    backend, ops = get_backend("onnxruntime"), deployed_ops(net)
    rng = random.Random(0)
    inside: dict[str, list[float]] = defaultdict(list)
    alone: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        for k in range(args.networks):
            cfg = net.space.sample(rng)
            merged: list[list] = []  # [op name, table ms]; an add joins the conv before it
            for op, sig in zip(ops, config_signatures(net, cfg, ops)):
                ms = table.entries[sig.key]["ms"] if sig.key in table.entries else table.interpolate(sig)
                if sig.op == "add" and merged:
                    merged[-1][0] += " +add"
                    merged[-1][1] += ms
                else:
                    merged.append([op.name, ms])
                    kinds[op.name] = sig.op
            path = str(Path(tmp) / f"net{k}.onnx")
            backend.convert(materialize(net, cfg).eval(), [(1, 3, 224, 224)], path)
            kernels = kernel_times(backend, path, args.runs)
            if len(kernels) != len(merged):
                raise SystemExit(f"network {k}: {len(kernels)} kernels for {len(merged)} ops (adds fused or not?): "
                                 "this ONNX Runtime fuses differently; matching by order does not hold")
            for (name, ms), (_, t) in zip(merged, kernels):
                inside[name].append(t)
                alone[name].append(ms)
            print(f"network {k + 1}/{args.networks}: kernels {sum(t for _, t in kernels):.3f} ms, "
                  f"table entries {sum(ms for _, ms in merged):.3f} ms", flush=True)

    print(f"\n{cpu_model()} ({cpu_id()}, {platform.machine()}), onnxruntime {backend.version()}, one pinned core; "
          f"{args.networks} random MobileNetV2-224 sub-networks, fastest of {args.runs} profiled runs per kernel; "
          f"table {args.lut.name} ({table.statistic})")
    print(f"{'op':28s} {'kind':6s} {'table ms':>9s} {'inside ms':>9s} {'ratio':>6s} {'extra ms':>9s}")
    rows = []
    for name in inside:
        a, b = np.array(alone[name]), np.array(inside[name])
        rows.append((name, float(np.mean(a)), float(np.mean(b)), float(np.median(b / a)), float(np.mean(b - a))))
    for name, a, b, ratio, extra in rows:
        print(f"{name:28s} {kinds[name.split(' ')[0]]:6s} {a:9.3f} {b:9.3f} {ratio:6.2f} {extra:+9.3f}")
    total_a, total_b = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'all':28s} {'':6s} {total_a:9.3f} {total_b:9.3f} {total_b / total_a:6.2f} {total_b - total_a:+9.3f}")
    top = sorted(rows, key=lambda r: -r[4])[:5]
    print("most extra time inside the network: " + ", ".join(f"{r[0]} {r[4]:+.3f} ms (x{r[3]:.2f})" for r in top))


if __name__ == "__main__":
    main()
