"""Model registry: one factory per architecture, found by name (timm's pattern)."""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # (num_classes, in_chans, **kwargs) -> the 1.0x base model
    input_size: int
    num_classes: int
    description: str
    # the architecture's own width rule, when it has one: the factory takes `width_mult` and
    # builds the published variant (e.g. torchvision's MobileNetV2 0.75x); None: no such rule
    width_rule: str | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(input_size: int, num_classes: int, description: str, width_rule: str | None = None):
    def wrap(fn: Callable[..., nn.Module]):
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, input_size, num_classes, description, width_rule)
        return fn
    return wrap


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown model {name!r}{hint}. Available: {', '.join(list_models())}")
    return _REGISTRY[name]
