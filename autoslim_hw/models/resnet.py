"""ResNet (He et al., 2016) as torchvision builds it."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="ResNet-18 (torchvision), ImageNet")
def resnet18(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.resnet18(num_classes=num_classes)
    replace_stem_channels(model, "conv1", in_chans)
    return model


@register_model(input_size=224, num_classes=1000, description="ResNet-50 (torchvision), ImageNet")
def resnet50(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.resnet50(num_classes=num_classes)
    replace_stem_channels(model, "conv1", in_chans)
    return model


@register_model(input_size=224, num_classes=1000,
                description="ResNeXt-50 32x4d (torchvision), ImageNet; grouped convs keep 4 channels per group")
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.resnext50_32x4d(num_classes=num_classes)
    replace_stem_channels(model, "conv1", in_chans)
    return model
