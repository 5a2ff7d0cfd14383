"""Lookup tables: signatures, predictions, the file format, and a real ONNX Runtime build."""
import gzip
import json

import pytest
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.errors import UserError
from autoslim_hw.lookup_tables import LatencyTable, config_signatures, deployed_ops, enumerate_signatures
from autoslim_hw.lookup_tables.build import build_table, new_table, validate_table
from autoslim_hw.profilers import MeasureSettings, get_backend
from autoslim_hw.profilers.devices import get_device
from tests.cli_helpers import assert_user_error, run_cli


def tiny_supernet():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    # width_max 1, 2 groups, divisor 4: 8-wide units take {4, 8}, the 16-wide one {8, 16}
    return slimmable(model, width_max=1.0, groups=2, divisor=4, input_size=8)


def test_signatures_by_hand():
    net = tiny_supernet()
    ops = deployed_ops(net)
    assert [(o.op, o.act) for o in ops] == [("conv", "relu6"), ("dwconv", "relu6"), ("conv", "none"),
                                            ("gap", "none"), ("linear", "none")]
    # conv1: 2 output widths; dw: 2; pointwise: 2 x 2; pool: 2; linear: 2 input widths
    assert len(enumerate_signatures(net, ops)) == 2 + 2 + 4 + 2 + 2
    sigs = config_signatures(net, net.space.smallest(), ops)
    assert [(s.cin, s.cout, s.groups) for s in sigs] == [(3, 4, 1), (4, 4, 4), (4, 8, 1), (8, 8, 1), (8, 4, 1)]


def _synthetic_table(net, ms_of):
    table = new_table(get_device("cpu-1core"), get_backend("onnxruntime"), MeasureSettings())
    for sig in enumerate_signatures(net):
        table.add(sig, ms_of(sig), 0.0, 0.0)
    return table


def test_predict_is_the_sum_of_the_configs_entries():
    net = tiny_supernet()
    table = _synthetic_table(net, lambda s: s.cin * 0.01 + s.cout * 0.001)
    cfg = net.space.smallest()
    expected = (3 * .01 + 4 * .001) + (4 * .01 + 4 * .001) + (4 * .01 + 8 * .001) + (8 * .01 + 8 * .001) + (8 * .01 + 4 * .001)
    pred = table.predict(net, cfg)
    assert pred.latency_ms == pytest.approx(expected) and not pred.interpolated and not pred.calibrated


def test_missing_signature_is_interpolated_and_flagged():
    net = tiny_supernet()
    table = _synthetic_table(net, lambda s: 0.1 + 0.001 * s.cin * s.cout)
    # measure more pointwise widths so the missing one lies inside their hull
    from dataclasses import replace

    pw = next(s for s in enumerate_signatures(net) if s.op == "conv" and s.kernel == 1)
    for cin, cout in [(2, 4), (12, 24), (2, 24), (12, 4)]:
        sig = replace(pw, cin=cin, cout=cout)
        table.add(sig, 0.1 + 0.001 * cin * cout, 0, 0)
    cfg = net.space.largest()
    missing = config_signatures(net, cfg)[2]
    del table.entries[missing.key]
    pred = table.predict(net, cfg)
    assert pred.interpolated == [missing.key]
    assert table.interpolate(missing) == pytest.approx(0.1 + 0.001 * 8 * 16, rel=0.35)


def test_table_file_round_trip_and_bad_files(tmp_path):
    net = tiny_supernet()
    table = _synthetic_table(net, lambda s: 1.0)
    path = tmp_path / "t.json.gz"
    table.save(path)
    assert gzip.decompress(path.read_bytes())[:1] == b"{"
    again = LatencyTable.load(path)
    assert again.entries == table.entries and again.metadata["device"]["name"] == "cpu-1core"
    again.check_target("cpu-1core", "onnxruntime")
    with pytest.raises(UserError, match="--allow-mismatch"):
        again.check_target("cpu-1core", "litert")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(UserError, match="not a readable lookup table"):
        LatencyTable.load(bad)
    data = table.to_dict()
    data["schema_version"] = 99
    future = tmp_path / "future.json"
    future.write_text(json.dumps(data))
    with pytest.raises(UserError, match="schema version 99"):
        LatencyTable.load(future)


