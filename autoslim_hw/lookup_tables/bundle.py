"""Lookup tables for phones: a bundle of single-op models measured elsewhere, then imported.

A phone cannot run autoslim-hw, but it can run TFLite's `benchmark_model`. So:

1. `write_bundle` writes one .tflite per signature of a supernet's search space (plus a few
   whole sub-networks, to calibrate and to validate the table), a `manifest.json`, and
   `run_on_device.sh`, a POSIX sh script that pushes everything to an attached phone over
   adb and runs `benchmark_model` on each model, one thread, pinned to one core, saving
   each output to `results/<model>.txt` on the host. It is resumable.
2. `run_bundle_locally` runs the same bundle on this host through the Python LiteRT
   interpreter and writes the same files, in `benchmark_model`'s output format (a dry run
   of the whole workflow, or a table of this host for the litert runtime).
3. `import_results` parses the outputs (`parse_benchmark_output`) into a `LatencyTable`.

The output format parsed and written here is the one of TensorFlow's
tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkModel::Run and
BenchmarkLoggingListener::OnBenchmarkEnd) and of the `Stat` statistics printer
(tensorflow/core/util/stats_calculator.h, Stat::OutputToStream): per run phase one line
`count=N first=F curr=C min=A max=B avg=M std=S` (recent builds add `p5= median= p95=`;
`count=N curr=C` when all runs took the same time), then
`Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): M`
and, where memory is measurable,
`Memory footprint delta from the start of the tool (MB): init=X overall=Y`.
Lines carry an `INFO: ` prefix in recent builds and a logcat prefix when copied from logcat.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from .._io import atomic_write_bytes
from ..errors import UserError
from .signatures import Signature, config_signatures, deployed_ops, enumerate_signatures
from .table import (OP_GROUPS, CalibrationSkipped, LatencyTable, apply_calibration, fidelity, fit_calibration,
                    model_key, op_group, weights_mb)

BUNDLE_FORMAT = "autoslim-hw/bundle"
BUNDLE_VERSION = 1
RUNTIMES = ("litert",)  # what a phone runs: TFLite / LiteRT through benchmark_model
NIGHTLY = "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest"
BENCHMARK_MODEL_URLS = {"arm64-v8a": f"{NIGHTLY}/android_aarch64_benchmark_model",
                        "armeabi-v7a": f"{NIGHTLY}/android_arm_benchmark_model"}
# benchmark_model reports the mean and the (population) standard deviation of the timed runs;
# for a normal distribution the 10th and 90th percentiles lie 1.2816 std either side of the mean
_Z10 = 1.2815515655446004


@dataclass(frozen=True)
class BundleSettings:
    """benchmark_model's flags. Like benchmark_model, a phase runs at least `*_runs` times
    and at least `*_min_secs` seconds (its defaults: 1 warmup run, 0.5 s; 50 runs, 1 s)."""

    warmup_runs: int = 10
    num_runs: int = 50
    warmup_min_secs: float = 0.5
    min_secs: float = 1.0
    max_secs: float = 150.0  # benchmark_model's default; not passed to it
    num_threads: int = 1
    use_xnnpack: bool = True

    def to_dict(self) -> dict:
        return {"tool": "benchmark_model", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "BundleSettings":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def check(self) -> None:
        if self.warmup_runs < 0 or self.num_runs < 1:
            raise UserError("--warmup-runs must be >= 0 and --num-runs >= 1")
        if self.min_secs < 0 or self.warmup_min_secs < 0:
            raise UserError("--min-secs must be >= 0")
        if self.num_threads != 1:
            raise UserError("phone tables are measured with one thread (num_threads=1)")


# --- writing a bundle --------------------------------------------------------------------------

def model_file_name(sig: Signature) -> str:
    """Short, stable and shell-safe: readable fields plus a hash of the full signature key."""
    digest = hashlib.sha1(sig.key.encode()).hexdigest()[:8]
    act = "" if sig.act == "none" else f"-{sig.act}"
    return f"{sig.op}-{sig.h}x{sig.w}-{sig.cin}to{sig.cout}-k{sig.kernel}s{sig.stride}{act}-{digest}.tflite"


def _network_configs(supernet, calibration: int, validation: int) -> list[tuple[str, object]]:
    """Calibration: the smallest, the largest and random configs (as `profile` uses);
    validation: other random configs, none equal to a calibration one."""
    import random

    from .build import sample_configs

    cal = sample_configs(supernet, calibration, seed=12345) if calibration > 0 else []
    cal = list(dict.fromkeys(cal))
    seen, val = set(cal), []
    rng = random.Random(7)
    for _ in range(validation * 50):
        if len(val) >= validation:
            break
        cfg = supernet.space.sample(rng)
        if cfg not in seen:
            seen.add(cfg)
            val.append(cfg)
    return [("cal", c) for c in cal] + [("val", c) for c in val]


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose a directory for --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise UserError(f"{out} is not empty and is not an autoslim-hw bundle; choose another --out "
                            "(--force replaces only bundles)")
        if not force:
            raise UserError(f"{out} already holds a bundle; pass --force to replace it (its results/ too) "
                            "or choose another --out")


def write_bundle(supernet, out_dir: str | os.PathLike, runtime: str = "litert",
                 settings: BundleSettings = BundleSettings(), calibration: int = 10, validation: int = 10,
                 force: bool = False, progress: bool = False) -> dict:
    """Write the bundle for `supernet` to `out_dir` and return its manifest.

    The bundle is built in a temporary directory beside `out_dir` and renamed into place at
    the end, so an interrupted write leaves nothing. An existing non-empty `out_dir` is
    refused, unless it is a bundle and `force` is given (it is then replaced, results too);
    a directory that is not a bundle is never deleted."""
    from ..export import materialize
    from ..profilers import get_backend
    from .build import single_op_model

    if runtime not in RUNTIMES:
        raise UserError(f"phone bundles run TFLite's benchmark_model: --runtime must be one of "
                        f"{', '.join(RUNTIMES)}, got {runtime!r}")
    settings.check()
    if calibration < 0 or validation < 0:
        raise UserError("--calibration and --validation must be >= 0")
    out = Path(out_dir)
    _check_out_dir(out, force)
    backend = get_backend(runtime)
    ops = deployed_ops(supernet)
    sigs = enumerate_signatures(supernet, ops)
    nets = _network_configs(supernet, calibration, validation)
    spec = supernet.spec
    shape = (1, spec.in_chans, spec.input_size, spec.input_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("writing models"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[item]}"), disable=not progress)
    try:
        (tmp / "models").mkdir()
        models, networks = [], []
        with bar:
            task = bar.add_task("models", total=len(sigs) + len(nets), item="")
            for sig in sigs:
                name = model_file_name(sig)
                model, shapes = single_op_model(sig)
                backend.convert(model, shapes, tmp / "models" / name)
                models.append({"file": f"models/{name}", "key": sig.key, "sig": sig.to_dict()})
                bar.update(task, advance=1, item=name)
            counters = {"cal": 0, "val": 0}
            for role, cfg in nets:
                name = f"net-{role}-{counters[role]:02d}.tflite"
                counters[role] += 1
                backend.convert(materialize(supernet, cfg).eval(), [shape], tmp / "models" / name)
                keys = [s.key for s in config_signatures(supernet, cfg, ops)]
                networks.append({"file": f"models/{name}", "role": "calibration" if role == "cal" else "validation",
                                 "config": dict(cfg), "signatures": keys, "weights_mb": weights_mb(supernet, cfg)})
                bar.update(task, advance=1, item=name)
        body = {"model": spec.to_dict(), "model_key": model_key(supernet), "runtime": runtime,
                "benchmark": settings.to_dict(), "models": models, "networks": networks}
        bundle_id = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "bundle_id": bundle_id,
                    "created": _now(), "tool_version": __version__, "converter_version": backend.version(),
                    **body}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        script = tmp / "run_on_device.sh"
        script.write_text(_device_script(manifest))
        script.chmod(0o755)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _swap_into_place(tmp: Path, out: Path) -> None:
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the directory private
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():  # a bundle, and --force: move it aside, move the new one in, then delete
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "bundle")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _device_script(manifest: dict) -> str:
    b = manifest["benchmark"]
    spec = manifest["model"]
    values = {"TOOL_VERSION": __version__, "MODEL": f"{spec['arch']} at {spec['input_size']}px",
              "BUNDLE_ID": manifest["bundle_id"], "N_FILES": str(len(manifest["models"]) + len(manifest["networks"])),
              "URL_AARCH64": BENCHMARK_MODEL_URLS["arm64-v8a"], "URL_ARM": BENCHMARK_MODEL_URLS["armeabi-v7a"],
              "WARMUP_RUNS": str(int(b["warmup_runs"])), "NUM_RUNS": str(int(b["num_runs"])),
              "WARMUP_MIN_SECS": f"{float(b['warmup_min_secs']):g}", "MIN_SECS": f"{float(b['min_secs']):g}"}
    text = _SCRIPT
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert not re.search(r"@[A-Z0-9_]+@", text), "unfilled placeholder in run_on_device.sh"
    return text


def load_manifest(bundle_dir: str | os.PathLike) -> dict:
    bundle = Path(bundle_dir)
    path = bundle / "manifest.json"
    if not bundle.is_dir():
        raise UserError(f"bundle {bundle} does not exist; write one with `autoslim-hw lut bundle --out {bundle}`")
    if not path.is_file():
        raise UserError(f"{bundle} is not an autoslim-hw bundle (no manifest.json); "
                        "write one with `autoslim-hw lut bundle`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable ({type(exc).__name__}); write the bundle again") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{path} is not an autoslim-hw bundle manifest (no '{BUNDLE_FORMAT}' format tag)")
    if data.get("version") != BUNDLE_VERSION:
        raise UserError(f"{path} is bundle version {data.get('version')}; this autoslim-hw reads "
                        f"{BUNDLE_VERSION}: write the bundle again or upgrade autoslim-hw")
    return data


def _bundle_files(manifest: dict) -> list[str]:
    return [m["file"] for m in manifest["models"]] + [n["file"] for n in manifest.get("networks", [])]


def _result_name(file: str) -> str:
    return Path(file).stem + ".txt"


# --- benchmark_model's output --------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf"
_TIMINGS = re.compile(r"Inference timings in us: Init: (?P<init>{n}), First inference: (?P<first>{n}), "
                      r"Warmup \(avg\): (?P<warmup>{n}), Inference \(avg\): (?P<avg>{n})".format(n=_NUM))
_MEMORY = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=(?P<init>{n}) "
                     r"overall=(?P<overall>{n})".format(n=_NUM))
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{n})".format(n=_NUM))
_PAIR = re.compile(r"\b(count|first|curr|min|max|avg|std|p5|median|p95)=(" + _NUM + ")")
_ERROR_HINTS = re.compile(r"\bERROR\b|\berror\b|[Ff]ailed|not found|No such file|denied|Aborted|Segmentation|"
                          r"can't|cannot|CANNOT LINK")


def first_error_line(text: str) -> str:
    """The line that best says why benchmark_model did not finish."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern in (re.compile(r"\bERROR\b|^E |\sE tflite"), _ERROR_HINTS):
        for ln in lines:
            if pattern.search(ln):
                return ln[:200]
    return lines[-1][:200] if lines else "the output is empty"


