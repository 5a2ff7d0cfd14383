"""EfficientNet (Tan & Le, 2019) as torchvision builds it: squeeze-and-excitation in every
block (the reduction conv's width is a unit of its own), stochastic depth on the residual
branches (an identity at inference)."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="EfficientNet-B0 (torchvision), ImageNet")
def efficientnet_b0(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.efficientnet_b0(num_classes=num_classes)
    replace_stem_channels(model, "features.0.0", in_chans)
    return model
