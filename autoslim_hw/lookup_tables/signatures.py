"""Operator signatures: what fully determines a deployed layer's cost.

A layer as deployed is a conv (or linear) with its BatchNorm folded in and its
activation fused, so its signature is: op kind, input H and W, Cin, Cout,
kernel, stride, padding, groups, activation. Residual adds and global pooling
get signatures too. Signatures do not name the model, so one table serves
every network on one device.
"""
from __future__ import annotations

import itertools
import operator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn.config import ChannelConfig, slot_widths
from ..nn.supernet import Supernet

_ACTIVATION_NAMES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.SiLU: "silu",
                     nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid", F.relu: "relu", F.relu6: "relu6",
                     F.hardswish: "hardswish", F.silu: "silu", F.hardsigmoid: "hardsigmoid", torch.relu: "relu",
                     torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid"}


# Calibrations weigh the layer sums by these groups of ops.
OP_GROUPS = ("conv", "dwconv", "other")


def op_group(op: str) -> str:
    """A grouped conv (several channels per group) costs like a dense conv of its MACs."""
    return "conv" if op == "gconv" else op if op in ("conv", "dwconv") else "other"


@dataclass(frozen=True)
class Signature:
    # conv | dwconv | gconv | linear (on (1, C) or on each position of an h x w channels-last map) | add | gap |
    # scale (a map times one value per channel: squeeze-and-excitation, layer scale) | shuffle |
    # ln (LayerNorm over the channels of a channels-last map) | ln2d (of an NCHW map: permutes around it) |
    # nchw2nhwc | nhwc2nchw (a permute)
    op: str
    h: int
    w: int
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    act: str = "none"

    @property
    def key(self) -> str:
        return (f"{self.op}|{self.h}x{self.w}|{self.cin}->{self.cout}|k{self.kernel}s{self.stride}"
                f"p{self.padding}g{self.groups}|{self.act}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeployedOp:
    """One op of the deployed graph, with how its channels depend on the config."""

    name: str
    op: str
    h: int
    w: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    act: str = "none"
    layer: str | None = None  # the slimmable layer (conv/linear), if any
    channels_of: tuple = ()  # for add/gap/scale/shuffle: segments (unit, max, factor) of the tensor
    group_width: int = 1  # gconv: channels per group; shuffle: the number of groups

    def signature(self, supernet: Supernet, widths: dict[str, int]) -> Signature:
        if self.layer is not None:
            cin, cout = slot_widths(supernet.space.layers[self.layer], widths)
        else:
            cin = cout = sum(widths[u] * f for u, _, f in self.channels_of)
        groups = cin if self.op == "dwconv" else cin // self.group_width if self.op == "gconv" \
            else self.group_width if self.op == "shuffle" else 1
        return Signature(self.op, self.h, self.w, cin, cout, self.kernel, self.stride, self.padding, groups, self.act)


def _activation_of(node: fx.Node, modules: dict) -> tuple[str, fx.Node]:
    """Follow conv -> (BN) -> (activation); return the fused activation name."""
    cur = node
    for _ in range(2):
        if len(cur.users) != 1:
            break
        nxt = next(iter(cur.users))
        target = modules.get(nxt.target) if nxt.op == "call_module" else nxt.target
        if isinstance(target, nn.modules.batchnorm._BatchNorm):
            cur = nxt
            continue
        key = type(target) if nxt.op == "call_module" else target
        if key in _ACTIVATION_NAMES:
            return _ACTIVATION_NAMES[key], nxt
        break
    return "none", cur


def deployed_ops(supernet: Supernet) -> list[DeployedOp]:
    """Conv/linear layers (BN and activation fused), residual adds, global pools,
    squeeze-and-excitation products (a map times per-channel weights) and channel shuffles, in order."""
    gm = supernet.trace()
    modules = dict(gm.named_modules())
    geometry = supernet.layer_geometry()
    layouts = {n.name: n.layout for n in supernet.nodes}
    channels_last = supernet.channels_last_nodes
    ops = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in supernet.space.layers:
            slot = supernet.space.layers[node.target]
            if slot.kind == "bn":
                continue
            m = modules[node.target]
            in_shape = geometry[node.target][0]
            last = node.name in channels_last
            h, w = (in_shape[1:3] if last else in_shape[2:4]) if len(in_shape) == 4 else (1, 1)
            if slot.kind == "ln":
                ops.append(DeployedOp(node.target, "ln2d" if m.channels_first else "ln", h, w, layer=node.target))
                continue
            act, _ = _activation_of(node, modules)
            if slot.kind == "linear":
                ops.append(DeployedOp(node.target, "linear", h, w, act=act, layer=node.target))
            else:
                ops.append(DeployedOp(node.target, slot.kind, h, w, m.kernel_size[0], m.stride[0], m.padding[0],
                                      act, node.target, group_width=slot.group_width))
        elif node.name in layouts and _is_permute(node, geometry):
            shape = geometry[node.name][1]
            to_last = node.name in channels_last
            ops.append(DeployedOp(node.name, "nchw2nhwc" if to_last else "nhwc2nchw",
                                  *(shape[1:3] if to_last else shape[2:4]), channels_of=layouts[node.name]))
        elif node.op == "call_function" and node.target in (operator.add, operator.iadd) and node.name in layouts:
            shape = geometry[node.name][1]
            if len(shape) == 4:
                ops.append(DeployedOp(node.name, "add", shape[2], shape[3], channels_of=layouts[node.name]))
        elif node.name in layouts and _is_channel_shuffle(node, geometry):
            shape = geometry[node.name][1]  # (N, C/g, g, H, W)
            ops.append(DeployedOp(node.name, "shuffle", shape[3], shape[4], channels_of=layouts[node.name],
                                  group_width=shape[2]))
        elif node.name in layouts and _is_channel_scale(node, geometry):
            shape = geometry[node.name][1]
            ops.append(DeployedOp(node.name, "scale", shape[2], shape[3], channels_of=layouts[node.name]))
        elif node.name in layouts and _is_global_pool(node, modules, geometry):
            src = node.all_input_nodes[0].name
            shape = geometry[src][1]
            h, w = shape[1:3] if src in channels_last else shape[2:4]  # a channels-last map: (N, H, W, C)
            ops.append(DeployedOp(node.name, "gap", h, w, channels_of=layouts[node.name]))
    return ops


def _is_channel_scale(node: fx.Node, geometry: dict) -> bool:
    """x * s with x a feature map and s one value per channel: (N, C, 1, 1), or a (C, 1, 1)
    parameter (ConvNeXt's layer scale)."""
    is_mul = (node.op == "call_function" and node.target in (operator.mul, operator.imul, torch.mul)) \
        or (node.op == "call_method" and node.target in ("mul", "mul_"))
    if not is_mul or len(node.all_input_nodes) != 2 or node.name not in geometry:
        return False
    shapes = [geometry.get(a.name, (None, None))[1] for a in node.all_input_nodes]
    if any(s is None or len(s) not in (3, 4) for s in shapes):
        return False
    maps = [len(s) == 4 and tuple(s[2:]) != (1, 1) for s in shapes]
    return sorted(maps) == [False, True] and tuple(shapes[maps.index(False)][-2:]) == (1, 1)


def _is_op(node: fx.Node, geometry: dict, function, method: str, rank: int) -> bool:
    """`node` calls `function` (or the tensor method `method`) and its output has `rank` dims."""
    calls = (node.op == "call_function" and node.target is function) or (node.op == "call_method" and node.target == method)
    shape = geometry.get(node.name, (None, None))[1]
    return calls and shape is not None and len(shape) == rank


def _is_permute(node: fx.Node, geometry: dict) -> bool:
    return _is_op(node, geometry, torch.permute, "permute", 4)


def _is_channel_shuffle(node: fx.Node, geometry: dict) -> bool:
    """The transpose of ShuffleNet's shuffle: (N, g, C/g, H, W) -> (N, C/g, g, H, W). Deployed, the
    view before it and after it are free; this copy is the cost."""
    return _is_op(node, geometry, torch.transpose, "transpose", 5)


def _is_global_pool(node: fx.Node, modules: dict, geometry: dict) -> bool:
    if not node.all_input_nodes:
        return False
    src = geometry.get(node.all_input_nodes[0].name)
    out = geometry.get(node.name)
    if src is None or out is None or len(src[1]) != 4:
        return False
    is_pool = (node.op == "call_module" and isinstance(modules.get(node.target), (nn.AdaptiveAvgPool2d, nn.AvgPool2d))) \
        or (node.op == "call_function" and node.target is F.adaptive_avg_pool2d) \
        or (node.op == "call_method" and node.target == "mean")
    return is_pool and (len(out[1]) == 2 or tuple(out[1][2:]) == (1, 1))


def config_signatures(supernet: Supernet, config: ChannelConfig, ops: list[DeployedOp] | None = None) -> list[Signature]:
    widths = supernet.space.widths(config)
    return [op.signature(supernet, widths) for op in (ops or deployed_ops(supernet))]


def enumerate_signatures(supernet: Supernet, ops: list[DeployedOp] | None = None) -> list[Signature]:
    """Every signature any config of the search space can produce (deduplicated, in order)."""
    ops = ops or deployed_ops(supernet)
    space = supernet.space
    seen: dict[str, Signature] = {}
    for op in ops:
        units = set()
        if op.layer is not None:
            slot = space.layers[op.layer]
            units = {u for u, _, _ in slot.in_segments} | ({slot.out_unit} if slot.out_unit else set())
        else:
            units = {u for u, _, _ in op.channels_of}
        units = sorted(units)
        for combo in itertools.product(*(space.units[u].options for u in units)):
            widths = {u.name: u.max for u in space.units.values()}
            widths.update(dict(zip(units, combo)))
            sig = op.signature(supernet, widths)
            seen.setdefault(sig.key, sig)
    return list(seen.values())
