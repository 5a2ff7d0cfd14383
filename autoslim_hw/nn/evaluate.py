"""Accuracy of a network, or of one config of a supernet after BN recalibration."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm import recalibrate_bn
from .config import ChannelConfig
from .supernet import Supernet


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device | str = "cpu", topk=(1, 5)) -> dict[str, float]:
    """Top-k accuracy (percent) and mean loss over `loader`, in eval mode."""
    model.eval()
    correct = {k: 0 for k in topk}
    total, loss = 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(max(topk), dim=1).indices
        for k in topk:
            correct[k] += (top[:, :k] == y[:, None]).any(dim=1).sum().item()
        total += y.numel()
    out = {f"top{k}": 100.0 * correct[k] / max(total, 1) for k in topk}
    out["loss"] = loss / max(total, 1)
    return out


def topk_for(num_classes: int) -> tuple[int, ...]:
    """Top-1 and top-5, or top-1 alone where top-5 would say little (5 classes or fewer)."""
    return (1, 5) if num_classes > 5 else (1,)


def evaluate_config(supernet: Supernet, config: ChannelConfig, calib_loader, val_loader, batches: int,
                    device="cpu") -> dict[str, float]:
    """Accuracy of `config` after re-estimating its BN statistics on `batches` of `calib_loader`."""
    recalibrate_bn(supernet, config, calib_loader, batches, device)
    return evaluate(supernet, val_loader, device, topk_for(supernet.spec.num_classes))
