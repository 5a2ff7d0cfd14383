"""`create_model`: registry entry -> 1.0x base -> supernet via `slimmable()`."""
from __future__ import annotations

import math

from ..errors import ConfigError
from ..nn.config import ChannelConfig
from ..nn.supernet import ModelSpec, Supernet, slimmable
from ._registry import model_entry

# what a buildable spec stays within (a file that says more was edited or damaged)
_BOUNDS = {"width_max": (0, 8), "groups": (1, 64), "divisor": (1, 64), "input_size": (4, 4096), "in_chans": (1, 64),
           "num_classes": (2, 100_000)}


def check_spec(spec: ModelSpec) -> None:
    """Refuse a spec out of the ranges any real model has, before building it (a width of 1e300
    would try to allocate it)."""
    for name, (lo, hi) in _BOUNDS.items():
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
                or (lo == 0 and v == 0):
            raise ConfigError(f"model spec {name}={v!r} is out of range ({lo} to {hi})")
    if not isinstance(spec.extra, dict):
        raise ConfigError(f"model spec extra={spec.extra!r} must be a mapping of the model's arguments")
    wm = spec.extra.get("width_mult", 1.0)
    if isinstance(wm, bool) or not isinstance(wm, (int, float)) or not 0 < wm <= 4:
        raise ConfigError(f"model spec width_mult={wm!r} is out of range (0 to 4)")


def create_model(name: str, width_max: float = 1.5, groups: int = 10, divisor: int = 8,
                 num_classes: int | None = None, input_size: int | None = None,
                 in_chans: int = 3, **kwargs) -> Supernet:
    """Build a registered architecture as a supernet, e.g.
    `create_model("mobilenet_v2", width_max=1.5)`. Extra kwargs go to the model
    family (for example `width_mult` for the MobileNetV2 base)."""
    entry = model_entry(name)
    spec = ModelSpec(arch=name, width_max=width_max, groups=groups, divisor=divisor,
                     input_size=input_size or entry.input_size,
                     num_classes=num_classes or entry.num_classes, in_chans=in_chans, extra=dict(kwargs))
    return build_from_spec(spec)


def build_from_spec(spec: ModelSpec) -> Supernet:
    entry = model_entry(spec.arch)
    check_spec(spec)
    try:
        base = entry.build(num_classes=spec.num_classes, in_chans=spec.in_chans, **spec.extra)
    except TypeError as exc:  # an argument the family does not take
        raise ConfigError(f"model spec of {spec.arch} cannot be built: {exc}") from None
    return slimmable(base, width_max=spec.width_max, groups=spec.groups, divisor=spec.divisor,
                     input_size=spec.input_size, in_chans=spec.in_chans, keep_weights=False, spec=spec)


def published_config(supernet: Supernet, width: float) -> ChannelConfig:
    """The architecture's own width variant at `width` (e.g. torchvision's MobileNetV2 0.75x:
    209M MACs, not the 189M of every unit x 0.75) as a config of `supernet`: the family's
    factory builds it with `width_mult`, and each unit takes the width its layers have there.
    Usually off the supernet's width grid; refused for families without such a rule."""
    spec = supernet.spec
    entry = model_entry(spec.arch)
    if entry.width_rule is None:
        raise ConfigError(f"{spec.arch} has no published width rule; --width scales every unit by the same factor "
                          "(drop --published)")
    if not 0 < width <= spec.width_max:
        raise ConfigError(f"--width {width} is outside (0, {spec.width_max:g}], the supernet's range")
    base_width = spec.extra.get("width_mult", 1.0)
    model = entry.build(num_classes=spec.num_classes, in_chans=spec.in_chans,
                        **{**spec.extra, "width_mult": base_width * width})
    modules = dict(model.named_modules())
    widths = {}
    for unit in supernet.space.free_units:
        outs = {_out_width(modules[name]) for name in unit.layers if name in modules}
        outs.discard(None)
        if len(outs) != 1:  # the rule's tied layers always agree; this would be a bug in a family
            raise ConfigError(f"{spec.arch} at width {width}: unit {unit.name!r} has widths {sorted(outs)} in the "
                              "published variant")
        widths[unit.name] = outs.pop()
    return supernet.space.validate(ChannelConfig(widths), strict=False)


def _out_width(module) -> int | None:
    return getattr(module, "out_channels", None) or getattr(module, "out_features", None)
