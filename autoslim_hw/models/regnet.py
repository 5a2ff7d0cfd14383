"""RegNet (Radosavovic et al., 2020) as torchvision builds it. Its grouped 3x3 convs keep their
group width as a unit slims (the number of groups scales), so those units move in multiples of
the group width."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="RegNetX-400MF (torchvision), ImageNet")
def regnet_x_400mf(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.regnet_x_400mf(num_classes=num_classes)
    replace_stem_channels(model, "stem.0", in_chans)
    return model