def parse_benchmark_output(text: str, source: str = "benchmark output") -> dict:
    """The numbers of one benchmark_model run, in milliseconds (MB for memory).

    Returns avg_ms (its "Inference (avg)"), min_ms, max_ms, std_ms and count (of the timed
    runs' statistics line), median_ms (recent builds only), init_ms, first_ms (the first
    warmup run), warmup_avg_ms, memory_init_mb / memory_overall_mb / peak_memory_mb: None where
    the output does not have them; below_resolution: every timed run read 0 us. A run without
    inference timings (the model failed to load or to run on the phone) raises a one-line
    UserError naming `source`."""
    lines = text.splitlines()
    t_idx = max((i for i, ln in enumerate(lines) if _TIMINGS.search(ln)), default=None)
    if t_idx is None or "Benchmarking failed" in text:
        raise UserError(f"{source}: benchmark_model did not finish (no inference timings): {first_error_line(text)}")
    m = _TIMINGS.search(lines[t_idx])
    avg_us = float(m["avg"])
    stats = _timed_run_stats(lines[:t_idx])
    below_resolution = avg_us == 0 and stats is not None  # count > 0: runs, each under a microsecond
    if below_resolution:
        # benchmark_model keeps whole microseconds: a tiny layer on a fast core reads 0 in every
        # run; half the resolution is the honest estimate (off by at most 0.5 us)
        avg_us = 0.5
    if not math.isfinite(avg_us) or avg_us <= 0:
        raise UserError(f"{source}: benchmark_model reported no timed runs (Inference (avg): {m['avg']})")
    out = {"avg_ms": avg_us / 1e3, "below_resolution": below_resolution, "init_ms": float(m["init"]) / 1e3,
           "first_ms": float(m["first"]) / 1e3,
           "warmup_avg_ms": float(m["warmup"]) / 1e3, "min_ms": None, "max_ms": None, "std_ms": None,
           "median_ms": None, "count": None, "memory_init_mb": None, "memory_overall_mb": None,
           "peak_memory_mb": None}
    if stats:
        count = int(float(stats["count"])) if "count" in stats else None
        if "min" not in stats and "curr" in stats:  # "count=N curr=C(all same)"
            stats.update(min=stats["curr"], max=stats["curr"], std="0")
        out.update(count=count, min_ms=_ms(stats.get("min")), max_ms=_ms(stats.get("max")),
                   std_ms=_ms(stats.get("std")), median_ms=_ms(stats.get("median")))
        if out["median_ms"] is None and count == 1:
            out["median_ms"] = out["min_ms"]
    for ln in lines[t_idx:]:
        if (mm := _MEMORY.search(ln)):
            out["memory_init_mb"], out["memory_overall_mb"] = float(mm["init"]), float(mm["overall"])
        if (pk := _PEAK.search(ln)):
            out["peak_memory_mb"] = float(pk["peak"])
    return out


