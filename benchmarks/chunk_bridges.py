r"""Networks timed in chunks: with bridges, without, and all in one chunk, side by side.

`measure_interleaved` loads at most `chunk` networks at once. Chunks run minutes apart, and a
VM's speed moves by more than the networks being compared differ, so the chunks' latencies do
not line up. Bridges (a few networks of the first chunk timed again in each later one, whose
latencies are then scaled by them) line them up. This script times the same sub-networks
three ways, in turn, `--repeats` times:

- `one chunk`: all of them interleaved together (the reference; needs memory for all; its own
  row compares one repeat with the next),
- `bridged`: chunks of `--chunk`, bridged (what the toolkit does),
- `unbridged`: chunks of `--chunk`, each on its own (what it did before),

and prints, per way, how far its latencies are from the reference (MAPE, after scaling to the
same mean: the machine's overall speed is not the question), Kendall tau against it, and the
leave-one-out MAPE of the one-slope calibration fit against the table's layer sums.

    OMP_NUM_THREADS=1 python benchmarks/chunk_bridges.py --lut autoslim_hw/lookup_tables/data/\
mobilenet_v2-224-cpu-1core-onnxruntime-amd-epyc-f26m2.json.gz --networks 48 --chunk 16
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from autoslim_hw.lookup_tables import LatencyTable
from autoslim_hw.lookup_tables.networks import measure_networks, sample_configs
from autoslim_hw.lookup_tables.calibration import _loo_mape
from autoslim_hw.lookup_tables.validate import fidelity
from autoslim_hw.models import create_model
from autoslim_hw.profilers import MeasureSettings, get_backend, pinned_to_core
from autoslim_hw.profilers.devices import cpu_id, cpu_model, measurement_core


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lut", type=Path, required=True, help="A MobileNetV2-224 table (its runtime is used).")
    p.add_argument("--networks", type=int, default=48)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="At least 2.")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()

    table = LatencyTable.load(args.lut)
    net = create_model("mobilenet_v2", input_size=224)
    backend = get_backend(table.metadata["runtime"])
    configs = sample_configs(net, args.networks, seed=2024)
    sums = np.array([sum(table.layer_sums(net, c)[0].values()) for c in configs])
    settings = MeasureSettings(warmup=5, runs=20, rounds=args.rounds)
    ways = {"one chunk": (args.networks, 0), "bridged": (args.chunk, 3), "unbridged": (args.chunk, 0)}
    got: dict[str, list[np.ndarray]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(measurement_core()):
        for rep in range(args.repeats):
            for way, (chunk, bridges) in ways.items():
                lat = measure_networks(net, configs, backend, Path(tmp), settings, 1, seed=rep, chunk=chunk,
                                       bridges=bridges)
                got[way].append(np.array(lat))
                print(f"repeat {rep + 1}/{args.repeats}: {way} done", flush=True)
    print(f"\n{cpu_model()} ({cpu_id()}, {platform.machine()}), {backend.name} {backend.version()}, one pinned core; "
          f"{args.networks} MobileNetV2-224 sub-networks, chunks of {args.chunk}, {args.repeats} repeats")
    print(f"{'way':10s}  {'MAPE vs one chunk':>17s}  {'tau vs one chunk':>16s}  {'calibration LOO MAPE':>20s}")
    x = np.stack([sums, np.ones_like(sums)], axis=1)
    for way in ways:
        rows = []
        for rep, lat in enumerate(got[way]):
            # the reference: the same repeat's one chunk; for the one chunk itself, the next
            # repeat's (how well two measurements agree at all)
            ref = got["one chunk"][(rep + (way == "one chunk")) % args.repeats]
            f = fidelity(lat * ref.mean() / lat.mean(), ref)
            rows.append((f["mape"], f["kendall_tau"], _loo_mape(x, lat)))
        mape, tau, loo = np.array(rows).mean(axis=0)
        print(f"{way:10s}  {mape:16.2f}%  {tau:16.3f}  {loo:19.2f}%")


if __name__ == "__main__":
    main()
