"""`slimmable(model)`: turn an ordinary CNN into a supernet.

The given model is the 1.0x base. Its channel units are found with torch.fx,
every unit is widened to `width_max` x its base width, and every Conv2d,
Linear and BatchNorm is replaced in place by its slimmable twin. The model's
own forward() is kept, so any architecture torch.fx can trace keeps working.
Weights of the base model land in the leading slice of the wider layers, so a
pretrained 1.0x model starts as a supernet whose 1.0x config is that model.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import fx, nn

from ..errors import ConfigError
from .config import ChannelConfig, ChannelSpace, LayerSlot, Unit, make_divisible, slot_widths
from .layers import (SLIMMABLE_TYPES, SlimmableBatchNorm1d, SlimmableBatchNorm2d, SlimmableConv2d,
                     SlimmableLayerNorm, SlimmableLinear, unsliced_parameters, with_sliced_parameters)
from .units import GraphAnalysis, NodeRecord, analyze, propagate_shapes, trace


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a supernet: stored in checkpoints and LUTs."""

    arch: str
    width_max: float = 1.5
    groups: int = 10
    divisor: int = 8
    input_size: int = 224
    num_classes: int = 1000
    in_chans: int = 3
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class SupernetTracer(fx.Tracer):
    """Traces a supernet's network with its slimmable layers as leaves (one node each)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, SLIMMABLE_TYPES) or super().is_leaf_module(m, qualname)


def slot_module(net: nn.Module, slot: LayerSlot) -> nn.Module:
    """The module of a slot: the layer itself, or for a per-channel parameter the module holding it."""
    return net.get_submodule(slot.name.rpartition(".")[0] if slot.kind == "param" else slot.name)


def _width_options(base: int, width_max: float, groups: int, divisor: int) -> tuple[int, ...]:
    opts = {make_divisible(base * width_max * i / groups, divisor) for i in range(1, groups + 1)}
    return tuple(sorted(opts))


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _init_like_torchvision(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(m.bias) if m.bias is not None else None
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _segment_index(segments, widths: dict[str, int]) -> torch.Tensor:
    """Feature indices of the active channels in a segmented (concatenated) input."""
    parts, offset = [], 0
    for unit, max_width, factor in segments:
        active = widths[unit]
        parts.append(torch.arange(offset, offset + active * factor))
        offset += max_width * factor
    return torch.cat(parts)


class Supernet(nn.Module):
    """A slimmable network plus its channel space. `set_config` picks the active widths."""

    def __init__(self, net: nn.Module, space: ChannelSpace, nodes: list[NodeRecord], spec: ModelSpec):
        super().__init__()
        self.net = net
        self.space = space
        self.spec = spec
        self._nodes = nodes
        self.channels_last_nodes = frozenset(n.name for n in nodes if n.channels_last)  # (N, H, W, C) tensors
        self._spatial_cache: dict[tuple[int, ...], dict[str, tuple]] = {}
        self._modules_by_slot: list | None = None
        self.config = space.largest()
        self.set_config(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def trace(self) -> fx.GraphModule:
        """The network's inference graph (traced in eval mode: heads that run only in training,
        such as GoogLeNet's auxiliary classifiers, are not in it), slimmable layers as leaves; it
        shares this supernet's modules."""
        was_training = self.net.training
        self.net.eval()
        try:
            with unsliced_parameters(self.net):
                return trace(self.net, SupernetTracer)
        finally:
            self.net.train(was_training)

    def set_config(self, config: ChannelConfig, strict: bool = False) -> None:
        """Activate `config` (any width in [1, max]; `strict` demands the search grid)."""
        config = self.space.validate(config, strict=strict)
        widths = self.space.widths(config)
        if self._modules_by_slot is None:  # get_submodule walks the tree: resolve once
            self._modules_by_slot = [(slot, slot_module(self.net, slot)) for slot in self.space.layers.values()]
        for slot, module in self._modules_by_slot:
            active_in, active_out = slot_widths(slot, widths)
            if slot.kind == "param":  # read sliced by its module's forward()
                attr = slot.name.rpartition(".")[2]
                module._active_channels[attr] = (active_in, module._active_channels[attr][1])
                continue
            index = None
            if len(slot.in_segments) > 1:
                index = _segment_index(slot.in_segments, widths).to(module.weight.device)
            module.set_active(active_in, active_out, index)
        self.config = config

    def layer_geometry(self, input_size: int | tuple[int, int] | None = None) -> dict[str, tuple]:
        """Per graph node: (input shape, output shape) at the largest config, batch 1.
        Spatial sizes do not depend on widths, so one shape pass per input size serves
        every config's counts."""
        size = self._input_shape(input_size)
        if size not in self._spatial_cache:
            gm = self.trace()
            previous = self.config
            self.set_config(self.space.largest())
            try:
                propagate_shapes(gm, size)
            finally:
                self.set_config(previous)
            shapes = {}
            for node in gm.graph.nodes:
                meta = node.meta.get("tensor_meta")
                if meta is None or not hasattr(meta, "shape"):
                    continue
                args = [a for a in node.all_input_nodes if hasattr(a.meta.get("tensor_meta"), "shape")]
                in_shape = tuple(args[0].meta["tensor_meta"].shape) if args else None
                shapes[node.target if node.op == "call_module" else node.name] = (in_shape, tuple(meta.shape))
                shapes.setdefault(node.name, (in_shape, tuple(meta.shape)))
            self._spatial_cache[size] = shapes
        return self._spatial_cache[size]

    def _input_shape(self, input_size) -> tuple[int, int, int, int]:
        if input_size is None:
            input_size = self.spec.input_size
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        return (1, self.spec.in_chans, h, w)

    @property
    def nodes(self) -> list[NodeRecord]:
        return self._nodes


