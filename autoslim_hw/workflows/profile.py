"""Lookup tables as library calls: `profile` (build this host's table for a model) and
`validate_lut` (measure random sub-networks against a table's predictions)."""
from __future__ import annotations

from pathlib import Path

from .._io import check_output
from ..errors import UserError
from ..lookup_tables import LatencyTable
from ..lookup_tables.build import build_table
from ..lookup_tables.discover import SHIPPED, check_table_model, default_table_path, table_model, table_path
from ..lookup_tables.networks import network_timing
from ..lookup_tables.table import model_key
from ..lookup_tables.validate import validate_table
from ..nn.supernet import Supernet
from ..profilers import MeasureSettings, get_backend
from ..profilers.devices import DeviceFile, DeviceSpec, get_device
from .common import model_for


def profile(supernet: Supernet, device: str = "cpu-1core", runtime: str = "onnxruntime", out: Path | None = None,
            resume: bool = False, runs: int = 20, rounds: int = 3, calibration: int = 24, passes: int = 2,
            jobs: int = 1, recalibrate: bool = False, progress: bool = True) -> tuple[LatencyTable, Path]:
    """Build (or with `resume`, complete) the lookup table of `supernet`'s search space on `device`
    with `runtime`; returns the table and its file."""
    dev, backend = get_device(device), get_backend(runtime, profiles=True)
    if runs < 1 or rounds < 1:
        raise UserError("--runs and --rounds must be at least 1")
    if calibration < 0:
        raise UserError(f"--calibration must be >= 0, got {calibration}")
    out = out or default_table_path(supernet, dev.name, runtime)
    check_output(out, "file")
    table = build_table(supernet, backend, dev, out, resume=resume,
                        settings=MeasureSettings(warmup=5, runs=runs, rounds=rounds),
                        calibration_samples=calibration, jobs=jobs, passes=passes, recalibrate=recalibrate,
                        progress=progress)
    return table, out


def default_plot(lut: Path) -> Path:
    """Where `lut validate` puts its scatter plot: next to the table, except for a table shipped
    in the package, whose folder belongs to the install (and may be read-only): the current folder."""
    name = lut.name.removesuffix(".gz").removesuffix(".json") + ".validate.png"
    if lut.resolve().parent == SHIPPED.resolve():
        return Path(name)
    return lut.parent / name


def validate_lut(lut: Path, model: str | None = None, checkpoint: Path | None = None, input_size: int | None = None,
                 width_mult: float | None = None, samples: int = 100, rounds: int | None = None,
                 plot: Path | None = None, allow_mismatch: bool = False, progress: bool = True,
                 repeat: bool = False, record: bool = False) -> dict:
    """Fidelity of a host table on random sub-networks measured here (see `validate_table`; with
    `repeat`, the machine's own repeatability too), with a scatter plot; the model is the table's
    own unless one is named. With `record` the figures are written into the table's metadata
    ("validation", with the date and this CPU), where `lut list` and `lut info` show them."""
    from .plots import validation_scatter

    if samples < 2:
        raise UserError("--samples must be at least 2")
    if rounds is not None and rounds < 1:
        raise UserError("--rounds must be at least 1")
    lut = table_path(lut)
    table = LatencyTable.load(lut)
    dev_name, runtime = table.metadata["device"]["name"], table.metadata["runtime"]
    if table.metadata["device"].get("kind", "host") != "host":
        raise UserError(f"{lut} was measured on {dev_name}, not on this computer, so it cannot be validated here; "
                        "`autoslim-hw lut import` validated it on the bundle's held-out networks (`lut info` shows it)")
    table.check_target(None, None, allow_mismatch, path=lut)  # its own device and runtime: only the CPU can differ
    if model is None and checkpoint is None and input_size is None and width_mult is None:
        supernet = table_model(table, lut)
    else:
        supernet = model_for(model or "mobilenet_v2_cifar", input_size, width_mult, checkpoint)
    hint = f"autoslim-hw profile --checkpoint {checkpoint}" if checkpoint else \
        f"autoslim-hw profile --model {supernet.spec.arch} --input-size {supernet.spec.input_size}"
    check_table_model(table, supernet, lut, hint, allow_mismatch)
    try:
        dev = get_device(dev_name)
    except UserError:  # a device file's device: the table keeps its record
        dev = DeviceSpec.from_dict({k: v for k, v in table.metadata["device"].items() if k in DeviceFile.model_fields},
                                   f"{lut}'s device")
    if record and (allow_mismatch or model is not None or checkpoint is not None):
        raise UserError("--record writes the figures into the table; validate it on its own model, on the machine "
                        "it was built on (drop --allow-mismatch, --model and --checkpoint)")
    result = validate_table(table, supernet, get_backend(runtime, profiles=True), dev, samples,
                            network_timing(table, supernet, rounds), progress=progress, repeat=repeat)
    plot = plot or default_plot(lut)
    validation_scatter(result, plot, f"{supernet.spec.arch} on {dev_name} ({runtime})")
    if record:
        import time

        from ..profilers.devices import cpu_id, cpu_model

        table.metadata["validation"] = {
            **{k: v for k, v in result.items() if k not in ("predicted_ms", "measured_ms")},
            "date": time.strftime("%Y-%m-%d"), "cpu_id": cpu_id(), "cpu_model": cpu_model(), "model": model_key(supernet)}
        table.save(lut)
    return {**result, "plot": str(plot)}


