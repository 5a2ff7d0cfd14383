"""MNASNet (Tan et al., 2019) as torchvision's mnasnet1_0."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="MNASNet 1.0 (torchvision layout), ImageNet")
def mnasnet1_0(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.mnasnet1_0(num_classes=num_classes)
    replace_stem_channels(model, "layers.0", in_chans)
    return model
