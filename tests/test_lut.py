"""Lookup tables: signatures, predictions, the file format, and a real ONNX Runtime build."""
import gzip
import json
import time

import pytest
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.errors import UserError
from autoslim_hw.lookup_tables import LatencyTable, config_signatures, deployed_ops, enumerate_signatures
from autoslim_hw.lookup_tables.build import build_table, new_table
from autoslim_hw.lookup_tables.validate import validate_table
from autoslim_hw.profilers import Latency, MeasureSettings, get_backend
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


def test_predict_charges_the_weights_beyond_a_knee():
    from autoslim_hw.lookup_tables.calibration import weights_mb
    from autoslim_hw.lookup_tables.table import model_key

    net = tiny_supernet()
    table = _synthetic_table(net, lambda s: 1.0)
    small, large = net.space.smallest(), net.space.largest()
    knee = (weights_mb(net, small) + weights_mb(net, large)) / 2  # between the two
    table.calibrations[model_key(net)] = {
        "slope": 1.0, "intercept": 0.0, "r2": 1.0, "samples": 24, "knee_mb": knee,
        "coef": {"conv": 0.5, "dwconv": 0.5, "other": 0.5, "weights_over_knee_mb": 1000.0}, "coef_intercept": 0.01}
    for cfg in (small, large):
        layers = len(config_signatures(net, cfg))  # 1 ms each
        want = 0.5 * layers + 1000.0 * max(0.0, weights_mb(net, cfg) - knee) + 0.01
        assert table.predict(net, cfg, memory=False).latency_ms == pytest.approx(want)
    assert table.predict(net, large).latency_ms > 0.5 * len(config_signatures(net, large)) + 0.01  # charged


def test_predict_applies_per_op_corrections_in_graph_order(tmp_path):
    from autoslim_hw.lookup_tables.table import LatencyTable, model_key

    net = tiny_supernet()
    table = _synthetic_table(net, lambda s: s.cout * 0.001)
    cfg = net.space.largest()
    sigs = config_signatures(net, cfg)
    delta = [0.0] * len(sigs)
    delta[1] = 2.0  # the second op of the graph costs 3x its entry in the network, the rest 1x
    table.calibrations[model_key(net)] = {"slope": 1.0, "intercept": 0.0, "r2": 1.0, "samples": 48,
                                          "coef": {"conv": 1.0, "dwconv": 1.0, "other": 1.0}, "coef_intercept": 0.0,
                                          "op_delta": delta}
    want = sum(s.cout * 0.001 for s in sigs) + 2.0 * sigs[1].cout * 0.001
    assert table.predict(net, cfg, memory=False).latency_ms == pytest.approx(want)
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").predict(net, cfg, memory=False).latency_ms == pytest.approx(want)


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


def test_a_table_of_another_cpu_generation_with_the_same_name_is_refused(tmp_path):
    """VMs show generic CPU names: two "AMD EPYC" VMs of different generations ran the same
    layers 2.3x apart, so the family and model numbers decide where a table records them."""
    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    table = _synthetic_table(tiny_supernet(), lambda s: 1.0)
    table.metadata.update(cpu_model=cpu_model(), cpu_id=cpu_id())
    assert table.other_host() is None
    table.check_target("cpu-1core", "onnxruntime")
    table.metadata["cpu_id"] = "GenuineIntel family 6 model 1"  # a made-up generation, same name
    assert "family 6 model 1" in table.other_host() and cpu_id() in table.other_host()
    with pytest.raises(UserError, match="--allow-mismatch"):
        table.check_target("cpu-1core", "onnxruntime")
    table.check_target("cpu-1core", "onnxruntime", allow_mismatch=True)
    table.metadata.pop("cpu_id")  # older tables: the name alone
    table.metadata["device"].pop("cpu_id", None)
    assert table.other_host() is None
    table.metadata["cpu_model"] = "Some Other CPU"
    assert "Some Other CPU" in table.other_host()