def slimmable(model: nn.Module, width_max: float = 1.5, groups: int = 10, divisor: int = 8,
              input_size: int | tuple[int, int] = 224, in_chans: int | None = None,
              keep_weights: bool = True, spec: ModelSpec | None = None) -> Supernet:
    """Turn `model` (the 1.0x base) into a supernet of width up to `width_max` x base,
    with `groups` width options per unit from width_max/groups x base upwards."""
    if width_max <= 0 or groups < 1 or divisor < 1:
        raise ConfigError("width_max must be > 0, groups >= 1 and divisor >= 1")
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if in_chans is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        in_chans = first.in_channels if first is not None else 3
    analysis = analyze(model, (1, in_chans, h, w))
    net = copy.deepcopy(model)
    space = _build_space(analysis, width_max, groups, divisor)
    _widen(net, analysis, space, keep_weights)
    names = {r: _unit_name(analysis, r) for r in analysis.unit_base}
    nodes = [NodeRecord(n.name, tuple((names[s.unit], space.units[names[s.unit]].max, s.factor)
                                      for s in n.layout), n.inputs, n.allocates, n.spatial, n.channels_last)
             for n in analysis.nodes]
    if spec is None:  # a user's model: record what later commands need to rebuild the shapes
        outputs = [u.base for u in space.units.values() if u.fixed and u.name != "input"]
        spec = ModelSpec(arch=type(model).__name__, width_max=width_max, groups=groups, divisor=divisor,
                         input_size=h if h == w else (h, w), num_classes=outputs[-1] if outputs else 0,
                         in_chans=in_chans)
    return Supernet(net, space, nodes, spec)


def _unit_name(analysis: GraphAnalysis, root: int) -> str:
    producers = analysis.unit_producers.get(root)
    return producers[0] if producers else "input"


