"""Run a bundle on this host through the Python LiteRT interpreter, as the phone would:
the same files, in benchmark_model's output format (a dry run of the phone workflow, or a
litert table of this host)."""
from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

from ... import __version__
from ..._io import atomic_write_bytes
from ...errors import UserError
from ...profilers.latency import time_runs
from .benchmark_output import format_benchmark_output, result_complete
from .bundle import BundleSettings, bundle_files, check_results_owner, load_manifest, read_device_txt, result_name

def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _run_phase(fn, min_runs: int, min_secs: float, max_secs: float) -> list[int]:
    """BenchmarkModel::Run: at least `min_runs` runs and at least `min_secs`, stop past `max_secs`;
    whole microseconds, as benchmark_model counts them."""
    return [int(t * 1e6) for t in time_runs(fn, 0, min_runs, min_secs, max_secs)]


def run_bundle_locally(bundle_dir: str | os.PathLike, results_dir: str | os.PathLike, threads: int = 1,
                       progress: bool = False) -> int:
    """Run every model of the bundle on this host through the LiteRT interpreter, pinned to
    one core, writing `results_dir/<model>.txt` in benchmark_model's format and a
    `device.txt` describing this host. Resumable like run_on_device.sh: complete results are
    kept. Returns the number of models measured now."""
    from ...profilers import get_backend, pinned_to_core
    from ...profilers.devices import cpu_model, measurement_core

    bundle = Path(bundle_dir)
    manifest = load_manifest(bundle)
    results = Path(results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"{results} is a file; choose a directory for the results")
    check_results_owner(results, manifest)
    previous = read_device_txt(results / "device.txt")
    if previous.get("device_kind", "host") != "host" or previous.get("product_model", cpu_model()) != cpu_model():
        raise UserError(f"{results} holds results of {previous.get('product_model') or 'another device'}; "
                        "choose another --out for this computer's results")
    if threads < 1:
        raise UserError("--threads must be >= 1")
    settings = BundleSettings.from_dict(manifest["benchmark"])
    files = bundle_files(manifest)
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
    todo = [f for f in files if not result_complete(results / result_name(f))]
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
            atomic_write_bytes(results / result_name(file), text.encode())
            del run
            bar.update(task, advance=1, item=Path(file).name)
    return len(todo)
