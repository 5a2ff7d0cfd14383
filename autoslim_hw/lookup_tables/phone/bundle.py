"""Phone bundles: one .tflite per signature of a supernet's search space (plus a few whole
sub-networks, to calibrate and to validate the table), a `manifest.json`, and
`run_on_device.sh` (a package-data file filled in per bundle), a POSIX sh script that pushes
everything to an attached phone over adb and runs TFLite's `benchmark_model` on each model,
one thread, pinned to one core, saving each output to `results/<model>.txt`. Resumable.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from ... import __version__
from ..._io import read_tagged, umask
from ..._schema import FiniteNonNegative, NonEmpty, NonNegativeInt, Open, PositiveInt, validate
from ...errors import UserError
from ..build import now
from ..calibration import weights_mb
from ..signatures import Signature, config_signatures, deployed_ops, enumerate_signatures
from ..table import model_key

BUNDLE_FORMAT = "autoslim-hw/bundle"
BUNDLE_VERSION = 1
NIGHTLY = "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest"
BENCHMARK_MODEL_URLS = {"arm64-v8a": f"{NIGHTLY}/android_aarch64_benchmark_model",
                        "armeabi-v7a": f"{NIGHTLY}/android_arm_benchmark_model"}


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


# --- the manifest's schema: what `lut import` and `lut run-local` rely on ----------------------

_File = Annotated[str, Field(pattern=r"^models/[A-Za-z0-9._-]+\.[a-z]+$")]  # inside the bundle


class _Benchmark(Open):
    warmup_runs: NonNegativeInt
    num_runs: PositiveInt
    warmup_min_secs: FiniteNonNegative
    min_secs: FiniteNonNegative
    num_threads: Literal[1] = 1


class _ModelEntry(Open):
    file: _File
    key: NonEmpty
    sig: dict


class _NetworkEntry(Open):
    file: _File
    role: Literal["calibration", "validation"]
    config: dict[str, PositiveInt]
    signatures: list[str]
    weights_mb: FiniteNonNegative


class _ModelSpec(Open):
    arch: NonEmpty
    input_size: PositiveInt


class _Manifest(Open):
    bundle_id: NonEmpty
    model: _ModelSpec
    model_key: NonEmpty
    runtime: NonEmpty
    benchmark: _Benchmark
    models: Annotated[list[_ModelEntry], Field(min_length=1)]
    networks: list[_NetworkEntry] = []


def model_file_name(sig: Signature) -> str:
    """Short, stable and shell-safe: readable fields plus a hash of the full signature key."""
    digest = hashlib.sha1(sig.key.encode()).hexdigest()[:8]
    act = "" if sig.act == "none" else f"-{sig.act}"
    return f"{sig.op}-{sig.h}x{sig.w}-{sig.cin}to{sig.cout}-k{sig.kernel}s{sig.stride}{act}-{digest}.tflite"


def _network_configs(supernet, calibration: int, validation: int) -> list[tuple[str, object]]:
    """Calibration: the smallest, the largest and random configs (as `profile` uses);
    validation: other random configs, none equal to a calibration one."""
    import random

    from ..networks import sample_configs

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
    from ...nn.materialize import materialize
    from ...profilers import get_backend, list_backends
    from ..build import single_op_model

    phone_runtimes = [e.name for e in list_backends(phone=True)]
    if runtime not in phone_runtimes:
        raise UserError(f"phone bundles run TFLite's benchmark_model: --runtime must be one of "
                        f"{', '.join(phone_runtimes)}, got {runtime!r}")
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
                    "created": now(), "tool_version": __version__, "converter_version": backend.version(),
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
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes the directory private
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():  # a bundle, and --force: move it aside, move the new one in, then delete
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "bundle")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _device_script(manifest: dict) -> str:
    b = manifest["benchmark"]
    spec = manifest["model"]
    values = {"TOOL_VERSION": __version__, "MODEL": f"{spec['arch']} at {spec['input_size']}px",
              "BUNDLE_ID": manifest["bundle_id"], "N_FILES": str(len(manifest["models"]) + len(manifest["networks"])),
              "URL_AARCH64": BENCHMARK_MODEL_URLS["arm64-v8a"], "URL_ARM": BENCHMARK_MODEL_URLS["armeabi-v7a"],
              "WARMUP_RUNS": str(int(b["warmup_runs"])), "NUM_RUNS": str(int(b["num_runs"])),
              "WARMUP_MIN_SECS": f"{float(b['warmup_min_secs']):g}", "MIN_SECS": f"{float(b['min_secs']):g}"}
    text = resources.files(__package__).joinpath("run_on_device.sh").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert not re.search(r"@[A-Z0-9_]+@", text), "unfilled placeholder in run_on_device.sh"
    return text


def load_manifest(bundle_dir: str | os.PathLike) -> dict:
    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise UserError(f"bundle {bundle} does not exist; write one with `autoslim-hw lut bundle --out {bundle}`")
    if not (bundle / "manifest.json").is_file():
        raise UserError(f"{bundle} is not an autoslim-hw bundle (no manifest.json); "
                        "write one with `autoslim-hw lut bundle`")
    path = bundle / "manifest.json"
    fix = "write the bundle again with `autoslim-hw lut bundle`"
    data = read_tagged(path, BUNDLE_FORMAT, "bundle manifest", fix, versions=(BUNDLE_VERSION,))
    validate(_Manifest, data, path, "bundle manifest", fix)
    return data


def bundle_files(manifest: dict) -> list[str]:
    return [m["file"] for m in manifest["models"]] + [n["file"] for n in manifest.get("networks", [])]


def result_name(file: str) -> str:
    return Path(file).stem + ".txt"


# --- a results directory: one bundle's results, and the device that measured them ---------------

def read_device_txt(path: Path) -> dict:
    if not path.is_file():
        return {}
    out = {}
    for ln in path.read_text(errors="replace").splitlines():
        if "=" in ln:
            key, value = ln.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def check_results_owner(results: Path, manifest: dict) -> None:
    """Results of one bundle only: device.txt records the bundle id, and every result file
    must name a model of this bundle."""
    if not results.is_dir():
        return
    device = read_device_txt(results / "device.txt")
    other = device.get("bundle_id")
    if other and other != manifest["bundle_id"]:
        raise UserError(f"{results} holds results of another bundle ({other}, this one is "
                        f"{manifest['bundle_id']}); pass the --bundle they were measured with")
    known = {result_name(f) for f in bundle_files(manifest)}
    strangers = sorted(p.name for p in results.glob("*.txt") if p.name != "device.txt" and p.name not in known)
    if strangers:
        raise UserError(f"{results} has {len(strangers)} result file(s) of models not in this bundle "
                        f"(e.g. {strangers[0]}); they belong to another bundle: pass the --bundle they were "
                        "measured with")
