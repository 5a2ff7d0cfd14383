"""LiteRT backend: .tflite files written without a converter compute what PyTorch computes."""
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as fb
from torch import nn

from autoslim_hw.errors import UnsupportedOperationError
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.lookup_tables.build import single_op_model
from autoslim_hw.lookup_tables.signatures import Signature
from autoslim_hw.models import create_model
from autoslim_hw.profilers import MeasureSettings, get_backend
from autoslim_hw.profilers.litert_backend import run_tflite
from autoslim_hw.converters.tflite import write_tflite
from tests.conftest import randomize_bn

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def assert_matches_torch(model, shapes, path, tol=1e-4):
    """The file's output equals PyTorch's on the same random inputs, relative to the output's scale."""
    xs = [torch.randn(s) for s in shapes]
    with torch.no_grad():
        ref = model(*xs).numpy()
    out = run_tflite(write_tflite(model, shapes, path), [x.numpy() for x in xs])
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())


def ops_in(path) -> list[str]:
    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    return [_OP_NAMES[model.operatorCodes[op.opcodeIndex].builtinCode] for op in model.subgraphs[0].operators]


@pytest.mark.parametrize("sig", [
    Signature("conv", 16, 16, 8, 16, kernel=3, stride=2, padding=1, act="relu6"),  # PyTorch padding != SAME: PAD
    Signature("conv", 8, 8, 16, 24, act="none"),
    Signature("dwconv", 16, 16, 16, 16, kernel=3, stride=1, padding=1, groups=16, act="relu"),
    Signature("dwconv", 15, 15, 16, 16, kernel=5, stride=2, padding=2, groups=16),  # odd size: SAME fits
    Signature("linear", 1, 1, 32, 10),
    Signature("add", 8, 8, 16, 16),
    Signature("gap", 7, 7, 32, 32),
    Signature("shuffle", 7, 5, 24, 24, groups=2),
], ids=lambda s: s.key)
def test_single_op_models_match_torch(sig, tmp_path):
    model, shapes = single_op_model(sig)
    assert_matches_torch(model, shapes, tmp_path / "op.tflite")
    ops = ops_in(tmp_path / "op.tflite")
    assert "RELU" not in ops and "RELU6" not in ops  # fused into the conv
    if sig.op == "conv" and sig.kernel == 3:
        assert ops == ["PAD", "CONV_2D"]
    if sig.op == "dwconv":
        assert ops == ["DEPTHWISE_CONV_2D"]


@pytest.fixture(scope="module")
def supernet():
    return create_model("mobilenet_v2_cifar", input_size=32, width_mult=0.5)


def test_mobilenet_v2_subnet_with_folded_bn_matches_torch(supernet, tmp_path):
    net = supernet
    model = materialize(net, net.space.sample(random.Random(0)))
    randomize_bn(model, (2, 3, 32, 32), steps=1)
    assert_matches_torch(model, [(1, 3, 32, 32)], tmp_path / "net.tflite")
    # BN folded and ReLU6 fused: only the ops a converter would leave
    assert set(ops_in(tmp_path / "net.tflite")) == {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "MEAN", "RESHAPE",
                                                     "FULLY_CONNECTED"}


