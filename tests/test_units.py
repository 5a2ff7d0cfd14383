"""Channel-unit discovery on torchvision models and user CNNs.

Expected unit counts come from the architectures' published layer tables, not
from the code under test.
"""
import pytest
import torch
import torchvision
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.errors import UnsupportedOperationError
from autoslim_hw.models import create_model

# MobileNetV2 (Sandler et al. 2018, Table 2): t, c, n, s per stage
MBV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]


def test_mobilenet_v2_units_follow_the_paper_table():
    net = slimmable(torchvision.models.mobilenet_v2(), input_size=64)
    blocks = sum(n for _, _, n, _ in MBV2_STAGES)
    expansions = blocks - 1  # the first block (t=1) has no expansion conv
    # stem + one unit per stage (blocks of a stage are tied by residual adds) + expansions + last conv
    assert len(net.space.free_units) == 1 + len(MBV2_STAGES) + expansions + 1
    # the three project convs of the 32-channel stage share one unit
    unit = net.space.units["features.4.conv.2"]  # features[4] is the stage's first block
    assert set(unit.layers) == {"features.4.conv.2", "features.5.conv.2", "features.6.conv.2"}
    assert unit.base == 32
    assert net.space.units["classifier.1"].fixed


def test_resnet18_stem_is_tied_to_layer1():
    # layer1 of ResNet-18 has no downsample: its residual adds the stem's output
    net = slimmable(torchvision.models.resnet18(), input_size=64)
    stem = net.space.units["conv1"]
    assert {"conv1", "layer1.0.conv2", "layer1.1.conv2"} == set(stem.layers)
    assert len(net.space.free_units) == 4 + 8  # 4 stage units + conv1 of each of the 8 blocks


def test_resnet50_units():
    net = create_model("resnet50", input_size=64)
    # stem + 4 stages (conv3s and the downsample tied) + conv1, conv2 of 16 bottlenecks
    assert len(net.space.free_units) == 1 + 4 + 2 * 16
    stage = net.space.units["layer2.0.conv3"]
    assert "layer2.0.downsample.0" in stage.layers and "layer2.3.conv3" in stage.layers


def test_mnasnet_units():
    net = create_model("mnasnet1_0", input_size=64)
    repeats = [3, 3, 3, 2, 4, 1]  # torchvision's MNASNet stacks
    assert len(net.space.free_units) == 2 + sum(repeats) + len(repeats) + 1


def test_width_options_are_groups_of_the_max_rounded_to_8():
    net = create_model("mobilenet_v2")
    unit = net.space.units["features.4.conv.2"]  # base 32 ... use a 96-wide expansion instead
    expand96 = net.space.units["features.2.conv.0.0"]
    assert expand96.base == 96
    # 96 * 0.15 * i for i = 1..10, rounded to the nearest multiple of 8 (by hand)
    assert expand96.options == (16, 32, 40, 56, 72, 88, 104, 112, 128, 144)
    assert unit.max == 48 and unit.min == 8


class TinyNet(nn.Module):
    """Residual add, concatenation, max pooling, flatten over 2x2 spatial, SE-style mul."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b1 = nn.Conv2d(16, 8, 1)
        self.b2 = nn.Conv2d(16, 24, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.bn = nn.BatchNorm2d(32)
        self.se = nn.Conv2d(16, 16, 1)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(32 * 2 * 2, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.a(x)
        x = x * torch.sigmoid(self.se(x.mean([2, 3], keepdim=True)))
        x = torch.cat([self.b1(x), self.b2(x)], dim=1)
        x = torch.relu(self.bn(self.dw(x)))
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.head(torch.relu(self.fc(x)))


def test_user_cnn_units():
    net = slimmable(TinyNet(), input_size=8)
    units = net.space.units
    # tied by the residual add and by the SE-style mul
    assert set(units["stem.0"].layers) == {"stem.0", "a", "se"}
    assert {"b1", "b2", "fc"} <= set(units)
    # the depthwise conv after the concatenation reads two segments
    assert [s[0] for s in net.space.layers["dw"].in_segments] == ["b1", "b2"]
    # fc reads 2x2 spatial positions per channel after flatten
    assert [s[2] for s in net.space.layers["fc"].in_segments] == [4, 4]
    assert units["head"].fixed and units["input"].fixed


class CatTimesConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1, self.b2, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(3, 16, 1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x)], 1) * self.c(x)


def test_elementwise_op_between_cat_and_single_unit_is_reported():
    with pytest.raises(UnsupportedOperationError, match="'mul'.*different channel layouts"):
        slimmable(CatTimesConv(), input_size=8)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.transpose(self.conv(x), 1, 2)


def test_unsupported_op_names_the_node():
    with pytest.raises(UnsupportedOperationError, match="transpose"):
        slimmable(Unsupported(), input_size=8)


def test_untraceable_model_gets_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UnsupportedOperationError, match="torch.fx could not trace Branchy"):
        slimmable(Branchy(), input_size=8)


def test_keep_weights_base_config_reproduces_the_base_model():
    base = torchvision.models.resnet18(num_classes=10).eval()
    from tests.conftest import randomize_bn
    randomize_bn(base, (4, 3, 32, 32))
    net = slimmable(base, input_size=32).eval()
    net.set_config(net.space.base_config())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), base(x), atol=1e-5)


def test_grouped_conv_keeps_its_group_width_and_counts_by_hand():
    from autoslim_hw.counting import count

    # 3 -> 24 (dense), 24 -> 24 grouped with 12 channels per group (2 groups), 24 -> 10 linear
    model = nn.Sequential(nn.Conv2d(3, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 24, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    net = slimmable(model, width_max=1.5, groups=4, input_size=8)
    (unit,) = net.space.free_units
    # options: 1.5 x 24 x i/4 = 9, 18, 27, 36, rounded to multiples of lcm(8, 12) = 24 (at least 24)
    assert unit.multiple == 12 and unit.options == (24, 48)
    # any multiple of 12 is a valid width off the grid; 12 channels = 1 group of 12
    cfg = net.space.validate(type(net.config)({unit.name: 12}), strict=False)
    c = count(net, cfg)
    assert c.macs == 3 * 12 * 64 + (12 // 1) * 12 * 9 * 64 + 12 * 10
    with pytest.raises(Exception, match="multiple of 12"):
        net.space.validate(type(net.config)({unit.name: 16}), strict=False)
    net.set_config(cfg)
    assert net.net[3].active_groups == 1
    net.eval()
    assert net(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_stochastic_depth_and_namedtuple_outputs_are_followed():
    from torchvision.ops import StochasticDepth

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.branch = nn.Conv2d(8, 8, 3, padding=1)
            self.drop = StochasticDepth(0.2, "row")
            self.head = nn.Linear(8, 4)
            self.aux = nn.Linear(8, 4)

        def forward(self, x):
            from collections import namedtuple

            x = self.stem(x)
            x = x + self.drop(self.branch(x))  # the residual ties stem and branch
            pooled = x.mean((2, 3))
            return namedtuple("Outputs", "logits aux")(self.head(pooled), self.aux(pooled))

    net = slimmable(Block(), input_size=8)
    free = {u.name for u in net.space.free_units}
    fixed = {u.name for u in net.space.units.values() if u.fixed}
    assert free == {"stem"} and {"head", "aux"} <= fixed  # both outputs of the tuple stay at 4
