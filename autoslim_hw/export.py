"""Materialize a subnet as a really smaller plain model, and export it.

`materialize` copies the supernet's module tree and swaps every slimmable
layer for an ordinary Conv2d / Linear / BatchNorm holding copies of the active
weight slices. The result has no autoslim-hw code in it: it pickles, scripts and
exports like any torchvision model, and its ONNX file shrinks with its params.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_path
from .errors import UserError
from .nn.config import ChannelConfig
from .nn.layers import (SlimmableBatchNorm1d, SlimmableBatchNorm2d, SlimmableConv2d,
                        SlimmableLinear)
from .nn.supernet import Supernet, _set_module


def _plain_conv(m: SlimmableConv2d) -> nn.Conv2d:
    out = nn.Conv2d(m.active_in, m.active_out, m.kernel_size, m.stride, m.padding, m.dilation,
                    m.active_groups, m.bias is not None, m.padding_mode)
    out.weight.copy_(m.active_weight())
    if m.bias is not None:
        out.bias.copy_(m.active_bias())
    return out


def _plain_linear(m: SlimmableLinear) -> nn.Linear:
    out = nn.Linear(m.active_in, m.active_out, m.bias is not None)
    out.weight.copy_(m.active_weight())
    if m.bias is not None:
        out.bias.copy_(m.active_bias())
    return out


def _plain_bn(m) -> nn.Module:
    cls = nn.BatchNorm2d if isinstance(m, SlimmableBatchNorm2d) else nn.BatchNorm1d
    out = cls(m.active_in, m.eps, m.momentum, m.affine, m.track_running_stats)
    for name in ("weight", "bias", "running_mean", "running_var"):
        src, dst = getattr(m, name), getattr(out, name)
        if src is not None:
            dst.copy_(m._slice(src))
    if m.num_batches_tracked is not None:
        out.num_batches_tracked.copy_(m.num_batches_tracked)
    return out


# one small function per layer type, so a new slimmable layer is one entry here
_PLAIN = {
    SlimmableConv2d: _plain_conv,
    SlimmableLinear: _plain_linear,
    SlimmableBatchNorm2d: _plain_bn,
    SlimmableBatchNorm1d: _plain_bn,
}


@torch.no_grad()
def materialize(supernet: Supernet, config: ChannelConfig | None = None) -> nn.Module:
    """A plain model with the widths of `config` and copies of the supernet's weights.
    In eval mode its outputs equal the supernet's at that config."""
    previous = supernet.config
    if config is not None:
        supernet.set_config(config)
    try:
        net = copy.deepcopy(supernet.net)
        for name in supernet.space.layers:
            module = net.get_submodule(name)
            plain = _PLAIN[type(module)](module).to(module.weight.device if module.weight is not None else "cpu")
            plain.train(module.training)
            _set_module(net, name, plain)
    finally:
        supernet.set_config(previous)
    return net


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...] | list[tuple[int, ...]],
                opset: int = 17) -> Path:
    """Export a plain (materialized) model to ONNX with the legacy exporter, atomically.
    The legacy exporter folds constants, so the file holds only the weights in use.
    `input_shape` is one shape, or a list of shapes for a model with several inputs."""
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    if any(isinstance(m, tuple(_PLAIN)) for m in model.modules()):
        raise UserError("export a materialized subnet (autoslim_hw.export.materialize), not the supernet")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        names = ["input"] if len(shapes) == 1 else [f"input{i}" for i in range(len(shapes))]
        with atomic_path(path, suffix=".onnx") as tmp:
            torch.onnx.export(model, tuple(torch.zeros(s, device=device) for s in shapes), tmp, dynamo=False,
                              opset_version=opset, input_names=names, output_names=["output"],
                              do_constant_folding=True)
    finally:
        model.train(was_training)
    return path


# --- `autoslim-hw export`: one searched subnet as a deployable file ------------------------------

# format -> (file suffix, runtime that runs and times the file)
EXPORT_FORMATS = {
    "onnx": (".onnx", "onnxruntime"),
    "tflite": (".tflite", "litert"),
    "torch": (".pt", "torch"),  # TorchScript: runs with torch alone, no autoslim-hw
    "checkpoint": (".pt", "torch"),  # an autoslim-hw "subnet" checkpoint (eval --checkpoint reads it)
}


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
        return EXPORT_FORMATS[self.fmt][1]


def _describe_target(entry: dict) -> str:
    from .search import Target

    try:
        return Target.of(**entry.get("constraints", {})).describe()
    except (UserError, TypeError):
        return json.dumps(entry.get("constraints"))


