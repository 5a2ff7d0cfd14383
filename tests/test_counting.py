"""Counts against published numbers, a hand-computed model, and hook-based counting of
materialized subnets."""
import random

import pytest
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.counting import count, count_plain
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model

# DEVELOPERS.md / the papers, 224x224 (CIFAR variant 32x32, 10 classes: AutoSlim Table 2)
PUBLISHED = {
    "mobilenet_v2": (300.8e6, 3_504_872),
    "mobilenet_v1": (568.7e6, 4_231_976),
    "resnet50": (4.089e9, 25_557_032),
    "mnasnet1_0": (314.4e6, 4_383_312),
    "mobilenet_v2_cifar": (87.98e6, 2_236_682),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_counts(name):
    net = create_model(name)
    counts = count(net, net.space.uniform(1.0))
    macs, params = PUBLISHED[name]
    assert abs(counts.macs - macs) / macs < 0.005
    assert counts.params == params


def test_memory_and_peak_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    net = slimmable(model, width_max=1.0, groups=1, input_size=8)
    c = count(net, net.space.base_config())
    params = 3 * 8 * 9 + 2 * 8 + 8 * 2 + 2
    features = 3 * 64 + 8 * 64 + 8 + 2  # input, conv (BN and ReLU fused), pool, linear
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
