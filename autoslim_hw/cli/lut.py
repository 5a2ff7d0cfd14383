"""`devices`, `profile` and `lut ...`: build, inspect, validate lookup tables, and the phone
workflow (bundle, run, import)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..profilers.base import list_backends
from ._common import console, say

lut_app = typer.Typer(help="Inspect and validate latency lookup tables.", no_args_is_help=True)


def devices_cmd():
    """List device specs usable with --device, and this host's CPU (tables are matched by it)."""
    from ..profilers.devices import cpu_id, cpu_model, list_devices

    table = Table("device", "threads", "pinned", "description")
    for d in list_devices():
        table.add_row(d.name, str(d.threads), "yes" if d.pin_core else "no", d.description)
    console.print(table)
    console.print(f"this host: {cpu_model()} ({cpu_id()})")


def profile_cmd(
    device: Annotated[str, typer.Option(help="Device: a name of `autoslim-hw devices`, or a device file (PATH.json, "
                                                 "the same fields).")] = "cpu-1core",
    runtime: Annotated[str, typer.Option(help=" | ".join(f"{e.name} ({e.description})"
                                                         for e in list_backends(profiles=True)))] = "onnxruntime",
    model: Annotated[str, typer.Option(help="Built-in model whose search space to profile.")] = "mobilenet_v2_cifar",
    checkpoint: Annotated[Optional[Path], typer.Option(help="Profile the model of this checkpoint instead.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Input resolution (default: the model's).")] = None,
    width_mult: Annotated[Optional[float], typer.Option(help="Base width multiplier (MobileNetV2 models).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Table file (.json or .json.gz).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Complete an interrupted table: measure only what is missing.")] = False,
    runs: Annotated[int, typer.Option(help="Timed runs per round.")] = 20,
    rounds: Annotated[int, typer.Option(help="Rounds per op (its latency: the fastest of all runs).")] = 3,
    calibration: Annotated[int, typer.Option(help="Whole sub-networks measured for the end-to-end calibration.")] = 24,
    passes: Annotated[int, typer.Option(help="Times each signature is measured, in separate passes in random order "
                                             "(the median is kept): more passes average out the machine's drift.")] = 2,
    jobs: Annotated[int, typer.Option(help="Processes: jobs - 1 write single-op files on the other cores while "
                                           "one measures on its pinned core.")] = 1,
    recalibrate: Annotated[bool, typer.Option(
        "--recalibrate", help="With --resume: time the calibration networks again and refit (a minute or two), "
                              "keeping the measured signatures.")] = False,
):
    """Build a per-layer latency lookup table for a model's whole search space.

    Every signature the supernet can produce (each layer at every pair of input and output
    widths) is exported as a single-op model and timed on the device, --passes times in
    random order; then sampled sub-networks, timed in interleaved rounds, calibrate the
    per-layer sum. Interrupted? Run it again with --resume (more --passes also resume).

    Example: autoslim-hw profile --device cpu-1core --model mobilenet_v2_cifar
    """
    from ..errors import interrupted_hint
    from ..workflows.common import model_for
    from ..workflows.profile import profile
    from ..lookup_tables.discover import default_table_path

    from ..profilers.devices import get_device

    supernet = model_for(model, input_size, width_mult, checkpoint)
    out = out or default_table_path(supernet, get_device(device).name, runtime)
    with interrupted_hint(f"the entries measured so far are in {out}: run the same command with --resume"):
        table, out = profile(supernet, device, runtime, out, resume=resume, runs=runs, rounds=rounds,
                             calibration=calibration, passes=passes, jobs=jobs, recalibrate=recalibrate)
    have, total = table.coverage(supernet)
    console.print(f"wrote {out}: {have}/{total} signatures measured")
    hint = calibration_hint(table, supernet, out)
    if hint:
        console.print(f"[yellow]{hint}[/yellow]")


# `profile` suggests more calibration networks when the fit's leave-one-out error is above this
# (percent) and it used fewer networks than the shipped tables do (benchmarks/RESULTS.md,
# "Lookup tables for the new families": MobileNetV3-Large recalibrated)
CALIBRATION_LOO_HINT = 3.0
CALIBRATION_HINT_BELOW = 48