def _build_space(analysis: GraphAnalysis, width_max: float, groups: int, divisor: int) -> ChannelSpace:
    units = []
    for root, base in analysis.unit_base.items():
        fixed = analysis.unit_fixed[root]
        multiple = analysis.unit_multiple.get(root, 1)
        if fixed:
            top, options = base, (base,)
        else:
            step = math.lcm(divisor, multiple)
            options = _width_options(base, width_max, groups, step)
            if width_max >= 1 and options[-1] < base:  # rounding fell below the model's own width
                options = (*options[:-1], -(-base // step) * step)
            top = options[-1]
        units.append(Unit(_unit_name(analysis, root), base, top, options, fixed,
                          tuple(analysis.unit_producers.get(root, ())), multiple))
    by_root = {root: u for root, u in zip(analysis.unit_base, units)}
    slots = []
    for rec in analysis.layers.values():
        segments = tuple((by_root[s.unit].name, by_root[s.unit].max, s.factor) for s in rec.in_layout)
        out = by_root[rec.out_unit].name if rec.out_unit is not None else None
        slots.append(LayerSlot(rec.name, rec.kind, segments, out, rec.group_width))
    return ChannelSpace(units, slots, width_max, groups, divisor)


def _widen(net: nn.Module, analysis: GraphAnalysis, space: ChannelSpace, keep_weights: bool) -> None:
    base_widths = {u.name: u.base for u in space.units.values()}
    for slot in space.layers.values():
        in_max = sum(m * f for _, m, f in slot.in_segments)
        out_max = space.units[slot.out_unit].max if slot.out_unit is not None else in_max
        if slot.kind == "param":
            _widen_parameter(net, slot, in_max, space, base_widths, keep_weights)
            continue
        old = net.get_submodule(slot.name)
        if slot.kind in ("conv", "dwconv", "gconv"):
            new = SlimmableConv2d(in_max, out_max, old.kernel_size, old.stride, old.padding, old.dilation,
                                  depthwise=slot.kind == "dwconv", bias=old.bias is not None,
                                  padding_mode=old.padding_mode,
                                  group_width=slot.group_width if slot.kind == "gconv" else None)
        elif slot.kind == "linear":
            new = SlimmableLinear(in_max, out_max, bias=old.bias is not None)
        elif slot.kind == "ln":
            new = SlimmableLayerNorm(in_max, old.eps, old.elementwise_affine, old.bias is not None,
                                     channels_first=type(old).forward is not nn.LayerNorm.forward,
                                     plain_class=type(old))
        else:
            cls = SlimmableBatchNorm2d if isinstance(old, nn.BatchNorm2d) else SlimmableBatchNorm1d
            new = cls(in_max, old.eps, old.momentum, old.affine, old.track_running_stats)
        new = new.to(next(old.parameters(), torch.empty(0)).device)
        _init_like_torchvision(new)
        if keep_weights:
            _copy_base_weights(old, new, slot, space, base_widths)
        new.train(old.training)
        set_module(net, slot.name, new)


@torch.no_grad()
def _widen_parameter(net: nn.Module, slot: LayerSlot, allocated: int, space: ChannelSpace,
                     base_widths: dict[str, int], keep_weights: bool) -> None:
    """A per-channel parameter (ConvNeXt's layer scale) at the widest width, read sliced."""
    owner_name, _, attr = slot.name.rpartition(".")
    owner = net.get_submodule(owner_name)
    old = getattr(owner, attr)
    new = old.new_empty((allocated, *old.shape[1:]))
    new.copy_(old.mean().expand_as(new))  # the extra channels start at the layer's typical value
    if keep_weights:
        new[_segment_index(slot.in_segments, base_widths)] = old
    setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    with_sliced_parameters(owner, {attr: (allocated, allocated)})


@torch.no_grad()
def _copy_base_weights(old: nn.Module, new: nn.Module, slot: LayerSlot, space: ChannelSpace,
                       base_widths: dict[str, int]) -> None:
    in_idx = _segment_index(slot.in_segments, base_widths)
    if slot.out_unit is not None:
        out_idx = torch.arange(space.units[slot.out_unit].base)
    else:
        out_idx = in_idx
    for pname, p_old in list(old.named_parameters(recurse=False)) + list(old.named_buffers(recurse=False)):
        p_new = getattr(new, pname)
        if p_new is None or p_old.dim() == 0:
            continue
        if p_old.dim() == 1:
            p_new[out_idx] = p_old
        elif slot.kind in ("dwconv", "gconv"):  # (channels, channels per group, k, k)
            p_new[out_idx] = p_old
        else:
            p_new[out_idx.unsqueeze(1), in_idx.unsqueeze(0)] = p_old

