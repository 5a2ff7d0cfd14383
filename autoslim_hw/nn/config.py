"""Channel configs and the search space they live in.

`ChannelSpace` describes a supernet: its units, each with a base width (the
1.0x model's), a maximum (width_max x base) and the width options (the maximum
split into `groups` steps, rounded to a divisor). `ChannelConfig` is one width
per free unit: plain, hashable, JSON-serializable data.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

from .._schema import Open, PositiveInt, validate
from ..errors import ConfigError

CONFIG_FORMAT = "autoslim-hw/channel-config"


class ConfigFile(Open):
    """A channel config file: `{"format": ..., "version": 1, "widths": {unit: width}}` (format
    and version optional). A bare `{unit: width}` mapping is read as its `widths`."""
    format: Literal["autoslim-hw/channel-config"] | None = None
    version: Literal[1] | None = None
    widths: dict[str, PositiveInt]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10% down.

    The rule of the MobileNet family (TF-slim, torchvision, the AutoSlim code).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class Unit:
    name: str  # the first layer that produces it, e.g. "features.0.0"
    base: int  # width of the 1.0x model
    max: int
    options: tuple[int, ...]  # ascending
    fixed: bool  # network input / classifier output: never slimmed
    layers: tuple[str, ...]  # conv/linear layers whose output is this unit
    multiple: int = 1  # widths are multiples of this (a grouped conv's group width); 1: any

    @property
    def min(self) -> int:
        return self.options[0]

    def step_down(self, width: int) -> int | None:
        """The next smaller option (one group slimmer), or None at the minimum."""
        smaller = [w for w in self.options if w < width]
        return smaller[-1] if smaller else None


@dataclass(frozen=True)
class LayerSlot:
    """A slimmable layer: where its input channels come from, and its output unit."""

    name: str
    kind: str  # conv | dwconv | gconv | linear | bn
    in_segments: tuple[tuple[str, int, int], ...]  # (unit, max width, features per channel)
    out_unit: str | None  # None for layers that follow their input (dwconv, gconv, bn)
    group_width: int = 1  # gconv: channels per group (its groups = width / group_width)


def slot_widths(slot: LayerSlot, widths: Mapping[str, int]) -> tuple[int, int]:
    """Active (input features, output features) of a slimmable layer."""
    active_in = sum(widths[u] * f for u, _, f in slot.in_segments)
    return active_in, (widths[slot.out_unit] if slot.out_unit is not None else active_in)


class ChannelConfig(Mapping[str, int]):
    """One width per free unit. Immutable and hashable, so it can key caches."""

    __slots__ = ("_widths", "_hash")

    def __init__(self, widths: Mapping[str, int]):
        self._widths = dict(sorted((str(k), int(v)) for k, v in widths.items()))
        self._hash = hash(tuple(self._widths.items()))

    def __getitem__(self, unit: str) -> int:
        return self._widths[unit]

    def __iter__(self):
        return iter(self._widths)

    def __len__(self) -> int:
        return len(self._widths)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, ChannelConfig) and self._widths == other._widths

    def __repr__(self) -> str:
        return f"ChannelConfig({self._widths})"

    def replace(self, unit: str, width: int) -> "ChannelConfig":
        return ChannelConfig({**self._widths, unit: width})

    # --- serialization ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": CONFIG_FORMAT, "version": 1, "widths": dict(self._widths)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping, space: "ChannelSpace | None" = None, strict: bool = True,
                  source: str = "channel config") -> "ChannelConfig":
        """Read `{"widths": {...}}` (or a bare mapping), checked against `ConfigFile`; `source`
        names it in errors. Keys may be unit names or any layer of a unit; with a `space` the
        config is normalized to units and validated."""
        if isinstance(data, Mapping) and not ("format" in data or "widths" in data):
            data = {"widths": dict(data)}
        widths = validate(ConfigFile, data, source, "channel config",
                          "a channel config maps unit names to whole widths: write one with `autoslim-hw search` "
                          "or ChannelConfig.to_json()", error=ConfigError).widths
        if space is None:
            return cls(widths)
        return space.normalize(widths, strict=strict)

    @classmethod
    def from_json(cls, text: str, space: "ChannelSpace | None" = None, strict: bool = True,
                  source: str = "channel config") -> "ChannelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, Mapping) and "config" in data and "widths" not in data:
            data = data["config"]  # accept a search-result target entry
        return cls.from_dict(data, space, strict, source)

    @classmethod
    def from_layer_list(cls, model, layers: Iterable[int], strict: bool = True) -> "ChannelConfig":
        """The list form of the AutoSlim releases: one width per conv/linear layer whose
        output is free, in forward order, depthwise layers omitted, classifier output last."""
        space = model if isinstance(model, ChannelSpace) else model.space
        return space.from_layer_list(list(layers), strict=strict)


class ChannelSpace:
    """The units and width options of one supernet."""

    def __init__(self, units: Iterable[Unit], layers: Iterable[LayerSlot], width_max: float,
                 groups: int, divisor: int):
        self.units: dict[str, Unit] = {u.name: u for u in units}
        self.layers: dict[str, LayerSlot] = {s.name: s for s in layers}
        self.width_max, self.groups, self.divisor = width_max, groups, divisor
        self._unit_of_layer = {layer: u.name for u in self.units.values() for layer in u.layers}

    @property
    def free_units(self) -> list[Unit]:
        return [u for u in self.units.values() if not u.fixed]

    @property
    def producer_layers(self) -> list[LayerSlot]:
        """Conv/linear layers with their own output width, in forward order."""
        return [s for s in self.layers.values() if s.out_unit is not None]

    def size(self) -> int:
        return math.prod(len(u.options) for u in self.free_units)

    # --- building configs ---------------------------------------------------------------
    def largest(self) -> ChannelConfig:
        return ChannelConfig({u.name: u.max for u in self.free_units})

    def smallest(self) -> ChannelConfig:
        return ChannelConfig({u.name: u.min for u in self.free_units})

    def base_config(self) -> ChannelConfig:
        """The widths of the model `slimmable()` was given (its 1.0x)."""
        return ChannelConfig({u.name: u.base for u in self.free_units})

    def uniform(self, multiplier: float, snap: bool = False) -> ChannelConfig:
        """Every unit at `multiplier` x its base width, rounded to the divisor.
        With `snap`, each width moves to the nearest option (on the search grid)."""
        if multiplier <= 0 or multiplier > self.width_max + 1e-9:
            raise ConfigError(f"width multiplier {multiplier} is outside (0, {self.width_max}]")
        widths = {}
        for u in self.free_units:
            w = min(u.max, make_divisible(u.base * multiplier, math.lcm(self.divisor, u.multiple)))
            widths[u.name] = min(u.options, key=lambda o: (abs(o - w), o)) if snap else w
        return ChannelConfig(widths)

    def uniform_ladder(self, step: float = 0.01) -> list[tuple[float, ChannelConfig]]:
        """The distinct on-grid uniform configs from narrowest to widest, each with the smallest
        multiplier (in steps of `step`, from the narrowest group, width_max / groups) that gives
        it: the baselines a search should beat."""
        ladder: dict[ChannelConfig, float] = {}
        for i in range(int(round(self.width_max / self.groups / step)), int(round(self.width_max / step)) + 1):
            ladder.setdefault(self.uniform(i * step, snap=True), round(i * step, 6))
        return [(w, cfg) for cfg, w in ladder.items()]

    def sample(self, rng: random.Random) -> ChannelConfig:
        """Each unit's width drawn independently from its options (nonuniform)."""
        return ChannelConfig({u.name: rng.choice(u.options) for u in self.free_units})

    def sample_around(self, rng: random.Random, spread: float = 1.5) -> ChannelConfig:
        """A random overall width, then each unit's option scattered around it (`spread` options,
        a normal's standard deviation): configs from narrow to wide, as a greedy search passes
        through, where independent draws (`sample`) cluster around the middle."""
        level = rng.random()
        widths = {}
        for u in self.free_units:
            i = round(level * (len(u.options) - 1) + rng.gauss(0, spread))
            widths[u.name] = u.options[min(max(i, 0), len(u.options) - 1)]
        return ChannelConfig(widths)

    def widths(self, config: ChannelConfig) -> dict[str, int]:
        """Width of every unit, fixed ones included."""
        return {u.name: (u.max if u.fixed else config[u.name]) for u in self.units.values()}

    # --- validation ---------------------------------------------------------------------
    def validate(self, config: ChannelConfig, strict: bool = True) -> ChannelConfig:
        """strict: every width must be one of the unit's options; otherwise any width in
        [1, max] (published configs and the 1.0x models are off the search grid)."""
        unknown = [k for k in config if k not in self.units]
        if unknown:
            raise ConfigError(f"unknown unit {unknown[0]!r}; units are: {', '.join(u.name for u in self.free_units)}")
        for u in self.units.values():
            if u.fixed:
                if u.name in config and config[u.name] != u.max:
                    raise ConfigError(f"unit {u.name!r} is fixed at {u.max} channels (network input or "
                                      f"classifier output), got {config[u.name]}")
                continue
            if u.name not in config:
                raise ConfigError(f"config has no width for unit {u.name!r}")
            w = config[u.name]
            if strict and w not in u.options:
                raise ConfigError(f"width {w} for unit {u.name!r} is not an option; options are {list(u.options)}")
            if not 1 <= w <= u.max:
                raise ConfigError(f"width {w} for unit {u.name!r} is outside [1, {u.max}]")
            if w % u.multiple:
                raise ConfigError(f"width {w} for unit {u.name!r} is not a multiple of {u.multiple}: the unit holds a "
                                  f"grouped conv of {u.multiple} channels per group")
        return ChannelConfig({k: v for k, v in config.items() if not self.units[k].fixed})

    def normalize(self, widths: Mapping[str, int], strict: bool = True) -> ChannelConfig:
        """Map layer names to their units, checking that tied layers agree."""
        by_unit: dict[str, tuple[str, int]] = {}
        for key, width in widths.items():
            unit = key if key in self.units else self._unit_of_layer.get(key)
            if unit is None:
                raise ConfigError(f"{key!r} is neither a unit nor a conv/linear layer of this model; "
                                  f"units are: {', '.join(u.name for u in self.free_units)}")
            if unit in by_unit and by_unit[unit][1] != width:
                other = by_unit[unit][0]
                raise ConfigError(f"layers {other!r} and {key!r} are tied (unit {unit!r}: a residual add "
                                  f"or elementwise op joins them) but have widths {by_unit[unit][1]} and {width}")
            by_unit[unit] = (key, width)
        return self.validate(ChannelConfig({u: w for u, (_, w) in by_unit.items()}), strict=strict)

    # --- the released AutoSlim list form -------------------------------------------------
    def to_layer_list(self, config: ChannelConfig) -> list[int]:
        widths = self.widths(config)
        return [widths[s.out_unit] for s in self.producer_layers]

    def from_layer_list(self, layers: list[int], strict: bool = True) -> ChannelConfig:
        slots = self.producer_layers
        if len(layers) != len(slots):
            raise ConfigError(f"layer list has {len(layers)} entries, this model needs {len(slots)} "
                              "(one per conv/linear layer with its own output width, depthwise omitted, "
                              "classifier output last)")
        return self.normalize({s.name: int(w) for s, w in zip(slots, layers)}, strict=strict)

    def describe(self, config: ChannelConfig) -> str:
        widths = self.widths(config)
        return ", ".join(f"{u.name}={widths[u.name]}" for u in self.free_units)
