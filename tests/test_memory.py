"""Measured memory under ONNX Runtime (profilers/memory.py) against values computed here
from the PyTorch modules and by formula, not through counting.py."""
import itertools
import random

import pytest
import torch
from conftest import randomize_bn
from torch import nn

from autoslim_hw.counting import memory_counts
from autoslim_hw.converters.onnx import export_onnx
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model
from autoslim_hw.profilers.memory import profile_onnx_memory, rss_delta_bytes

pytest.importorskip("onnxruntime")
pytest.importorskip("psutil")

F32 = 4


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return create_model("mobilenet_v2_cifar", input_size=32, width_mult=0.5)


@pytest.fixture(scope="module")
def sampled(supernet, tmp_path_factory):
    """A nonuniform subnet with trained-looking BN statistics (distinct folded biases, so
    no initializer is shared), its config and its ONNX file. Widths are multiples of 16:
    ORT's blocked layout pads weights to 8 channels with AVX2 and to 16 with AVX-512."""
    from autoslim_hw import ChannelConfig

    rng = random.Random(0)
    options = {u.name: [o for o in u.options if o % 16 == 0] for u in supernet.space.free_units}
    assert all(options.values())
    config = ChannelConfig({name: rng.choice(opts) for name, opts in options.items()})
    model = materialize(supernet, config)
    randomize_bn(model, (4, 3, 32, 32))
    return config, model, _export(model, tmp_path_factory.mktemp("mem") / "sampled.onnx", (1, 3, 32, 32))


def _export(model, path, shape):
    return export_onnx(model.eval(), path, shape)


def _folded_param_elements(model: nn.Module) -> tuple[int, int]:
    """(conv part, linear part) of the parameter count once each BN is folded into the
    bias-less conv before it: conv weights + one bias per output channel, linear w + b."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == sum(c.bias is None for c in convs)  # every BN folds into a bias-less conv
    conv = sum(c.weight.numel() + c.out_channels for c in convs)
    linear = sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    return conv, linear


def test_parameter_bytes_equal_folded_pytorch_params(sampled):
    _, model, path = sampled
    conv, linear = _folded_param_elements(model)
    prof = profile_onnx_memory(path, rss=False)
    assert prof.parameter_bytes == F32 * (conv + linear)
    assert prof.unique_parameter_bytes == prof.parameter_bytes
    # the profile's own parameter_size matches node by node wherever a kernel kept its
    # weights; a prepacked Gemm weight is released and missing from the profile
    conv_nodes = [n for n in prof.nodes if n.op_type == "Conv"]
    assert sum(n.profile_parameter_bytes for n in conv_nodes) == F32 * conv
    assert all(n.profile_parameter_bytes == n.parameter_bytes for n in conv_nodes)
    assert prof.profile_parameter_bytes <= prof.parameter_bytes


def test_single_conv_node_bytes(tmp_path):
    n, c, h, w = 1, 16, 20, 12
    conv = nn.Conv2d(3, c, 3, padding=1)
    prof = profile_onnx_memory(_export(nn.Sequential(conv), tmp_path / "conv.onnx", (n, 3, h, w)), rss=False)
    (node,) = [x for x in prof.nodes if x.op_type == "Conv"]
    assert node.output_bytes == F32 * n * c * h * w
    assert node.activation_bytes == F32 * n * 3 * h * w
    assert node.parameter_bytes == node.profile_parameter_bytes == F32 * (c * 3 * 3 * 3 + c)


def test_chain_peak_is_max_of_consecutive_pairs(tmp_path):
    h = w = 16
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                          nn.Conv2d(32, 8, 1))
    sizes = [3 * h * w, 16 * h * w, 32 * (h // 2) * (w // 2), 8 * (h // 2) * (w // 2)]  # x, then each output
    expected = F32 * max(a + b for a, b in itertools.pairwise(sizes))
    prof = profile_onnx_memory(_export(model, tmp_path / "chain.onnx", (1, 3, h, w)), rss=False)
    assert prof.peak_activation_bytes == expected


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
        self.d = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        skip = self.a(x)
        return self.d(skip + self.c(self.b(skip)))


def test_residual_keeps_skip_alive(tmp_path):
    h = w = 16
    hw = h * w
    prof = profile_onnx_memory(_export(_Residual(), tmp_path / "res.onnx", (1, 3, h, w)), rss=False)
    chain = F32 * max(3 * hw + 16 * hw, 16 * hw + 16 * hw, 16 * hw + 16 * hw, 16 * hw + 8 * hw)
    # while c (and the add) runs: the skip, b's output and c's (or the sum's) output
    assert prof.peak_activation_bytes == F32 * 3 * 16 * hw
    assert prof.peak_activation_bytes > chain


def test_rss_delta_grows_with_width(supernet, tmp_path):
    big = _export(materialize(supernet, supernet.space.largest()), tmp_path / "big.onnx", (1, 3, 32, 32))
    small = _export(materialize(supernet, supernet.space.smallest()), tmp_path / "small.onnx", (1, 3, 32, 32))
    rss_big, rss_small = rss_delta_bytes(big), rss_delta_bytes(small)
    assert rss_small > 0
    # the 1.5x model's weights alone are ~6 MB more than the 0.15x model's
    assert rss_big > rss_small


def test_analytic_counts_agree_with_ort(supernet, sampled):
    """Cross-check of two independent paths: counting.memory_counts on the supernet and
    ORT on the exported subnet (BN folded, activations fused, its own graph)."""
    config, _, path = sampled
    analytic = memory_counts(supernet, config, 32)
    prof = profile_onnx_memory(path, rss=False)
    assert prof.parameter_bytes == analytic.folded_param_bytes
    assert prof.peak_activation_bytes == analytic.peak_activation_bytes
    first = analytic.layers[0]
    assert first.kind == "conv" and first.input_bytes == F32 * 3 * 32 * 32
    assert prof.nodes[0].output_bytes == first.output_bytes
