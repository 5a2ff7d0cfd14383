"""Every entry of every registry gets the same checks: a new model, runtime, cost kind, device
or dataset is tested here without a line of its own (a cost kind needs its independent reference
below, and the test says so when it has none)."""
import json
import math
import random

import numpy as np
import pytest
import torch
from conftest import randomize_bn
from torch import nn

from autoslim_hw import ChannelConfig, slimmable
from autoslim_hw.counting import count, count_plain
from autoslim_hw.data import dataset_info, list_datasets
from autoslim_hw.lookup_tables import enumerate_signatures
from autoslim_hw.lookup_tables.build import new_table, single_op_model
from autoslim_hw.models import create_model, list_models
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.profilers import MeasureSettings, get_backend, list_backends
from autoslim_hw.profilers.devices import get_device, list_devices
from autoslim_hw.search.costs import COSTS, CostModel, Target, targets_from_options
from tests.cli_helpers import run_cli

QUICK = MeasureSettings(warmup=1, runs=3, rounds=1, min_round_s=0.0)


# --- models ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
def test_every_model_counts_and_materializes_like_plain_pytorch(name):
    torch.manual_seed(0)
    size = 32 if "cifar" in name else 64
    supernet = create_model(name, input_size=size, num_classes=10)
    shape = (2, 3, size, size)
    cfg = supernet.space.sample(random.Random(1))
    for config in (supernet.space.largest(), cfg):
        plain = materialize(supernet, config)
        macs, params = count_plain(plain, (1, 3, size, size))  # hooks on the plain model: independent
        c = count(supernet, config)
        assert (c.macs, c.params) == (macs, params), config
    randomize_bn(supernet, shape)
    supernet.set_config(cfg)
    plain = materialize(supernet, cfg).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(plain(x), supernet.eval()(x), rtol=1e-4, atol=1e-4)
    # truly smaller: the plain model holds only the config's weights
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in supernet.parameters())


# --- runtimes --------------------------------------------------------------------------------------

def _small_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5))
    randomize_bn(model, (4, 3, 12, 12))
    return model.eval()


@pytest.mark.parametrize("entry", list_backends(), ids=lambda e: e.name)
def test_every_runtime_converts_runs_and_times(entry, tmp_path):
    backend = get_backend(entry.name)
    assert (backend.name, backend.suffix) == (entry.name, entry.suffix)
    model, shape = _small_cnn(), (1, 3, 12, 12)
    path = tmp_path / f"model{entry.suffix}"
    backend.convert(model, [shape], path)
    assert path.is_file() and backend.version()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = backend.run(path, [x])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert backend.input_layout(path) in ("NCHW", "NHWC")
    lat = backend.measure(path, QUICK)
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms and math.isfinite(lat.value("min"))


@pytest.mark.parametrize("entry", list_backends(profiles=True), ids=lambda e: e.name)
def test_every_table_runtime_times_single_ops(entry, tmp_path):
    """Runtimes that build tables time each signature's single-op file: a larger op takes longer."""
    backend = get_backend(entry.name, profiles=True)
    net = slimmable(nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 1)), width_max=1.0,
                    groups=2, input_size=32)
    sigs = sorted((s for s in enumerate_signatures(net) if s.op == "conv" and s.cin == 3), key=lambda s: s.cout)
    times = []
    for sig in (sigs[0], sigs[-1]):
        model, shapes = single_op_model(sig)
        path = tmp_path / f"{sig.cout}{entry.suffix}"
        backend.convert(model, shapes, path)
        times.append(backend.measure_op(path, MeasureSettings(warmup=3, runs=20, rounds=3)).value("min"))
    assert sigs[0].cout * 2 == sigs[-1].cout and 0 < times[0] < times[1]


# --- cost kinds ------------------------------------------------------------------------------------