def test_build_resume_and_validate_with_onnxruntime(tmp_path):
    net = tiny_supernet()
    backend, device = get_backend("onnxruntime"), get_device("cpu-1core")
    settings = MeasureSettings(warmup=2, runs=5, rounds=1)
    out = tmp_path / "lut.json"
    table = build_table(net, backend, device, out, settings=settings, calibration_samples=4, progress=False)
    assert table.coverage(net) == (12, 12)
    assert all(e["ms"] > 0 for e in table.entries.values())
    # microsecond ops: the fit is noise here (sums of whole-microsecond timers may even tie);
    # a fit that does not increase is left out
    if table.calibrations:
        cal = next(iter(table.calibrations.values()))
        assert cal["samples"] == 4 and 0 <= cal["r2"] <= 1 and cal["slope"] > 0
        assert len(cal["networks"]) == 4 and all(n["measured_ms"] > 0 for n in cal["networks"])
        assert table.predict(net, net.space.largest()).calibrated
    else:
        skipped = table.metadata["calibration_skipped"]
        assert "not increasing" in skipped or "equal layer sums" in skipped
        assert not table.predict(net, net.space.largest()).calibrated
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
    result = validate_table(resumed, net, backend, device, samples=4, settings=settings, progress=False, repeat=True)
    assert set(result) >= {"mape", "max_error", "kendall_tau", "within_5pct", "within_10pct", "samples"}
    assert 0 <= result["within_5pct"] <= result["within_10pct"] <= 1
    assert set(result["repeatability"]) >= {"mape", "kendall_tau", "within_5pct"}


def test_validate_records_its_figures_in_the_table(tmp_path):
    from autoslim_hw.lookup_tables.table import model_key
    from autoslim_hw.models import create_model

    net = create_model("mobilenet_v2_cifar", input_size=8)
    table = _synthetic_table(net, lambda s: 0.001)
    table.metadata["models"] = [{"key": model_key(net), "spec": net.spec.to_dict()}]
    out = tmp_path / "lut.json"
    table.save(out)
    r = run_cli("lut", "validate", out, "--samples", "3", "--rounds", "1", "--repeat", "--record", "--json",
                "--plot", tmp_path / "v.png")
    assert r.returncode == 0, r.stderr
    recorded = LatencyTable.load(out).metadata["validation"]
    assert recorded["samples"] == 3 and recorded["mape"] == pytest.approx(json.loads(r.stdout)["mape"])
    assert "repeatability" in recorded and recorded["cpu_id"]
    info = run_cli("lut", "info", out)
    assert "validation: " in info.stdout and "3 networks" in info.stdout and "OUTDATED" not in info.stdout


def test_recalibrate_measures_the_networks_again_and_validation_times_networks_alike(tmp_path):
    from autoslim_hw.lookup_tables.networks import network_timing
    from autoslim_hw.lookup_tables.table import model_key

    net = tiny_supernet()
    backend, device = get_backend("onnxruntime"), get_device("cpu-1core")
    settings = MeasureSettings(warmup=1, runs=3, rounds=1, min_round_s=0)
    out = tmp_path / "lut.json"
    table = build_table(net, backend, device, out, settings=settings, calibration_samples=0, progress=False)
    # a table that never recorded how its networks were timed: they are timed in its own settings
    assert network_timing(table, net) == MeasureSettings(1, 3, 1)
    planted = {"slope": 1.0, "intercept": 0.0, "r2": 1.0, "samples": 2, "planted": True,
               "settings": {"warmup": 4, "runs": 6, "rounds": 9},
               "networks": [{"config": dict(net.space.smallest()), "measured_ms": 123.0}]}
    table.calibrations[model_key(net)] = planted
    assert network_timing(table, net) == MeasureSettings(4, 6, 9)
    table.metadata["validation"] = {"mape": 1.0, "samples": 100}
    table.save(out)
    kept = build_table(net, backend, device, out, resume=True, settings=settings, calibration_samples=4,
                       progress=False)
    assert kept.calibrations[model_key(net)] == planted  # resuming keeps a calibration
    assert kept.metadata["validation"] == {"mape": 1.0, "samples": 100}  # and, measuring nothing, its validation
    again = build_table(net, backend, device, out, resume=True, settings=settings, calibration_samples=4,
                        progress=False, recalibrate=True)
    cal = again.calibrations.get(model_key(net))
    if cal is None:  # microsecond networks may give no increasing fit: then it says so
        assert "calibration_skipped" in again.metadata
    else:
        assert "planted" not in cal and len(cal["networks"]) == 4
        assert all(0 < n["measured_ms"] < 123.0 for n in cal["networks"])
        assert network_timing(again, net).rounds == cal["settings"]["rounds"] >= settings.rounds
    assert LatencyTable.load(out).calibrations.get(model_key(net)) == cal  # and it was written
    assert "validation" not in LatencyTable.load(out).metadata  # the old fit's validation is gone with it


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
    from autoslim_hw.converters.onnx import export_onnx
    from autoslim_hw.nn.materialize import materialize
    from autoslim_hw.profilers.memory import profile_onnx_memory

    # multiples of 16 channels: ORT's blocked layout (8 channels a block with AVX2, 16 with
    # AVX-512) pads narrower weights
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))
    net = slimmable(model, width_max=1.0, groups=2, divisor=16, input_size=8)
    table = _synthetic_table(net, lambda sig: 0.01)
    cfg = net.space.largest()
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
    assert all(e["ms"] > 0 for e in table.entries.values())
    assert not list(tmp_path.glob("op*"))  # worker files live in a temp dir, removed after measuring
    with pytest.raises(UserError, match="--jobs"):
        build_table(net, get_backend("onnxruntime"), get_device("cpu-1core"), tmp_path / "k.json",
                    settings=settings, calibration_samples=0, progress=False, jobs=0)


