"""ChannelConfig validation, serialization and the AutoSlim layer-list form."""
import json
import random

import pytest

from autoslim_hw import ChannelConfig
from autoslim_hw.errors import ConfigError
from autoslim_hw.models import create_model


@pytest.fixture(scope="module")
def mbv2():
    return create_model("mobilenet_v2_cifar")


def test_json_round_trip_and_hash(mbv2):
    cfg = mbv2.space.sample(random.Random(3))
    again = ChannelConfig.from_json(cfg.to_json(), mbv2.space)
    assert again == cfg and hash(again) == hash(cfg)
    assert len({cfg, again, mbv2.space.largest()}) == 2
    assert json.loads(cfg.to_json())["format"] == "autoslim-hw/channel-config"


def test_unknown_unit(mbv2):
    widths = dict(mbv2.space.largest())
    widths["features.99.conv"] = 8
    with pytest.raises(ConfigError, match="'features.99.conv' is neither a unit"):
        ChannelConfig.from_dict({"widths": widths}, mbv2.space)


def test_width_outside_options(mbv2):
    cfg = mbv2.space.largest().replace("features.0.0", 44)  # options of a 32-wide unit step by 8
    with pytest.raises(ConfigError, match="width 44 for unit 'features.0.0' is not an option"):
        mbv2.space.validate(cfg)
    mbv2.space.validate(cfg, strict=False)  # off-grid widths are allowed when asked for
    with pytest.raises(ConfigError, match="outside"):
        mbv2.space.validate(mbv2.space.largest().replace("features.0.0", 49), strict=False)


def test_missing_unit(mbv2):
    widths = dict(mbv2.space.largest())
    widths.pop("features.0.0")
    with pytest.raises(ConfigError, match="no width for unit 'features.0.0'"):
        mbv2.space.validate(ChannelConfig(widths))


def test_tied_layers_with_different_widths(mbv2):
    widths = dict(mbv2.space.largest())
    widths["features.5.conv.2"] = 16  # tied to features.4.conv.2 by a residual add
    with pytest.raises(ConfigError, match="tied"):
        ChannelConfig.from_dict(widths, mbv2.space)


def test_layer_list_of_mobilenet_v2_1x_matches_the_paper():
    net = create_model("mobilenet_v2")
    expected = [32, 16]
    cin = 16
    for t, c, n, s in [(6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for _ in range(n):
            expected += [cin * t, c]
            cin = c
    expected += [1280, 1000]
    assert len(expected) == 36
    layers = net.space.to_layer_list(net.space.uniform(1.0))
    assert layers == expected
    assert net.space.from_layer_list(layers, strict=False) == net.space.uniform(1.0)


def test_layer_list_round_trip_and_errors(mbv2):
    cfg = mbv2.space.sample(random.Random(5))
    layers = mbv2.space.to_layer_list(cfg)
    assert ChannelConfig.from_layer_list(mbv2, layers) == cfg
    with pytest.raises(ConfigError, match="has 3 entries, this model needs 36"):
        ChannelConfig.from_layer_list(mbv2, [8, 8, 8])
    broken = list(layers)
    broken[3] = broken[5] + 8 if broken[5] < 32 else broken[5] - 8  # block 1 and 2 outputs are tied
    with pytest.raises(ConfigError, match="tied"):
        ChannelConfig.from_layer_list(mbv2, broken)
    wrong_classes = layers[:-1] + [11]
    with pytest.raises(ConfigError, match="fixed at 10"):
        ChannelConfig.from_layer_list(mbv2, wrong_classes)


def test_mobilenet_v1_layer_list_has_stem_13_pointwise_and_classes():
    net = create_model("mobilenet_v1")
    layers = net.space.to_layer_list(net.space.uniform(1.0))
    assert layers == [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024, 1000]


def test_sampling_covers_options_and_extremes(mbv2):
    rng = random.Random(0)
    space = mbv2.space
    seen = {u.name: set() for u in space.free_units}
    for _ in range(200):
        cfg = space.sample(rng)
        space.validate(cfg)
        for k, v in cfg.items():
            seen[k].add(v)
    assert all(seen[u.name] == set(u.options) for u in space.free_units if len(u.options) <= 6)
    assert all(space.smallest()[u.name] == u.options[0] for u in space.free_units)


def test_uniform_ladder_and_the_baseline_under_a_budget(mbv2):
    from autoslim_hw.counting import count
    from autoslim_hw.search import uniform_baseline

    ladder = mbv2.space.uniform_ladder()
    assert ladder[0] == (0.15, mbv2.space.smallest()) and ladder[-1][1] == mbv2.space.largest()
    assert len({cfg for _, cfg in ladder}) == len(ladder)  # distinct configs, narrowest first
    macs = [count(mbv2, cfg).macs for _, cfg in ladder]
    assert macs == sorted(macs)
    # the 1.0x network's MACs (87.98M, AutoSlim Table 2) as the budget: uniform 1.0x fits exactly
    budget = count(mbv2, mbv2.space.uniform(1.0, snap=True)).macs
    w, cfg = uniform_baseline(mbv2.space, lambda c: count(mbv2, c).macs, budget)
    assert cfg == mbv2.space.uniform(1.0, snap=True) and w <= 1.0
    w2, cfg2 = uniform_baseline(mbv2.space, lambda c: count(mbv2, c).macs, budget + 1, at_least=True)
    assert count(mbv2, cfg2).macs > budget and w2 > 1.0  # the narrowest above the budget
    assert uniform_baseline(mbv2.space, lambda c: count(mbv2, c).macs, 1) is None
