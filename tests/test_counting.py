"""Counts against published numbers, a hand-computed model, and hook-based counting of
materialized subnets."""
import random

import pytest
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.counting import count, count_plain
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model, published_config

# DEVELOPERS.md / the papers, 224x224 (CIFAR variant 32x32, 10 classes: AutoSlim Table 2)
PUBLISHED = {
    "mobilenet_v2": (300.8e6, 3_504_872),
    "mobilenet_v1": (568.7e6, 4_231_976),
    "resnet50": (4.089e9, 25_557_032),
    "mnasnet1_0": (314.4e6, 4_383_312),
    "mobilenet_v2_cifar": (87.98e6, 2_236_682),
    # torchvision's documented GFLOPS and num_params of each weight entry
    "efficientnet_b0": (0.39e9, 5_288_548),
    "mobilenet_v3_large": (0.22e9, 5_483_032),
    "regnet_x_400mf": (0.41e9, 5_495_976),
    "resnext50_32x4d": (4.23e9, 25_028_904),
    "shufflenet_v2_x1_0": (0.14e9, 2_278_604),
}


TORCHVISION_DOCS = {"efficientnet_b0", "mobilenet_v3_large", "regnet_x_400mf", "resnext50_32x4d", "shufflenet_v2_x1_0"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_counts(name):
    net = create_model(name)
    counts = count(net, net.space.base_config())  # the model as published (SE widths off the 8-grid)
    macs, params = PUBLISHED[name]
    digits = 2 if macs > 1e8 and name in TORCHVISION_DOCS else None  # documented to two decimals of a G
    if digits:
        assert round(counts.macs / 1e9, digits) == macs / 1e9
    else:
        assert abs(counts.macs - macs) / macs < 0.005
    assert counts.params == params


def test_memory_and_peak_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    net = slimmable(model, width_max=1.0, groups=1, input_size=8)
    c = count(net, net.space.base_config())
    params = 3 * 8 * 9 + 2 * 8 + 8 * 2 + 2
    features = 8 * 64 + 2  # the paper's memory: conv and linear outputs (no input, BN/ReLU in place, no pool)
    assert c.macs == 3 * 8 * 9 * 64 + 8 * 2
    assert c.params == params
    assert c.memory == params + features
    # input and conv output are alive together; later tensors are smaller
    assert c.peak_activation_bytes == 4 * (3 * 64 + 8 * 64)


@pytest.mark.parametrize("name,size", [("mobilenet_v2_cifar", 32), ("mnasnet1_0", 64), ("resnet50", 64)])
def test_materialized_counts_equal_config_counts(name, size):
    net = create_model(name, input_size=size)
    cfg = net.space.sample(random.Random(1))
    plain = materialize(net, cfg)
    macs, params = count_plain(plain, (1, 3, size, size))
    counts = count(net, cfg)
    assert (counts.macs, counts.params) == (macs, params)


def test_counts_shrink_monotonically_along_uniform_widths():
    net = create_model("mobilenet_v2_cifar")
    macs = [count(net, net.space.uniform(w, snap=True)).macs for w in (0.15, 0.5, 1.0, 1.5)]
    assert macs == sorted(macs) and macs[0] < macs[-1] / 20


# The AutoSlim paper, Table 1: memory in elements of the uniform networks at their published widths
PAPER_MEMORY = [("mobilenet_v2", 0.75, 8.5e6), ("mobilenet_v2", 1.0, 10.2e6), ("mobilenet_v2", 1.3, 14.3e6),
                ("mobilenet_v1", 0.5, 3.8e6), ("mobilenet_v1", 0.75, 6.4e6), ("mobilenet_v1", 1.0, 9.3e6),
                ("mnasnet1_0", 0.75, 7.9e6), ("mnasnet1_0", 1.0, 9.8e6), ("resnet50", 1.0, 36.6e6)]


@pytest.mark.parametrize("name,width,paper", PAPER_MEMORY)
def test_memory_reproduces_the_papers_table_1(name, width, paper):
    net = create_model(name)
    cfg = net.space.uniform(1.0) if width == 1.0 else published_config(net, width)
    # the paper prints two digits; MobileNetV1 0.5x counts 3.85M under this convention, which
    # its table shows as 3.8M (+1.4%): the one entry outside 1%
    tolerance = 0.015 if (name, width) == ("mobilenet_v1", 0.5) else 0.01
    assert abs(count(net, cfg).memory - paper) / paper < tolerance


# torchvision's own constructors at these widths are the reference: an independent implementation
# of each architecture's width rule, counted by hooks
@pytest.mark.parametrize("name,width,make", [
    ("mobilenet_v2", 0.75, lambda: __import__("torchvision").models.mobilenet_v2(width_mult=0.75)),
    ("mobilenet_v2", 1.3, lambda: __import__("torchvision").models.mobilenet_v2(width_mult=1.3)),
    ("mnasnet1_0", 0.75, lambda: __import__("torchvision").models.mnasnet0_75()),
    ("mnasnet1_0", 1.3, lambda: __import__("torchvision").models.mnasnet1_3()),
])
def test_published_widths_equal_torchvisions_variants(name, width, make):
    net = create_model(name)
    counts = count(net, published_config(net, width))
    assert (counts.macs, counts.params) == count_plain(make(), (1, 3, 224, 224))


def test_published_widths_match_documented_counts():
    # torchvision's documented num_params (mnasnet0_75, mnasnet1_3); the MobileNet paper's Table 6
    # (MobileNetV1 0.75x: 325M MACs, 2.6M params; 0.5x: 149M, 1.3M); MobileNetV2 0.75x: 209M, 2.6M
    mnas = create_model("mnasnet1_0")
    assert count(mnas, published_config(mnas, 0.75)).params == 3_170_208
    assert count(mnas, published_config(mnas, 1.3)).params == 6_282_256
    v1 = create_model("mobilenet_v1")
    for width, macs, params in [(0.75, 325e6, 2.6e6), (0.5, 149e6, 1.3e6)]:
        c = count(v1, published_config(v1, width))
        assert abs(c.macs - macs) / macs < 0.005 and round(c.params / 1e6, 1) == params / 1e6
    v2 = create_model("mobilenet_v2")
    c = count(v2, published_config(v2, 0.75))
    assert round(c.macs / 1e6) == 209 and round(c.params / 1e5) == 26
    # the uniform rule is another network: every unit x 0.75, the last conv cut to 960
    assert count(v2, v2.space.uniform(0.75)).macs < 195e6


def test_published_rule_is_refused_where_an_architecture_has_none():
    from autoslim_hw.errors import ConfigError

    net = create_model("resnet18")
    with pytest.raises(ConfigError, match="no published width rule"):
        published_config(net, 0.5)