def test_passes_keep_each_measurement_and_use_their_median():
    net = tiny_supernet()
    table = new_table(get_device("cpu-1core"), get_backend("onnxruntime"), MeasureSettings())
    sig = enumerate_signatures(net)[0]
    for ms, lo, hi in [(1.0, 0.9, 1.2), (3.0, 2.5, 3.5), (2.0, 1.8, 2.1)]:
        table.add(sig, ms, lo, hi)
    entry = table.entries[sig.key]
    assert entry["passes_ms"] == [1.0, 3.0, 2.0] and entry["ms"] == 2.0
    assert (entry["p10_ms"], entry["p90_ms"]) == (0.9, 3.5)  # the widest spread seen
    assert table.passes(sig.key) == 3 and table.passes("conv|1x1|1->1|k1s1p0g1|none") == 0


def test_a_schema_1_table_reads_as_medians_and_predicts_as_before(tmp_path):
    """Tables before schema 2 held medians as "median_ms" (some without passes_ms): they load
    with the median statistic, and an entry without passes counts as one pass."""
    net = tiny_supernet()
    sigs = enumerate_signatures(net)
    old = {"format": "autoslim-hw/latency-table", "schema_version": 1,
           "metadata": {"device": {"name": "cpu-1core"}, "runtime": "onnxruntime", "models": []},
           "calibrations": {}, "entries": {s.key: {"sig": s.to_dict(), "median_ms": 0.5 + i, "p10_ms": 0.4 + i,
                                                   "p90_ms": 0.7 + i} for i, s in enumerate(sigs)}}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old))
    table = LatencyTable.load(path)
    assert table.statistic == "median"
    cfg = net.space.largest()
    from autoslim_hw.lookup_tables.signatures import config_signatures

    # the layer sum, by hand from the file's medians
    want = sum(old["entries"][s.key]["median_ms"] for s in config_signatures(net, cfg))
    assert table.predict(net, cfg, memory=False).latency_ms == pytest.approx(want)
    assert table.passes(sigs[0].key) == 1
    table.add(sigs[0], 2.5, 2.0, 3.0)
    assert table.entries[sigs[0].key]["passes_ms"] == [0.5, 2.5] and table.entries[sigs[0].key]["ms"] == 1.5
    table.save(tmp_path / "v2.json")
    again = LatencyTable.load(tmp_path / "v2.json")
    assert json.loads((tmp_path / "v2.json").read_text())["schema_version"] == 2
    assert again.statistic == "median" and again.entries == table.entries
    old["entries"][sigs[1].key].pop("median_ms")
    path.write_text(json.dumps(old))
    with pytest.raises(UserError, match="corrupt lookup table"):
        LatencyTable.load(path)