def _target_list(path: Path, targets: list) -> str:
    return "; ".join(f"{i}: {_describe_target(t)} ({'met' if t.get('met') else 'not met'})"
                     for i, t in enumerate(targets))


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def resolve_export_config(supernet: Supernet, saved_config: ChannelConfig | None,
                          config_source: str | os.PathLike | None, target: int | None,
                          checkpoint: str | os.PathLike = "the checkpoint"):
    """(config, target index, target entry, search result) from --config / --target.

    `config_source` is a search result JSON (`--target` picks the target), a channel config
    JSON (`ChannelConfig.to_json`, or a search target entry), or None for a retrained subnet."""
    from .search import FORMAT as SEARCH_FORMAT
    from .search import load_result

    if config_source is None:
        if saved_config is None:
            hint = Path(checkpoint).parent / "search.json"
            raise UserError(f"{checkpoint} is a supernet: pass --config with a search result (e.g. {hint}, "
                            "from `autoslim-hw search`) or a channel config JSON")
        if target is not None:
            raise UserError("--target picks a target of a search result; pass that result with --config")
        return saved_config, None, None, None
    path = Path(config_source)
    if not path.is_file():
        raise UserError(f"config {path} does not exist; pass a search result from `autoslim-hw search` "
                        "or a channel config JSON")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"config {path} is not readable JSON ({type(exc).__name__}); pass a search result "
                        "or a channel config JSON") from None
    if isinstance(data, dict) and data.get("format") == SEARCH_FORMAT:
        result = load_result(path)
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
            raise UserError(f"target {target} of {path} ({_describe_target(entry)}) was not met by the search; "
                            + (f"met targets: {', '.join(met)}" if met else "no target was met"))
        config = ChannelConfig.from_dict(entry["config"], supernet.space, strict=False)
        return config, target, entry, result
    if target is not None:
        raise UserError(f"--target picks a target of a search result, but {path} is a channel config")
    if isinstance(data, dict) and "config" in data and "widths" not in data:
        data = data["config"]  # a search target entry
    return ChannelConfig.from_dict(data, supernet.space, strict=False), None, None, None


def calibration_loader(settings: dict, supernet: Supernet, data_dir: str | None = None):
    """Training images (no augmentation) of the dataset the checkpoint was trained on,
    shuffled with the run's seed: the loader `autoslim-hw export` recalibrates BN with."""
    from .data import load_splits, make_loader

    seed = settings.get("seed", 0)
    splits = load_splits(settings.get("data", "digits"), data_dir=data_dir or settings.get("data_dir"),
                         input_size=supernet.spec.input_size, in_chans=supernet.spec.in_chans,
                         search_size=settings.get("search_size", 0.1), seed=seed, limit=settings.get("limit"))
    return make_loader(splits.train_eval, 128, shuffle=True, seed=seed)


