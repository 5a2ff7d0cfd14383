"""MobileNetV3 (Howard et al., 2019) as torchvision builds it: hardswish, and
squeeze-and-excitation whose reduction conv's width is a unit of its own."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="MobileNetV3-Large (torchvision), ImageNet")
def mobilenet_v3_large(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.mobilenet_v3_large(num_classes=num_classes)
    replace_stem_channels(model, "features.0.0", in_chans)
    return model