def test_build_in_passes_and_resume_with_more_passes(tmp_path):
    net = tiny_supernet()
    backend, device = get_backend("onnxruntime"), get_device("cpu-1core")
    settings = MeasureSettings(warmup=1, runs=3, rounds=1)
    out = tmp_path / "lut.json"
    table = build_table(net, backend, device, out, settings=settings, calibration_samples=0, progress=False,
                        passes=2)
    order = [s.key for s in enumerate_signatures(net)]
    assert list(table.entries) == order  # measured in random order, stored in the enumeration's
    assert all(len(e["passes_ms"]) == 2 and all(ms > 0 for ms in e["passes_ms"]) for e in table.entries.values())
    first = {k: e["passes_ms"] for k, e in table.entries.items()}
    more = build_table(net, backend, device, out, resume=True, settings=settings, calibration_samples=0,
                       progress=False, passes=3)
    assert all(e["passes_ms"][:2] == first[k] and len(e["passes_ms"]) == 3 for k, e in more.entries.items())
    with pytest.raises(UserError, match="--passes"):
        build_table(net, backend, device, tmp_path / "p.json", settings=settings, progress=False, passes=0)


def test_calibration_fit_recovers_a_line_and_refuses_unusable_ones():
    from autoslim_hw.lookup_tables.calibration import CalibrationSkipped, apply_calibration, fit_calibration

    one = [{"conv": x, "dwconv": 0.0, "other": 0.0} for x in (1.0, 2.0, 3.0, 4.0)]
    cal = fit_calibration(one, [2 * x + 0.5 for x in (1.0, 2.0, 3.0, 4.0)])
    assert (cal["slope"], cal["intercept"], cal["r2"]) == (pytest.approx(2), pytest.approx(0.5), pytest.approx(1))
    assert "coef" not in cal  # 4 networks are too few for a fit per op group
    # 12 networks, measured = 1.1 conv + 1.3 dwconv + 2.0 other + 0.1: the per-group fit finds it
    import random

    rng = random.Random(0)
    sums = [{"conv": rng.uniform(1, 5), "dwconv": rng.uniform(0.5, 2), "other": rng.uniform(0, 0.5)} for _ in range(12)]
    measured = [1.1 * s["conv"] + 1.3 * s["dwconv"] + 2.0 * s["other"] + 0.1 for s in sums]
    cal = fit_calibration(sums, measured)
    assert cal["coef"] == {"conv": pytest.approx(1.1), "dwconv": pytest.approx(1.3), "other": pytest.approx(2.0)}
    assert apply_calibration(cal, sums[0]) == pytest.approx(measured[0])
    with pytest.raises(CalibrationSkipped, match="not increasing"):
        fit_calibration(one, [5.0, 4.0, 3.0, 2.0])
    with pytest.raises(CalibrationSkipped, match="equal layer sums"):
        fit_calibration([one[0]] * 3, [1.0, 2.0, 3.0])
    with pytest.raises(CalibrationSkipped, match="1 calibration network"):
        fit_calibration(one[:1], [1.0])


def test_calibration_finds_the_knee_where_weights_start_to_cost():
    """Networks that cost their layer sum plus 0.05 ms per MB of weights beyond 1 MB (a cache that
    holds 1 MB of them): the knee fit is chosen and finds the knee; a straight weights term cannot
    bend there. Without a knee in the data, no knee is chosen."""
    import random

    from autoslim_hw.lookup_tables.calibration import apply_calibration, fit_calibration

    rng = random.Random(1)
    nets = [{"conv": rng.uniform(0.05, 0.15), "dwconv": rng.uniform(0.01, 0.04), "other": 0.01,
             "weights_mb": rng.uniform(0.1, 3.5)} for _ in range(24)]

    def truth(f):
        return 0.8 * (f["conv"] + f["dwconv"] + f["other"]) + 0.05 * max(0.0, f["weights_mb"] - 1.0) + 0.01

    noisy = [truth(f) * (1 + rng.gauss(0, 0.005)) for f in nets]
    cal = fit_calibration(nets, noisy)
    assert cal["fit"] == "sum+weights beyond a knee"
    assert 1.0 / 2 ** 0.25 <= cal["knee_mb"] <= 1.0 * 2 ** 0.25  # within one step of the grid
    for f in ({"conv": 0.1, "dwconv": 0.02, "other": 0.01, "weights_mb": w} for w in (0.3, 1.0, 2.0, 3.0)):
        assert apply_calibration(cal, f) == pytest.approx(truth(f), rel=0.03)
    linear = [0.8 * (f["conv"] + f["dwconv"] + f["other"]) + 0.01 for f in nets]
    assert "knee_mb" not in fit_calibration(nets, [m * (1 + rng.gauss(0, 0.005)) for m in linear])


