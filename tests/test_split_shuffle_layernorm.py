"""ShuffleNetV2's channel split and shuffle, ConvNeXt's permute, channels-last LayerNorm/Linear and
per-channel layer scale: the supernet at the base config computes what torchvision's own model
computes (the independent reference), a random config materializes to a plain model with the same
outputs and the counts hooks find, and every deployed op has a signature the table can time."""
import random

import numpy as np
import pytest
import torch
import torchvision
from conftest import randomize_bn
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from autoslim_hw import slimmable
from autoslim_hw.counting import count, count_plain
from autoslim_hw.errors import UnsupportedOperationError
from autoslim_hw.lookup_tables.build import single_op_model
from autoslim_hw.lookup_tables.signatures import config_signatures, deployed_ops
from autoslim_hw.nn.materialize import is_slimmable, materialize
from autoslim_hw.search.evaluate import PrefixRunner


def _small_convnext() -> nn.Module:
    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], layer_scale=0.5, num_classes=5)
    with torch.no_grad():  # weights away from their init, so that every parameter matters
        for name, p in model.named_parameters():
            if "layer_scale" in name or name.endswith(("0.1.weight", "norm.weight")) or p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5 if p.dim() != 1 or "bias" not in name else torch.randn_like(p) * 0.1)
    return model.eval()


def _shufflenet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=5)
    randomize_bn(model, (4, 3, 32, 32))
    return model.eval()