def _ms(value: str | None) -> float | None:
    return None if value is None else float(value) / 1e3


def _timed_run_stats(lines: list[str]) -> dict | None:
    """The statistics line of the timed runs: the first `count=` line after the last
    "Running benchmark for at least" line; without such lines (a logcat excerpt), the last
    `count=` line that is not op-profiling output."""
    start = max((i for i, ln in enumerate(lines) if "Running benchmark for at least" in ln), default=None)
    candidates = lines[start + 1:] if start is not None else reversed(lines)
    for ln in candidates:
        if "count=" in ln and "Timings (microseconds)" not in ln and "Memory (bytes)" not in ln:
            pairs = dict(_PAIR.findall(ln))
            if "count" in pairs and int(float(pairs["count"])) > 0:
                return pairs
    return None


def _stat_line(us: list[int]) -> str:
    """Stat<int64_t>::OutputToStream of a recent build: count first curr min max avg std p5 median p95."""
    if not us:
        return "count=0"
    srt = sorted(us)
    pct = " ".join(f"{k}={srt[min(len(srt) - 1, int(q * len(srt)))]}" for k, q in
                   (("p5", 0.05), ("median", 0.5), ("p95", 0.95)))
    if srt[0] == srt[-1]:
        return f"count={len(us)} curr={us[-1]}" + ("(all same)" if len(us) > 1 else "") + f" {pct}"
    avg = sum(us) / len(us)
    std = int(math.sqrt(max(sum(x * x for x in us) / len(us) - avg * avg, 0.0)))
    return (f"count={len(us)} first={us[0]} curr={us[-1]} min={srt[0]} max={srt[-1]} avg={avg:g} std={std} {pct}")


