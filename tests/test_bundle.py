"""Phone lookup tables: the bundle, run_on_device.sh (against a fake adb), the local runner,
benchmark_model's output and the importer."""
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from autoslim_hw.errors import UserError
from autoslim_hw.lookup_tables import LatencyTable, enumerate_signatures
from autoslim_hw.lookup_tables.phone import (BundleSettings, format_benchmark_output, import_results, load_manifest,
                                              parse_benchmark_output, run_bundle_locally, write_bundle)
from tests.cli_helpers import assert_user_error, run_cli
from tests.test_lut import tiny_supernet

# --- real benchmark_model output -----------------------------------------------------------------
# Captured from benchmark_model runs published on GitHub, verbatim. The format is printed by
# tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkModel::Run,
# BenchmarkLoggingListener::OnBenchmarkEnd) and tensorflow/core/util/stats_calculator.h
# (Stat::OutputToStream).

# a recent android_aarch64_benchmark_model (nightly), XNNPACK, with p5/median/p95
RECENT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [5]
INFO: Min warmup runs: [5]
INFO: Graph: [./models/tiny_muaalem_int4.tflite]
INFO: Signature to run: []
INFO: Loaded model ./models/tiny_muaalem_int4.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 2136 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 65 partitions for subgraph 0.
INFO: The input model file size (MB): 8.45746
INFO: Initialized session in 207.799ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=11 first=90710 curr=42743 min=42209 max=90710 avg=48230.2 std=13845 p5=42209 median=42611 p95=90710

INFO: Running benchmark for at least 5 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=24 first=42468 curr=41938 min=41938 max=42840 avg=42394.8 std=188 p5=42133 median=42419 p95=42671

INFO: Inference timings in us: Init: 207799, First inference: 90710, Warmup (avg): 48230.2, Inference (avg): 42394.8
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=23.5938 overall=26.6797
"""

# the same binary on a model it cannot run: no timings
LOAD_ERROR = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [5]
INFO: Min warmup runs: [5]
INFO: Graph: [./models/tiny_muaalem_int8.tflite]
INFO: Signature to run: []
INFO: Loaded model ./models/tiny_muaalem_int8.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 2136 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 65 partitions for subgraph 0.
ERROR: tensorflow/lite/kernels/batch_matmul.cc:353 (lhs_data->type == kTfLiteFloat32 && rhs_data->type == kTfLiteInt8) || lhs_data->type == rhs_data->type was not true.
ERROR: Node number 57 (BATCH_MATMUL) failed to prepare.
ERROR: Failed to allocate tensors!
ERROR: Benchmarking failed.
"""

# an older build: the tool's own lines carry no INFO: prefix, no median
OLDER = """\
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 75 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.
The input model file size (MB): 102.161
Initialized session in 98.471ms.
Running benchmark for at least 30 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=30 first=104448 curr=87126 min=86737 max=104448 avg=88622.5 std=3079

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=87163 curr=89038 min=86939 max=93704 avg=88199.2 std=1353

Inference timings in us: Init: 98471, First inference: 104448, Warmup (avg): 88622.5, Inference (avg): 88199.2
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=134.562 overall=208.699
"""