def _per_op_networks(n: int, seed: int):
    """n networks of 12 ops, each op's table latency drawn at random (0.002-0.012 ms)."""
    import random

    rng = random.Random(seed)
    nets = []
    for _ in range(n):
        ops = [rng.uniform(0.002, 0.012) for _ in range(12)]
        nets.append({"conv": sum(ops[:8]), "dwconv": sum(ops[8:11]), "other": ops[11], "weights_mb": 0.5, "ops": ops})
    return nets, rng


def test_per_op_corrections_are_fit_when_ops_cost_their_own_amount_in_the_network():
    """Networks whose ops cost 0.7x their table latency, except op 2 (2.5x) and op 9 (0.1x): one
    slope cannot say that, the per-op fit can, and it predicts new networks to within their noise."""
    from autoslim_hw.lookup_tables.calibration import apply_calibration, fit_calibration

    factors = [0.7] * 12
    factors[2], factors[9] = 2.5, 0.1

    def truth(f):
        return sum(a * ms for a, ms in zip(factors, f["ops"])) + 0.02

    nets, rng = _per_op_networks(48, 0)
    cal = fit_calibration(nets, [truth(f) * (1 + rng.gauss(0, 0.003)) for f in nets])
    assert cal["fit"].endswith("+ per-op corrections") and len(cal["op_delta"]) == 12
    fresh, _ = _per_op_networks(20, 1)
    err = [abs(apply_calibration(cal, f) - truth(f)) / truth(f) for f in fresh]
    assert max(err) < 0.02
    one_slope = [abs(cal["slope"] * (f["conv"] + f["dwconv"] + f["other"]) + cal["intercept"] - truth(f)) / truth(f)
                 for f in fresh]
    assert sum(one_slope) / 20 > 3 * sum(err) / 20  # what the corrections buy
    with pytest.raises(ValueError, match="12 ops"):
        apply_calibration(cal, {k: v for k, v in fresh[0].items() if k != "ops"})


def test_per_op_corrections_are_left_out_when_one_slope_explains_the_networks():
    from autoslim_hw.lookup_tables.calibration import fit_calibration

    nets, rng = _per_op_networks(48, 2)
    measured = [(0.7 * sum(f["ops"]) + 0.02) * (1 + rng.gauss(0, 0.01)) for f in nets]
    cal = fit_calibration(nets, measured)
    assert "op_delta" not in cal and "per_op_loo_mape" in cal  # tried, and it did not pay
    few = fit_calibration(nets[:24], measured[:24])
    assert "op_delta" not in few and "per_op_loo_mape" not in few  # too few networks to try


class _Recorder:
    """A backend stand-in that records which model each run was of (the interleaving is the test)."""

    def __init__(self):
        self.calls = []

    def load(self, path, threads=1):
        return lambda: self.calls.append(path)


def test_interleaved_rounds_visit_every_model_once_per_round_in_new_orders():
    from autoslim_hw.profilers import measure_interleaved

    rec = _Recorder()
    settings = MeasureSettings(warmup=1, runs=3, rounds=4, min_round_s=0)
    lats = measure_interleaved(rec, ["a", "b", "c", "d"], settings)
    assert rec.calls[:4] == ["a", "b", "c", "d"]  # one warm-up run each
    visits = [rec.calls[i:i + 5] for i in range(4, len(rec.calls), 5)]  # 2 untimed + 3 timed runs a visit
    assert len(visits) == 16 and all(len(set(v)) == 1 for v in visits)
    rounds = [[v[0] for v in visits[r * 4:(r + 1) * 4]] for r in range(4)]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # a fresh order each round
    assert [lat.runs for lat in lats] == [12] * 4  # all timed runs of all rounds

    rec = _Recorder()
    measure_interleaved(rec, ["a", "b", "c", "d"], settings, chunk=2)
    # chunks of two: a and b, then c and d each beside one bridge from the first chunk
    assert set(rec.calls[:2]) == {"a", "b"} and set(rec.calls[2:2 + 2 * 20]) == {"a", "b"}
    later = rec.calls[2 * 21:]
    assert "c" in later and "d" in later and len(set(later)) == 3