def calibration_hint(table, supernet, out) -> str | None:
    """A suggestion when the calibration fit predicts networks left out of it worse than
    CALIBRATION_LOO_HINT percent from fewer than CALIBRATION_HINT_BELOW networks."""
    from ..lookup_tables.table import model_key

    cal = table.calibrations.get(model_key(supernet)) or {}
    loo = cal.get("coef_loo_mape", cal.get("loo_mape"))
    n = cal.get("samples") if isinstance(cal.get("samples"), int) else len(cal.get("networks") or [])
    if loo is None or not n or loo <= CALIBRATION_LOO_HINT or n >= CALIBRATION_HINT_BELOW:
        return None
    from ..lookup_tables.calibration import PER_OP_MIN_NETWORKS

    return (f"the calibration predicts networks left out of its fit to {loo:.1f}% ({n} networks); more networks "
            f"usually steady it, and from {PER_OP_MIN_NETWORKS} on the fit may correct each op: add "
            f"`--resume --recalibrate --calibration {CALIBRATION_HINT_BELOW}` to the same command "
            f"(then `autoslim-hw lut validate {out}`)")


@lut_app.command("info")
def lut_info(lut: Annotated[Path, typer.Argument(help="A table file, or a shipped table's name (lut list).")]):
    """Metadata and size of a table."""
    from ..lookup_tables import LatencyTable
    from ..profilers.latency import STATISTIC_TEXT

    from ..lookup_tables.discover import table_path

    lut = table_path(lut)
    t = LatencyTable.load(lut).require_entries(lut)
    md = t.metadata
    cpu = md.get("cpu_model", "?") + (f", {md['cpu_id']}" if md.get("cpu_id") else "")
    console.print(f"device {md['device']['name']} ({cpu}), {md['runtime']} {md.get('runtime_version', '?')}, "
                  f"{md.get('threads', '?')} thread(s), created {md.get('created', '?')} by autoslim-hw "
                  f"{md.get('tool_version', '?')}")
    models = ", ".join(m.get("key", "?") for m in md.get("models", [])) or "none recorded"
    console.print(f"{len(t.entries)} signatures; models: {models}; latencies: "
                  + STATISTIC_TEXT[t.statistic])
    if t.outdated():
        say(f"OUTDATED: {t.outdated()}")
    if md.get("calibration_refit"):
        r = md["calibration_refit"]
        say(f"calibration refit on {r.get('date', '?')} by autoslim-hw {r.get('tool_version', '?')} "
            "(`lut refit`: the build's calibration networks, fit again)")
    if md.get("validation"):
        say(f"validation: {validation_text(md['validation'])}")
    for key, cal in t.calibrations.items():
        timed = f", each timed in {cal['settings']['rounds']} rounds" if "settings" in cal else ""
        console.print(f"calibration {key}: measured = {cal['slope']:.3f} x sum + {cal['intercept']:.3f} ms "
                      f"(r2 {cal['r2']:.3f}, {cal['samples']} networks{timed})")
        if "coef" in cal:
            by_coef: dict[float, list[str]] = {}  # terms that share one weight (sum+weights) print once
            for g, c in cal["coef"].items():
                by_coef.setdefault(c, []).append(g)
            terms = " + ".join(f"{c:.3f} x " + ("+".join(gs) if len(gs) == 1 else f"({'+'.join(gs)})")
                               for c, gs in by_coef.items())
            loo = (f", leave-one-out MAPE {cal['coef_loo_mape']:.2f}% against {cal['loo_mape']:.2f}% for the one slope"
                   if "coef_loo_mape" in cal and "loo_mape" in cal else "")
            knee = (f", where weights_over_knee_mb = max(0, weights_mb - {cal['knee_mb']:.2f})"
                    if "knee_mb" in cal else "")
            if "op_delta" in cal:
                d = cal["op_delta"]
                terms += (f" + a correction per op (its latency x a weight of its own, {len(d)} ops, "
                          f"{min(d):+.2f} to {max(d):+.2f})")
            console.print(f"  {cal.get('fit', 'per op group')} fit: measured = {terms} + {cal['coef_intercept']:.3f} ms"
                          f"{knee} (r2 {cal['coef_r2']:.3f}{loo}); predictions use this fit")


