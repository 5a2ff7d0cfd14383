"""BatchNorm statistics of a slimmable network.

The running statistics are shared slices across widths, which is right only for the width
trained last; so a config is evaluated after `recalibrate_bn` (fresh statistics for it), or
with each batch's own statistics (`batch_statistics`, the search's large-batch trick).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .config import ChannelConfig


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, config: ChannelConfig | None, loader, batches: int,
                   device: torch.device | str = "cpu") -> None:
    """Reset BN running statistics and re-estimate them for `config` with a cumulative
    average over `batches` training batches (no augmentation), then leave eval mode."""
    if config is not None:
        model.set_config(config)
    bns = batchnorms(model)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(device, non_blocking=True))
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.eval()


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode, except BatchNorm normalizes with the batch's own statistics and leaves the
    running statistics alone; in-place activations are switched off so that cached tensors
    are never overwritten."""
    bns = batchnorms(model)
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    was_training, tracked = model.training, [bn.track_running_stats for bn in bns]
    model.eval()
    for bn in bns:
        bn.train()
        bn.track_running_stats = False
    for m in inplace:
        m.inplace = False
    try:
        yield
    finally:
        for bn, t in zip(bns, tracked):
            bn.track_running_stats = t
        for m in inplace:
            m.inplace = True
        model.train(was_training)
