"""The lookup-table file and predictions from it (the predictor half; `build` is the builder).

A table is JSON (gzip when the name ends in .gz): a schema version, metadata (device
spec, runtime and version, CPU model, threads, date, tool version, measurement
settings), per-signature latencies, and per-model end-to-end calibrations (`calibration`),
which absorb what the layers alone do not show.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import weakref
from dataclasses import dataclass, field

from .._io import atomic_write_json, read_tagged
from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .calibration import apply_calibration, weights_mb
from .schema import check_table
from .signatures import DeployedOp, Signature, config_signatures, deployed_ops, op_group, OP_GROUPS

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
        atomic_write_json(path, self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        data = read_tagged(path, FORMAT, "lookup table", "build one with `autoslim-hw profile`",
                           versions=(1, SCHEMA_VERSION), version_key="schema_version", gz=True)
        version = data["schema_version"]
        metadata, entries = data.get("metadata"), data.get("entries", {})
        if version == 1 and isinstance(metadata, dict) and isinstance(entries, dict):  # medians under other names
            try:
                metadata = {**metadata, "latency_statistic": "median"}
                entries = {k: {"sig": e["sig"], "ms": e["median_ms"], "p10_ms": e["p10_ms"], "p90_ms": e["p90_ms"],
                               "passes_ms": e.get("passes_ms", [e["median_ms"]])} for k, e in entries.items()}
            except (KeyError, TypeError):
                raise UserError(f"{path} is a corrupt lookup table (an entry malformed); rebuild it with "
                                "`autoslim-hw profile`") from None
        check_table({**data, "metadata": metadata, "entries": entries}, path)
        return cls(metadata, entries, data.get("calibrations", {}))

    def require_entries(self, path) -> "LatencyTable":
        """This table, or a UserError when it holds no measurement (a profile killed before its
        first save, or an emptied file): nothing can be predicted from it."""
        if not self.entries:
            raise UserError(f"lookup table {path} holds no measurements; build it with `autoslim-hw profile` "
                            "(or finish it with `autoslim-hw profile --resume`)")
        return self

    @property
    def statistic(self) -> str:
        """What the entries, calibration networks and predictions measure: "min" (the fastest
        of the timed runs: host tables), "p10" (earlier host tables) or "median"
        (older tables, phones)."""
        return self.metadata["latency_statistic"]

    def outdated(self) -> str | None:
        """Why a host table was built with an older method (its latencies are another statistic
        than tables built now take), or None. Phone tables keep the median: that is their method."""
        from ..profilers.latency import HOST_STATISTIC, STATISTIC_TEXT

        if self.metadata.get("device", {}).get("kind", "host") != "host" or self.statistic == HOST_STATISTIC:
            return None
        return (f"built with an older method ({STATISTIC_TEXT[self.statistic]}; tables built now keep "
                f"{STATISTIC_TEXT[HOST_STATISTIC]}): rebuild it with `autoslim-hw profile` on that machine")

    def check_target(self, device: str | None, runtime: str | None, allow_mismatch: bool = False,
                     path=None, other_host_ok: bool = False) -> None:
        """Refuse a table of another device or runtime (None: any), or measured on another CPU
        than this host's (unless `other_host_ok`: then only a prediction, no measurement, depends
        on it and the caller notes `other_host()`), unless `allow_mismatch`."""
        if allow_mismatch:
            return
        name = f"lookup table {path}" if path is not None else "lookup table"
        have_device, have_runtime = self.metadata.get("device", {}).get("name"), self.metadata.get("runtime")
        if device is not None and device != have_device:
            raise UserError(f"{name} is for device {have_device!r}, not {device!r}; use that device's table "
                            "(`autoslim-hw lut list`) or pass --allow-mismatch")
        if runtime is not None and runtime != have_runtime:
            raise UserError(f"{name} is for runtime {have_runtime!r}, not {runtime!r}; use a {runtime} table "
                            "(`autoslim-hw lut list`) or pass --allow-mismatch")
        why = self.other_host()
        if why and not other_host_ok:
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
        sums, _, estimated = self._layer_terms(supernet, config)
        return sums, estimated

    def _layer_terms(self, supernet: Supernet, config: ChannelConfig) -> tuple[dict[str, float], list[float], list[str]]:
        """The config's layer sums by op group, each op's latency in graph order, and the interpolated keys."""
        sigs = config_signatures(supernet, config, self._ops(supernet))
        latencies, estimated = self.op_latencies(sigs)
        return self.group_sums(sigs, latencies), latencies, estimated

    def op_latencies(self, signatures: list[Signature]) -> tuple[list[float], list[str]]:
        """The latency of each of `signatures`, in order, and the keys interpolated (not measured)."""
        out, estimated = [], []
        for sig in signatures:
            entry = self.entries.get(sig.key)
            if entry is not None:
                out.append(entry["ms"])
            else:
                out.append(self.interpolate(sig))
                estimated.append(sig.key)
        return out, estimated

    @staticmethod
    def group_sums(signatures: list[Signature], latencies: list[float]) -> dict[str, float]:
        sums = {g: 0.0 for g in OP_GROUPS}
        for sig, ms in zip(signatures, latencies):
            sums[op_group(sig.op)] += ms
        return sums

    def sums_of(self, signatures: list[Signature]) -> tuple[dict[str, float], list[str]]:
        """Summed latency of `signatures` by op group, and the keys interpolated (not measured)."""
        latencies, estimated = self.op_latencies(signatures)
        return self.group_sums(signatures, latencies), estimated

    def layer_sum(self, supernet: Supernet, config: ChannelConfig) -> tuple[float, list[str]]:
        sums, estimated = self.layer_sums(supernet, config)
        return sum(sums.values()), estimated

    def predict(self, supernet: Supernet, config: ChannelConfig, memory: bool = True) -> Prediction:
        """Latency and (unless memory=False, which callers that count memory themselves pass)
        deployed memory of `config`."""
        sums, latencies, estimated = self._layer_terms(supernet, config)
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
        if "op_delta" in cal:
            sums = {**sums, "ops": latencies}
        return Prediction(apply_calibration(cal, sums), raw, estimated, True, memory_bytes)

    def features(self, supernet: Supernet, config: ChannelConfig) -> dict:
        """What a calibration may weigh: the layer sums by op group, the deployed weights (MB),
        and each op's latency in the graph's order ("ops")."""
        sums, latencies, _ = self._layer_terms(supernet, config)
        return {**sums, "weights_mb": weights_mb(supernet, config), "ops": latencies}

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


def _family(sig: dict) -> tuple:
    per_group = sig["cin"] // sig["groups"] if sig["op"] == "gconv" else None  # the same group width
    return (sig["op"], sig["h"], sig["w"], sig["kernel"], sig["stride"], sig["padding"], sig["act"], per_group)


def _work(sig: dict) -> float:
    """Multiply-adds of the op (elements for adds and pools): the natural latency scale."""
    hw = sig["h"] * sig["w"] / (sig["stride"] ** 2)
    if sig["op"] in ("conv", "dwconv", "gconv"):
        return sig["cin"] // sig["groups"] * sig["cout"] * sig["kernel"] ** 2 * hw
    if sig["op"] == "linear":
        return sig["cin"] * sig["cout"]
    return sig["cin"] * sig["h"] * sig["w"]