def test_shufflenet_split_concat_and_shuffle_match_torch(tmp_path):
    """ShuffleNetV2 (torchvision's own forward: chunk, cat, view-transpose-view) as SPLIT,
    CONCATENATION and RESHAPE-TRANSPOSE-RESHAPE in NHWC."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    randomize_bn(model, (2, 3, 32, 32), steps=1)
    assert_matches_torch(model, [(1, 3, 32, 32)], tmp_path / "net.tflite")
    assert {"SPLIT", "CONCATENATION", "TRANSPOSE"} <= set(ops_in(tmp_path / "net.tflite"))


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large"])
def test_squeeze_excitation_networks_match_torch(name, tmp_path):
    """SiLU (LOGISTIC, MUL), hardsigmoid (ADD with RELU6, MUL), the squeeze-and-excitation product
    and stochastic depth (the identity at inference), in a random subnet of each."""
    net = create_model(name, input_size=32, num_classes=10)
    model = materialize(net, net.space.sample(random.Random(0))).eval()
    randomize_bn(model, (2, 3, 32, 32), steps=1)
    assert_matches_torch(model, [(1, 3, 32, 32)], tmp_path / "net.tflite", tol=1e-3)
    assert {"LOGISTIC" if name == "efficientnet_b0" else "HARD_SWISH", "MUL"} <= set(ops_in(tmp_path / "net.tflite"))


def test_file_size_follows_params(supernet, tmp_path):
    net = supernet
    sizes, params = [], []
    for i, cfg in enumerate([net.space.uniform(0.5), net.space.largest()]):
        model = materialize(net, cfg).eval()
        params.append(sum(p.numel() for p in model.parameters()))
        sizes.append(write_tflite(model, [(1, 3, 32, 32)], tmp_path / f"{i}.tflite").stat().st_size)
    assert sizes[0] < sizes[1] / 3
    assert sizes[0] / sizes[1] == pytest.approx(params[0] / params[1], rel=0.1)


def test_functional_spellings_and_standalone_ops(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8, bias=False)  # depth multiplier 2
            self.bn = nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            y = F.relu(self.conv(x))
            y = F.max_pool2d(y, 3, 2, 1)  # after a relu: zero padding is exact
            y = F.relu6(self.bn(self.dw(y)))
            y = nn.functional.hardswish(torch.add(y, y))
            y = F.dropout(F.relu(y), training=False)
            y = F.adaptive_avg_pool2d(y, 1)
            return F.relu6(self.fc(y.view(y.size(0), -1)))

    model = Net().eval()
    randomize_bn(model, (2, 3, 16, 16), steps=1)
    assert_matches_torch(model, [(1, 3, 16, 16)], tmp_path / "f.tflite")
    assert ops_in(tmp_path / "f.tflite") == ["CONV_2D", "PAD", "MAX_POOL_2D", "PAD", "DEPTHWISE_CONV_2D", "ADD",
                                             "HARD_SWISH", "RELU", "MEAN", "RESHAPE", "FULLY_CONNECTED"]


def test_keepdim_mean_and_maxpool_on_raw_input(tmp_path):
    class Net(nn.Module):
        def forward(self, x):  # SAME padding of a maxpool skips the border, like PyTorch's -inf
            return torch.mean(nn.functional.max_pool2d(x, 3, 2, 1), (2, 3), keepdim=True)

    assert_matches_torch(Net(), [(1, 4, 15, 15)], tmp_path / "m.tflite")


@pytest.mark.parametrize("model, shape, node", [
    (type("Gelu", (nn.Module,), {"forward": lambda self, x: F.gelu(x)})(), (1, 4, 8, 8), "gelu"),
    (nn.Sequential(nn.LSTM(8, 8)), (3, 1, 8), "_0"),
    (nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4)), (1, 4, 8, 8), "_1"),  # a BN after no conv cannot be folded
    (nn.Sequential(nn.MaxPool2d(3, 2, 1)), (1, 4, 16, 16), "_0"),  # zero padding would be wrong on negatives
    (nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten()), (1, 4, 8, 8), "_1"),  # NHWC flatten order differs
])
def test_unsupported_ops_name_the_node(model, shape, node, tmp_path):
    with pytest.raises(UnsupportedOperationError, match=f"node '{node}'") as err:
        write_tflite(model.eval(), [shape], tmp_path / "x.tflite")
    assert "\n" not in str(err.value)  # the CLI prints it as one line
    assert not (tmp_path / "x.tflite").exists()


def test_backend_converts_and_measures(tmp_path, monkeypatch):
    backend = get_backend("litert")
    assert backend.name == "litert" and backend.suffix == ".tflite" and backend.version()
    model, shapes = single_op_model(Signature("conv", 16, 16, 8, 16, kernel=3, padding=1, act="relu"))
    path = backend.convert(model, shapes, tmp_path / "op.tflite")
    lat = backend.measure(path, MeasureSettings(warmup=2, runs=5, rounds=2))
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms and lat.runs >= 10  # more when 5 runs take < min_round_s
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the converter extra were not installed
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'autoslim-hw\[convert\]'"):
        backend.convert(nn.Sequential(nn.GELU()), [(1, 4, 8, 8)], tmp_path / "s.tflite")
