"""Small helpers shared by the model families."""
from __future__ import annotations

from torch import nn


def replace_stem_channels(model: nn.Module, stem_name: str, in_chans: int) -> None:
    """Give the first conv `in_chans` input channels (1 for grayscale data)."""
    if in_chans == 3:
        return
    parent_name, _, child = stem_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old: nn.Conv2d = getattr(parent, child)
    setattr(parent, child, nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride,
                                     old.padding, old.dilation, old.groups, old.bias is not None))
