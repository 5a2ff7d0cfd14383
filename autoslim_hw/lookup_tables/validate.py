"""How well a table predicts: random sub-networks measured end to end against its predictions."""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

from ..nn.supernet import Supernet
from ..profilers import Backend, MeasureSettings, pinned_to_core
from ..profilers.devices import DeviceSpec, measurement_core
from .networks import anchors, measure_with_anchors, network_timing
from .table import LatencyTable


def fidelity(predicted, measured) -> dict:
    """How well predictions match measurements: MAPE and max error (percent), Kendall's tau,
    and the fractions within 5% and 10%."""
    import numpy as np
    from scipy.stats import kendalltau

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    err = np.abs(p - m) / m * 100
    tau = float(kendalltau(p, m).statistic) if len(p) > 1 else float("nan")
    return {"mape": float(err.mean()), "max_error": float(err.max()), "kendall_tau": tau,
            "within_5pct": float((err <= 5).mean()), "within_10pct": float((err <= 10).mean())}



def validate_table(table: LatencyTable, supernet: Supernet, backend: Backend, device: DeviceSpec, samples: int,
                   settings: MeasureSettings | None = None, seed: int = 7, progress: bool = True,
                   chunk: int = 25, repeat: bool = False) -> dict:
    """Measure random sub-networks end to end and compare with the table's predictions
    (timed in `settings`, by default as the calibration networks were: `network_timing`).

    The networks and a few of the table's calibration networks (anchors) are timed together
    with `measure_with_anchors` (`chunk` loaded at once, chunks bridged): the anchors' slowdown
    since the build is the machine's drift (`speed_factor`, > 1: slower now); `adjusted` gives
    the same statistics for latencies divided by it, i.e. the table's own error. The top-level
    statistics compare with the raw measured latencies. With `repeat` the same networks are
    timed a second time, in another order: `repeatability` compares the two measurements, the
    floor no table can get under on this machine."""
    import numpy as np
    from rich.progress import Progress

    settings = settings or network_timing(table, supernet)
    core = measurement_core() if device.pin_core else None
    rng = random.Random(seed)
    configs = [supernet.space.sample(rng) for _ in range(samples)]
    predicted = [table.predict(supernet, cfg, memory=False).latency_ms for cfg in configs]
    passes = 2 if repeat else 1
    with tempfile.TemporaryDirectory() as tmp, pinned_to_core(core), Progress(disable=not progress) as bar:
        task = bar.add_task("validating", total=passes * (samples + len(anchors(table, supernet))))
        runs = [measure_with_anchors(table, supernet, configs, backend, Path(tmp), settings, device.threads,
                                     seed=seed + i, chunk=chunk, progress=lambda k: bar.advance(task, k))
                for i in range(passes)]
    measured, factor = runs[0]
    p, m = np.array(predicted), np.array(measured)
    out = {**fidelity(p, m), "samples": samples, "statistic": table.statistic, "predicted_ms": p.tolist(),
           "measured_ms": m.tolist()}
    if factor is not None:
        out["speed_factor"] = factor
        out["adjusted"] = fidelity(p, m / factor)
    if repeat:
        again, factor2 = runs[1]
        # the second session against the first, each corrected for its own drift where it can be
        first, second = (m / factor, np.array(again) / factor2) if factor and factor2 else (m, np.array(again))
        out["repeatability"] = fidelity(second, first)
    return out