class _Slowing:
    """Models that busy-wait their own time, on a machine that runs twice as slow from the
    second chunk on (the drift between chunks that bridges correct)."""

    def __init__(self, ms: dict):
        self.ms, self.loads = ms, 0

    def load(self, path, threads=1):
        self.loads += 1

        def run():
            end = time.perf_counter() + self.ms[path] / 1e3 * (2.0 if self.loads > 3 else 1.0)
            while time.perf_counter() < end:
                pass
        return run


def test_chunks_are_bridged_to_the_first_chunks_speed():
    from autoslim_hw.profilers import measure_interleaved

    ms = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 1.5, "e": 2.5}
    settings = MeasureSettings(warmup=1, runs=3, rounds=3, min_round_s=0)
    lats = measure_interleaved(_Slowing(ms), list(ms), settings, chunk=3, bridges=1)
    # chunk 1 (a, b, c) at full speed; d and e at half speed, beside one bridge: scaled back
    for (name, want), lat in zip(ms.items(), lats):
        assert lat.median_ms == pytest.approx(want, rel=0.2), name
    unbridged = measure_interleaved(_Slowing(ms), list(ms), settings, chunk=3, bridges=0)
    assert unbridged[3].median_ms == pytest.approx(2 * ms["d"], rel=0.2)  # the drift the bridge removes


class _SlowSpell:
    """One model that busy-waits 1 ms a run, 2 ms in every round but the first (a slow spell
    over most of the measurement: neighbours on a shared VM only ever add time)."""

    def __init__(self, warmup: int, per_round: int):
        self.calls, self.warmup, self.per_round = 0, warmup, per_round

    def load(self, path, threads=1):
        def run():
            round_ = (self.calls - self.warmup) // self.per_round
            self.calls += 1
            end = time.perf_counter() + (1e-3 if round_ < 1 else 2e-3)
            while time.perf_counter() < end:
                pass
        return run


def test_the_latency_is_the_fast_end_of_the_runs_which_a_slow_spell_does_not_move():
    from autoslim_hw.profilers import measure_interleaved

    settings = MeasureSettings(warmup=2, runs=10, rounds=3, min_round_s=0)
    [lat] = measure_interleaved(_SlowSpell(2, 2 + 10), ["a"], settings)
    assert lat.runs == 30 and len(lat.runs_ms) == 30
    assert lat.value("p10") == pytest.approx(1.0, rel=0.15)  # a third of the runs were fast
    assert lat.value("median") == pytest.approx(2.0, rel=0.15)
    assert lat.value("min") == min(lat.runs_ms) == pytest.approx(1.0, rel=0.15)
    assert lat.value("p10") == lat.p10_ms and lat.value("median") == lat.median_ms
    with pytest.raises(ValueError, match="unknown latency statistic"):
        lat.value("mean")
    with pytest.raises(ValueError, match="kept none"):  # the fastest run needs the runs
        Latency(1.0, 1.0, 1.0, 3).value("min")


def test_validation_tells_machine_drift_from_table_error(tmp_path):
    """Pretend the build ran on a machine twice as fast: its anchor networks' recorded latencies
    are halved. Validation measures them again, finds a speed factor near 2, and corrects by it."""
    from autoslim_hw.lookup_tables.validate import fidelity

    net = tiny_supernet()
    backend, device = get_backend("onnxruntime"), get_device("cpu-1core")
    settings = MeasureSettings(warmup=3, runs=20, rounds=3)
    table = build_table(net, backend, device, tmp_path / "lut.json", settings=settings, calibration_samples=0,
                        progress=False)
    from autoslim_hw.lookup_tables.networks import measure_networks
    from autoslim_hw.lookup_tables.table import model_key

    from autoslim_hw.profilers import pinned_to_core
    from autoslim_hw.profilers.devices import measurement_core

    anchors = [net.space.smallest(), net.space.largest()]
    with pinned_to_core(measurement_core()):  # where a build measures them, and validation does
        measured = measure_networks(net, anchors, backend, tmp_path, settings, 1)
    table.calibrations[model_key(net)] = {"slope": 1.0, "intercept": 0.0, "r2": 1.0, "samples": 2, "networks": [
        {"config": dict(c), "measured_ms": m / 2} for c, m in zip(anchors, measured)]}
    result = validate_table(table, net, backend, device, samples=4, settings=settings, progress=False)
    assert 1.3 < result["speed_factor"] < 3.0
    import numpy as np

    corrected = np.array(result["measured_ms"]) / result["speed_factor"]  # one chunk: one factor
    # (tau is nan where the tiny space's predictions tie)
    assert result["adjusted"] == pytest.approx(fidelity(result["predicted_ms"], corrected), nan_ok=True)


