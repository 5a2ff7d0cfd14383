"""What a config costs: MACs, params, memory and, from a lookup table, its predicted latency,
for a config in any form a user holds one (a width, a channel config, a layer list, a search
result's target)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..counting import count, memory_counts
from ..errors import UserError
from ..nn.supernet import Supernet

MEMORY_CONVENTION = "elements: parameters (BN included) + every conv/linear output, input excluded (AutoSlim Table 1)"


@dataclass
class CountReport:
    model: str
    input_size: int
    macs: int
    params: int
    memory: int  # the paper's convention (MEMORY_CONVENTION)
    peak_activation_bytes: int  # float32 activations alive at once, batch 1
    deployed_memory_bytes: int  # BN-folded float32 weights + that peak: the search's `memory` cost
    layers: list[int]
    width_rule: str | None  # how --width became widths; None for other config forms
    off_grid_units: list[str]  # units whose width is not one of the supernet's options
    memory_convention: str = MEMORY_CONVENTION
    latency_ms: float | None = None
    layer_sum_ms: float | None = None  # before the table's calibration
    calibrated: bool | None = None
    interpolated: list[str] = field(default_factory=list)  # signatures estimated, not measured
    lut: str | None = None
    lut_device: str | None = None
    lut_runtime: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def count_supernet(model: str | None = None, checkpoint: Path | None = None, channels_data=None,
                   lut_table=None, lut: Path | None = None, input_size: int | None = None,
                   num_classes: int | None = None, width_max: float = 1.5) -> Supernet:
    """The supernet a count is about: a checkpoint's; else the one a search result (`channels_data`,
    the --channels file's JSON) or (without --model) a lookup table was made for; else the
    built-in `model` (default mobilenet_v2)."""
    from ..lookup_tables.discover import table_model
    from ..models import build_from_spec, create_model
    from ..nn.supernet import ModelSpec
    from .common import open_checkpoint

    if checkpoint is not None:
        return open_checkpoint(checkpoint).supernet
    from .export import is_search_result

    spec = channels_data.get("model") if is_search_result(channels_data) else None
    if isinstance(spec, dict) and model is None:
        return build_from_spec(ModelSpec.from_dict(spec))
    if lut_table is not None and model is None:
        return table_model(lut_table, lut)
    if input_size is not None and input_size < 8:
        raise UserError(f"--input-size {input_size} is too small; use at least 8")
    return create_model(model or "mobilenet_v2", width_max=width_max, input_size=input_size, num_classes=num_classes)


def count_config(model: str | None = None, width: float | None = None, published: bool = False,
                 channels: Path | None = None, target: int | None = None, layers: str | None = None,
                 checkpoint: Path | None = None, lut: Path | None = None, device: str | None = None,
                 runtime: str | None = None, allow_mismatch: bool = False, input_size: int | None = None,
                 num_classes: int | None = None, width_max: float = 1.5) -> CountReport:
    """Costs of one config. `published` reads --width by the architecture's own rule (e.g.
    torchvision's MobileNetV2 0.75x) instead of every unit x width; `lut` adds the latency the
    table predicts, which signatures it interpolated, and refuses a table of another model (or,
    when `device`/`runtime` are given, of another device or runtime)."""
    from ..lookup_tables import LatencyTable
    from ..lookup_tables.discover import check_table_model, table_path
    from ..models import model_entry, published_config
    from .common import config_from_options
    from .export import read_config_source, resolve_export_config

    if published and (channels is not None or layers is not None):
        raise UserError("--published reads --width by the architecture's own rule; it does not apply to "
                        "--channels or --layers")
    if target is not None and channels is None:
        raise UserError("--target picks a target of a search result; pass that result with --channels")
    table = None
    if lut is not None:
        lut = table_path(lut)
        table = LatencyTable.load(lut).require_entries(lut)
    data = read_config_source(channels) if channels is not None else None  # read once
    supernet = count_supernet(model, checkpoint, data, table, lut, input_size, num_classes, width_max)
    notes: list[str] = []
    rule = None
    space = supernet.space
    if channels is not None:
        config = resolve_export_config(supernet, None, channels, target, data=data)[0]
    elif published:
        w = 1.0 if width is None else width
        config = published_config(supernet, w)
        rule = f"published ({model_entry(supernet.spec.arch).width_rule})"
    elif width is None and layers is None:
        config = space.base_config()
        rule = "the model as built (its 1.0x, every width as published)"
    else:
        config = config_from_options(supernet, width, None, layers)
        if layers is None:
            rule = "uniform: every unit's channels x width, rounded to a multiple of the divisor"
    off_grid = [u.name for u in space.free_units if config[u.name] not in u.options]
    if off_grid:
        notes.append(f"{len(off_grid)} of {len(space.free_units)} units are off the supernet's width grid "
                     f"({', '.join(off_grid[:3])}{', ...' if len(off_grid) > 3 else ''}): counted as given")
    counts = count(supernet, config)
    report = CountReport(supernet.spec.arch, supernet.spec.input_size, counts.macs, counts.params, counts.memory,
                         counts.peak_activation_bytes, memory_counts(supernet, config, counts=counts).deployed_bytes,
                         space.to_layer_list(config), rule, off_grid, notes=notes)
    if table is not None:
        md = table.metadata
        have_device, have_runtime = md.get("device", {}).get("name"), md.get("runtime")
        table.check_target(device, runtime, allow_mismatch, path=lut, other_host_ok=True)  # another CPU: a note
        check_table_model(table, supernet, Path(lut), f"autoslim-hw profile --model {supernet.spec.arch} "
                          f"--input-size {supernet.spec.input_size}", allow_mismatch)
        if table.outdated():
            notes.append(f"the table was {table.outdated()}")
        other = table.other_host()
        if other:
            notes.append(other.replace("its latencies do not hold here",
                                       "the latency is that machine's, not this one's"))
        p = table.predict(supernet, config, memory=False)
        report.latency_ms, report.layer_sum_ms, report.calibrated = p.latency_ms, p.layer_sum_ms, p.calibrated
        report.interpolated = list(p.interpolated)
        report.lut, report.lut_device, report.lut_runtime = str(lut), have_device, have_runtime
        if p.interpolated:
            notes.append(f"{len(p.interpolated)} layer signature{'s' if len(p.interpolated) > 1 else ''} not in "
                         "the table, interpolated from measured neighbours")
    return report