def test_build_resume_and_validate_with_onnxruntime(tmp_path):
    net = tiny_supernet()
    backend, device = get_backend("onnxruntime"), get_device("cpu-1core")
    settings = MeasureSettings(warmup=2, runs=5, rounds=1)
    out = tmp_path / "lut.json"
    table = build_table(net, backend, device, out, settings=settings, calibration_samples=4, progress=False)
    assert table.coverage(net) == (12, 12)
    assert all(e["median_ms"] > 0 for e in table.entries.values())
    cal = next(iter(table.calibrations.values()))
    assert cal["samples"] == 4 and 0 <= cal["r2"] <= 1  # microsecond ops: the fit's sign is noise here
    assert table.predict(net, net.space.largest()).calibrated
    # an interrupted build: entries missing; --resume measures exactly those
    partial = LatencyTable.load(out)
    removed = sorted(partial.entries)[:5]
    for k in removed:
        del partial.entries[k]
    partial.save(out)
    with pytest.raises(UserError, match="--resume"):
        build_table(net, backend, device, out, settings=settings, progress=False)
    resumed = build_table(net, backend, device, out, resume=True, settings=settings, progress=False)
    assert resumed.coverage(net) == (12, 12)
    kept = {k: v for k, v in table.entries.items() if k not in removed}
    assert all(resumed.entries[k] == v for k, v in kept.items())  # measured once, never again
    result = validate_table(resumed, net, backend, device, samples=4, settings=settings, progress=False)
    assert set(result) >= {"mape", "max_error", "kendall_tau", "within_5pct", "within_10pct", "samples"}
    assert 0 <= result["within_5pct"] <= result["within_10pct"] <= 1


def test_cli_lut_errors(tmp_path):
    assert_user_error(run_cli("profile", "--device", "pixel-9"), "unknown device 'pixel-9'", "cpu-1core")
    assert_user_error(run_cli("lut", "info", tmp_path / "none.json"), "does not exist", "autoslim-hw profile")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert_user_error(run_cli("lut", "validate", bad), "not an autoslim-hw lookup table")
    r = run_cli("devices")
    assert r.returncode == 0 and "cpu-1core" in r.stdout


def test_predicted_memory_equals_onnx_runtime_profile(tmp_path):
    """predict()'s memory: BN-folded float32 weights plus the activation peak, checked against
    ONNX Runtime's own profile of the exported subnet (an independent measurement)."""
    from autoslim_hw.export import export_onnx, materialize
    from autoslim_hw.profilers.memory import profile_onnx_memory

    net = tiny_supernet()
    table = _synthetic_table(net, lambda sig: 0.01)
    cfg = net.space.largest()  # multiples of 8 channels: ORT's blocked layout pads narrower weights
    path = export_onnx(materialize(net, cfg).eval(), tmp_path / "m.onnx", (1, 3, 8, 8))
    prof = profile_onnx_memory(path, rss=False)
    assert table.predict(net, cfg).memory_bytes == prof.parameter_bytes + prof.peak_activation_bytes


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="--jobs needs a second core")
def test_build_with_worker_processes_measures_every_signature_once(tmp_path):
    """--jobs 2: another process writes the single-op files; the table is the same set of
    signatures, each measured (positive), in the same order as a one-process build."""
    net = tiny_supernet()
    settings = MeasureSettings(warmup=1, runs=3, rounds=1)
    table = build_table(net, get_backend("onnxruntime"), get_device("cpu-1core"), tmp_path / "j.json",
                        settings=settings, calibration_samples=0, progress=False, jobs=2)
    assert list(table.entries) == [s.key for s in enumerate_signatures(net)]
    assert all(e["median_ms"] > 0 for e in table.entries.values())
    assert not list(tmp_path.glob("op*"))  # worker files live in a temp dir, removed after measuring
    with pytest.raises(UserError, match="--jobs"):
        build_table(net, get_backend("onnxruntime"), get_device("cpu-1core"), tmp_path / "k.json",
                    settings=settings, calibration_samples=0, progress=False, jobs=0)
