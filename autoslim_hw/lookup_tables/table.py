"""The lookup-table file and predictions from it.

A table is JSON (gzip when the name ends in .gz): a schema version, metadata (device
spec, runtime and version, CPU model, threads, date, tool version, measurement
settings), per-signature latencies, and per-model end-to-end calibrations: a linear
fit of measured network latency against the per-layer sum, which absorbs what the
layers alone do not show (graph overhead, memory traffic between layers).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import statistics
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_write_bytes
from ..errors import UserError
from ..profilers.base import STATISTICS
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .signatures import DeployedOp, Signature, config_signatures, deployed_ops

# 2: an entry's latency is "ms", in the statistic the metadata names ("latency_statistic": min, p10
# or median, see profilers.base); 1: it was "median_ms", always the median (read as such)
SCHEMA_VERSION = 2
FORMAT = "autoslim-hw/latency-table"


def model_key(supernet: Supernet) -> str:
    """Identifies a supernet's layout: calibrations are per model and input size."""
    spec = supernet.spec.to_dict()
    blob = json.dumps({k: spec[k] for k in ("arch", "width_max", "groups", "divisor", "input_size",
                                            "num_classes", "in_chans", "extra")}, sort_keys=True)
    return f"{spec['arch']}@{spec['input_size']}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


@dataclass
class Prediction:
    latency_ms: float  # calibrated when the table has a calibration for this model
    layer_sum_ms: float
    interpolated: list[str] = field(default_factory=list)  # signatures not measured, estimated
    calibrated: bool = False
    # float32 weights as deployed (BN folded) plus the peak of live activations, batch 1:
    # analytic, equal to ONNX Runtime's profile (see profilers.memory)
    memory_bytes: int = 0


