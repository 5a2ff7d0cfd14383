"""What a search can constrain: a registry of cost kinds, targets built from them, and the
costs of a config.

A cost kind is one entry: its name in result files, its label, its CLI option, how to read and
print a value, and how to compute it for a config. Commands, result files, plots and tests
iterate `COSTS`; nothing else lists the kinds, so a new constraint is one `register_cost` call.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from .._format import human_count
from ..counting import Counts, count, deployed_memory_bytes
from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet

_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30}


def parse_quantity(text: str | float, option: str) -> float:
    """'200M' -> 2e8, '4.5G', '9MiB' -> 9 * 2**20, '3e8': a count or bytes with a suffix."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(|k|K|M|G|T|Ki|Mi|Gi)B?\s*", str(text))
        if m is None:
            raise UserError(f"{option} {text!r} is not a number; write e.g. 200M, 4.5G, 9MiB or 3e8")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not value > 0 or not math.isfinite(value):
        raise UserError(f"{option} must be a positive number, got {text!r}")
    return value


@dataclass(frozen=True)
class CostKind:
    name: str  # key in trajectories and result files, e.g. "latency_ms"
    label: str  # in sentences: "latency <= 2.00 ms"
    param: str  # the CLI option is --param with dashes ("flops" -> --flops)
    help: str  # the CLI option's help
    format: Callable[[float], str]
    compute: Callable[["CostModel", ChannelConfig], float | None]
    needs_table: bool = False

    @property
    def option(self) -> str:
        return "--" + self.param.replace("_", "-")


COSTS: dict[str, CostKind] = {}


def register_cost(kind: CostKind) -> CostKind:
    COSTS[kind.name] = kind
    return kind


def cost_kind(name: str) -> CostKind:
    if name not in COSTS:
        raise UserError(f"unknown cost {name!r}; known: {', '.join(COSTS)}")
    return COSTS[name]


register_cost(CostKind(
    "latency_ms", "latency", "latency_ms",
    "Latency limit in ms, predicted by the lookup table. Repeat for several targets.",
    lambda v: f"{v:.2f} ms", lambda m, c: m.table.predict(m.supernet, c, memory=False).latency_ms if m.table else None,
    needs_table=True))
register_cost(CostKind(
    "macs", "MACs", "flops", "Multiply-add limit (the 'FLOPs' of the AutoSlim and MobileNet papers), e.g. 200M.",
    human_count, lambda m, c: m.counts(c).macs))
register_cost(CostKind(
    "params", "params", "params", "Parameter limit, e.g. 2M.", human_count, lambda m, c: m.counts(c).params))
register_cost(CostKind(
    "memory", "memory", "memory",
    "Deployed-memory limit in bytes: float32 weights with BN folded + the peak of live activations at batch "
    "1, e.g. 9MiB (not the paper's Table 1 memory, which `count` shows as 'memory (paper)').",
    lambda v: f"{v / 2 ** 20:.2f} MiB", lambda m, c: deployed_memory_bytes(m.supernet, c, counts=m.counts(c))))

COST_KINDS = tuple(COSTS)  # in registration order: the order of result files' cost fields


def format_cost(kind: str, value: float | None) -> str:
    return "-" if value is None else cost_kind(kind).format(value)


@dataclass(frozen=True)
class Target:
    """A conjunction of upper limits, kind -> limit (latency in ms, MACs, params, memory in bytes)."""

    constraints: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, **limits: float) -> "Target":
        unknown = set(limits) - set(COSTS)
        if unknown or not limits:
            raise UserError(f"a target needs limits among {', '.join(COSTS)}; got {sorted(limits)}")
        return cls(tuple(sorted(limits.items())))

    @property
    def limits(self) -> dict[str, float]:
        return dict(self.constraints)

    def met_by(self, costs: dict) -> bool:
        return all(costs.get(kind) is not None and costs[kind] <= limit for kind, limit in self.constraints)

    def describe(self) -> str:
        return ", ".join(f"{COSTS[k].label} <= {format_cost(k, v)}" for k, v in self.constraints)


