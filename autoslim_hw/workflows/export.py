"""`autoslim-hw export` as a library call: one searched subnet as a deployable file (in any
registered runtime's format, or as an autoslim-hw subnet checkpoint), checked against PyTorch
and timed on one core."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import save_checkpoint
from ..errors import UserError
from ..nn.batchnorm import recalibrate_bn
from ..nn.config import ChannelConfig
from ..nn.materialize import materialize
from ..nn.supernet import Supernet
from ..profilers import MeasureSettings, backend_for_format, get_backend, list_backends, pinned_to_core
from ..profilers.devices import measurement_core
from ..profilers.latency import summarize, time_runs
from ..search.costs import describe_constraints
from ..search.result import FORMAT as SEARCH_FORMAT
from ..search.result import load_result, search_target_config
from .._io import check_output, file_digest, read_text
from .common import calibration_loader, checkpoint_splits, open_checkpoint

CHECKPOINT_FORMAT = "checkpoint"  # an autoslim-hw "subnet" checkpoint (eval --checkpoint reads it)


def export_formats() -> list[str]:
    """--format choices: every registered runtime's file format, and an autoslim-hw checkpoint."""
    return [e.file_format for e in list_backends()] + [CHECKPOINT_FORMAT]


def _suffix(fmt: str) -> str:
    entry = backend_for_format(fmt)
    return entry.suffix if entry is not None else ".pt"


@dataclass
class ExportedSubnet:
    """What `export_subnet` wrote, and everything needed to check and time it."""

    path: Path
    fmt: str
    checkpoint: Path
    kind: str  # the checkpoint's: "supernet" (weights shared, BN recalibrated) or "subnet" (retrained)
    supernet: Supernet
    config: ChannelConfig
    model: nn.Module  # the plain model that was written, eval mode, on the CPU
    input_shape: tuple[int, ...]  # NCHW, batch 1
    target: int | None = None  # index into the search result's targets
    target_entry: dict | None = None
    search: dict | None = None  # the search result the config came from
    search_path: Path | None = None
    calib_batches: int = 0  # BN recalibration batches run (0: statistics kept as they were)
    calib_data: str | None = None
    nhwc: bool = False  # the file's 4-D input/output are NHWC (tflite written by write_tflite)
    warnings: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> str:
        """The registered runtime that runs the file ("torch": PyTorch eager, for checkpoints)."""
        entry = backend_for_format(self.fmt)
        return entry.name if entry is not None else "torch"


def describe_target(entry: dict) -> str:
    return describe_constraints(entry.get("constraints", {}))