@lut_app.command("refit")
def lut_refit(
    lut: Annotated[Path, typer.Argument(help="A table file, or a shipped table's name (lut list).")],
    out: Annotated[Optional[Path], typer.Option(
        help="Where to write the refit table (default: in place; for a table shipped in the package, a copy "
             "in the current folder).")] = None,
):
    """Fit a table's calibration again, by this version's method, on the networks it kept.

    A table keeps its calibration networks and their latencies as measured at the build, so a
    newer fit (per-op corrections, a knee) can be laid on them without timing anything, on any
    machine. Prints the old and the new fit with their leave-one-out errors; validate the result
    on the table's machine with `autoslim-hw lut validate TABLE --repeat --record`.

    Example: autoslim-hw lut refit luts/mobilenet_v2-224-cpu-1core-onnxruntime.json.gz
    """
    from ..workflows.profile import refit_lut

    path, done = refit_lut(lut, out)
    for key, old, new in done:
        def describe(fit):
            loo = fit.get("coef_loo_mape", fit.get("loo_mape"))
            return f"{fit.get('fit', 'one slope')}" + (f" (leave-one-out MAPE {loo:.2f}%)" if loo is not None else "")

        console.print(f"{key}: {describe(old)} -> {describe(new)}, {len(new['networks'])} networks")
    if path is None:
        console.print(f"{lut}: this version's fit of its calibration networks predicts as the table does; "
                      "nothing written")
        return
    console.print(f"wrote {path}; its recorded validation, if any, was of the old fit and is dropped: "
                  f"`autoslim-hw lut validate {path} --repeat --record` on the table's machine")


@lut_app.command("list")
def lut_list():
    """Tables shipped with the package (used by `search` and `demo` when they fit the model and device): each
    table's machine, its method, and its recorded fidelity (`lut validate --record`)."""
    from ..lookup_tables import LatencyTable
    from ..profilers.latency import STATISTIC_TEXT
    from ..lookup_tables.discover import SHIPPED, shipped_tables

    files = shipped_tables()
    if not files:
        console.print("no tables are shipped yet; build one with `autoslim-hw profile`")
        return
    for p in files:
        md = (t := LatencyTable.load(p)).metadata
        cpu = md.get("cpu_model", "") + (f" ({md['cpu_id']})" if md.get("cpu_id") else "")
        say(p.name)
        say(f"    {md['device']['name']}, {md['runtime']} {md['runtime_version']}, {cpu}; {len(t.entries)} signatures "
            f"of {', '.join(m['key'] for m in md.get('models', []))}; created {md.get('created', '')[:10]}")
        v = md.get("validation")
        say(f"    {'OUTDATED: ' + t.outdated() if t.outdated() else 'latencies: ' + STATISTIC_TEXT[t.statistic]}; "
            + (f"validated {validation_text(v)}" if v else "not validated (`autoslim-hw lut validate TABLE --repeat --record`)"))
    console.print(f"in {SHIPPED}")


@lut_app.command("validate")
def lut_validate(
    lut: Annotated[Path, typer.Argument(help="A table file, or a shipped table's name (lut list).")],
    model: Annotated[Optional[str], typer.Option(
        help="Built-in model (default: the model the table was profiled for).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Use the model of this checkpoint.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Input resolution.")] = None,
    width_mult: Annotated[Optional[float], typer.Option(help="Base width multiplier.")] = None,
    samples: Annotated[int, typer.Option(help="Random sub-networks to measure end to end.")] = 100,
    rounds: Annotated[Optional[int], typer.Option(
        help="Timing rounds per network (default: as the table's calibration networks were timed). More "
             "rounds lower the measurement's own noise, which bounds how well any table can score; fewer are "
             "quicker, but the fastest of fewer runs is slower, which reads as drift.")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        help="Scatter plot PNG (default: next to the table; for a table shipped in the package, in the current folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Use a table of another device/runtime.")] = False,
    repeat: Annotated[bool, typer.Option(
        "--repeat", help="Time the networks a second time and report the machine's own repeatability (the two "
                         "measurements against each other): the floor no table can beat here. Doubles the time.")] = False,
    record: Annotated[bool, typer.Option(
        "--record", help="Write the figures (with the date and this CPU) into the table, where `lut list` and "
                         "`lut info` show them.")] = False,
):
    """Measure random sub-networks on the table's device and compare with its predictions.

    Reports MAPE, max error, the fraction within 5% and 10%, and Kendall's tau, and plots
    predicted against measured latency. A few of the table's calibration networks are timed
    again beside them: their slowdown since the build is the machine's drift (speed factor),
    and the same statistics are also given for latencies corrected by it (the table's own error).
    Latencies are measured in the table's statistic (`lut info`: the fastest of the
    timed runs for tables built now, the 10th percentile or the median for older ones).
    """
    from ..workflows.profile import validate_lut

    result = validate_lut(lut, model, checkpoint, input_size, width_mult, samples, rounds, plot, allow_mismatch,
                          progress=not as_json, repeat=repeat, record=record)
    summary = {k: v for k, v in result.items() if k not in ("predicted_ms", "measured_ms")}
    if as_json:
        print(json.dumps(summary))
        return
    console.print(f"MAPE {summary['mape']:.2f}%  max {summary['max_error']:.2f}%  within 5%: "
                  f"{summary['within_5pct']:.0%}  within 10%: {summary['within_10pct']:.0%}  "
                  f"Kendall tau {summary['kendall_tau']:.3f}  ({samples} networks); plot: {summary['plot']}")
    if "adjusted" in summary:
        a = summary["adjusted"]
        console.print(f"this machine runs {summary['speed_factor']:.3f}x as slow as at the build (anchor networks); "
                      f"corrected for that: MAPE {a['mape']:.2f}%  max {a['max_error']:.2f}%  within 5%: "
                      f"{a['within_5pct']:.0%}  within 10%: {a['within_10pct']:.0%}  Kendall tau {a['kendall_tau']:.3f}")
    if "repeatability" in summary:
        r = summary["repeatability"]
        console.print(f"repeatability (the same networks timed again): MAPE {r['mape']:.2f}%  within 5%: "
                      f"{r['within_5pct']:.0%}  Kendall tau {r['kendall_tau']:.3f}")
    if record:
        console.print(f"recorded in {lut}")


