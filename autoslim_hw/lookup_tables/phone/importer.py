"""`lut import`: a phone's benchmark_model results -> a LatencyTable, built as `profile` builds
one (the same metadata, features, calibration fit and validation statistics)."""
from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path

from ...errors import UserError
from ...profilers.devices import phone_device
from ..build import table_for
from ..calibration import CalibrationSkipped, apply_calibration, fit_calibration
from ..signatures import OP_GROUPS, Signature
from ..table import LatencyTable
from ..validate import fidelity
from .benchmark_output import latency_of, parse_benchmark_output
from .bundle import bundle_files, check_results_owner, load_manifest, read_device_txt, result_name

_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def _parse_results(bundle: Path, results: Path, manifest: dict, allow_partial: bool):
    """(parsed results by model file, missing result names, failed result names)."""
    parsed, missing, failed = {}, [], []
    for file in bundle_files(manifest):
        path = results / result_name(file)
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
    total = len(bundle_files(manifest))
    if missing and not allow_partial:
        raise UserError(f"{len(missing)} of {total} results are missing in {results} (e.g. {missing[0]}); run "
                        f"`sh {bundle / 'run_on_device.sh'}` again to measure them (it skips finished models), "
                        "or pass --allow-partial to import what is there")
    if not any(m["file"] in parsed for m in manifest["models"]):
        raise UserError(f"{results} has no usable results of this bundle's models; run "
                        f"`sh {bundle / 'run_on_device.sh'}` first")
    return parsed, missing, failed


def _describe(device: dict) -> str:
    product = device.get("product_model") or "unknown phone"
    soc = device.get("soc_model") or device.get("board_platform") or device.get("hardware") or ""
    android = device.get("android_release") or ""
    where = f"core {device['core']}" if device.get("core") else "unpinned"
    return (f"{product}" + (f" ({soc})" if soc and soc != product else "")
            + (f", Android {android}" if android else "") + f", one thread, {where}")


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
    check_results_owner(results, manifest)
    device = read_device_txt(results / "device.txt")
    parsed, missing, failed = _parse_results(bundle, results, manifest, allow_partial)

    stats = list(parsed.values())
    statistic = ("median" if all(r["median_ms"] is not None for r in stats) else
                 "avg" if all(r["median_ms"] is None for r in stats) else "median where printed, else avg")
    kind = device.get("device_kind") or "phone"
    soc = device.get("soc_model") or device.get("board_platform") or device.get("hardware") or ""
    cpu = soc or device.get("product_model") or "unknown phone"
    version = device.get("benchmark_model_version") or "unknown"
    if version == "unknown" and device.get("benchmark_model_sha256") not in (None, "", "unknown"):
        version = f"unknown (sha256 {device['benchmark_model_sha256'][:12]})"
    spec = phone_device(device_name, description or _describe(device),
                        {k: v for k, v in device.items() if k not in ("bundle_id", "date")})
    record = {**asdict(spec), "cpu_model": cpu, "machine": device.get("abi", "")}  # where it was measured
    b = manifest["benchmark"]
    table = table_for(
        record, "litert", version if kind == "host" else f"benchmark_model {version}",
        {"warmup": b["warmup_runs"], "runs": b["num_runs"], "rounds": 1, **b}, "median",
        measured_with="autoslim-hw run-local" if kind == "host" else "benchmark_model (run_on_device.sh)",
        cpu_model=cpu,
        statistic=(f"ms is benchmark_model's {statistic} of the timed runs (it prints the mean, and the "
                   "median only in recent builds; medians under 10 us, printed in whole microseconds, give way "
                   "to the mean); p10_ms/p90_ms are avg -/+ 1.2816 std (normal approximation), "
                   "clamped to [min, max]"),
        bundle={"bundle_id": manifest["bundle_id"], "measured": len(parsed), "total": len(bundle_files(manifest)),
                "missing": missing, "failed": failed, "measured_on": device.get("date", "")})
    table.metadata["models"].append({"key": manifest["model_key"], "spec": manifest["model"]})
    for m in manifest["models"]:
        r = parsed.get(m["file"])
        if r is None:
            continue
        sig = Signature(**m["sig"])
        if sig.key != m["key"]:
            raise UserError(f"{bundle / 'manifest.json'} is inconsistent ({m['key']}); write the bundle again")
        table.add(sig, *latency_of(r))
    _calibrate_and_validate(table, manifest, parsed)
    if out is not None:
        table.save(out)
    return table


def _calibrate_and_validate(table: LatencyTable, manifest: dict, parsed: dict) -> None:
    """The calibration networks fit the calibration (as `profile` fits it, on the same features:
    the table's layer sums of each network's signatures, and its deployed weights); the
    validation networks, predicted by the calibrated table, give its measured accuracy."""
    cal, val = [], []
    for net in manifest.get("networks", []):
        r = parsed.get(net["file"])
        if r is None or not all(k in table.entries for k in net["signatures"]):
            continue
        features = table.sums_of([Signature(**table.entries[k]["sig"]) for k in net["signatures"]])[0]
        if "weights_mb" in net:  # bundles of earlier versions lack it: no weights term then
            features["weights_mb"] = net["weights_mb"]
        (cal if net["role"] == "calibration" else val).append((features, latency_of(r)[0]))
    key = manifest["model_key"]
    try:
        table.calibrations[key] = fit_calibration([f for f, _ in cal], [m for _, m in cal])
    except CalibrationSkipped as exc:
        table.metadata["calibration_skipped"] = str(exc)
    if val:
        c = table.calibrations.get(key)
        pred = [apply_calibration(c, f) if c else sum(f[g] for g in OP_GROUPS) for f, _ in val]
        meas = [m for _, m in val]
        table.metadata["validation"] = {**fidelity(pred, meas), "samples": len(val), "calibrated": c is not None,
                                        "predicted_ms": pred, "measured_ms": meas}
