"""ShuffleNetV2 (Ma et al., 2018) as torchvision builds it. Each block splits its channels in
two, runs one half through a branch and shuffles the halves together, so a stage's blocks and
both halves share one width (one unit per stage); each branch's inner width is its own unit."""
from __future__ import annotations

from torch import nn

from ._common import replace_stem_channels
from ._registry import register_model


@register_model(input_size=224, num_classes=1000, description="ShuffleNetV2 1.0x (torchvision), ImageNet")
def shufflenet_v2_x1_0(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at start-up

    model = torchvision.models.shufflenet_v2_x1_0(num_classes=num_classes)
    replace_stem_channels(model, "conv1.0", in_chans)
    return model