def build_subnet(checkpoint_path: str | os.PathLike, config_source: str | os.PathLike | None = None,
                 target: int | None = None, calib_batches: int = 20, data_dir: str | None = None):
    """The plain eval-mode model a checkpoint exports, with its metadata (no file written):
    a retrained subnet keeps its weights and BN statistics; a supernet is materialized at the
    config and its BN statistics re-estimated for that config on training images."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .train import recalibrate_bn

    if calib_batches < 0:
        raise UserError(f"--calib-batches must be >= 0, got {calib_batches}")
    checkpoint_path = Path(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    supernet, saved_config, model = model_from_checkpoint(ckpt)
    kind = "subnet" if ckpt.get("kind") == "subnet" else "supernet"
    config, target, entry, result = resolve_export_config(supernet, saved_config if kind == "subnet" else None,
                                                          config_source, target, checkpoint_path)
    info = ExportedSubnet(Path(), "", checkpoint_path, kind, supernet, config, model,
                          (1, supernet.spec.in_chans, supernet.spec.input_size, supernet.spec.input_size),
                          target, entry, result, None if result is None else Path(config_source))
    if result is not None:
        from .search import file_digest

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
        recalibrate_bn(model, None, calibration_loader(settings, supernet, data_dir), calib_batches)
        info.calib_batches, info.calib_data = calib_batches, settings.get("data", "digits")
    else:
        info.warnings.append("BN statistics not recalibrated (--calib-batches 0): the supernet's shared "
                             "statistics do not fit this config, expect lower accuracy")
    model.eval()
    info.model = model
    return info


def _write_torchscript(model: nn.Module, path: Path, input_shape: tuple[int, ...]) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, yet runs everywhere
        try:
            scripted = torch.jit.script(model)
        except Exception:  # Python the scripter cannot compile: record the graph at this input shape
            scripted = torch.jit.trace(model, torch.zeros(input_shape), check_trace=False)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.jit.save(scripted, tmp)


def _jit_load(path: Path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _write_checkpoint(info: ExportedSubnet, path: Path) -> None:
    from .checkpoint import load_checkpoint, save_checkpoint

    settings = dict(load_checkpoint(info.checkpoint).get("settings") or {})
    source = {"checkpoint": str(info.checkpoint), "kind": info.kind, "calib_batches": info.calib_batches}
    if info.search_path is not None:
        source.update(search=str(info.search_path), target=info.target)
    save_checkpoint(path, {"kind": "subnet", "spec": info.supernet.spec.to_dict(), "config": dict(info.config),
                           "model": info.model.state_dict(), "settings": settings, "exported_from": source})


def export_subnet(checkpoint_path: str | os.PathLike, config_source: str | os.PathLike | None = None,
                  target: int | None = None, fmt: str = "onnx", out: str | os.PathLike | None = None,
                  calib_batches: int = 20, data_dir: str | None = None) -> ExportedSubnet:
    """Write the subnet a checkpoint and config describe as `fmt` (onnx | tflite | torch |
    checkpoint) to `out`, atomically (default: next to the checkpoint)."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    info = build_subnet(checkpoint_path, config_source, target, calib_batches, data_dir)
    suffix = EXPORT_FORMATS[fmt][0]
    name = ("subnet" if info.target is None else f"subnet-target{info.target}") + \
        ("-ckpt" if fmt == "checkpoint" else "") + suffix
    path = Path(out) if out is not None else info.checkpoint.parent / name
    if path.is_dir():
        path = path / name
    if path.resolve() == info.checkpoint.resolve():
        raise UserError(f"--out {path} is the checkpoint itself; choose another file")
    info.path, info.fmt = path, fmt
    if fmt == "onnx":
        export_onnx(info.model, path, info.input_shape)
    elif fmt == "tflite":
        from .profilers.litert_backend import LiteRTBackend, _is_nhwc_file

        LiteRTBackend().convert(info.model, [info.input_shape], path)
        info.nhwc = _is_nhwc_file(path)
    elif fmt == "torch":
        _write_torchscript(info.model, path, info.input_shape)
    else:
        _write_checkpoint(info, path)
    return info


@torch.no_grad()
def check_export(info: ExportedSubnet, seed: int = 0) -> dict:
    """Run the written file and the PyTorch model on one random input:
    {'max_abs_diff', 'max_rel_diff' (relative to the output's largest magnitude)}."""
    import numpy as np

    x = torch.randn(info.input_shape, generator=torch.Generator().manual_seed(seed))
    info.model.eval()
    ref = info.model(x).numpy()
    if info.fmt == "onnx":
        from .profilers.onnxruntime_backend import OnnxRuntimeBackend

        sess = OnnxRuntimeBackend().session(info.path, threads=1)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    elif info.fmt == "tflite":
        from .profilers.litert_backend import run_tflite

        got = run_tflite(info.path, [x.numpy()])
    elif info.fmt == "torch":
        got = _jit_load(info.path)(x).numpy()
    else:
        from .checkpoint import load_checkpoint, model_from_checkpoint

        got = model_from_checkpoint(load_checkpoint(info.path))[2].eval()(x).numpy()
    if got.shape != ref.shape:
        raise UserError(f"{info.path} gives an output of shape {got.shape}, PyTorch {ref.shape}")
    diff = float(np.abs(got - ref).max())
    return {"max_abs_diff": diff, "max_rel_diff": diff / max(float(np.abs(ref).max()), 1e-12)}


def measure_export(info: ExportedSubnet, settings=None):
    """Median latency of the written file at batch 1 on one thread, the process pinned to one
    core: ONNX Runtime for onnx, LiteRT for tflite, PyTorch eager for torch and checkpoint.
    Returns (Latency, core)."""
    from .profilers import MeasureSettings, get_backend, pinned_to_core
    from .profilers.base import summarize, time_runs
    from .profilers.devices import measurement_core

    settings = settings or MeasureSettings()
    core = measurement_core()
    with pinned_to_core(core):
        if info.runtime != "torch":
            return get_backend(info.runtime).measure(info.path, settings, threads=1), core
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model = _jit_load(info.path) if info.fmt == "torch" else info.model.eval()
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
    from .lookup_tables import LatencyTable
    from .lookup_tables.table import model_key

    runtime = info.runtime
    if lut is None and runtime == "torch":
        return {"latency_ms": None, "reason": "lookup tables price ONNX Runtime or LiteRT, not PyTorch "
                                              "(export --format onnx or tflite to compare)"}
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
