"""Property-based checks (hypothesis): whatever a user types or a file holds, the tool either
works or refuses with one line. For the CLI that means exit code 0, or 2 with one line on
stderr and no traceback; for the file loaders, a result or a UserError, and a lookup table
that loads predicts a finite, non-negative latency."""
import functools
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoslim_hw.cli import main
from autoslim_hw.errors import UserError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,  # the same examples on every run
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                    st.sampled_from(["0", "-1", "1e309", "nan", "-inf", "1,5", "", "0x10", "2M"]))


def run_main(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["autoslim-hw", *argv])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr().err


def assert_works_or_one_line(code, err):
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 2:
        assert len([line for line in err.splitlines() if line.strip()]) == 1 or "Usage:" in err, err


@SETTINGS
@given(width=numbers, size=st.one_of(st.integers(-4, 48), st.sampled_from(["nan", "x", "1e3"])))
def test_count_with_any_width_and_input_size(width, size, monkeypatch, capsys):
    code, err = run_main(["count", "--model", "mobilenet_v2_cifar", "--width", str(width), "--input-size", str(size),
                          "--json"], monkeypatch, capsys)
    assert_works_or_one_line(code, err)


@SETTINGS
@given(value=numbers, option=st.sampled_from(["--flops", "--params", "--memory", "--latency-ms"]))
def test_search_targets_of_any_value(value, option, monkeypatch, capsys, tmp_path):
    # a target is checked before anything is loaded: a missing checkpoint must not be what fails first
    code, err = run_main(["search", "--checkpoint", str(tmp_path / "none.pt"), option, str(value)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


# --- file loaders ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    from autoslim_hw.models import create_model
    from tests.test_search import synthetic_table

    net = create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=16, num_classes=10)
    path = tmp_path_factory.mktemp("table") / "lut.json"
    synthetic_table(net, path)
    return net, json.loads(path.read_text())


json_values = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(-10, 10), st.text(max_size=5), st.just([]), st.just({}))


def paths_of(value, prefix=()):
    """Every key path into a JSON value (the entries' first two only: they are all alike)."""
    if isinstance(value, dict):
        items = list(value.items())
        if prefix[-1:] == ("entries",):
            items = items[:2]
        for k, v in items:
            yield prefix + (k,)
            yield from paths_of(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:2]):
            yield prefix + (i,)
            yield from paths_of(v, prefix + (i,))


def damage(data, good):
    """A copy of the JSON value `good` with the value at one drawn key path replaced by a drawn
    JSON value, or deleted; returns (path, new value or "<delete>", the copy)."""
    path = data.draw(st.sampled_from(sorted(paths_of(good), key=str)))
    new = data.draw(st.one_of(json_values, st.just("<delete>")))
    damaged = json.loads(json.dumps(good))
    parent = damaged
    for key in path[:-1]:
        parent = parent[key]
    if new == "<delete>":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return path, new, damaged


def write_damaged(data, good, file):
    """`damage` written to `file` as JSON; returns (path, new value)."""
    path, new, damaged = damage(data, good)
    file.write_text(json.dumps(damaged))
    return path, new


@SETTINGS
@given(data=st.data())
def test_table_with_any_field_changed_loads_or_is_refused(table_file, data, tmp_path):
    from autoslim_hw.lookup_tables.table import LatencyTable

    net, good = table_file
    f = tmp_path / "damaged.json"
    path, new = write_damaged(data, good, f)
    try:
        table = LatencyTable.load(f)
    except UserError:
        return
    try:
        pred = table.predict(net, net.space.smallest())
    except UserError:
        return
    assert math.isfinite(pred.latency_ms) and pred.latency_ms >= 0, (path, new)


@SETTINGS
@given(text=st.one_of(st.text(max_size=40), st.builds(json.dumps, st.dictionaries(
    st.sampled_from(["widths", "format", "version", "features.0.0", "x"]),
    st.one_of(json_values, st.dictionaries(st.text(max_size=12), json_values, max_size=3)), max_size=3))))
def test_channel_config_from_any_text(text):
    from autoslim_hw.nn.config import ChannelConfig

    space = small_space()
    try:
        ChannelConfig.from_json(text, space, strict=False)
    except UserError:
        pass


@functools.lru_cache(maxsize=1)
def small_space():
    from autoslim_hw.models import create_model

    return create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=16, num_classes=10).space


GOOD_RESULT = {
    "format": "autoslim-hw/search", "version": 1, "status": "done",
    "trajectory": [{"step": 0, "unit": None, "config": {"a": 16, "b": 8}, "accuracy": 90.0, "loss": 0.3,
                    "macs": 1000, "params": 100, "memory": 500, "latency_ms": 0.2,
                    "score": {"correct": 90, "total": 100, "loss_sum": 30.0}},
                   {"step": 1, "unit": "a", "config": {"a": 8, "b": 8}, "accuracy": 85.5, "loss": 0.4,
                    "macs": 600, "params": 60, "memory": 300, "latency_ms": 0.15,
                    "score": {"correct": 85, "total": 100, "loss_sum": 40.0}}],
    "targets": [{"constraints": {"macs": 700.0}, "met": True, "step": 1, "config": {"a": 8, "b": 8}}],
}


