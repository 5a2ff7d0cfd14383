"""MNASNet (Tan et al., 2019) as torchvision's mnasnet1_0."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="MNASNet 1.0 (torchvision layout), ImageNet",
                width_rule="torchvision's alpha: stage depths x w rounded to multiples of 8 (up when within 10%), "
                           "expansions from them, the last conv fixed at 1280")
def mnasnet1_0(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.MNASNet(alpha=width_mult, num_classes=num_classes)
    replace_stem_channels(model, "layers.0", in_chans)
    return model