def validation_text(v: dict) -> str:
    """A recorded validation in one line: where, when, how well, and the machine's own floor."""
    where = f"{v['date']} on {v.get('cpu_id', '?')}, " if "date" in v else ""
    text = (f"{where}{v['samples']} networks: MAPE {v['mape']:.2f}%, {v['within_5pct']:.0%} within 5%, "
            f"tau {v['kendall_tau']:.3f}")
    if "adjusted" in v:
        a = v["adjusted"]
        text += f" (drift-corrected {a['mape']:.2f}%, tau {a['kendall_tau']:.3f})"
    if "repeatability" in v:
        r = v["repeatability"]
        text += f"; repeatability {r['mape']:.2f}%, tau {r['kendall_tau']:.3f}"
    return text


# --- phones: bundle -> run on the phone -> import ------------------------------------------------

@lut_app.command("bundle")
def lut_bundle(
    out: Annotated[Path, typer.Option(help="Directory to write the bundle to (must not exist, or be empty).")],
    model: Annotated[str, typer.Option(help="Built-in model whose search space to bundle.")] = "mobilenet_v2",
    checkpoint: Annotated[Optional[Path], typer.Option(help="Bundle the model of this checkpoint instead.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Input resolution (default: the model's).")] = None,
    width_mult: Annotated[Optional[float], typer.Option(help="Base width multiplier (MobileNetV2 models).")] = None,
    runtime: Annotated[str, typer.Option(help=" | ".join(f"{e.name}: {e.description}"
                                                         for e in list_backends(phone=True)))] = "litert",
    warmup_runs: Annotated[int, typer.Option(help="benchmark_model --warmup_runs.")] = 10,
    num_runs: Annotated[int, typer.Option(help="benchmark_model --num_runs (it also runs at least --min-secs).")] = 50,
    min_secs: Annotated[float, typer.Option(help="benchmark_model --min_secs: timed runs last at least this long.")] = 1.0,
    warmup_min_secs: Annotated[float, typer.Option(help="benchmark_model --warmup_min_secs.")] = 0.5,
    calibration: Annotated[int, typer.Option(help="Whole sub-networks for the end-to-end calibration.")] = 10,
    validation: Annotated[int, typer.Option(help="Whole sub-networks held out to measure the table's accuracy.")] = 10,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle at --out (its results/ too).")] = False,
):
    """Write a bundle to build a lookup table on a phone: one .tflite per layer signature.

    The bundle holds models/ (every signature of the search space as a single-op model, plus
    --calibration and --validation whole sub-networks), manifest.json, and run_on_device.sh,
    which pushes them to an Android phone attached by adb and runs TFLite's benchmark_model on
    each, one thread pinned to one core, saving results/ (resumable: run it again to go on).
    Then `autoslim-hw lut import` turns results/ into a table.

    Example: autoslim-hw lut bundle --model mobilenet_v2 --input-size 224 --out bundle/
    """
    from ..lookup_tables.phone import BundleSettings, write_bundle
    from ..workflows.common import model_for

    supernet = model_for(model, input_size, width_mult, checkpoint)
    settings = BundleSettings(warmup_runs=warmup_runs, num_runs=num_runs, min_secs=min_secs,
                              warmup_min_secs=warmup_min_secs)
    manifest = write_bundle(supernet, out, runtime=runtime, settings=settings, calibration=calibration,
                            validation=validation, force=force, progress=True)
    n_ops, n_nets = len(manifest["models"]), len(manifest["networks"])
    say(f"wrote {out}: {n_ops} single-op models and {n_nets} networks (bundle {manifest['bundle_id']})")
    say(f"next, with the phone attached: BENCHMARK_MODEL=/path/to/benchmark_model sh {out / 'run_on_device.sh'}"
                  f"  (sh {out / 'run_on_device.sh'} --help tells where to get benchmark_model)")