@SETTINGS
@given(data=st.data())
def test_search_result_with_any_field_changed_loads_or_is_refused(data, tmp_path):
    from autoslim_hw.search.result import load_result

    f = tmp_path / "result.json"
    path, new = write_damaged(data, GOOD_RESULT, f)
    try:
        result = load_result(f)
    except UserError:
        return
    for step in result["trajectory"]:  # what the tool reads from an accepted file is sane
        assert math.isfinite(step["accuracy"]) and 0 <= step["accuracy"] <= 100, (path, new)
        assert step["score"]["total"] >= 1 and math.isfinite(step["score"]["loss_sum"]), (path, new)
        assert all(isinstance(w, int) and w >= 1 for w in step["config"].values()), (path, new)
    for target in result["targets"]:
        assert target["config"] is None or all(int(w) >= 1 for w in target["config"].values()), (path, new)


GOOD_DEVICE = {"format": "autoslim-hw/device", "version": 1, "name": "my-board", "description": "a board",
               "kind": "host", "threads": 1, "pin_core": True}


@SETTINGS
@given(data=st.data())
def test_device_file_with_any_field_changed_loads_or_is_refused(data, tmp_path):
    from autoslim_hw.profilers.devices import KINDS, get_device

    f = tmp_path / "device.json"
    path, new = write_damaged(data, GOOD_DEVICE, f)
    try:
        dev = get_device(str(f))
    except UserError:
        return
    # what the profiler reads from an accepted file: a name to file tables under, a thread count
    assert isinstance(dev.name, str) and dev.name, (path, new)
    assert isinstance(dev.threads, int) and not isinstance(dev.threads, bool) and dev.threads >= 1, (path, new)
    assert isinstance(dev.pin_core, bool) and dev.kind in KINDS, (path, new)


GOOD_MANIFEST = {
    "format": "autoslim-hw/bundle", "version": 1, "bundle_id": "0123456789ab", "created": "2026-12-06",
    "model": {"arch": "mobilenet_v2_cifar", "input_size": 8}, "model_key": "k", "runtime": "litert",
    "benchmark": {"tool": "benchmark_model", "warmup_runs": 2, "num_runs": 5, "warmup_min_secs": 0.0,
                  "min_secs": 0.0, "num_threads": 1},
    "models": [{"file": "models/conv-a1b2c3d4.tflite", "key": "conv|3|8", "sig": {"op": "conv"}}],
    "networks": [{"file": "models/net-val-00.tflite", "role": "validation", "config": {"a": 8},
                  "signatures": ["conv|3|8"], "weights_mb": 0.01}],
}


@SETTINGS
@given(data=st.data())
def test_bundle_manifest_with_any_field_changed_loads_or_is_refused(data, tmp_path):
    from autoslim_hw.lookup_tables.phone import load_manifest

    path, new = write_damaged(data, GOOD_MANIFEST, tmp_path / "manifest.json")
    try:
        m = load_manifest(tmp_path)
    except UserError:
        return
    b = m["benchmark"]  # what the device script and the importer read
    assert isinstance(b["num_runs"], int) and b["num_runs"] >= 1 and b["warmup_runs"] >= 0, (path, new)
    assert all(math.isfinite(b[k]) and b[k] >= 0 for k in ("min_secs", "warmup_min_secs")), (path, new)
    files = [e["file"] for e in m["models"]] + [e["file"] for e in m.get("networks", [])]
    assert m["models"] and all(isinstance(x, str) and x.startswith("models/") and ".." not in x for x in files), \
        (path, new)
    assert all(n["role"] in ("calibration", "validation") for n in m.get("networks", [])), (path, new)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from autoslim_hw.checkpoint import save_checkpoint
    from autoslim_hw.models import create_model

    net = create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=16, num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    save_checkpoint(path, {"kind": "supernet", "spec": net.spec.to_dict(), "config": None,
                           "model": net.state_dict(), "epoch": 1, "step": 10, "settings": {"data": "digits"}})
    return path


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_with_any_metadata_changed_loads_or_is_refused(good_checkpoint, data, tmp_path):
    import torch

    from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = torch.load(good_checkpoint, weights_only=True)
    meta = {k: v for k, v in ckpt.items() if k != "model"}
    path, new, damaged = damage(data, meta)
    f = tmp_path / "damaged.pt"
    torch.save({**damaged, "model": ckpt["model"]}, f)
    try:
        supernet, config, model = model_from_checkpoint(load_checkpoint(f))
    except UserError:
        return
    # an accepted checkpoint rebuilds a network that runs on its input size
    spec = supernet.spec
    out = model.eval()(torch.zeros(1, spec.in_chans, spec.input_size, spec.input_size))
    assert out.shape == (1, spec.num_classes), (path, new)