# a one-run warmup ("count=1 curr=..."), and large values in scientific notation
SCIENTIFIC = """\
INFO: Loaded model /usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite
INFO: The input model file size (MB): 67.3128
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# copied from `adb logcat` (the benchmark APK), logcat prefixes on every line
LOGCAT = """\
07-14 13:14:52.190 22838 22838 I tflite  : The input model file size (MB): 3.06409
07-14 13:14:52.190 22838 22838 I tflite  : Initialized session in 92.318ms.
07-14 13:14:52.859 22838 22838 I tflite  : count=3 first=235158 curr=200386 min=199462 max=235158 avg=211669 std=16613 p5=199462 median=200386 p95=235158
07-14 13:14:56.520 22838 22838 I tflite  : count=25 first=187533 curr=140990 min=140071 max=195121 avg=145528 std=13583 p5=140545 median=141253 p95=187533
07-14 13:14:56.521 22838 22838 I tflite  : Inference timings in us: Init: 92318, First inference: 235158, Warmup (avg): 211669, Inference (avg): 145528
07-14 13:14:56.521 22838 22838 I tflite  : Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102
"""

# TensorFlow's "Performance measurement" page: the one line it shows
DOCS_LINE = ("... tflite  : Inference timings in us: Init: 5685, First inference: 18535, Warmup (avg): 14462.3, "
             "Inference (avg): 14575.2\n")

FAST = BundleSettings(warmup_runs=2, num_runs=5, warmup_min_secs=0, min_secs=0)


@pytest.fixture(scope="module")
def bundle_master(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    write_bundle(tiny_supernet(), out, settings=FAST, calibration=3, validation=3)
    return out


@pytest.fixture
def bundle(bundle_master, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_master, dst)
    return dst


# --- the parser ------------------------------------------------------------------------------------

def test_parse_recent_output():
    r = parse_benchmark_output(RECENT)
    assert r["avg_ms"] == pytest.approx(42.3948)
    assert r["median_ms"] == pytest.approx(42.419)
    assert (r["min_ms"], r["max_ms"], r["std_ms"], r["count"]) == pytest.approx((41.938, 42.840, 0.188, 24))
    assert r["init_ms"] == pytest.approx(207.799) and r["first_ms"] == pytest.approx(90.710)
    assert r["warmup_avg_ms"] == pytest.approx(48.2302)
    assert (r["memory_init_mb"], r["memory_overall_mb"]) == pytest.approx((23.5938, 26.6797))
    assert r["peak_memory_mb"] is None


def test_parse_older_scientific_logcat_and_docs_outputs():
    old = parse_benchmark_output(OLDER)
    assert (old["avg_ms"], old["min_ms"], old["max_ms"], old["std_ms"], old["count"]) == pytest.approx(
        (88.1992, 86.939, 93.704, 1.353, 50))
    assert old["median_ms"] is None and old["memory_overall_mb"] == pytest.approx(208.699)
    sci = parse_benchmark_output(SCIENTIFIC)  # the timed runs, not the one-run warmup
    assert sci["avg_ms"] == pytest.approx(1240.27) and sci["median_ms"] == pytest.approx(1239.807)
    assert sci["count"] == 50 and sci["warmup_avg_ms"] == pytest.approx(1357.6)
    cat = parse_benchmark_output(LOGCAT)  # no "Running benchmark" lines: the last count= line
    assert (cat["avg_ms"], cat["median_ms"], cat["count"], cat["min_ms"]) == pytest.approx((145.528, 141.253, 25, 140.071))
    doc = parse_benchmark_output(DOCS_LINE)
    assert doc["avg_ms"] == pytest.approx(14.5752) and doc["init_ms"] == pytest.approx(5.685)
    assert doc["std_ms"] is None and doc["count"] is None


def test_parse_failed_run_is_one_line_user_error():
    with pytest.raises(UserError) as exc:
        parse_benchmark_output(LOAD_ERROR, source="results/conv-x.txt")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("results/conv-x.txt")
    assert "ERROR: tensorflow/lite/kernels/batch_matmul.cc:353" in msg
    with pytest.raises(UserError, match="the output is empty"):
        parse_benchmark_output("")
    with pytest.raises(UserError, match="/system/bin/sh: ./benchmark_model: not found"):
        parse_benchmark_output("/system/bin/sh: ./benchmark_model: not found\n")
    # timings printed but the timed runs failed: main() then logs "Benchmarking failed."
    with pytest.raises(UserError, match="did not finish"):
        parse_benchmark_output(RECENT + "ERROR: Benchmarking failed.\n")


def test_formatter_writes_what_the_parser_reads():
    text = format_benchmark_output("models/a.tflite", FAST, 1234, [50, 40], [10, 12, 11, 30, 11], 0.01, 1.5, 2.0)
    r = parse_benchmark_output(text)
    assert r["avg_ms"] == pytest.approx(0.0148) and r["median_ms"] == pytest.approx(0.011)
    assert (r["min_ms"], r["max_ms"], r["count"], r["init_ms"], r["first_ms"]) == pytest.approx((0.010, 0.030, 5, 1.234, 0.050))
    assert r["memory_overall_mb"] == 2.0
    same = parse_benchmark_output(format_benchmark_output("a", FAST, 1, [7], [7, 7, 7], 0.01))
    assert same["std_ms"] == 0 and same["min_ms"] == same["max_ms"] == same["avg_ms"] == pytest.approx(0.007)
    assert "count=3 curr=7(all same)" in format_benchmark_output("a", FAST, 1, [7], [7, 7, 7], 0.01)


def test_parse_runs_under_a_microsecond():
    # benchmark_model keeps whole microseconds: a 16->4 FC on a fast core reads 0 in every run
    # (seen on the CI VM); that is a measurement, not a failure: 0.5 us, half the resolution
    text = format_benchmark_output("a", FAST, 3, [1, 0], [0, 0, 0, 0], 0.01)
    assert text.rstrip().endswith("Inference (avg): 0")
    r = parse_benchmark_output(text)
    assert r["below_resolution"] and r["avg_ms"] == pytest.approx(0.0005) and r["count"] == 4
    assert not parse_benchmark_output(RECENT)["below_resolution"]
    no_runs = RECENT.replace("Inference (avg): 42394.8", "Inference (avg): 0")
    no_runs = "\n".join(ln for ln in no_runs.splitlines() if "count=" not in ln)
    with pytest.raises(UserError, match="no timed runs"):  # nothing says runs happened
        parse_benchmark_output(no_runs)


# --- the bundle -------------------------------------------------------------------------------------

def test_bundle_lists_every_signature_once_and_its_models_load(bundle):
    from ai_edge_litert.interpreter import Interpreter

    manifest = load_manifest(bundle)
    sigs = enumerate_signatures(tiny_supernet())
    assert len(sigs) == 12
    keys = [m["key"] for m in manifest["models"]]
    assert sorted(keys) == sorted(s.key for s in sigs) and len(set(keys)) == len(keys)
    assert manifest["format"] == "autoslim-hw/bundle" and manifest["version"] == 1
    assert manifest["model"]["input_size"] == 8 and manifest["runtime"] == "litert"
    assert manifest["benchmark"]["num_threads"] == 1 and manifest["benchmark"]["warmup_runs"] == 2
    files = [m["file"] for m in manifest["models"]] + [n["file"] for n in manifest["networks"]]
    assert len(set(files)) == len(files) and sorted(p.name for p in (bundle / "models").iterdir()) == sorted(
        Path(f).name for f in files)
    assert {n["role"] for n in manifest["networks"]} == {"calibration", "validation"}
    for f in files:
        interp = Interpreter(model_path=str(bundle / f), num_threads=1)
        interp.allocate_tensors()
        interp.invoke()
    script = bundle / "run_on_device.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    if shutil.which("bash"):
        assert subprocess.run(["bash", "--posix", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "--num_threads=1 --warmup_runs=2 --num_runs=5" in text and "--use_xnnpack=true" in text
    assert "android_aarch64_benchmark_model" in text and manifest["bundle_id"] in text
    help_text = subprocess.run(["sh", str(script), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "BENCHMARK_MODEL" in help_text.stdout and "CORE" in help_text.stdout


def test_write_bundle_refuses_existing_dirs_and_leaves_nothing_when_interrupted(bundle, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--force"):
        write_bundle(tiny_supernet(), bundle, settings=FAST)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an autoslim-hw bundle"):
        write_bundle(tiny_supernet(), other, settings=FAST, force=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="--runtime"):
        write_bundle(tiny_supernet(), tmp_path / "x", runtime="onnxruntime")

    from autoslim_hw.profilers.litert_backend import LiteRTBackend

    real, calls = LiteRTBackend.convert, []

    def flaky(self, model, shapes, path):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, model, shapes, path)

    monkeypatch.setattr(LiteRTBackend, "convert", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(tiny_supernet(), tmp_path / "new", settings=FAST)
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))
    monkeypatch.setattr(LiteRTBackend, "convert", real)
    (bundle / "results").mkdir()
    old_id = load_manifest(bundle)["bundle_id"]
    manifest = write_bundle(tiny_supernet(), bundle, settings=BundleSettings(num_runs=7), calibration=2,
                            validation=0, force=True)
    assert manifest["bundle_id"] != old_id and not (bundle / "results").exists()
    assert load_manifest(bundle)["bundle_id"] == manifest["bundle_id"]


# --- run_on_device.sh against a fake adb -------------------------------------------------------------

FAKE_ADB = r'''#!@PYTHON@
"""adb for tests: logs its arguments; `shell` runs the command on this host with fake
getprop/taskset first on PATH; `push` copies; `devices` lists $FAKE_DEVICES."""
import os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(os.environ.get("ANDROID_SERIAL", "-") + " " + " ".join(args) + "\n")
if args[:1] == ["-s"]:
    args = args[2:]
cmd = args[0]
if cmd == "devices":
    print("List of devices attached")
    for line in os.environ.get("FAKE_DEVICES", "FAKE0001 device").split(","):
        if line:
            print("\t".join(line.split()))
    print()
elif cmd == "get-state":
    print("device")
elif cmd == "push":
    src, dst = [a for a in args[1:] if not a.startswith("--")]
    if os.path.isdir(src):
        target = os.path.join(dst, os.path.basename(src.rstrip("/"))) if os.path.isdir(dst) else dst
        shutil.copytree(src, target, dirs_exist_ok=True)
    else:
        shutil.copy2(src, os.path.join(dst, os.path.basename(src)) if os.path.isdir(dst) else dst)
    print(f"{src}: 1 file pushed")
elif cmd == "shell":
    env = dict(os.environ, PATH=os.environ["FAKE_BIN"] + os.pathsep + os.environ["PATH"])
    sys.exit(subprocess.run(["sh", "-c", " ".join(args[1:])], env=env).returncode)
else:
    sys.exit(f"fake adb: unknown command {cmd}")
'''

GETPROP = """#!/bin/sh
case "$1" in
  ro.product.model) echo "Pixel 7" ;;
  ro.product.manufacturer) echo Google ;;
  ro.soc.model) echo "Tensor G2" ;;
  ro.board.platform) echo gs201 ;;
  ro.build.version.release) echo 14 ;;
  ro.build.version.sdk) echo 34 ;;
  ro.build.fingerprint) echo "google/panther/panther:14/UQ1A.240105.004/11206848:user/release-keys" ;;
  ro.product.cpu.abi) echo arm64-v8a ;;