def _target_list(path: Path, targets: list) -> str:
    return "; ".join(f"{i}: {describe_target(t)} ({'met' if t.get('met') else 'not met'})"
                     for i, t in enumerate(targets))


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def read_config_source(path: str | os.PathLike):
    """The JSON of a --config / --channels file (a search result or a channel config), read once;
    a missing or unparsable file is one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config {path} does not exist; pass a search result from `autoslim-hw search` "
                        "or a channel config JSON")
    try:
        return json.loads(read_text(path, "config"))
    except json.JSONDecodeError as exc:
        raise UserError(f"config {path} is not valid JSON ({exc.msg} at line {exc.lineno}); pass a search result "
                        "or a channel config JSON") from None


def is_search_result(data) -> bool:
    return isinstance(data, dict) and data.get("format") == SEARCH_FORMAT


def resolve_export_config(supernet: Supernet, saved_config: ChannelConfig | None,
                          config_source: str | os.PathLike | None, target: int | None,
                          checkpoint: str | os.PathLike = "the checkpoint", data=None):
    """(config, target index, target entry, search result) from --config / --target.

    `config_source` is a search result JSON (`--target` picks the target), a channel config
    JSON (`ChannelConfig.to_json`, or a search target entry), or None for a retrained subnet;
    `data`, its JSON when the caller has read it already (`read_config_source`)."""
    if config_source is None:
        if saved_config is None:
            hint = Path(checkpoint).parent / "search.json"
            raise UserError(f"{checkpoint} is a supernet: pass --config with a search result (e.g. {hint}, "
                            "from `autoslim-hw search`) or a channel config JSON")
        if target is not None:
            raise UserError("--target picks a target of a search result; pass that result with --config")
        return saved_config, None, None, None
    path = Path(config_source)
    if data is None:
        data = read_config_source(path)
    if is_search_result(data):
        result = load_result(path, data)
        model = result.get("model")
        if model is not None and _jsonable(model) != _jsonable(supernet.spec.to_dict()):
            raise UserError(f"{path} was searched on another model ({model.get('arch')} at "
                            f"{model.get('input_size')}px) than {checkpoint} ({supernet.spec.arch} at "
                            f"{supernet.spec.input_size}px)")
        targets = result.get("targets") or []
        if not isinstance(targets, list) or not targets:
            raise UserError(f"{path} has no targets; rerun `autoslim-hw search` with a target "
                            "(--latency-ms, --flops, --params or --memory)")
        if target is None:
            if len(targets) > 1:
                raise UserError(f"{path} has {len(targets)} targets; pick one with --target N "
                                f"({_target_list(path, targets)})")
            target = 0
        if not 0 <= target < len(targets):
            raise UserError(f"--target {target} is out of range: {path} has {len(targets)} target"
                            f"{'s' if len(targets) > 1 else ''} ({_target_list(path, targets)})")
        entry = targets[target]
        if not entry.get("met") or entry.get("config") is None:
            met = [str(i) for i, t in enumerate(targets) if t.get("met")]
            raise UserError(f"target {target} of {path} ({describe_target(entry)}) was not met by the search; "
                            + (f"met targets: {', '.join(met)}" if met else "no target was met"))
        config = search_target_config(entry, supernet.space, f"target {target} of {path}")
        return config, target, entry, result
    if target is not None:
        raise UserError(f"--target picks a target of a search result, but {path} is a channel config")
    if isinstance(data, dict) and "config" in data and "widths" not in data:
        data = data["config"]  # a search target entry
    return ChannelConfig.from_dict(data, supernet.space, strict=False, source=f"config {path}"), None, None, None


def build_subnet(checkpoint_path: str | os.PathLike, config_source: str | os.PathLike | None = None,
                 target: int | None = None, calib_batches: int = 20, data_dir: str | None = None):
    """The plain eval-mode model a checkpoint exports, with its metadata (no file written):
    a retrained subnet keeps its weights and BN statistics; a supernet is materialized at the
    config and its BN statistics re-estimated for that config on training images."""
    if calib_batches < 0:
        raise UserError(f"--calib-batches must be >= 0, got {calib_batches}")
    checkpoint_path = Path(checkpoint_path)
    loaded = open_checkpoint(checkpoint_path)
    ckpt, supernet, saved_config, model, kind = loaded.data, loaded.supernet, loaded.config, loaded.model, loaded.kind
    config, target, entry, result = resolve_export_config(supernet, saved_config if kind == "subnet" else None,
                                                          config_source, target, checkpoint_path)
    info = ExportedSubnet(Path(), "", checkpoint_path, kind, supernet, config, model,
                          (1, supernet.spec.in_chans, supernet.spec.input_size, supernet.spec.input_size),
                          target, entry, result, None if result is None else Path(config_source))
    if result is not None:
        recorded = (result.get("checkpoint") or {}).get("sha256")
        if recorded and recorded != file_digest(checkpoint_path):
            info.warnings.append(f"{config_source} was searched on another version of {checkpoint_path.name} "
                                 "(its sha256 differs); the config may not suit these weights")
    if kind == "subnet":
        if config != saved_config:
            raise UserError(f"{checkpoint_path} holds a subnet retrained at fixed widths; its config differs "
                            f"from the one in {config_source}: drop --config (or export the supernet's)")
        model.eval()
        return info
    model = materialize(supernet, config).cpu()
    settings = ckpt.get("settings") or {}
    if calib_batches > 0:
        splits = checkpoint_splits(settings, supernet, data_dir=data_dir)
        recalibrate_bn(model, None, calibration_loader(splits, settings.get("seed", 0)), calib_batches)
        info.calib_batches, info.calib_data = calib_batches, settings.get("data", "digits")
    else:
        info.warnings.append("BN statistics not recalibrated (--calib-batches 0): the supernet's shared "
                             "statistics do not fit this config, expect lower accuracy")
    model.eval()
    info.model = model
    return info


def _write_checkpoint(info: ExportedSubnet, path: Path) -> None:
    settings = dict(open_checkpoint(info.checkpoint).settings)
    source = {"checkpoint": str(info.checkpoint), "kind": info.kind, "calib_batches": info.calib_batches}
    if info.search_path is not None:
        source.update(search=str(info.search_path), target=info.target)
    save_checkpoint(path, {"kind": "subnet", "spec": info.supernet.spec.to_dict(), "config": dict(info.config),
                           "model": info.model.state_dict(), "settings": settings, "exported_from": source})


def export_subnet(checkpoint_path: str | os.PathLike, config_source: str | os.PathLike | None = None,
                  target: int | None = None, fmt: str = "onnx", out: str | os.PathLike | None = None,
                  calib_batches: int = 20, data_dir: str | None = None) -> ExportedSubnet:
    """Write the subnet a checkpoint and config describe as `fmt` (a registered runtime's file
    format, or checkpoint) to `out`, atomically (default: next to the checkpoint)."""
    if fmt not in export_formats():
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(export_formats())}")
    if out is not None:  # before any work
        check_output(Path(out) / "subnet" if Path(out).is_dir() else out, "file")
    info = build_subnet(checkpoint_path, config_source, target, calib_batches, data_dir)
    suffix = _suffix(fmt)
    name = ("subnet" if info.target is None else f"subnet-target{info.target}") + \
        ("-ckpt" if fmt == "checkpoint" else "") + suffix
    path = Path(out) if out is not None else info.checkpoint.parent / name
    if path.is_dir():
        path = path / name
    if path.resolve() == info.checkpoint.resolve():
        raise UserError(f"--out {path} is the checkpoint itself; choose another file")
    info.path, info.fmt = path, fmt
    entry = backend_for_format(fmt)
    if entry is None:
        _write_checkpoint(info, path)
        return info
    backend = get_backend(entry.name)
    backend.convert(info.model, [info.input_shape], path)
    info.nhwc = backend.input_layout(path) == "NHWC"
    return info


@torch.no_grad()
def check_export(info: ExportedSubnet, seed: int = 0) -> dict:
    """Run the written file and the PyTorch model on one random input:
    {'max_abs_diff', 'max_rel_diff' (relative to the output's largest magnitude)}."""
    import numpy as np

    x = torch.randn(info.input_shape, generator=torch.Generator().manual_seed(seed))
    info.model.eval()
    ref = info.model(x).numpy()
    entry = backend_for_format(info.fmt)
    if entry is not None:
        got = get_backend(entry.name).run(info.path, [x.numpy()], threads=1)
    else:
        got = open_checkpoint(info.path).model.eval()(x).numpy()
    if got.shape != ref.shape:
        raise UserError(f"{info.path} gives an output of shape {got.shape}, PyTorch {ref.shape}")
    diff = float(np.abs(got - ref).max())
    return {"max_abs_diff": diff, "max_rel_diff": diff / max(float(np.abs(ref).max()), 1e-12)}


def measure_export(info: ExportedSubnet, settings=None):
    """Median latency of the written file at batch 1 on one thread, the process pinned to one
    core: ONNX Runtime for onnx, LiteRT for tflite, PyTorch eager for torch and checkpoint.
    Returns (Latency, core)."""
    settings = settings or MeasureSettings()
    core = measurement_core()
    with pinned_to_core(core):
        if backend_for_format(info.fmt) is not None:
            return get_backend(info.runtime).measure(info.path, settings, threads=1), core
        threads = torch.get_num_threads()  # a checkpoint: its model in PyTorch eager mode
        torch.set_num_threads(1)
        try:
            model = info.model.eval()
            x = torch.randn(info.input_shape)
            with torch.inference_mode():
                times = []
                for _ in range(settings.rounds):
                    times += time_runs(lambda: model(x), settings.warmup, settings.runs)
        finally:
            torch.set_num_threads(threads)
        return summarize(times), core


def predict_export_latency(info: ExportedSubnet, lut: str | os.PathLike | None = None) -> dict:
    """The lookup table's prediction for the exported config, when a table fits:
    `lut`, else the table the search used if it still exists and is for the file's runtime.
    {'latency_ms', 'statistic' (of the runs it predicts: see profilers.base), 'lut', 'device', 'runtime'}
    or {'latency_ms': None, 'reason'}."""
    from ..lookup_tables import LatencyTable
    from ..lookup_tables.table import model_key

    runtime = info.runtime
    priced = list_backends(profiles=True)
    if lut is not None:
        from ..lookup_tables.discover import table_path

        lut = table_path(lut)
    if lut is None and runtime not in [e.name for e in priced]:
        entry = backend_for_format(info.fmt)
        return {"latency_ms": None, "reason": f"lookup tables price {' or '.join(e.label for e in priced)}, not "
                                              f"{entry.label if entry else 'PyTorch'} (export --format "
                                              f"{' or '.join(e.file_format for e in priced)} to compare)"}
    if lut is None:
        recorded = (info.search or {}).get("lut") or None
        if not recorded:
            return {"latency_ms": None, "reason": "no lookup table (pass --lut FILE)"}
        if recorded.get("runtime") != runtime:
            return {"latency_ms": None, "reason": f"the search's table is for {recorded.get('runtime')}, "
                                                  f"not {runtime} (pass --lut FILE)"}
        lut = Path(recorded.get("path", ""))
        if not lut.is_file():
            return {"latency_ms": None, "reason": f"the search's table {lut} is gone (pass --lut FILE)"}
    table = LatencyTable.load(lut)
    md = table.metadata
    out = {"lut": str(lut), "device": md.get("device", {}).get("name"), "runtime": md.get("runtime"),
           "statistic": table.statistic}
    keys = [m.get("key") for m in md.get("models", [])]
    if keys and model_key(info.supernet) not in keys:
        raise UserError(f"lookup table {lut} was profiled for {', '.join(map(str, keys))}, not for "
                        f"{model_key(info.supernet)}")
    if out["runtime"] != runtime:
        info.warnings.append(f"lookup table {lut} is for {out['runtime']}, the file runs on {runtime}")
    if table.other_host():
        info.warnings.append(f"{table.other_host()} (the prediction is for that CPU)")
    try:
        out["latency_ms"] = table.predict(info.supernet, info.config).latency_ms
    except UserError as exc:
        return {**out, "latency_ms": None, "reason": str(exc)}
    return out
