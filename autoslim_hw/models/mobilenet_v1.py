"""MobileNetV1 (Howard et al., 2017): a stem conv and 13 depthwise-separable blocks."""
from __future__ import annotations

from torch import nn

from ._registry import register_model

# (output channels, stride) of the 13 pointwise convs
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2,
                 blocks=_BLOCKS, width_mult: float = 1.0):
        super().__init__()
        # the paper's width multiplier as TF-Slim applies it (depth_multiplier, min_depth 8)
        def depth(c: int) -> int:
            return max(int(c * width_mult), 8)

        layers, cin = [_conv_bn(in_chans, depth(32), 3, stem_stride)], depth(32)
        for cout, stride in blocks:
            cout = depth(cout)
            layers += [_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(x.flatten(1))


@register_model(input_size=224, num_classes=1000, description="MobileNetV1 1.0x, ImageNet layout",
                width_rule="the paper's width multiplier (TF-Slim depth_multiplier): every layer's channels x w, "
                           "truncated, at least 8")
def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV1(num_classes, in_chans, width_mult=width_mult)
