"""A materialized subnet is a plain model equal to the supernet at its config, and its
ONNX export runs in ONNX Runtime and really shrinks."""
import random

import numpy as np
import onnxruntime as ort
import pytest
import torch

from autoslim_hw import slimmable
from autoslim_hw.counting import count
from autoslim_hw.converters.onnx import export_onnx
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model
from autoslim_hw.nn.layers import SLIMMABLE_TYPES
from tests.conftest import randomize_bn
from tests.test_units import TinyNet


@pytest.mark.parametrize("name,size", [("mobilenet_v2_cifar", 32), ("mnasnet1_0", 64), ("resnet18", 64),
                                       ("mobilenet_v1", 64)])
def test_materialize_equals_supernet(name, size):
    net = create_model(name, input_size=size, num_classes=10)
    cfg = net.space.sample(random.Random(2))
    net.set_config(cfg, strict=True)
    randomize_bn(net, (4, 3, size, size))
    plain = materialize(net, cfg).eval()
    assert not any(isinstance(m, SLIMMABLE_TYPES) for m in plain.modules())
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref, out = net(x), plain(x)
    assert ref.abs().max() > 1e-3  # a non-trivial output
    assert torch.allclose(ref, out, atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in plain.parameters()) == count(net, cfg).params


def test_materialize_with_concat_and_flatten():
    net = slimmable(TinyNet(), input_size=8)
    cfg = net.space.sample(random.Random(4))
    net.set_config(cfg)
    randomize_bn(net, (4, 3, 8, 8))
    plain = materialize(net, cfg).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), plain(x), atol=1e-5)


def test_supernet_config_restored_after_materialize():
    net = create_model("mobilenet_v2_cifar")
    before = net.config
    materialize(net, net.space.smallest())
    assert net.config == before


# MobileNetV2 (depthwise), EfficientNet (squeeze-and-excitation, SiLU, sigmoid), RegNet (grouped convs),
# ShuffleNetV2 (channel split and shuffle)
@pytest.mark.parametrize("name,size", [("mobilenet_v2_cifar", 32), ("efficientnet_b0", 64), ("regnet_x_400mf", 64),
                                       ("shufflenet_v2_x1_0", 64)])
def test_onnx_export_runs_in_onnxruntime_and_shrinks(tmp_path, name, size):
    net = create_model(name, input_size=size, num_classes=10)
    shape = (1, 3, size, size)
    randomize_bn(net, (4, 3, size, size))
    x = torch.randn(shape)
    sizes, params = {}, {}
    for width in (0.5, 1.5):
        cfg = net.space.uniform(width, snap=True)
        plain = materialize(net, cfg).eval()
        path = export_onnx(plain, tmp_path / f"w{width}.onnx", shape)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(out, plain(x).numpy(), rtol=1e-3, atol=1e-4)
        sizes[width], params[width] = path.stat().st_size, count(net, cfg).params
    # float32 weights dominate the file: its size follows the parameter count
    assert sizes[0.5] / sizes[1.5] == pytest.approx(params[0.5] / params[1.5], rel=0.1)
    assert not list(tmp_path.glob(".*tmp*"))


def test_exporting_the_supernet_is_refused(tmp_path):
    from autoslim_hw.errors import UserError

    net = create_model("mobilenet_v2_cifar")
    with pytest.raises(UserError, match="materialized"):
        export_onnx(net.net, tmp_path / "x.onnx", (1, 3, 32, 32))