def format_benchmark_output(graph: str, settings: BundleSettings, init_us: int, warmup_us: list[int],
                            timed_us: list[int], model_size_mb: float, mem_init_mb: float | None = None,
                            mem_overall_mb: float | None = None) -> str:
    """benchmark_model's log for one run (what it prints with --num_threads=1 and the bundle's
    flags), from measured numbers: init time and per-run times in microseconds."""
    s = settings
    phase = "Running benchmark for at least {} iterations and at least {:g} seconds but terminate if exceeding {:g} seconds."
    lines = ["STARTING!", "Log parameter values verbosely: [0]", f"Min num runs: [{s.num_runs}]",
             f"Min runs duration (seconds): [{s.min_secs:g}]", f"Num threads: [{s.num_threads}]",
             f"Min warmup runs: [{s.warmup_runs}]", f"Min warmup runs duration (seconds): [{s.warmup_min_secs:g}]",
             f"Graph: [{graph}]", f"Use xnnpack: [{int(s.use_xnnpack)}]", f"Loaded model {graph}",
             "Initialized TensorFlow Lite runtime.", f"The input model file size (MB): {model_size_mb:g}",
             f"Initialized session in {init_us / 1e3:g}ms.",
             phase.format(s.warmup_runs, s.warmup_min_secs, s.max_secs), _stat_line(warmup_us) + "\n",
             phase.format(s.num_runs, s.min_secs, s.max_secs), _stat_line(timed_us) + "\n"]
    w_avg = sum(warmup_us) / len(warmup_us) if warmup_us else float("nan")
    t_avg = sum(timed_us) / len(timed_us) if timed_us else float("nan")
    lines.append(f"Inference timings in us: Init: {init_us}, First inference: {warmup_us[0] if warmup_us else 0}, "
                 f"Warmup (avg): {w_avg:g}, Inference (avg): {t_avg:g}")
    if mem_init_mb is not None and mem_overall_mb is not None:
        lines += [("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
                   "to the actual memory footprint of the model at runtime. Take the information at your discretion."),
                  (f"Memory footprint delta from the start of the tool (MB): init={mem_init_mb:g} "
                   f"overall={mem_overall_mb:g}")]
    return "".join(f"INFO: {ln}\n" for ln in lines)