def _cost_net():
    """Widths in multiples of 16 (ONNX Runtime's blocked layout pads to 16 on AVX-512, so its
    memory profile then counts exactly what the model holds)."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                          nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                          nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))
    return slimmable(model, width_max=1.0, groups=2, divisor=16, input_size=16)


def _reference_macs(net, config, tmp_path):
    return count_plain(materialize(net, config), (1, 3, 16, 16))[0]


def _reference_params(net, config, tmp_path):
    return count_plain(materialize(net, config), (1, 3, 16, 16))[1]


def _reference_memory(net, config, tmp_path):
    """ONNX Runtime's own profile of the exported subnet: weights as it holds them, and the peak
    of its live activations."""
    from autoslim_hw.converters.onnx import export_onnx
    from autoslim_hw.profilers.memory import profile_onnx_memory

    path = export_onnx(materialize(net, config).eval(), tmp_path / "m.onnx", (1, 3, 16, 16))
    prof = profile_onnx_memory(path, rss=False)
    return prof.parameter_bytes + prof.peak_activation_bytes


def _reference_latency(net, config, tmp_path):
    """The synthetic table below prices an op at cin * 0.01 + cout * 0.001 ms; here the sum over
    the plain model's conv and linear layers and its global pool (cin = cout)."""
    plain = materialize(net, config)
    total = 0.0
    for m in plain.modules():
        if isinstance(m, nn.Conv2d):
            total += m.in_channels * 0.01 + m.out_channels * 0.001
        elif isinstance(m, nn.Linear):
            total += m.in_features * 0.01 + m.out_features * 0.001
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            channels = [c for c in plain.modules() if isinstance(c, nn.Conv2d)][-1].out_channels
            total += channels * 0.011
    return total


REFERENCES = {"macs": _reference_macs, "params": _reference_params, "memory": _reference_memory,
              "latency_ms": _reference_latency}


@pytest.mark.parametrize("name", list(COSTS))
def test_every_cost_kind_matches_its_independent_reference(name, tmp_path):
    assert name in REFERENCES, f"cost kind {name!r} has no independent reference in {__file__}: add one"
    net = _cost_net()
    table = new_table(get_device("cpu-1core"), get_backend("onnxruntime"), MeasureSettings())
    for sig in enumerate_signatures(net):
        table.add(sig, sig.cin * 0.01 + sig.cout * 0.001, 0.0, 0.0)
    costs = CostModel(net, table)
    for config in (net.space.largest(), net.space.smallest(),
                   ChannelConfig({u.name: u.options[i % 2] for i, u in enumerate(net.space.free_units)})):
        assert costs(config)[name] == pytest.approx(REFERENCES[name](net, config, tmp_path), rel=1e-9)
    assert CostModel(net)(net.space.largest())[name] is None if COSTS[name].needs_table else True


@pytest.fixture(scope="module")
def search_help() -> str:
    return run_cli("search", "--help", timeout=120).stdout


@pytest.mark.parametrize("name", list(COSTS))
def test_every_cost_kind_is_a_search_option(name, search_help):
    kind = COSTS[name]
    (target,) = targets_from_options(**{kind.param: ["2.5"]})
    assert target == Target.of(**{name: 2.5}) and kind.label in target.describe()
    assert kind.option in search_help


# --- devices and datasets --------------------------------------------------------------------------

@pytest.mark.parametrize("device", list_devices(), ids=lambda d: d.name)
def test_every_device_file_describes_a_device(device):
    from importlib import resources

    path = resources.files("autoslim_hw.profilers").joinpath("device_specs", f"{device.name}.json")
    data = json.loads(path.read_text())
    assert data["format"] == "autoslim-hw/device" and data["name"] == device.name
    assert device.threads >= 1 and device.kind == "host" and get_device(device.name) == device
    assert device.to_dict()["cpu_id"]  # a host device records the CPU it measures on


@pytest.mark.parametrize("name", [n for n in list_datasets() if ":" not in n])
def test_every_dataset_describes_its_images(name):
    info = dataset_info(name)
    assert info.num_classes >= 2 and info.in_chans in (1, 3) and info.native_size >= 8
    assert len(info.mean) == len(info.std) == info.in_chans and all(0 < s < 1 for s in info.std)
