import json

import pytest

from tests.cli_helpers import assert_user_error, run_cli


def test_count_json_matches_published_mobilenet_v2():
    r = run_cli("count", "--model", "mobilenet_v2", "--width", "1.0", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["params"] == 3_504_872
    assert abs(data["macs"] - 300.8e6) / 300.8e6 < 0.005
    assert data["memory"] > data["params"]


def test_count_layers_round_trip(tmp_path):
    r = run_cli("count", "--model", "mobilenet_v2_cifar", "--width", "0.5", "--json")
    layers = json.loads(r.stdout)["layers"]
    again = json.loads(run_cli("count", "--model", "mobilenet_v2_cifar", "--layers", json.dumps(layers), "--json").stdout)
    assert again["macs"] == json.loads(r.stdout)["macs"]
    assert again["layers"] == layers


def test_count_bad_inputs(tmp_path):
    assert_user_error(run_cli("count", "--model", "mobilenet_v3"), "unknown model 'mobilenet_v3'")
    assert_user_error(run_cli("count", "--layers", "[8, 8]"), "layer list has 2 entries")
    assert_user_error(run_cli("count", "--layers", "not json"), "--layers must be a JSON list")
    assert_user_error(run_cli("count", "--channels", tmp_path / "missing.json"), "does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_user_error(run_cli("count", "--channels", bad), "not valid JSON")
    assert_user_error(run_cli("count", "--width", "2.0"), "outside (0, 1.5]")


def test_models_lists_the_registry():
    r = run_cli("models")
    assert r.returncode == 0
    for name in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v2_cifar", "mnasnet1_0", "resnet50"):
        assert name in r.stdout


def test_count_published_width_is_torchvisions_variant():
    r = run_cli("count", "--model", "mobilenet_v2", "--width", "0.75", "--published", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    # torchvision mobilenet_v2(width_mult=0.75): 209.07M MACs, 2,636,424 params (the layer list)
    assert (data["macs"], data["params"]) == (209_069_792, 2_636_424)
    assert data["width_rule"].startswith("published") and data["off_grid_units"]
    # without --width: the model as built; torchvision documents EfficientNet-B0 at 5,288,548 params
    # (its squeeze-and-excitation widths 4, 6, 10 are off the 8-grid that --width 1.0 rounds to)
    data = json.loads(run_cli("count", "--model", "efficientnet_b0", "--json").stdout)
    assert data["params"] == 5_288_548 and data["width_rule"].startswith("the model as built")
    assert_user_error(run_cli("count", "--model", "resnet18", "--width", "0.5", "--published"),
                      "no published width rule")
    assert_user_error(run_cli("count", "--layers", "[8]", "--published"), "--published")


def _table_file(tmp_path, net, ms_of, device="cpu-1core"):
    """A lookup table of `net` whose every signature costs ms_of(sig), with no calibration."""
    from autoslim_hw.lookup_tables import enumerate_signatures
    from autoslim_hw.lookup_tables.build import new_table
    from autoslim_hw.lookup_tables.table import model_key
    from autoslim_hw.profilers import MeasureSettings, get_backend
    from autoslim_hw.profilers.devices import get_device

    table = new_table(get_device(device), get_backend("onnxruntime"), MeasureSettings())
    for sig in enumerate_signatures(net):
        table.add(sig, ms_of(sig), 0.0, 0.0)
    table.metadata["models"] = [{"key": model_key(net), "spec": net.spec.to_dict()}]
    path = tmp_path / "table.json"
    table.save(path)
    return path


def test_count_lut_predicts_any_config_form(tmp_path):
    from autoslim_hw.lookup_tables import config_signatures
    from autoslim_hw.models import create_model
    from autoslim_hw.search.result import FORMAT, VERSION

    net = create_model("mobilenet_v2_cifar", input_size=16)
    def ms_of(s):
        return 0.01 + 1e-5 * s.cin * s.cout
    lut = _table_file(tmp_path, net, ms_of)

    def expected(cfg):  # the table's rule: a config costs the sum of its layers' entries
        return sum(ms_of(s) for s in config_signatures(net, cfg))

    # a width: the model comes from the table
    r = run_cli("count", "--lut", lut, "--width", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["model"] == "mobilenet_v2_cifar" and data["input_size"] == 16 and data["latency_ms"] > 0
    # the other forms in-process (the workflow the command calls), then the text output
    from autoslim_hw.errors import UserError
    from autoslim_hw.workflows.count import count_config

    # a layer list on the width grid: every signature measured, the prediction their sum
    cfg = net.space.uniform(0.5, snap=True)
    layers = net.space.to_layer_list(cfg)
    got = count_config(lut=lut, layers=json.dumps(layers))
    assert got.latency_ms == pytest.approx(expected(cfg)) and got.interpolated == [] and got.off_grid_units == []
    # off the width grid: counted and predicted as given, the estimates flagged
    layers[0] += 2
    got = count_config(lut=lut, layers=json.dumps(layers))
    assert got.off_grid_units and got.interpolated and got.layers == layers
    assert any("off the supernet's width grid" in n for n in got.notes)
    text = run_cli("count", "--lut", lut, "--layers", json.dumps(layers))
    assert "interpolated" in text.stdout and "latency" in text.stdout
    # a search result's target
    target_cfg = net.space.uniform(0.75, snap=True)
    result = {"format": FORMAT, "version": VERSION, "status": "done", "model": net.spec.to_dict(), "trajectory": [],
              "targets": [{"constraints": {"macs": 1e9}, "met": True, "config": dict(target_cfg)},
                          {"constraints": {"macs": 2e9}, "met": True, "config": dict(net.space.largest())}]}
    found = tmp_path / "search.json"
    found.write_text(json.dumps(result))
    assert count_config(channels=found, target=0, lut=lut).latency_ms == pytest.approx(expected(target_cfg))
    with pytest.raises(UserError, match="pick one with --target"):
        count_config(channels=found, lut=lut)
    # a table of another model, device or runtime: refused, in one line from the command
    assert_user_error(run_cli("count", "--model", "mobilenet_v2", "--lut", lut), "was profiled for")
    with pytest.raises(UserError, match="is for device 'cpu-1core'"):
        count_config(lut=lut, device="pixel7")
    with pytest.raises(UserError, match="is for runtime 'onnxruntime'"):
        count_config(lut=lut, runtime="litert")
    with pytest.raises(UserError, match="does not exist"):
        count_config(lut=tmp_path / "none.json")
