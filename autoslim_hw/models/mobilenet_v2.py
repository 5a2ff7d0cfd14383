"""MobileNetV2 (Sandler et al., 2018), torchvision's layout, and its CIFAR variant."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


_V2_RULE = ("torchvision's width_mult: every block's channels x w rounded to a multiple of 8, expansions "
            "from the rounded inputs, the last conv kept at 1280 below 1.0x")


@register_model(input_size=224, num_classes=1000, description="MobileNetV2 1.0x (torchvision layout), ImageNet",
                width_rule=_V2_RULE)
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=width_mult)
    replace_stem_channels(model, "features.0.0", in_chans)
    return model


@register_model(input_size=32, num_classes=10,
                description="MobileNetV2 for 32x32 inputs: stem and first 24-channel block at stride 1 (AutoSlim's CIFAR-10 model)",
                width_rule=_V2_RULE)
def mobilenet_v2_cifar(num_classes: int = 10, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    model = mobilenet_v2(num_classes, in_chans, width_mult)
    # downsample 8x instead of 32x: 32x32 inputs end at 4x4 like ImageNet's 224 at 7x7
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)  # depthwise conv of the block entering 24 channels
    return model