class LatencyTable:
    def __init__(self, metadata: dict, entries: dict | None = None, calibrations: dict | None = None):
        self.metadata = metadata
        self.entries: dict[str, dict] = entries or {}
        self.calibrations: dict[str, dict] = calibrations or {}
        # weak keys: an id() key could be reused by another supernet after this one is freed
        self._ops_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # --- file I/O ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "metadata": self.metadata,
                "calibrations": self.calibrations, "entries": self.entries}

    def save(self, path: str | os.PathLike) -> None:
        data = json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()
        if Path(path).suffix == ".gz":
            data = gzip.compress(data, mtime=0)
        atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"lookup table {path} does not exist; build one with `autoslim-hw profile`")
        try:
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            data = json.loads(raw)
        except (OSError, EOFError, ValueError) as exc:
            raise UserError(f"{path} is not a readable lookup table ({type(exc).__name__}: {str(exc)[:120]})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path} is not an autoslim-hw lookup table (no '{FORMAT}' format tag)")
        version = data.get("schema_version")
        if version not in (1, SCHEMA_VERSION):
            raise UserError(f"{path} has schema version {version}; this autoslim-hw reads 1 and "
                            f"{SCHEMA_VERSION}: rebuild it with `autoslim-hw profile` or upgrade autoslim-hw")
        metadata, entries = data.get("metadata"), data.get("entries", {})
        try:
            if version == 1:  # medians under other names
                metadata = {**metadata, "latency_statistic": "median"}
                entries = {k: {"sig": e["sig"], "ms": e["median_ms"], "p10_ms": e["p10_ms"], "p90_ms": e["p90_ms"],
                               "passes_ms": e.get("passes_ms", [e["median_ms"]])} for k, e in entries.items()}
            bad = next((k for k, e in entries.items() if not isinstance(e["ms"], (int, float)) or "sig" not in e), None)
        except (KeyError, TypeError, AttributeError):
            bad = "?"
        if not isinstance(metadata, dict) or bad is not None:
            what = f"entry {bad!r}" if bad not in (None, "?") else "its metadata or an entry"
            raise UserError(f"{path} is a corrupt lookup table ({what} malformed); "
                            "rebuild it with `autoslim-hw profile`")
        if metadata.get("latency_statistic") not in STATISTICS:
            raise UserError(f"{path} names no known latency statistic ({metadata.get('latency_statistic')!r}; "
                            f"known: {', '.join(STATISTICS)}); rebuild it with `autoslim-hw profile`")
        return cls(metadata, entries, data.get("calibrations", {}))

    @property
    def statistic(self) -> str:
        """What the entries, calibration networks and predictions measure: "min" (the fastest
        of the timed runs: host tables), "p10" (earlier host tables) or "median"
        (older tables, phones)."""
        return self.metadata["latency_statistic"]

    def check_target(self, device: str, runtime: str, allow_mismatch: bool = False) -> None:
        have = (self.metadata.get("device", {}).get("name"), self.metadata.get("runtime"))
        if have != (device, runtime) and not allow_mismatch:
            raise UserError(f"lookup table is for device {have[0]!r} with {have[1]!r}, but {device!r} with "
                            f"{runtime!r} was asked for; use a matching table or pass --allow-mismatch")
        why = self.other_host()
        if why and not allow_mismatch:
            raise UserError(f"{why}; build this host's table with `autoslim-hw profile` or pass --allow-mismatch")

    def other_host(self) -> str | None:
        """Why a table of a host device (cpu-1core: "this computer, one core") does not describe
        this computer: it was measured on another CPU, told by family and model numbers
        (`cpu_id`) where the table records them, else by the CPU's name. None when it does, and
        for phones."""
        from ..profilers.devices import cpu_id, cpu_model

        md, dev = self.metadata, self.metadata.get("device", {})
        if dev.get("kind", "host") != "host":
            return None
        theirs_id = md.get("cpu_id") or dev.get("cpu_id")
        theirs = md.get("cpu_model") or dev.get("cpu_model")
        if theirs_id and theirs_id != cpu_id():
            return (f"lookup table was measured on {theirs} ({theirs_id}), but this host is {cpu_model()} "
                    f"({cpu_id()}): its latencies do not hold here")
        if theirs_id or not theirs or theirs == cpu_model():
            return None
        return f"lookup table was measured on {theirs}, but this host is {cpu_model()}: its latencies do not hold here"

    # --- prediction ---------------------------------------------------------------------------
    def add(self, sig: Signature, ms: float, p10_ms: float, p90_ms: float) -> None:
        """One pass's measurement of `sig`: `ms` in the table's statistic, and the runs' spread.
        An entry measured in several passes (at different times) keeps each pass's latency; its
        latency is their median, its spread theirs."""
        old = self.entries.get(sig.key)
        passes = (old.get("passes_ms", [old["ms"]]) if old else []) + [ms]
        self.entries[sig.key] = {"sig": sig.to_dict(), "ms": statistics.median(passes),
                                 "p10_ms": min(p10_ms, old["p10_ms"]) if old else p10_ms,
                                 "p90_ms": max(p90_ms, old["p90_ms"]) if old else p90_ms, "passes_ms": passes}

    def passes(self, key: str) -> int:
        """How many times an entry was measured (0: not yet)."""
        entry = self.entries.get(key)
        return 0 if entry is None else len(entry.get("passes_ms", [entry["ms"]]))

    def order_entries(self, keys: list[str]) -> None:
        """Entries in this order (the enumeration's, readable), others after: builds measure in random order."""
        rank = {k: i for i, k in enumerate(keys)}
        self.entries = dict(sorted(self.entries.items(), key=lambda kv: rank.get(kv[0], len(rank))))

    def _ops(self, supernet: Supernet) -> list[DeployedOp]:
        if supernet not in self._ops_cache:
            self._ops_cache[supernet] = deployed_ops(supernet)
        return self._ops_cache[supernet]

    def layer_sums(self, supernet: Supernet, config: ChannelConfig) -> tuple[dict[str, float], list[str]]:
        """Summed per-layer latency by op group (conv, dwconv, other), and the interpolated keys."""
        sums, estimated = {g: 0.0 for g in OP_GROUPS}, []
        for sig in config_signatures(supernet, config, self._ops(supernet)):
            entry = self.entries.get(sig.key)
            if entry is not None:
                ms = entry["ms"]
            else:
                ms = self.interpolate(sig)
                estimated.append(sig.key)
            sums[op_group(sig.op)] += ms
        return sums, estimated

    def layer_sum(self, supernet: Supernet, config: ChannelConfig) -> tuple[float, list[str]]:
        sums, estimated = self.layer_sums(supernet, config)
        return sum(sums.values()), estimated

    def predict(self, supernet: Supernet, config: ChannelConfig, memory: bool = True) -> Prediction:
        """Latency and (unless memory=False, which callers that count memory themselves pass)
        deployed memory of `config`."""
        sums, estimated = self.layer_sums(supernet, config)
        raw = sum(sums.values())
        cal = self.calibrations.get(model_key(supernet))
        uses_weights = cal is not None and ("weights_mb" in cal.get("coef", {}) or "knee_mb" in cal)
        mem = None
        if memory or uses_weights:  # counted once for both
            from ..counting import memory_counts

            mem = memory_counts(supernet, config)
        memory_bytes = mem.deployed_bytes if memory else 0
        if cal is None:
            return Prediction(raw, raw, estimated, False, memory_bytes)
        if uses_weights:
            sums = {**sums, "weights_mb": weights_mb(supernet, config, mem)}
        return Prediction(apply_calibration(cal, sums), raw, estimated, True, memory_bytes)

    def features(self, supernet: Supernet, config: ChannelConfig) -> dict[str, float]:
        """What a calibration may weigh: the layer sums by op group, and the deployed weights (MB)."""
        return {**self.layer_sums(supernet, config)[0], "weights_mb": weights_mb(supernet, config)}

    def interpolate(self, sig: Signature) -> float:
        """Estimate an unmeasured signature from measured ones of the same op, size, kernel,
        stride and activation: linear in (Cin, Cout) inside their hull, a least-squares fit
        on the op's MACs outside it. With no such neighbours there is nothing honest to say."""
        import numpy as np
        from scipy.interpolate import griddata

        family = [e for e in self.entries.values() if _family(e["sig"]) == _family(sig.to_dict())]
        if not family:
            raise UserError(f"lookup table has no measurement near {sig.key}; it was built for other "
                            "layers: run `autoslim-hw profile --resume` for this model")
        pts = np.array([[e["sig"]["cin"], e["sig"]["cout"]] for e in family], dtype=float)
        ms = np.array([e["ms"] for e in family])
        if len(family) >= 3 and np.linalg.matrix_rank(pts - pts[0]) == 2:
            v = griddata(pts, ms, np.array([[sig.cin, sig.cout]], dtype=float), method="linear")[0]
            if np.isfinite(v):
                return float(v)
        work = np.array([_work(e["sig"]) for e in family], dtype=float)
        if len(family) == 1 or np.ptp(work) == 0:
            return float(ms.mean() * _work(sig.to_dict()) / max(work.mean(), 1))
        slope, intercept = np.polyfit(work, ms, 1)
        return float(max(intercept + slope * _work(sig.to_dict()), 0.0))

    def coverage(self, supernet: Supernet) -> tuple[int, int]:
        from .signatures import enumerate_signatures

        sigs = enumerate_signatures(supernet, self._ops(supernet))
        return sum(s.key in self.entries for s in sigs), len(sigs)