@lut_app.command("run-local")
def lut_run_local(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `autoslim-hw lut bundle`.")],
    out: Annotated[Path, typer.Option(help="Results directory (complete results in it are kept: resumable).")],
    threads: Annotated[int, typer.Option(help="Interpreter threads (phone tables use 1).")] = 1,
):
    """Run a bundle on this computer with the LiteRT interpreter, as the phone would.

    Writes one file per model in benchmark_model's output format, and device.txt, so
    `autoslim-hw lut import` reads them like a phone's results: a dry run of the phone
    workflow, or a litert table of this host. Pinned to one core.

    Example: autoslim-hw lut run-local bundle/ --out bundle/results-host
    """
    from ..lookup_tables.phone import run_bundle_locally

    n = run_bundle_locally(bundle, out, threads=threads, progress=True)
    say(f"measured {n} models; results in {out}; next: autoslim-hw lut import {out} --bundle {bundle} "
                  "--device <name> --out <name>.json")


@lut_app.command("import")
def lut_import(
    results: Annotated[Path, typer.Argument(help="The results/ directory run_on_device.sh (or run-local) wrote.")],
    bundle: Annotated[Path, typer.Option(help="The bundle the results were measured from.")],
    device: Annotated[str, typer.Option(help="A short name for the phone, e.g. pixel-7 (the table's device name).")],
    out: Annotated[Path, typer.Option(help="Table file to write (.json or .json.gz).")],
    description: Annotated[Optional[str], typer.Option(help="Free text (default: model, SoC, Android version, core).")] = None,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Import although some results are missing or failed.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
):
    """Turn a phone's benchmark_model results into a latency lookup table.

    Each layer signature gets benchmark_model's median (its mean in builds that print no
    median) of the timed runs; the bundle's calibration networks give the end-to-end
    calibration and its validation networks are predicted and compared with their measured
    latency (MAPE, Kendall's tau), reported here and kept in the table's metadata.

    Example: autoslim-hw lut import bundle/results --bundle bundle/ --device pixel-7 --out luts/pixel-7.json
    """
    from ..lookup_tables.phone import import_results

    table = import_results(bundle, results, device, out, description=description, allow_partial=allow_partial,
                           force=force)
    md = table.metadata
    info = md["bundle"]
    say(f"wrote {out}: {len(table.entries)} signatures from {md['device']['description']} "
                  f"({info['measured']}/{info['total']} results"
                  + (f", {len(info['missing'])} missing, {len(info['failed'])} failed" if info["missing"] or info["failed"] else "")
                  + ")")
    for key, cal in table.calibrations.items():
        say(f"calibration {key}: measured = {cal['slope']:.3f} x sum + {cal['intercept']:.3f} ms "
                      f"(r2 {cal['r2']:.3f}, {cal['samples']} networks)")
    v = md.get("validation")
    if v:
        say(f"validation on {v['samples']} held-out networks: MAPE {v['mape']:.2f}%  max {v['max_error']:.2f}%  "
                      f"within 10%: {v['within_10pct']:.0%}  Kendall tau {v['kendall_tau']:.3f}")


def register(app: typer.Typer) -> None:
    app.command("devices")(devices_cmd)
    app.command("profile")(profile_cmd)
    app.add_typer(lut_app, name="lut")