def test_kernel_time_between_whole_microseconds_is_averaged_not_rounded():
    """ONNX Runtime's per-node timer counts whole microseconds: a 2.4 us op reads 2 or 3. The
    median of such counts says 2 (17% low); the trimmed mean says 2.4, and still drops outliers."""
    from autoslim_hw.profilers.onnxruntime_backend import _trimmed_mean

    counts = [2.0] * 6 + [3.0] * 4
    assert _trimmed_mean(counts) == pytest.approx(2.375)  # 2, 2, 2, 2, 2, 3, 3, 3 after the cut
    assert _trimmed_mean([2.0] * 9 + [100.0]) == pytest.approx(2.0)  # a preempted run is cut
    assert _trimmed_mean([5.0]) == 5.0


def test_fastest_kernel_time_is_read_between_whole_microseconds():
    """A timer that counts whole microseconds (floor of the end minus floor of the start) reads
    an op of 2.4 us as 2 or 3, at random offsets 60:40. The fastest count says 2; the fastest run
    between counts must say 2.4, whatever slow runs (neighbours) add above it."""
    import random

    from autoslim_hw.profilers.onnxruntime_backend import _fastest

    rng = random.Random(0)
    for true_us in (2.4, 3.0, 17.75):
        counts = []
        for _ in range(400):
            start = rng.uniform(0, 1000)
            slow = 0.0 if rng.random() < 0.5 else rng.uniform(0.5, 20)  # half the runs in a slow spell
            counts.append(float(int(start + true_us + slow) - int(start)))
        sums_ms = [c / 1e3 for c in counts]
        assert min(counts) == int(true_us)
        assert _fastest(sums_ms) * 1e3 == pytest.approx(true_us, abs=0.1)


def test_validate_plot_lands_beside_the_table_but_not_inside_the_package(tmp_path):
    from pathlib import Path

    from autoslim_hw.lookup_tables.discover import SHIPPED
    from autoslim_hw.workflows.profile import default_plot

    # a shipped table's folder belongs to the install: the plot goes to the current folder
    assert default_plot(SHIPPED / "m-224-cpu-1core-onnxruntime.json.gz") == Path("m-224-cpu-1core-onnxruntime.validate.png")
    assert default_plot(tmp_path / "t.json.gz") == tmp_path / "t.validate.png"
    assert default_plot(tmp_path / "t.json") == tmp_path / "t.validate.png"


def test_tables_of_an_older_method_are_flagged():
    from autoslim_hw.lookup_tables.discover import shipped_tables

    host = new_table(get_device("cpu-1core"), get_backend("onnxruntime"), MeasureSettings())
    assert host.outdated() is None
    host.metadata["latency_statistic"] = "median"
    assert "older method" in host.outdated()
    phone = LatencyTable({**host.metadata, "device": {**host.metadata["device"], "kind": "phone"}})
    assert phone.outdated() is None  # a phone's table keeps the median: its method
    # `lut list` flags each shipped table whose file says it holds medians
    r = run_cli("lut", "list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    for p in shipped_tables():
        i = lines.index(p.name)
        flagged = "OUTDATED" in lines[i + 2]
        assert flagged == (LatencyTable.load(p).statistic == "median")


def test_squeeze_excitation_and_grouped_convs_have_signatures():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=2)  # 8 channels per group
            self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            x = self.grouped(self.conv(x))
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
            return self.head((x * s).mean((2, 3)))

    import torch

    net = slimmable(SE(), width_max=1.0, groups=2, input_size=8)
    ops = deployed_ops(net)
    assert [(o.op, o.act) for o in ops] == [("conv", "none"), ("gconv", "none"), ("gap", "none"), ("conv", "relu"),
                                            ("conv", "sigmoid"), ("scale", "none"), ("gap", "none"), ("linear", "none")]
    sigs = config_signatures(net, net.space.largest(), ops)
    # the grouped conv keeps 8 channels per group: 16 channels are 2 groups
    assert (sigs[1].cin, sigs[1].groups) == (16, 2) and (sigs[5].h, sigs[5].cin) == (8, 16)
    from autoslim_hw.lookup_tables.build import single_op_model

    for sig in sigs:  # each one runs as the single-op model the table would time
        model, shapes = single_op_model(sig)
        model(*[torch.zeros(s) for s in shapes])