MODELS = {"convnext": _small_convnext, "shufflenet_v2": _shufflenet}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_base_config_is_the_torchvision_model(name):
    model = MODELS[name]()
    net = slimmable(model, width_max=1.5, groups=4, input_size=32).eval()
    net.set_config(net.space.base_config())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), net(x)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_random_configs_materialize_count_and_run_from_any_node(name):
    net = slimmable(MODELS[name](), width_max=1.5, groups=4, input_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    runner = PrefixRunner(net)
    for seed in range(3):
        cfg = net.space.sample(random.Random(seed))
        plain = materialize(net, cfg).eval()
        assert not is_slimmable(plain)
        assert (count(net, cfg).macs, count(net, cfg).params) == count_plain(plain, (1, 3, 32, 32))
        net.set_config(cfg)
        with torch.no_grad():
            want = net(x)
            assert torch.allclose(plain(x), want, atol=1e-5, rtol=1e-4)
            assert torch.allclose(runner.run(x)[0], want, atol=1e-5, rtol=1e-4)  # the search's evaluator
    assert count(net, net.space.smallest()).macs < count(net, net.space.largest()).macs / 4


def test_shuffle_ties_both_halves_of_a_stage():
    net = slimmable(_shufflenet(), width_max=1.0, groups=4, input_size=32)
    units = net.space.units
    # torchvision's 0.5x: stages of 48/96/192 channels, split in two halves of 24/48/96
    stage = {u.name: u for u in units.values() if u.name.startswith("stage2.0.branch1")}
    assert [u.base for u in stage.values()] == [24]
    tied = stage["stage2.0.branch1.2"].layers
    assert set(tied) == {"stage2.0.branch1.2", *(f"stage2.{i}.branch2.5" for i in range(4))}


def test_convnext_units_layer_scale_and_layernorm_slim_with_the_stage():
    net = slimmable(_small_convnext(), width_max=1.0, groups=4, input_size=32)
    kinds = {s.kind for s in net.space.layers.values()}
    assert {"ln", "param", "linear", "dwconv"} <= kinds
    scale = net.space.layers["features.1.0.layer_scale"]
    stem = net.space.layers["features.0.0"].out_unit
    assert [u for u, _, _ in scale.in_segments] == [stem]  # the residual stream's unit
    cfg = net.space.smallest()
    plain = materialize(net, cfg)
    assert plain.features[1][0].layer_scale.shape == (net.space.widths(cfg)[stem], 1, 1)
    assert type(plain.features[1][0]).__name__ == "CNBlock" and type(plain.features[1][0]).__module__.startswith(
        "torchvision")


@pytest.mark.parametrize("name,ops", [("shufflenet_v2", {"shuffle", "conv", "dwconv"}),
                                      ("convnext", {"ln", "ln2d", "nchw2nhwc", "nhwc2nchw", "linear", "scale"})])
def test_every_deployed_op_has_a_signature_that_runs_in_onnxruntime(tmp_path, name, ops):
    ort = pytest.importorskip("onnxruntime")
    from autoslim_hw.converters.onnx import export_onnx

    net = slimmable(MODELS[name](), width_max=1.5, groups=4, input_size=32)
    deployed = deployed_ops(net)
    assert ops <= {o.op for o in deployed}
    sigs = config_signatures(net, net.space.sample(random.Random(0)), deployed)
    for sig in {s.key: s for s in sigs}.values():
        if sig.op in ("conv", "dwconv", "gap"):
            continue  # timed for every model already
        model, shapes = single_op_model(sig)
        if len(shapes) != 1:
            continue  # scale: two inputs, timed for EfficientNet already
        path = export_onnx(model, tmp_path / f"{len(list(tmp_path.iterdir()))}.onnx", shapes[0])
        x = np.random.default_rng(0).standard_normal(shapes[0]).astype(np.float32)
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        with torch.no_grad():
            np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


class _Split(nn.Module):
    def __init__(self, unequal: bool = False, permute=(0, 2, 3, 1), ln_over_width: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.unequal, self.dims, self.ln = unequal, permute, nn.LayerNorm(8) if ln_over_width else None

    def forward(self, x):
        x = self.conv(x)
        if self.ln is not None:
            return self.ln(x)  # a plain LayerNorm on NCHW normalizes the width
        if self.unequal:
            a, b = torch.split(x, [3, 5], dim=1)
            return a.sum() + b.sum()
        return x.permute(*self.dims).mean()


@pytest.mark.parametrize("kwargs,match", [({"unequal": True}, "split"), ({"permute": (0, 3, 2, 1)}, "permute"),
                                          ({"ln_over_width": True}, "LayerNorm over")])
def test_what_is_not_supported_is_refused_naming_the_node(kwargs, match):
    with pytest.raises(UnsupportedOperationError, match=match):
        slimmable(_Split(**kwargs), input_size=8)


class _Scaled(nn.Module):
    """A (C,) parameter: it scales a channels-last map or (N, C) features; on an NCHW map it would
    broadcast over the width, which discovery refuses."""

    def __init__(self, where: str):
        super().__init__()
        self.where = where
        self.conv, self.scale, self.fc = nn.Conv2d(3, 8, 1), nn.Parameter(torch.rand(8) + 0.5), nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv(x)
        if self.where == "nchw":
            return (x * self.scale).mean((2, 3))
        if self.where == "features":
            return self.fc(x.mean((2, 3)) * self.scale)
        return self.fc(x.permute(0, 2, 3, 1) * self.scale).mean((1, 2))


@pytest.mark.parametrize("where", ["features", "nhwc"])
def test_a_channel_vector_parameter_slims_with_features_or_a_channels_last_map(where):
    torch.manual_seed(0)
    model = _Scaled(where).eval()
    net = slimmable(model, width_max=1.0, groups=4, input_size=8).eval()
    cfg = net.space.smallest()
    plain = materialize(net, cfg).eval()
    assert plain.scale.shape == (net.space.widths(cfg)["conv"],)
    net.set_config(cfg)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(plain(x), net(x), atol=1e-6)
        net.set_config(net.space.base_config())
        assert torch.allclose(net(x), model(x), atol=1e-6)
    if where == "nhwc":  # the mean over a channels-last map's H and W is a global pool of an 8x8 map
        assert [(o.op, o.h, o.w) for o in deployed_ops(net) if o.op == "gap"] == [("gap", 8, 8)]


def test_a_channel_vector_on_an_nchw_map_is_refused():
    with pytest.raises(UnsupportedOperationError, match="different dims"):
        slimmable(_Scaled("nchw"), input_size=8)
