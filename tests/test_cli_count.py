import json

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