OP_GROUPS = ("conv", "dwconv", "other")


def op_group(op: str) -> str:
    return op if op in ("conv", "dwconv") else "other"


def weights_mb(supernet: Supernet, config: ChannelConfig, mem=None) -> float:
    """float32 weights of the config as deployed (BN folded), in MB (`mem`: its memory_counts,
    when already counted)."""
    from ..counting import memory_counts

    return (mem or memory_counts(supernet, config)).folded_param_bytes / 1e6


def apply_calibration(cal: dict, features: dict[str, float]) -> float:
    """Calibrated latency from per-group layer sums (and the weights in MB, for fits that use
    them). A fit with "coef" weighs its terms separately: alone, each kind of op runs at its own
    distance from its speed inside a network (data layout, cache reuse between layers), and a
    network whose weights outgrow the cache streams them from memory on every run, which a
    single op timed in a loop never does. Older tables and imported phone tables may carry only
    one slope for the whole sum."""
    if "knee_mb" in cal:
        features = {**features, OVER_KNEE: max(0.0, features.get("weights_mb", 0.0) - cal["knee_mb"])}
    if "coef" in cal:
        return sum(c * features.get(term, 0.0) for term, c in cal["coef"].items()) + cal["coef_intercept"]
    return cal["slope"] * sum(features.get(g, 0.0) for g in OP_GROUPS) + cal["intercept"]