def test_profile_suggests_more_calibration_networks_only_when_the_fit_is_loose():
    from types import SimpleNamespace

    from autoslim_hw.cli.lut import calibration_hint
    from autoslim_hw.lookup_tables.table import model_key

    net = tiny_supernet()
    table = lambda loo, n: SimpleNamespace(calibrations={model_key(net): {"coef_loo_mape": loo, "samples": n}})  # noqa: E731
    hint = calibration_hint(table(5.6, 24), net, "t.json.gz")
    assert "5.6%" in hint and "--resume --recalibrate --calibration 48" in hint and "lut validate t.json.gz" in hint
    assert calibration_hint(table(2.0, 24), net, "t.json.gz") is None  # a tight fit
    assert calibration_hint(table(5.6, 48), net, "t.json.gz") is None  # as many networks as suggested already
    assert calibration_hint(SimpleNamespace(calibrations={}), net, "t.json.gz") is None  # not calibrated


def test_lut_refit_lays_the_current_fit_on_the_networks_a_table_kept(tmp_path):
    """A table whose 48 calibration networks cost 2x the table's latency of every third op and 0.3x
    of the others, kept with the fit of an older version: `lut refit` finds the per-op fit on the
    stored latencies without timing anything, and predicts fresh networks by the formula; the
    source file is left as it was."""
    import random

    from autoslim_hw.lookup_tables.calibration import fit_calibration
    from autoslim_hw.lookup_tables.table import model_key
    from autoslim_hw.models import create_model

    net = create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=8, num_classes=10, in_chans=1)
    table = _synthetic_table(net, lambda s: 0.002 + 2e-5 * (s.cin + s.cout))
    table.metadata["models"] = [{"key": model_key(net), "spec": net.spec.to_dict()}]
    factors = [2.0 if i % 3 == 0 else 0.3 for i in range(len(deployed_ops(net)))]

    def truth(cfg):
        sigs = config_signatures(net, cfg)
        return sum(f * table.entries[s.key]["ms"] for f, s in zip(factors, sigs)) + 0.01

    rng = random.Random(0)
    configs = [net.space.sample(rng) for _ in range(48)]
    measured = [truth(c) * (1 + rng.gauss(0, 0.002)) for c in configs]
    old = fit_calibration([{k: v for k, v in table.features(net, c).items() if k != "ops"} for c in configs], measured)
    assert "op_delta" not in old
    table.calibrations[model_key(net)] = {**old, "networks": [{"config": dict(c), "measured_ms": m}
                                                              for c, m in zip(configs, measured)]}
    table.metadata["validation"] = {"mape": 9.0}
    src, dst = tmp_path / "old.json", tmp_path / "new.json"
    table.save(src)
    before = src.read_bytes()
    r = run_cli("lut", "refit", src, "--out", dst)
    assert r.returncode == 0, r.stderr
    assert "-> one slope + per-op corrections" in " ".join(r.stdout.split())  # however rich wraps the line
    assert src.read_bytes() == before
    new = LatencyTable.load(dst)
    assert "validation" not in new.metadata and new.metadata["calibration_refit"]["date"]
    fresh = [net.space.sample(rng) for _ in range(10)]
    err_new = [abs(new.predict(net, c, memory=False).latency_ms / truth(c) - 1) for c in fresh]
    err_old = [abs(LatencyTable.load(src).predict(net, c, memory=False).latency_ms / truth(c) - 1) for c in fresh]
    assert max(err_new) < 0.02 and sum(err_old) > 3 * sum(err_new)

    from autoslim_hw.workflows.profile import refit_lut

    written, done = refit_lut(dst)  # fitting the refit table again changes nothing: nothing is written
    assert written is None and done[0][1]["op_delta"] == done[0][2]["op_delta"]

    del table.calibrations[model_key(net)]["networks"]
    table.save(src)
    with pytest.raises(UserError, match="keeps no calibration networks.*--recalibrate"):
        refit_lut(src, dst)
