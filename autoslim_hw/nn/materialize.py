"""`materialize`: a subnet as a really smaller plain model.

It copies the supernet's module tree and swaps every slimmable layer for an ordinary
Conv2d / Linear / BatchNorm holding copies of the active weight slices. The result has no
autoslim-hw code in it: it pickles, scripts and exports like any torchvision model, and its
ONNX file shrinks with its params.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .config import ChannelConfig
from .layers import (SLIMMABLE_TYPES, SlicedParameters, SlimmableBatchNorm1d, SlimmableBatchNorm2d, SlimmableConv2d,
                     SlimmableLayerNorm, SlimmableLinear)
from .supernet import Supernet, set_module


def _plain_conv(m: SlimmableConv2d) -> nn.Conv2d:
    out = nn.Conv2d(m.active_in, m.active_out, m.kernel_size, m.stride, m.padding, m.dilation,
                    m.active_groups, m.bias is not None, m.padding_mode)
    out.weight.copy_(m.active_weight())
    if m.bias is not None:
        out.bias.copy_(m.active_bias())
    return out


def _plain_linear(m: SlimmableLinear) -> nn.Linear:
    out = nn.Linear(m.active_in, m.active_out, m.bias is not None)
    out.weight.copy_(m.active_weight())
    if m.bias is not None:
        out.bias.copy_(m.active_bias())
    return out


def _plain_ln(m: SlimmableLayerNorm) -> nn.Module:
    out = m.plain_class(m.active_in, m.eps, m.elementwise_affine, bias=m.bias is not None)
    for name in ("weight", "bias"):
        if getattr(m, name) is not None:
            getattr(out, name).copy_(m._slice(getattr(m, name)))
    return out


def _plain_bn(m) -> nn.Module:
    cls = nn.BatchNorm2d if isinstance(m, SlimmableBatchNorm2d) else nn.BatchNorm1d
    out = cls(m.active_in, m.eps, m.momentum, m.affine, m.track_running_stats)
    for name in ("weight", "bias", "running_mean", "running_var"):
        src, dst = getattr(m, name), getattr(out, name)
        if src is not None:
            dst.copy_(m._slice(src))
    if m.num_batches_tracked is not None:
        out.num_batches_tracked.copy_(m.num_batches_tracked)
    return out


# one small function per layer type, so a new slimmable layer is one entry here
PLAIN_LAYER = {
    SlimmableConv2d: _plain_conv,
    SlimmableLinear: _plain_linear,
    SlimmableBatchNorm2d: _plain_bn,
    SlimmableBatchNorm1d: _plain_bn,
    SlimmableLayerNorm: _plain_ln,
}


def _plain_parameters(module: nn.Module) -> None:
    """A module whose forward() read sliced per-channel parameters: its own class back, holding
    copies of the slices."""
    active = module.__dict__.pop("_active_channels")
    module.__class__ = module.plain_class
    for attr, (n, _) in active.items():
        full = getattr(module, attr)
        setattr(module, attr, nn.Parameter(full[:n].clone(), requires_grad=full.requires_grad))


@torch.no_grad()
def materialize(supernet: Supernet, config: ChannelConfig | None = None) -> nn.Module:
    """A plain model with the widths of `config` and copies of the supernet's weights.
    In eval mode its outputs equal the supernet's at that config."""
    previous = supernet.config
    if config is not None:
        supernet.set_config(config)
    try:
        net = copy.deepcopy(supernet.net)
        for module in net.modules():
            if isinstance(module, SlicedParameters):
                _plain_parameters(module)
        for name, slot in supernet.space.layers.items():
            if slot.kind == "param":
                continue
            module = net.get_submodule(name)
            plain = PLAIN_LAYER[type(module)](module).to(module.weight.device if module.weight is not None else "cpu")
            plain.train(module.training)
            set_module(net, name, plain)
    finally:
        supernet.set_config(previous)
    return net


def is_slimmable(model: nn.Module) -> bool:
    """Whether `model` still holds slimmable layers (a supernet, not a materialized subnet)."""
    return any(isinstance(m, (*SLIMMABLE_TYPES, SlicedParameters)) for m in model.modules())