class CalibrationSkipped(Exception):
    """The calibration networks cannot give a usable fit; predictions stay layer sums."""


# The fits a calibration chooses from: terms (each a sum of features sharing one weight).
_MODELS = {
    "groups": [("conv",), ("dwconv",), ("other",)],
    "sum+weights": [OP_GROUPS, ("weights_mb",)],
    "groups+weights": [("conv",), ("dwconv",), ("other",), ("weights_mb",)],
}


# The share of leave-one-out error each weight beyond the one slope must remove to be kept.
EXTRA_WEIGHT_COST = 0.05


def fit_calibration(features: list[dict[str, float]], measured: list[float]) -> dict:
    """measured ~ slope * layer sum + intercept, always (and for display); then, with enough
    networks, the richer fits of _MODELS (per op group, plus the weights when the features have
    them). Each is scored by how well it predicts networks left out of it (leave-one-out MAPE),
    and each weight beyond the one slope must earn its keep: a fit with k extra weights scores
    its MAPE / (1 - k * EXTRA_WEIGHT_COST); the lowest score wins, provided its weights are not
    negative. Extra weights fit noise readily, so each pays; the weights term, one extra weight,
    is what a network streaming its weights from beyond the cache costs (benchmarks/RESULTS.md,
    benchmarks/calibration_fit.py). With 9 networks or more, the layer sum plus the weights beyond
    a knee (the cache's share for weights, searched: `_knee_fit`) competes too, scored by nested
    leave-one-out; it records `knee_mb`.
    Raises CalibrationSkipped when no increasing line fits: a flat or falling one would rank
    sub-networks alike or backwards."""
    import numpy as np
    from scipy.stats import linregress

    totals = [sum(f.get(g, 0.0) for g in OP_GROUPS) for f in features]
    if len(measured) < 2:
        raise CalibrationSkipped(f"{len(measured)} calibration network(s) measured; predictions are layer sums")
    if np.ptp(totals) <= 0:
        raise CalibrationSkipped("the calibration networks have equal layer sums; predictions are layer sums")
    fit = linregress(totals, measured)
    if not (fit.slope > 0 and math.isfinite(fit.rvalue)):
        raise CalibrationSkipped(f"the fit on {len(measured)} networks is not increasing (slope {fit.slope:.3g}); "
                                 "predictions are layer sums")
    out = {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue ** 2),
           "samples": len(measured)}
    y = np.array(measured)
    if len(measured) >= 6:
        out["loo_mape"] = _loo_mape(np.array([[t, 1.0] for t in totals]), y)
    best = None
    for name, terms in _MODELS.items():
        if len(measured) < 3 * (len(terms) + 1) or any(t not in features[0] for group in terms for t in group):
            continue
        x = design_matrix(features, terms)
        if np.linalg.matrix_rank(x) < x.shape[1]:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if (coef[:-1] < 0).any() or not (coef[0] > 0):
            continue
        loo = _loo_mape(x, y)
        score = loo / (1 - (len(terms) - 1) * EXTRA_WEIGHT_COST)
        if score < out["loo_mape"] and (best is None or score < best[0]):
            best = (score, loo, name, terms, coef, x)
    knee = _knee_fit(features, y) if len(measured) >= 9 and "weights_mb" in features[0] else None
    if knee is not None:
        loo, k, coef, x = knee
        score = loo / (1 - EXTRA_WEIGHT_COST)  # one weight; choosing the knee is paid inside `loo`
        if score < out["loo_mape"] and (best is None or score < best[0]):
            best = (score, loo, "sum+weights beyond a knee", KNEE_TERMS, coef, x)
            out["knee_mb"] = k
    if best is not None:
        _, loo, name, terms, coef, x = best
        resid = y - x @ coef
        out.update(fit=name, coef={t: float(c) for group, c in zip(terms, coef) for t in group},
                   coef_intercept=float(coef[-1]), coef_loo_mape=loo,
                   coef_r2=float(1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()))
    return out


