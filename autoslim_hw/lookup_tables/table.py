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
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_write_bytes
from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .signatures import DeployedOp, Signature, config_signatures, deployed_ops

SCHEMA_VERSION = 1
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
        if data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{path} has schema version {data.get('schema_version')}; this autoslim-hw reads "
                            f"{SCHEMA_VERSION}: rebuild it with `autoslim-hw profile` or upgrade autoslim-hw")
        return cls(data["metadata"], data.get("entries", {}), data.get("calibrations", {}))

    def check_target(self, device: str, runtime: str, allow_mismatch: bool = False) -> None:
        have = (self.metadata.get("device", {}).get("name"), self.metadata.get("runtime"))
        if have != (device, runtime) and not allow_mismatch:
            raise UserError(f"lookup table is for device {have[0]!r} with {have[1]!r}, but {device!r} with "
                            f"{runtime!r} was asked for; use a matching table or pass --allow-mismatch")

    # --- prediction ---------------------------------------------------------------------------
    def add(self, sig: Signature, median_ms: float, p10_ms: float, p90_ms: float) -> None:
        self.entries[sig.key] = {"sig": sig.to_dict(), "median_ms": median_ms, "p10_ms": p10_ms, "p90_ms": p90_ms}

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
                ms = entry["median_ms"]
            else:
                ms = self.interpolate(sig)
                estimated.append(sig.key)
            sums[op_group(sig.op)] += ms
        return sums, estimated

    def layer_sum(self, supernet: Supernet, config: ChannelConfig) -> tuple[float, list[str]]:
        sums, estimated = self.layer_sums(supernet, config)
        return sum(sums.values()), estimated

    def predict(self, supernet: Supernet, config: ChannelConfig) -> Prediction:
        sums, estimated = self.layer_sums(supernet, config)
        raw = sum(sums.values())
        from ..counting import memory_counts

        m = memory_counts(supernet, config)
        memory = m.folded_param_bytes + m.peak_activation_bytes
        cal = self.calibrations.get(model_key(supernet))
        if cal is None:
            return Prediction(raw, raw, estimated, False, memory)
        return Prediction(apply_calibration(cal, sums), raw, estimated, True, memory)

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
        ms = np.array([e["median_ms"] for e in family])
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


def apply_calibration(cal: dict, sums: dict[str, float]) -> float:
    """Calibrated latency from per-group layer sums. A per-group fit ("coef") weighs convs,
    depthwise convs and the rest separately: alone, each kind of op runs at its own distance
    from its speed inside a network (data layout, cache reuse between layers). Older tables and
    imported phone tables carry one slope for the whole sum."""
    if "coef" in cal:
        return sum(cal["coef"][g] * sums.get(g, 0.0) for g in OP_GROUPS) + cal["coef_intercept"]
    return cal["slope"] * sum(sums.values()) + cal["intercept"]


def fit_calibration(sums: list[dict[str, float]], measured: list[float]) -> dict:
    """measured ~ slope * sum + intercept (always, for display), and, with enough networks and
    a fit whose weights are all positive, measured ~ sum_g coef_g * sum_g + intercept."""
    import numpy as np
    from scipy.stats import linregress

    totals = [sum(s.values()) for s in sums]
    fit = linregress(totals, measured)
    out = {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue ** 2),
           "samples": len(measured)}
    x = np.array([[s.get(g, 0.0) for g in OP_GROUPS] + [1.0] for s in sums])
    y = np.array(measured)
    if len(measured) >= 3 * (len(OP_GROUPS) + 1) and np.linalg.matrix_rank(x) == x.shape[1]:
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if (coef[:-1] > 0).all():
            resid = y - x @ coef
            out.update(coef={g: float(c) for g, c in zip(OP_GROUPS, coef)}, coef_intercept=float(coef[-1]),
                       coef_r2=float(1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()))
    return out


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
