"""`create_model`: registry entry -> 1.0x base -> supernet via `slimmable()`."""
from __future__ import annotations

from ..nn.supernet import ModelSpec, Supernet, slimmable
from ._registry import model_entry


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
    base = entry.build(num_classes=spec.num_classes, in_chans=spec.in_chans, **spec.extra)
    return slimmable(base, width_max=spec.width_max, groups=spec.groups, divisor=spec.divisor,
                     input_size=spec.input_size, in_chans=spec.in_chans, keep_weights=False, spec=spec)