def refit_lut(lut: Path, out: Path | None = None) -> tuple[Path | None, list[tuple[str, dict, dict]]]:
    """Fit a host table's calibration again by the current method, on the calibration networks it
    kept and their latencies as measured at its build: nothing is timed, so it runs anywhere.
    Writes the table to `out` (default: in place; for a table shipped in the package, a copy in
    the current folder). A recorded validation is dropped: it measured the old fit. Returns the
    file (None when the new fit equals the table's: nothing written) and, per model, (key, old
    fit, new fit)."""
    import time

    from .. import __version__
    from ..lookup_tables.build import refit
    from ..lookup_tables.calibration import CalibrationSkipped
    from ..models import build_from_spec
    from ..nn.supernet import ModelSpec

    lut = table_path(lut)
    table = LatencyTable.load(lut)
    if table.metadata.get("device", {}).get("kind", "host") != "host":
        raise UserError(f"{lut} was calibrated from a phone's measurements, which it does not keep network by "
                        "network; import the results again with `autoslim-hw lut import` to fit it anew")
    if out is None:
        out = Path(lut.name) if lut.resolve().parent == SHIPPED.resolve() else lut
    check_output(out, "file")
    specs = [m["spec"] for m in table.metadata.get("models", []) if m.get("spec")]
    done = []
    for spec in specs:
        supernet = build_from_spec(ModelSpec.from_dict(spec))
        key = model_key(supernet)
        if not (table.calibrations.get(key) or {}).get("networks"):
            continue
        try:
            old, new = refit(table, supernet)
        except CalibrationSkipped as exc:
            raise UserError(f"{lut}: the calibration networks of {key} give no usable fit ({exc})") from None
        done.append((key, old, new))
    if not done:
        raise UserError(f"{lut} keeps no calibration networks to fit again; measure them with `autoslim-hw profile "
                        "... --resume --recalibrate`")

    def fit_of(cal):  # what predictions read (apply_calibration)
        return {k: cal.get(k) for k in ("slope", "intercept", "coef", "coef_intercept", "knee_mb", "op_delta")}

    if all(fit_of(old) == fit_of(new) for _, old, new in done):
        return None, done  # this version predicts from them as the table does: nothing to write
    table.metadata.pop("validation", None)
    table.metadata["calibration_refit"] = {"date": time.strftime("%Y-%m-%d"), "tool_version": __version__}
    table.save(out)
    return out, done