# A network whose weights fit in the core's cache re-reads them from there on every run; beyond
# that, each further MB streams from farther out. On the Intel VM (2 MB L2 per core) the demo
# model's networks, 0.07-3.6 MB of weights, ran as their layer sums plus a cost only for the
# weights beyond about 1 MB: a straight weights term cannot bend there (benchmarks/RESULTS.md,
# "weights beyond a knee"). The knee is searched on this grid, 0.125 to 16 MB, steps of 2^(1/4).
OVER_KNEE = "weights_over_knee_mb"
KNEE_TERMS = [OP_GROUPS, (OVER_KNEE,)]
KNEE_GRID_MB = tuple(0.125 * 2 ** (i / 4) for i in range(29))


def _knee_rows(features: list[dict[str, float]], knee: float):
    import numpy as np

    return np.array([[sum(f[g] for g in OP_GROUPS), max(0.0, f["weights_mb"] - knee), 1.0] for f in features])


def _loo_residuals(x, y):
    """Leave-one-out residuals of a least-squares fit, exactly, from one fit (r_i / (1 - h_ii));
    None when a network alone fixes a weight (leverage 1: left out, nothing predicts it)."""
    import numpy as np

    pinv = np.linalg.pinv(x)
    hat = np.einsum("ij,ji->i", x, pinv)
    if hat.max() > 1 - 1e-9:
        return None
    return (y - x @ (pinv @ y)) / (1 - hat)


def _best_knee(features: list[dict[str, float]], y):
    """(leave-one-out MAPE, knee, coef, rows) of the best knee strictly inside the networks' weights
    (elsewhere the term is zero for all of them, or a plain weights term), both weights positive."""
    import numpy as np

    w = [f["weights_mb"] for f in features]
    best = None
    for k in KNEE_GRID_MB:
        if not min(w) < k < max(w):
            continue
        x = _knee_rows(features, k)
        if np.linalg.matrix_rank(x) < 3:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if (coef[:2] <= 0).any():
            continue
        resid = _loo_residuals(x, y)
        if resid is None:
            continue
        loo = float(np.mean(np.abs(resid) / y) * 100)
        if best is None or loo < best[0]:
            best = (loo, k, coef, x)
    return best


def _knee_fit(features: list[dict[str, float]], y):
    """The knee fit, scored honestly: each network left out is predicted by the fit whose knee was
    chosen without it (nested leave-one-out), so the search over knees does not flatter it.
    None when no knee fits."""
    import numpy as np

    best = _best_knee(features, y)
    if best is None:
        return None
    errors = []
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        inner = _best_knee([features[j] for j in keep], y[keep])
        if inner is None:
            return None
        errors.append(abs(_knee_rows([features[i]], inner[1])[0] @ inner[2] - y[i]) / y[i])
    _, k, coef, x = best
    return float(np.mean(errors) * 100), k, coef, x


def design_matrix(features: list[dict[str, float]], terms: list[tuple[str, ...]]):
    """One row per network: each term's features summed (they share one weight), then 1 (the intercept)."""
    import numpy as np

    return np.array([[sum(f[t] for t in group) for group in terms] + [1.0] for f in features])


def _loo_mape(x, y) -> float:
    """Mean absolute percentage error of a least-squares fit on each point left out of it."""
    import numpy as np

    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
        errors.append(abs(x[i] @ c - y[i]) / y[i])
    return float(np.mean(errors) * 100)


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


def _family(sig: dict) -> tuple:
    return (sig["op"], sig["h"], sig["w"], sig["kernel"], sig["stride"], sig["padding"], sig["act"])


def _work(sig: dict) -> float:
    """Multiply-adds of the op (elements for adds and pools): the natural latency scale."""
    hw = sig["h"] * sig["w"] / (sig["stride"] ** 2)
    if sig["op"] in ("conv", "dwconv"):
        return sig["cin"] // sig["groups"] * sig["cout"] * sig["kernel"] ** 2 * hw
    if sig["op"] == "linear":
        return sig["cin"] * sig["cout"]
    return sig["cin"] * sig["h"] * sig["w"]
