"""Channel-unit discovery with torch.fx.

A *channel unit* is a set of layers whose output widths must stay equal: the
layers feeding one residual add (or an elementwise mul), and the depthwise or
grouped convs and BatchNorms that follow them. A grouped conv (ResNeXt, RegNet)
keeps its group width as the unit slims: its groups scale with the width, so
the unit's widths move in multiples of the group width. Like Torch-Pruning's dependency graph,
we trace an ordinary `nn.Module` and propagate, for every tensor, its channel
*layout*: the units its channels come from, in order (one segment, or several
after a concatenation). Producers (Conv2d with groups=1, Linear) start a new
unit; elementwise ops merge the units of their operands (union-find); the
input and everything that reaches the output stay fixed.

Supporting another op is one entry in the handler tables of `unit_ops`; the graph's
data structures are in `channel_graph`.
"""
from __future__ import annotations

import math

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedOperationError
from .channel_graph import (GraphAnalysis, LayerRecord, Layout, NodeRecord, Segment, _Context,  # noqa: F401
                            _shape, unsupported)
from .unit_ops import (FUNCTION_HANDLERS, METHOD_HANDLERS, MODULE_HANDLERS,  # noqa: F401  (the tables)
                       NAMED_FUNCTION_HANDLERS, _channel_param, _function_handler, _module_handler)


class NormLeafTracer(fx.Tracer):
    """Keeps every LayerNorm, subclasses included (torchvision's LayerNorm2d permutes inside),
    as one node: the layer slims as a whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.LayerNorm) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, tracer_cls: type[fx.Tracer] = NormLeafTracer) -> fx.GraphModule:
    try:
        graph = tracer_cls().trace(model)
    except Exception as exc:  # fx raises many types; the user needs the first line of it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedOperationError(
            f"torch.fx could not trace {type(model).__name__}: {first}. "
            "Remove data-dependent control flow from forward() or mark that part as a leaf module"
        ) from None
    return fx.GraphModule(model, graph)


def propagate_shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
    param = next(gm.parameters(), None)
    device = param.device if param is not None else "cpu"
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(input_shape, device=device))
    finally:
        gm.train(was_training)


def _follow_channels_last(ctx: _Context, node: fx.Node, handler) -> None:
    """A tensor stays channels-last through ops that work on any dim (activations, elementwise,
    Linear, LayerNorm); any other op there is refused, since it would read the wrong dim."""
    if node.op == "get_attr" or node.name in ctx.channels_last:
        return
    # a (N, C) tensor has its channels both second and last: it agrees with either
    args = [a for a in ctx.tensor_args(node) if _shape(a) is None or len(_shape(a)) != 2]
    last = [a.name in ctx.channels_last for a in args]
    if not any(last) or getattr(handler, "__name__", "") == "_permute":
        return
    if not getattr(handler, "any_dim", False):
        raise unsupported(node, "on a channels-last tensor (after a permute); only Linear, LayerNorm, "
                                "activations and elementwise ops are supported there")
    if not all(last):
        raise unsupported(node, "operands with channels in different dims (channels-first and channels-last)")
    shape = _shape(node)
    if shape is None or len(shape) > 2:
        ctx.channels_last.add(node.name)


def analyze(model: nn.Module, input_shape: tuple[int, ...]) -> GraphAnalysis:
    """Trace `model`, run shapes at `input_shape` (N, C, H, W) and find its channel units."""
    gm = trace(model)
    try:
        propagate_shapes(gm, input_shape)
    except Exception as exc:
        raise UnsupportedOperationError(
            f"{type(model).__name__} does not run on an input of shape {tuple(input_shape)}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; check --input-size"
        ) from None
    ctx = _Context(gm)
    nodes: list[NodeRecord] = []
    output_layouts: list[Layout] = []
    for node in gm.graph.nodes:
        handler = None
        if node.op == "placeholder":
            shape = _shape(node)
            unit = ctx.uf.new(shape[1], fixed=True)
            layout, allocates = (Segment(unit, shape[1]),), True
        elif node.op == "output":
            for arg in ctx.tensor_args(node):
                output_layouts.append(ctx.layouts[arg.name])
            break
        elif node.op == "call_module":
            module = ctx.modules[node.target]
            handler = _module_handler(module)
            if handler is None:
                raise unsupported(node, f"module type {type(module).__name__} is not supported")
            layout, allocates = handler(ctx, node, module)
        elif node.op == "call_function":
            handler = _function_handler(node.target)
            if handler is None:
                raise unsupported(node, "function not supported")
            layout, allocates = handler(ctx, node)
        elif node.op == "call_method":
            handler = METHOD_HANDLERS.get(node.target)
            if handler is None:
                raise unsupported(node, "method not supported")
            layout, allocates = handler(ctx, node)
        else:  # get_attr: a per-channel parameter, or a constant that would pin channels we cannot see
            handler = _channel_param
            layout, allocates = handler(ctx, node)
        _follow_channels_last(ctx, node, handler)
        ctx.layouts[node.name] = layout
        if layout is not None:
            shape = _shape(node)
            last = node.name in ctx.channels_last
            spatial = 1
            for s in ((shape[1:-1] if last else shape[2:]) if shape is not None and len(shape) > 2 else ()):
                spatial *= s
            inputs = tuple(a.name for a in node.all_input_nodes if ctx.layout(a) is not None)
            nodes.append(NodeRecord(node.name, layout, inputs, allocates, spatial, last))

    for unit, node in ctx.channel_params.items():
        if not any(ctx.uf.find(u) == ctx.uf.find(unit) for u in range(len(ctx.uf.parent)) if u != unit):
            raise unsupported(node, "a per-channel parameter that meets no feature map elementwise")
    for layout in output_layouts + ctx.extra_outputs:
        for seg in layout:
            root = ctx.uf.find(seg.unit)
            ctx.uf.fixed[root] = True

    uf = ctx.uf
    resolve = lambda layout: tuple(Segment(uf.find(s.unit), s.width, s.factor) for s in layout)  # noqa: E731
    roots = sorted({uf.find(i) for i in range(len(uf.parent))})
    producers: dict[int, list[str]] = {}
    for unit, names in ctx.producers.items():
        producers.setdefault(uf.find(unit), []).extend(names)
    layers = {
        name: LayerRecord(r.name, r.kind, resolve(r.in_layout),
                          None if r.out_unit is None else uf.find(r.out_unit), r.group_width)
        for name, r in ctx.layers.items()
    }
    multiples: dict[int, int] = {}
    for unit, m in ctx.multiples.items():
        root = uf.find(unit)
        multiples[root] = math.lcm(multiples.get(root, 1), m)
    for n in nodes:
        n.layout = resolve(n.layout)
    return GraphAnalysis(
        unit_base={r: uf.base[r] for r in roots},
        unit_fixed={r: uf.fixed[r] for r in roots},
        unit_producers=producers,
        layers=layers,
        nodes=nodes,
        unit_multiple=multiples,
    )