def _result_complete(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return "Inference timings in us" in text and "Benchmarking failed" not in text


# --- running a bundle on this host ----------------------------------------------------------------

def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _run_phase(fn, min_runs: int, min_secs: float, max_secs: float) -> list[int]:
    """BenchmarkModel::Run: at least `min_runs` runs and at least `min_secs`, stop past `max_secs`."""
    now = time.perf_counter_ns() // 1000
    min_finish, max_finish = now + int(min_secs * 1e6), now + int(max_secs * 1e6)
    out, run = [], 0
    while (run < min_runs or now < min_finish) and now <= max_finish:
        start = time.perf_counter_ns() // 1000
        fn()
        end = time.perf_counter_ns() // 1000
        out.append(end - start)
        run += 1
        now = end
    return out


def run_bundle_locally(bundle_dir: str | os.PathLike, results_dir: str | os.PathLike, threads: int = 1,
                       progress: bool = False) -> int:
    """Run every model of the bundle on this host through the LiteRT interpreter, pinned to
    one core, writing `results_dir/<model>.txt` in benchmark_model's format and a
    `device.txt` describing this host. Resumable like run_on_device.sh: complete results are
    kept. Returns the number of models measured now."""
    from ..profilers import get_backend, pinned_to_core
    from ..profilers.devices import cpu_model, measurement_core

    bundle = Path(bundle_dir)
    manifest = load_manifest(bundle)
    results = Path(results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"{results} is a file; choose a directory for the results")
    _check_results_owner(results, manifest)
    previous = read_device_txt(results / "device.txt")
    if previous.get("device_kind", "host") != "host" or previous.get("product_model", cpu_model()) != cpu_model():
        raise UserError(f"{results} holds results of {previous.get('product_model') or 'another device'}; "
                        "choose another --out for this computer's results")
    if threads < 1:
        raise UserError("--threads must be >= 1")
    settings = BundleSettings.from_dict(manifest["benchmark"])
    files = _bundle_files(manifest)
    missing = [f for f in files if not (bundle / f).is_file()]
    if missing:
        raise UserError(f"{bundle} lacks {len(missing)} of its models (e.g. {missing[0]}); write the bundle again")
    backend = get_backend(manifest["runtime"])
    core = measurement_core()
    results.mkdir(parents=True, exist_ok=True)
    device = {"bundle_id": manifest["bundle_id"], "device_kind": "host", "product_model": cpu_model(),
              "soc_model": cpu_model(), "board_platform": platform.machine(), "android_release": "",
              "abi": platform.machine(), "core": "" if core is None else str(core),
              "pinned": "yes" if core is not None else "no", "threads": str(threads),
              "benchmark_model_version": f"autoslim-hw {__version__} run-local (LiteRT {backend.version()})",
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    atomic_write_bytes(results / "device.txt", "".join(f"{k}={v}\n" for k, v in device.items()).encode())
    todo = [f for f in files if not _result_complete(results / _result_name(f))]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[item]}"), disable=not progress)
    with pinned_to_core(core), bar:
        task = bar.add_task("models", total=len(todo), item="")
        for file in todo:
            path = bundle / file
            rss0 = _rss_mb()
            t0 = time.perf_counter_ns() // 1000
            run = backend.load(path, threads, copy_input=False)  # benchmark_model fills inputs once
            init_us = time.perf_counter_ns() // 1000 - t0
            rss1 = _rss_mb()
            warm = _run_phase(run, settings.warmup_runs, settings.warmup_min_secs, settings.max_secs)
            timed = _run_phase(run, settings.num_runs, settings.min_secs, settings.max_secs)
            rss2 = _rss_mb()
            mem = (rss1 - rss0, rss2 - rss0) if None not in (rss0, rss1, rss2) else (None, None)
            text = format_benchmark_output(file, settings, init_us, warm, timed, path.stat().st_size / 1e6, *mem)
            atomic_write_bytes(results / _result_name(file), text.encode())
            del run
            bar.update(task, advance=1, item=Path(file).name)
    return len(todo)


# --- importing results ---------------------------------------------------------------------------

def read_device_txt(path: Path) -> dict:
    if not path.is_file():
        return {}
    out = {}
    for ln in path.read_text(errors="replace").splitlines():
        if "=" in ln:
            key, value = ln.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _check_results_owner(results: Path, manifest: dict) -> None:
    """Results of one bundle only: device.txt records the bundle id, and every result file
    must name a model of this bundle."""
    if not results.is_dir():
        return
    device = read_device_txt(results / "device.txt")
    other = device.get("bundle_id")
    if other and other != manifest["bundle_id"]:
        raise UserError(f"{results} holds results of another bundle ({other}, this one is "
                        f"{manifest['bundle_id']}); pass the --bundle they were measured with")
    known = {_result_name(f) for f in _bundle_files(manifest)}
    strangers = sorted(p.name for p in results.glob("*.txt") if p.name != "device.txt" and p.name not in known)
    if strangers:
        raise UserError(f"{results} has {len(strangers)} result file(s) of models not in this bundle "
                        f"(e.g. {strangers[0]}); they belong to another bundle: pass the --bundle they were "
                        "measured with")


_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def import_results(bundle_dir: str | os.PathLike, results_dir: str | os.PathLike, device_name: str,
                   out: str | os.PathLike | None = None, description: str | None = None,
                   allow_partial: bool = False, force: bool = False) -> LatencyTable:
    """Build a LatencyTable from the benchmark_model outputs of a bundle's models.

    Entries: ms is benchmark_model's median of the timed runs where it prints one
    (recent builds), else its "Inference (avg)"; p10/p90 are avg -/+ 1.2816 std (the normal
    approximation), clamped to the runs' [min, max]. The bundle's calibration networks give
    the end-to-end calibration, its validation networks the table's measured accuracy
    (metadata["validation"]). Saved atomically to `out` when given."""
    bundle, results = Path(bundle_dir), Path(results_dir)
    manifest = load_manifest(bundle)
    if not _DEVICE_NAME.match(device_name or ""):
        raise UserError(f"--device {device_name!r}: use a short name of letters, digits and . _ + - "
                        "(e.g. pixel-7)")
    if out is not None and Path(out).exists() and not force:
        raise UserError(f"{out} exists; pass --force to overwrite it or choose another --out")
    if not results.is_dir():
        raise UserError(f"results directory {results} does not exist; run `sh {bundle / 'run_on_device.sh'}` "
                        f"(or `autoslim-hw lut run-local {bundle} --out {results}`) first")
    _check_results_owner(results, manifest)
    device = read_device_txt(results / "device.txt")

    parsed, missing, failed = {}, [], []
    for file in _bundle_files(manifest):
        path = results / _result_name(file)
        if not path.is_file():
            missing.append(path.name)
            continue
        try:
            parsed[file] = parse_benchmark_output(path.read_text(errors="replace"), source=str(path))
        except UserError as exc:
            if not allow_partial:
                raise UserError(f"{exc}; fix it and run run_on_device.sh again (it re-runs failed models), "
                                "or pass --allow-partial") from None
            failed.append(path.name)
    total = len(_bundle_files(manifest))
    if missing and not allow_partial:
        raise UserError(f"{len(missing)} of {total} results are missing in {results} (e.g. {missing[0]}); run "
                        f"`sh {bundle / 'run_on_device.sh'}` again to measure them (it skips finished models), "
                        "or pass --allow-partial to import what is there")
    if not any(m["file"] in parsed for m in manifest["models"]):
        raise UserError(f"{results} has no usable results of this bundle's models; run "
                        f"`sh {bundle / 'run_on_device.sh'}` first")

    stats = [r for r in parsed.values()]
    statistic = ("median" if all(r["median_ms"] is not None for r in stats) else
                 "avg" if all(r["median_ms"] is None for r in stats) else "median where printed, else avg")
    kind = device.get("device_kind") or "phone"
    product = device.get("product_model") or "unknown phone"
    soc = device.get("soc_model") or device.get("board_platform") or device.get("hardware") or ""
    android = device.get("android_release") or ""
    pinned = device.get("pinned") == "yes"
    version = device.get("benchmark_model_version") or "unknown"
    if version == "unknown" and device.get("benchmark_model_sha256") not in (None, "", "unknown"):
        version = f"unknown (sha256 {device['benchmark_model_sha256'][:12]})"
    if description is None:
        where = f"core {device['core']}" if device.get("core") else "unpinned"
        description = (f"{product}" + (f" ({soc})" if soc and soc != product else "")
                       + (f", Android {android}" if android else "") + f", one thread, {where}")
    extra = {k: v for k, v in device.items() if k not in ("bundle_id", "date")}
    b = manifest["benchmark"]
    table = LatencyTable({
        "device": {"name": device_name, "description": description, "threads": 1, "pin_core": pinned, "kind": kind,
                   "extra": extra, "cpu_model": soc or product, "machine": device.get("abi", "")},
        "runtime": "litert", "runtime_version": version if kind == "host" else f"benchmark_model {version}",
        "measured_with": "autoslim-hw run-local" if kind == "host" else "benchmark_model (run_on_device.sh)",
        "cpu_model": soc or product, "threads": 1, "created": _now(), "tool_version": __version__,
        "settings": {"warmup": b["warmup_runs"], "runs": b["num_runs"], "rounds": 1, **b},
        "latency_statistic": "median",
        "statistic": (f"ms is benchmark_model's {statistic} of the timed runs (it prints the mean, and the "
                      "median only in recent builds; medians under 10 us, printed in whole microseconds, give way "
                      "to the mean); p10_ms/p90_ms are avg -/+ 1.2816 std (normal approximation), "
                      "clamped to [min, max]"),
        "models": [{"key": manifest["model_key"], "spec": manifest["model"]}],
        "bundle": {"bundle_id": manifest["bundle_id"], "measured": len(parsed), "total": total,
                   "missing": missing, "failed": failed, "measured_on": device.get("date", "")},
    })
    for m in manifest["models"]:
        r = parsed.get(m["file"])
        if r is None:
            continue
        sig = Signature(**m["sig"])
        if sig.key != m["key"]:
            raise UserError(f"{bundle / 'manifest.json'} is inconsistent ({m['key']}); write the bundle again")
        table.add(sig, *_latency(r))

    cal, val = [], []
    for net in manifest.get("networks", []):
        r = parsed.get(net["file"])
        if r is None or not all(k in table.entries for k in net["signatures"]):
            continue
        features = {g: 0.0 for g in OP_GROUPS}
        for k in net["signatures"]:
            features[op_group(table.entries[k]["sig"]["op"])] += table.entries[k]["ms"]
        if "weights_mb" in net:  # bundles of earlier versions lack it: no weights term then
            features["weights_mb"] = net["weights_mb"]
        (cal if net["role"] == "calibration" else val).append((features, _latency(r)[0]))
    key = manifest["model_key"]
    try:
        table.calibrations[key] = fit_calibration([s for s, _ in cal], [m for _, m in cal])
    except CalibrationSkipped as exc:
        table.metadata["calibration_skipped"] = str(exc)
    if val:
        c = table.calibrations.get(key)
        pred = [apply_calibration(c, f) if c else sum(f[g] for g in OP_GROUPS) for f, _ in val]
        meas = [m for _, m in val]
        table.metadata["validation"] = {**fidelity(pred, meas), "samples": len(val), "calibrated": c is not None,
                                        "predicted_ms": pred, "measured_ms": meas}
    if out is not None:
        table.save(out)
    return table


def _latency(r: dict) -> tuple[float, float, float]:
    """(median, p10, p90) in ms. benchmark_model prints the median in whole microseconds: under
    10 us that rounding is over 5%, so such ops (single tiny layers) take its mean, printed
    with decimals."""
    small = r["median_ms"] is not None and r["median_ms"] < 0.010 and r["avg_ms"] is not None
    mid = r["median_ms"] if r["median_ms"] is not None and not small else r["avg_ms"]
    if r["std_ms"] is None:
        return mid, mid, mid
    lo, hi = r["avg_ms"] - _Z10 * r["std_ms"], r["avg_ms"] + _Z10 * r["std_ms"]
    if r["min_ms"] is not None and r["max_ms"] is not None:
        lo, hi = max(lo, r["min_ms"]), min(hi, r["max_ms"])
    return mid, min(lo, mid), max(hi, mid)


# The device script. @NAME@ placeholders are filled by _device_script.
_SCRIPT = r'''#!/bin/sh
# run_on_device.sh: measure this autoslim-hw bundle on an Android phone over adb.
# Written by autoslim-hw @TOOL_VERSION@ for @MODEL@ (bundle @BUNDLE_ID@, @N_FILES@ models).
#
# Run it on the computer the phone is attached to by USB (Linux, macOS or WSL; any
# POSIX sh), with USB debugging on (Settings > Developer options). For every model
# of models/ it runs TFLite's benchmark_model on the phone, one thread, pinned to one
# core, and saves its output to results/<model>.txt here. Then:
#   autoslim-hw lut import results --bundle . --device <phone-name> --out <phone>.json
#
# Environment:
#   BENCHMARK_MODEL  TFLite's benchmark_model built for the phone's ABI (required
#                    unless ./benchmark_model exists next to this script). Nightly
#                    prebuilt binaries, from the TFLite "Performance measurement" page:
#                    arm64-v8a:   @URL_AARCH64@
#                    armeabi-v7a: @URL_ARM@
#   BENCHMARK_MODEL_VERSION  a label for that binary (e.g. "nightly 2025-06-01"); it
#                    is recorded in results/device.txt with the binary's sha256.
#   CORE             the core to pin to with taskset. Default: the core with the
#                    highest cpuinfo_max_freq (the prime core of a big.LITTLE SoC);
#                    the highest-numbered one on ties. Example: CORE=7
#   ANDROID_SERIAL   which phone, when several are attached (see `adb devices`).
#   RESULTS          where results go (default: results/ next to this script).
#   SLEEP            seconds to pause between models to let the phone cool (default 0).
#   REMOTE_DIR       working directory on the phone (default /data/local/tmp/autoslim-hw).
#
# Resumable: a model whose result file is complete (it has benchmark_model's
# "Inference timings" line) is skipped, so after an interruption, a failure or an
# unplugged cable just run it again: an interrupted run leaves no result file, a
# failed one leaves the phone's output (for `lut import` to report) and runs again.
# Keep the phone plugged in, screen on, and nothing else running. To free the space
# on the phone afterwards: adb shell rm -r /data/local/tmp/autoslim-hw
#
# Settings: --num_threads=1 --warmup_runs=@WARMUP_RUNS@ --num_runs=@NUM_RUNS@ --warmup_min_secs=@WARMUP_MIN_SECS@ --min_secs=@MIN_SECS@ --use_xnnpack=true

set -u

case "${1:-}" in
  -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "run_on_device.sh: takes no arguments (settings are environment variables; see --help)" >&2; exit 2 ;;
esac

BUNDLE_ID=@BUNDLE_ID@
here=$(cd "$(dirname "$0")" && pwd)
results=${RESULTS:-$here/results}
remote=${REMOTE_DIR:-/data/local/tmp/autoslim-hw}
pause=${SLEEP:-0}

die() { echo "run_on_device.sh: $*" >&2; exit 2; }
# adb shell, with the carriage returns old adb versions add removed
dsh() { adb shell "$@" </dev/null | tr -d '\r'; }
complete() { grep -q 'Inference timings in us' "$1" 2>/dev/null && ! grep -q 'Benchmarking failed' "$1"; }

command -v adb >/dev/null 2>&1 || die "adb not found on PATH: install Android SDK platform-tools (https://developer.android.com/tools/releases/platform-tools)"

# --- exactly one phone --------------------------------------------------------------
if [ -n "${ANDROID_SERIAL:-}" ]; then
  state=$(adb -s "$ANDROID_SERIAL" get-state 2>/dev/null | tr -d '\r')
  [ "$state" = device ] || die "phone ANDROID_SERIAL=$ANDROID_SERIAL is not attached and authorized (state: ${state:-absent}); see adb devices"
else
  listing=$(adb devices 2>/dev/null | tr -d '\r')
  ready=$(printf '%s\n' "$listing" | awk 'NR > 1 && $2 == "device" {print $1}')
  n=$(printf '%s\n' "$ready" | grep -c .)
  if [ "$n" -eq 0 ]; then
    waiting=$(printf '%s\n' "$listing" | awk 'NR > 1 && $2 == "unauthorized"' | grep -c .)
    if [ "$waiting" -gt 0 ]; then
      die "the phone is attached but unauthorized: accept the USB debugging prompt on its screen"
    fi
    die "no phone attached: plug it in by USB with USB debugging on, then check adb devices"
  fi
  [ "$n" -eq 1 ] || die "$n phones attached ($(echo $ready)); choose one with ANDROID_SERIAL=<serial>"
  ANDROID_SERIAL=$ready
fi
export ANDROID_SERIAL

abi=$(dsh getprop ro.product.cpu.abi)
case "$abi" in
  arm64*) url=@URL_AARCH64@ ;;
  armeabi*) url=@URL_ARM@ ;;
  *) url="the TFLite benchmark binaries page (ai.google.dev/edge/litert/models/measurement)" ;;
esac

# --- benchmark_model ----------------------------------------------------------------
if [ -z "${BENCHMARK_MODEL:-}" ] && [ -f "$here/benchmark_model" ]; then
  BENCHMARK_MODEL=$here/benchmark_model
fi
[ -n "${BENCHMARK_MODEL:-}" ] || die "set BENCHMARK_MODEL to TFLite's benchmark_model for this phone ($abi); download it from $url"
[ -f "$BENCHMARK_MODEL" ] || die "BENCHMARK_MODEL=$BENCHMARK_MODEL does not exist; download it from $url"
if command -v sha256sum >/dev/null 2>&1; then
  bm_sha=$(sha256sum "$BENCHMARK_MODEL" | cut -d' ' -f1)
elif command -v shasum >/dev/null 2>&1; then
  bm_sha=$(shasum -a 256 "$BENCHMARK_MODEL" | cut -d' ' -f1)
else
  bm_sha=unknown
fi

# --- results of this bundle and this phone only ----------------------------------------
mkdir -p "$results" || die "cannot create $results"
prop() { dsh getprop "$1"; }
model=$(prop ro.product.model)
fingerprint=$(prop ro.build.fingerprint)
if [ -f "$results/device.txt" ]; then
  old_bundle=$(sed -n 's/^bundle_id=//p' "$results/device.txt")
  old_fp=$(sed -n 's/^fingerprint=//p' "$results/device.txt")
  old_model=$(sed -n 's/^product_model=//p' "$results/device.txt")
  [ "$old_bundle" = "$BUNDLE_ID" ] || die "$results holds results of another bundle ($old_bundle); use RESULTS=<another dir>"
  [ "$old_fp" = "$fingerprint" ] || die "$results holds results from another phone or Android build ($old_model); use RESULTS=<another dir>"
fi

total=0
todo=0
for f in "$here"/models/*.tflite; do
  [ -f "$f" ] || die "no models in $here/models"
  total=$((total + 1))
  complete "$results/$(basename "$f" .tflite).txt" || todo=$((todo + 1))
done
if [ "$todo" -eq 0 ]; then
  echo "all $total results are in $results already; next: autoslim-hw lut import $results --bundle $here --device <phone-name> --out <phone>.json"
  exit 0
fi

# --- the core to pin to ---------------------------------------------------------------
if [ -z "${CORE:-}" ]; then
  CORE=$(dsh 'for c in /sys/devices/system/cpu/cpu[0-9]*; do f=$(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null || echo 0); echo "${c##*/cpu} $f"; done' \
    | sort -k2,2n -k1,1n | tail -n 1 | cut -d' ' -f1)
fi
case "$CORE" in
  ''|*[!0-9]*) die "CORE must be a core number such as 7, got '$CORE'" ;;
esac
[ "$CORE" -lt 64 ] || die "CORE=$CORE is not a core number below 64"
mask=$(printf '%x' $((1 << CORE)))
core_freq=$(dsh "cat /sys/devices/system/cpu/cpu$CORE/cpufreq/cpuinfo_max_freq 2>/dev/null")

# --- push -------------------------------------------------------------------------------
echo "phone $model ($ANDROID_SERIAL, $abi): pushing benchmark_model and $total models to $remote"
dsh "mkdir -p '$remote'" || die "cannot create $remote on the phone"
adb push "$BENCHMARK_MODEL" "$remote/benchmark_model" >/dev/null || die "adb push of $BENCHMARK_MODEL failed"
dsh "chmod 755 '$remote/benchmark_model'"
adb push --sync "$here/models" "$remote/" >/dev/null || die "adb push of the models failed (is the phone's storage full?)"

if [ "$(dsh "taskset $mask true >/dev/null 2>&1 && echo ok")" = ok ]; then
  pin="taskset $mask"
  pinned=yes
else
  echo "run_on_device.sh: warning: taskset is missing on the phone or cannot use core $CORE; running unpinned (expect more variance)" >&2
  pin=""
  pinned=no
fi

{
  echo "bundle_id=$BUNDLE_ID"
  echo "device_kind=phone"
  echo "product_model=$model"
  echo "manufacturer=$(prop ro.product.manufacturer)"
  echo "soc_model=$(prop ro.soc.model)"
  echo "soc_manufacturer=$(prop ro.soc.manufacturer)"
  echo "board_platform=$(prop ro.board.platform)"
  echo "hardware=$(prop ro.hardware)"
  echo "android_release=$(prop ro.build.version.release)"
  echo "sdk=$(prop ro.build.version.sdk)"
  echo "fingerprint=$fingerprint"
  echo "abi=$abi"
  echo "core=$CORE"
  echo "core_max_freq_khz=$core_freq"
  echo "pinned=$pinned"
  echo "benchmark_model_sha256=$bm_sha"
  echo "benchmark_model_version=${BENCHMARK_MODEL_VERSION:-unknown}"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$results/device.txt.part" && mv "$results/device.txt.part" "$results/device.txt"

# --- measure ----------------------------------------------------------------------------
part=""
trap 'rm -f "$part"; echo; echo "interrupted: run it again to resume" >&2; exit 130' INT TERM
i=0
failed=0
for f in "$here"/models/*.tflite; do
  i=$((i + 1))
  name=$(basename "$f" .tflite)
  out="$results/$name.txt"
  complete "$out" && continue
  part="$out.part"
  adb shell "cd '$remote' && $pin ./benchmark_model --graph=models/$name.tflite --num_threads=1 --warmup_runs=@WARMUP_RUNS@ --num_runs=@NUM_RUNS@ --warmup_min_secs=@WARMUP_MIN_SECS@ --min_secs=@MIN_SECS@ --use_xnnpack=true" \
    </dev/null 2>&1 | tr -d '\r' > "$part"
  if complete "$part"; then
    avg=$(sed -n 's/.*Inference (avg): \([0-9.eE+-]*\).*/\1/p' "$part" | tail -n 1)
    echo "[$i/$total] $name: $avg us"
  else
    if ! adb get-state >/dev/null 2>&1; then
      rm -f "$part"
      die "lost the phone during $name; reconnect it and run this script again to resume"
    fi
    failed=$((failed + 1))
    why=$(grep -m 1 -E 'ERROR|rror|ailed|not found|denied' "$part" || tail -n 1 "$part")
    echo "[$i/$total] $name: FAILED: $why" >&2
  fi
  mv "$part" "$out"
  part=""
  [ "$pause" = 0 ] || sleep "$pause"
done

if [ "$failed" -gt 0 ]; then
  echo "$failed model(s) failed (their output is in $results); run this script again to retry them" >&2
  exit 1
fi
echo "done: results in $results; next: autoslim-hw lut import $results --bundle $here --device <phone-name> --out <phone>.json"
'''


__all__ = ["BundleSettings", "write_bundle", "run_bundle_locally", "parse_benchmark_output", "import_results",
           "load_manifest", "format_benchmark_output", "model_file_name", "BENCHMARK_MODEL_URLS"]