def describe_constraints(constraints: dict) -> str:
    """A result file's target constraints in words, or their JSON when they are not valid."""
    try:
        return Target.of(**constraints).describe()
    except (UserError, TypeError, AttributeError):
        import json

        return json.dumps(constraints)


def targets_from_options(**given_by_param) -> list[Target]:
    """CLI targets, keyed by each cost kind's CLI parameter (latency_ms=, flops=, params=, memory=):
    a kind given once applies to every target; kinds given n times pair up by position
    (`--latency-ms 70 --latency-ms 50 --flops 300M` = two targets, each with both)."""
    by_param = {k.param: k for k in COSTS.values()}
    unknown = set(given_by_param) - set(by_param)
    if unknown:
        raise TypeError(f"unknown cost options {sorted(unknown)}")
    given = {by_param[p].name: [parse_quantity(v, by_param[p].option) for v in values or ()]
             for p, values in given_by_param.items()}
    given = {k: v for k, v in given.items() if v}
    if not given:
        return []
    n = max(len(v) for v in given.values())
    bad = {k: len(v) for k, v in given.items() if len(v) not in (1, n)}
    if bad:
        raise UserError(f"repeat each constraint once or {n} times (one per target); got counts "
                        + ", ".join(f"{COSTS[k].option}={c}" for k, c in bad.items()))
    return [Target.of(**{k: v[i] if len(v) > 1 else v[0] for k, v in given.items()}) for i in range(n)]


class CostModel:
    """Every registered cost of a config at batch 1 (None where a kind needs a lookup table and
    there is none), cached per config."""

    def __init__(self, supernet: Supernet, table=None):
        self.supernet, self.table = supernet, table
        self._cache: dict[ChannelConfig, dict] = {}
        self._counts: dict[ChannelConfig, Counts] = {}

    def counts(self, config: ChannelConfig) -> Counts:
        if config not in self._counts:
            self._counts[config] = count(self.supernet, config)
        return self._counts[config]

    def __call__(self, config: ChannelConfig) -> dict:
        if config not in self._cache:
            self._cache[config] = {k.name: k.compute(self, config) for k in COSTS.values()}
            self._counts.pop(config, None)
        return self._cache[config]


UNIFORM_RULE = ("uniform width: every unit's channels x the multiplier, rounded to a multiple of 8 and snapped to "
                "its nearest width option (not the architecture's published rule; see `count --published`)")


def uniform_baseline(space, cost: Callable[[ChannelConfig], float], limit: float,
                     at_least: bool = False) -> tuple[float, ChannelConfig] | None:
    """The uniform-width config (UNIFORM_RULE) one would pick without a search: the widest whose cost is within
    `limit`, or with at_least=True the narrowest whose cost reaches it (a baseline given at least
    the searched config's budget). (multiplier, config), or None when no uniform config qualifies."""
    ladder = space.uniform_ladder()
    if at_least:
        return next(((w, cfg) for w, cfg in ladder if cost(cfg) >= limit), None)
    return next(((w, cfg) for w, cfg in reversed(ladder) if cost(cfg) <= limit), None)


def check_feasible(targets: list[Target], costs: CostModel) -> None:
    """Every trajectory ends at the smallest config, so a target it misses is unreachable."""
    floor = costs(costs.supernet.space.smallest())
    for t in targets:
        for kind, limit in t.constraints:
            if COSTS[kind].needs_table and costs.table is None:
                raise UserError(f"a {COSTS[kind].label} target needs a lookup table: pass --lut or build one "
                                "with `autoslim-hw profile`")
            if floor[kind] > limit:
                raise UserError(f"target {COSTS[kind].label} <= {format_cost(kind, limit)} is unreachable: the "
                                f"smallest config of this supernet needs {format_cost(kind, floor[kind])}")