esac
"""

TASKSET = """#!/bin/sh
echo "$1" >> "$FAKE_TASKSET_LOG"
shift
exec "$@"
"""

NO_TASKSET = """#!/bin/sh
echo "taskset: not found" >&2
exit 127
"""

# stands in for benchmark_model on the phone: prints real output, or a real failure for $FAKE_FAIL
FAKE_BENCHMARK_MODEL = """#!/bin/sh
echo "$*" >> "$FAKE_BM_LOG"
case "$*" in
  *"$FAKE_FAIL"*) cat "$FAKE_FIXTURES/error.txt" ;;
  *) cat "$FAKE_FIXTURES/ok.txt" ;;
esac
"""


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_phone(tmp_path):
    """(env, paths) for running run_on_device.sh with a fake adb and a fake phone."""
    bin_dir, phone_bin, fixtures = tmp_path / "hostbin", tmp_path / "phonebin", tmp_path / "fixtures"
    for d in (bin_dir, phone_bin, fixtures):
        d.mkdir()
    _exe(bin_dir / "adb", FAKE_ADB.replace("@PYTHON@", sys.executable))
    _exe(phone_bin / "getprop", GETPROP)
    _exe(phone_bin / "taskset", TASKSET)
    (fixtures / "ok.txt").write_text(RECENT)
    (fixtures / "error.txt").write_text(LOAD_ERROR)
    bm = _exe(tmp_path / "benchmark_model", FAKE_BENCHMARK_MODEL)
    env = {k: v for k, v in os.environ.items() if k not in ("ANDROID_SERIAL", "CORE", "RESULTS", "SLEEP")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_BIN=str(phone_bin), FAKE_LOG=str(tmp_path / "adb.log"),
               FAKE_BM_LOG=str(tmp_path / "bm.log"), FAKE_TASKSET_LOG=str(tmp_path / "taskset.log"),
               FAKE_FIXTURES=str(fixtures), FAKE_FAIL="no-such-model", BENCHMARK_MODEL=str(bm),
               REMOTE_DIR=str(tmp_path / "phone" / "data" / "local" / "tmp" / "autoslim-hw"),
               BENCHMARK_MODEL_VERSION="nightly-test")
    return env, tmp_path


def _run_script(bundle, env, **extra):
    return subprocess.run(["sh", str(bundle / "run_on_device.sh")], env={**env, **extra}, capture_output=True,
                          text=True, timeout=120)


def test_device_script_end_to_end_with_fake_adb(bundle, fake_phone, tmp_path):
    env, root = fake_phone
    manifest = load_manifest(bundle)
    files = [m["file"] for m in manifest["models"]] + [n["file"] for n in manifest["networks"]]
    failing = Path(manifest["models"][3]["file"]).stem
    first = _run_script(bundle, env, FAKE_FAIL=failing, CORE="6")
    assert first.returncode == 1, first.stderr
    assert f"{failing}: FAILED: ERROR: tensorflow/lite/kernels/batch_matmul.cc:353" in first.stderr
    results = bundle / "results"
    assert sorted(p.name for p in results.glob("*.txt")) == sorted([Path(f).stem + ".txt" for f in files] + ["device.txt"])
    assert not list(results.glob("*.part"))
    calls = (root / "bm.log").read_text().splitlines()
    assert len(calls) == len(files)
    assert all("--num_threads=1 --warmup_runs=2 --num_runs=5" in c and "--use_xnnpack=true" in c for c in calls)
    assert set((root / "taskset.log").read_text().split()) == {"40"}  # core 6 -> mask 0x40
    device = (results / "device.txt").read_text()
    for line in ("product_model=Pixel 7", "soc_model=Tensor G2", "board_platform=gs201", "android_release=14",
                 "abi=arm64-v8a", "core=6", "pinned=yes", "benchmark_model_version=nightly-test",
                 f"bundle_id={manifest['bundle_id']}", "device_kind=phone"):
        assert line in device.splitlines(), line
    pushed = Path(env["REMOTE_DIR"])
    assert (pushed / "benchmark_model").is_file() and len(list((pushed / "models").iterdir())) == len(files)

    # the importer refuses the failed result, naming it and the phone's error, in one line
    with pytest.raises(UserError) as exc:
        import_results(bundle, results, "pixel-7")
    assert f"{failing}.txt" in str(exc.value) and "batch_matmul.cc:353" in str(exc.value)
    assert "\n" not in str(exc.value)

    # resume: only the failed model runs again
    second = _run_script(bundle, env, CORE="6")
    assert second.returncode == 0, second.stderr
    calls = (root / "bm.log").read_text().splitlines()
    assert len(calls) == len(files) + 1 and failing in calls[-1]
    third = _run_script(bundle, env)
    assert third.returncode == 0 and "already" in third.stdout
    assert len((root / "bm.log").read_text().splitlines()) == len(files) + 1

    with pytest.raises(UserError, match="holds results of Pixel 7"):
        run_bundle_locally(bundle, results)  # never mixes this computer's results with the phone's
    out = tmp_path / "pixel-7.json"
    table = import_results(bundle, results, "pixel-7", out)
    assert set(table.entries) == {m["key"] for m in manifest["models"]}
    assert all(e["ms"] == pytest.approx(42.419) for e in table.entries.values())
    assert all(e["p10_ms"] <= e["ms"] <= e["p90_ms"] for e in table.entries.values())
    assert table.statistic == "median"
    e = next(iter(table.entries.values()))
    assert e["p10_ms"] == pytest.approx(42.3948 - 1.2816 * 0.188, abs=1e-3)
    md = LatencyTable.load(out).metadata
    assert md["device"]["name"] == "pixel-7" and md["device"]["kind"] == "phone"
    assert md["device"]["extra"]["product_model"] == "Pixel 7" and md["device"]["extra"]["soc_model"] == "Tensor G2"
    assert md["device"]["extra"]["android_release"] == "14" and md["threads"] == 1
    assert md["runtime"] == "litert" and "nightly-test" in md["runtime_version"]
    assert md["settings"]["num_runs"] == 5 and "median" in md["statistic"]
    assert "Pixel 7 (Tensor G2), Android 14" in md["device"]["description"]
    r = run_cli("lut", "info", out)
    assert r.returncode == 0 and "pixel-7" in r.stdout, r.stderr


def test_device_script_checks_adb_devices_and_taskset(bundle, fake_phone):
    env, root = fake_phone
    no_adb = {**env, "PATH": "/usr/bin:/bin"}
    r = _run_script(bundle, no_adb)
    if not shutil.which("adb", path=no_adb["PATH"]):
        assert r.returncode == 2 and "adb not found" in r.stderr
    r = _run_script(bundle, env, FAKE_DEVICES="")
    assert r.returncode == 2 and "no phone attached" in r.stderr
    r = _run_script(bundle, env, FAKE_DEVICES="AAA unauthorized")
    assert r.returncode == 2 and "unauthorized" in r.stderr
    r = _run_script(bundle, env, FAKE_DEVICES="AAA device,BBB device")
    assert r.returncode == 2 and "2 phones attached" in r.stderr and "ANDROID_SERIAL" in r.stderr
    assert not (root / "bm.log").exists()
    r = _run_script(bundle, {k: v for k, v in env.items() if k != "BENCHMARK_MODEL"})
    assert r.returncode == 2 and "android_aarch64_benchmark_model" in r.stderr
    r = _run_script(bundle, env, CORE="big")
    assert r.returncode == 2 and "CORE" in r.stderr
    # several phones, one chosen; no working taskset on it: runs unpinned, says so
    _exe(Path(env["FAKE_BIN"]) / "taskset", NO_TASKSET)
    (root / "adb.log").unlink()
    r = _run_script(bundle, env, FAKE_DEVICES="AAA device,BBB device", ANDROID_SERIAL="BBB")
    assert r.returncode == 0, r.stderr
    assert "running unpinned" in r.stderr
    assert "pinned=no" in (bundle / "results" / "device.txt").read_text().splitlines()
    log = (root / "adb.log").read_text().splitlines()
    assert log[0] == "BBB -s BBB get-state" and all(line.startswith("BBB ") for line in log)
    runs = [line for line in log if "./benchmark_model --graph=" in line]
    assert runs and not any("taskset" in line for line in runs)
    # results of another phone in that directory: refused
    (Path(env["FAKE_BIN"]) / "getprop").write_text(GETPROP.replace("panther:14", "cheetah:14"))
    r = _run_script(bundle, env)
    assert r.returncode == 2 and "another phone" in r.stderr


# --- the local runner and the importer -----------------------------------------------------------------

def test_run_local_then_import(bundle, tmp_path):
    results = tmp_path / "host-results"
    n = run_bundle_locally(bundle, results)
    manifest = load_manifest(bundle)
    assert n == len(manifest["models"]) + len(manifest["networks"])
    assert run_bundle_locally(bundle, results) == 0  # resumable: complete results are kept
    for f in results.glob("*.txt"):
        if f.name != "device.txt":
            text = f.read_text()
            assert text.startswith("INFO: STARTING!") and "INFO: Inference timings in us: Init: " in text
            assert "--" not in text.split("Graph: [")[0]
    table = import_results(bundle, results, "this-host", tmp_path / "host.json", description="dev box")
    assert sorted(table.entries) == sorted(m["key"] for m in manifest["models"])
    assert all(e["ms"] > 0 and e["p90_ms"] >= e["ms"] for e in table.entries.values())
    md = table.metadata
    assert md["device"]["kind"] == "host" and md["device"]["description"] == "dev box"
    assert md["validation"]["samples"] >= 1 and md["validation"]["mape"] >= 0
    # microsecond ops: the fit may be flat at this resolution, and is then left out
    assert list(table.calibrations) == [manifest["model_key"]] or "calibration_skipped" in md
    net = tiny_supernet()
    assert table.coverage(net) == (12, 12) and table.predict(net, net.space.largest()).latency_ms > 0


def test_import_calibrates_and_validates_with_the_bundles_networks(bundle, tmp_path):
    """Networks measured at 1.5 x their layer sum + 0.2 ms: the calibration finds that line,
    and predicts the held-out networks exactly."""
    manifest = load_manifest(bundle)
    results = tmp_path / "results"
    results.mkdir()
    op_us = {}
    for i, m in enumerate(manifest["models"]):
        op_us[m["key"]] = 100 + 37 * i
        text = format_benchmark_output(m["file"], FAST, 900, [op_us[m["key"]]], [op_us[m["key"]]] * 5, 0.01)
        (results / (Path(m["file"]).stem + ".txt")).write_text(text)
    for n in manifest["networks"]:
        us = round(1.5 * sum(op_us[k] for k in n["signatures"]) + 200)
        (results / (Path(n["file"]).stem + ".txt")).write_text(
            format_benchmark_output(n["file"], FAST, 900, [us], [us - 1, us, us + 1], 0.1))
    table = import_results(bundle, results, "pixel-7")
    cal = table.calibrations[manifest["model_key"]]
    assert cal["slope"] == pytest.approx(1.5, rel=0.01) and cal["intercept"] == pytest.approx(0.2, abs=0.02)
    assert cal["samples"] == 3 and cal["r2"] == pytest.approx(1.0, abs=1e-4)
    v = table.metadata["validation"]
    # the tiny space has 4 configs: 3 calibrate, 1 is left to validate
    assert v["samples"] == sum(n["role"] == "validation" for n in manifest["networks"]) == 1
    assert v["calibrated"] and v["mape"] < 0.5
    net = tiny_supernet()
    pred = table.predict(net, net.space.largest())
    assert pred.calibrated and pred.latency_ms == pytest.approx(1.5 * pred.layer_sum_ms + 0.2, rel=0.01)


def test_import_errors(bundle, tmp_path):
    results = tmp_path / "results"
    with pytest.raises(UserError, match="does not exist"):
        import_results(bundle, results, "pixel-7")
    results.mkdir()
    manifest = load_manifest(bundle)
    files = [m["file"] for m in manifest["models"]] + [n["file"] for n in manifest["networks"]]
    for f in files[:5]:
        (results / (Path(f).stem + ".txt")).write_text(OLDER)
    total = len(files)
    with pytest.raises(UserError, match=f"{total - 5} of {total} results are missing.*run_on_device.sh"):
        import_results(bundle, results, "pixel-7")
    partial = import_results(bundle, results, "pixel-7", allow_partial=True)
    assert len(partial.entries) == 5 and len(partial.metadata["bundle"]["missing"]) == total - 5
    assert next(iter(partial.entries.values()))["ms"] == pytest.approx(88.1992)  # no median: the mean
    with pytest.raises(UserError, match="--device"):
        import_results(bundle, results, "my phone!", allow_partial=True)
    (results / "device.txt").write_text("bundle_id=0123456789ab\n")
    with pytest.raises(UserError, match="another bundle"):
        import_results(bundle, results, "pixel-7", allow_partial=True)
    (results / "device.txt").unlink()
    (results / "conv-9x9-1to1-k1s1-deadbeef.txt").write_text(OLDER)
    with pytest.raises(UserError, match="not in this bundle"):
        import_results(bundle, results, "pixel-7", allow_partial=True)
    (results / "conv-9x9-1to1-k1s1-deadbeef.txt").unlink()
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(UserError, match="--force"):
        import_results(bundle, results, "pixel-7", tmp_path / "t.json", allow_partial=True)


# --- the CLI ----------------------------------------------------------------------------------------------

def test_cli_bundle_run_local_import(tmp_path):
    from autoslim_hw.checkpoint import save_checkpoint
    from autoslim_hw.models import create_model

    net = create_model("mobilenet_v2_cifar", input_size=8, groups=2, width_max=1.0, width_mult=0.25)
    ckpt = tmp_path / "supernet.pt"
    save_checkpoint(ckpt, {"kind": "supernet", "spec": net.spec.to_dict(), "model": net.state_dict()})
    out = tmp_path / "bundle"
    # --min-secs 0.01: a few runs of a 2x2 layer can all round down to 0 us, as on benchmark_model
    r = run_cli("lut", "bundle", "--checkpoint", ckpt, "--out", out, "--warmup-runs", "1", "--num-runs", "3",
                "--min-secs", "0.01", "--warmup-min-secs", "0", "--calibration", "2", "--validation", "1")
    assert r.returncode == 0, r.stderr
    manifest = load_manifest(out)
    assert len(manifest["models"]) == len(enumerate_signatures(net)) and len(manifest["networks"]) == 3
    assert "run_on_device.sh" in r.stdout
    assert_user_error(run_cli("lut", "bundle", "--checkpoint", ckpt, "--out", out), "--force")
    results = tmp_path / "results"
    r = run_cli("lut", "run-local", out, "--out", results)
    assert r.returncode == 0, r.stderr
    r = run_cli("lut", "import", results, "--bundle", out, "--device", "this-host", "--out", tmp_path / "t.json")
    assert r.returncode == 0, r.stderr
    assert "validation on 1 held-out networks" in r.stdout
    assert len(LatencyTable.load(tmp_path / "t.json").entries) == len(manifest["models"])

    # bad input: exit 2, one line
    assert_user_error(run_cli("lut", "bundle", "--model", "mobilenet_v9", "--out", tmp_path / "x"),
                      "unknown model 'mobilenet_v9'")
    assert_user_error(run_cli("lut", "import", results, "--bundle", tmp_path / "nope", "--device", "p",
                              "--out", tmp_path / "u.json"), "does not exist", "lut bundle")
    assert_user_error(run_cli("lut", "run-local", tmp_path / "nope", "--out", results), "does not exist")
    other = tmp_path / "other"
    shutil.copytree(out, other)
    m = json.loads((other / "manifest.json").read_text())
    m["bundle_id"] = "ffffffffffff"
    (other / "manifest.json").write_text(json.dumps(m))
    assert_user_error(run_cli("lut", "import", results, "--bundle", other, "--device", "p", "--out",
                              tmp_path / "v.json"), "another bundle")
    (results / next(p.name for p in results.glob("conv-*.txt"))).write_text(LOAD_ERROR)
    assert_user_error(run_cli("lut", "import", results, "--bundle", out, "--device", "p", "--out",
                              tmp_path / "w.json"), "batch_matmul.cc:353", "--allow-partial")
