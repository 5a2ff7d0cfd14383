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

Supporting another op is one entry in the handler tables below.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedOperationError


@dataclass(frozen=True)
class Segment:
    """`width` channels of `unit`, each spanning `factor` features (after flatten)."""

    unit: int
    width: int
    factor: int = 1


Layout = tuple  # tuple[Segment, ...]


@dataclass
class LayerRecord:
    name: str
    kind: str  # "conv" | "dwconv" | "gconv" | "linear" | "bn"
    in_layout: Layout
    out_unit: int | None  # producers only; followers keep their input layout
    group_width: int = 1  # gconv: channels per group, kept as the width changes


@dataclass
class NodeRecord:
    """One tensor of the graph, for memory accounting."""

    name: str
    layout: Layout | None
    inputs: tuple[str, ...]
    allocates: bool  # False: a view, or an op fused into its producer when deployed
    spatial: int = 1  # elements per channel (H*W), from shape propagation


@dataclass
class GraphAnalysis:
    unit_base: dict[int, int]  # root id -> base width
    unit_fixed: dict[int, bool]
    unit_producers: dict[int, list[str]]
    layers: dict[str, LayerRecord]
    nodes: list[NodeRecord] = field(default_factory=list)
    unit_multiple: dict[int, int] = field(default_factory=dict)  # root -> widths must be multiples of this


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []
        self.base: list[int] = []
        self.fixed: list[bool] = []

    def new(self, base: int, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.base.append(base)
        self.fixed.append(fixed)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        lo, hi = min(ra, rb), max(ra, rb)  # keep the earlier unit as root: stable names
        self.parent[hi] = lo
        self.fixed[lo] = self.fixed[lo] or self.fixed[hi]


class _Context:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.uf = _UnionFind()
        self.layouts: dict[str, Layout | None] = {}
        self.layers: dict[str, LayerRecord] = {}
        self.producers: dict[int, list[str]] = {}
        self.multiples: dict[int, int] = {}  # unit -> its widths' required multiple (grouped convs)
        self.extra_outputs: list[Layout] = []  # tensors packed into a structured output (namedtuple)

    def layout(self, arg) -> Layout | None:
        return self.layouts.get(arg.name) if isinstance(arg, fx.Node) else None

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        flat = []
        for a in list(node.args) + list(node.kwargs.values()):
            items = a if isinstance(a, (list, tuple)) else [a]
            flat += [x for x in items if isinstance(x, fx.Node) and self.layout(x) is not None]
        return flat

    def first_layout(self, node: fx.Node) -> Layout:
        args = self.tensor_args(node)
        if not args:
            raise unsupported(node, "no tensor input")
        return self.layouts[args[0].name]

    def merge(self, node: fx.Node, a: Layout, b: Layout) -> None:
        if len(a) != len(b) or any(x.width * x.factor != y.width * y.factor for x, y in zip(a, b)):
            raise unsupported(node, "operands have different channel layouts")
        for x, y in zip(a, b):
            self.uf.union(x.unit, y.unit)


def unsupported(node: fx.Node, why: str) -> UnsupportedOperationError:
    target = getattr(node.target, "__name__", node.target)
    return UnsupportedOperationError(
        f"cannot track channels through graph node '{node.name}' ({node.op} {target}): {why}. "
        "Supported: Conv2d (dense, depthwise, or grouped with as many outputs as inputs), Linear, BatchNorm, "
        "activations, pooling, dropout, stochastic depth, add/sub/mul, cat on dim 1, flatten/view(N, -1), "
        "namedtuple outputs; "
        "wrap other ops in a module that keeps channels, or pass the model without them"
    )


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


# --- handlers: (ctx, node, module or None) -> (layout, allocates) ---------------------------

def _passthrough(allocates: bool) -> Callable:
    def handler(ctx: _Context, node: fx.Node, module=None):
        return ctx.first_layout(node), allocates
    return handler


def _elementwise(ctx: _Context, node: fx.Node, module=None):
    args = ctx.tensor_args(node)
    if not args:
        return None, False
    out = ctx.layouts[args[0].name]
    for other in args[1:]:
        ctx.merge(node, out, ctx.layouts[other.name])
    return out, True


def _flatten_layout(ctx: _Context, node: fx.Node, src: fx.Node) -> Layout:
    shape = _shape(src)
    spatial = 1
    for s in shape[2:]:
        spatial *= s
    return tuple(Segment(s.unit, s.width, s.factor * spatial) for s in ctx.layouts[src.name])


def _flatten(ctx: _Context, node: fx.Node, module=None):
    src = node.args[0]
    start = module.start_dim if module is not None else (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0))
    end = module.end_dim if module is not None else (node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1))
    if start != 1 or end != -1:
        raise unsupported(node, f"only flatten(start_dim=1) keeps channels first (got {start}, {end})")
    return _flatten_layout(ctx, node, src), False


def _view(ctx: _Context, node: fx.Node, module=None):
    src, shape = node.args[0], _shape(node)
    if shape is None or len(shape) != 2 or _shape(src) is None or _shape(src)[0] != shape[0]:
        raise unsupported(node, "only view/reshape to (batch, -1) is supported")
    return _flatten_layout(ctx, node, src), False


def _mean(ctx: _Context, node: fx.Node, module=None):
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    ndim = len(_shape(node.args[0]))
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if not dims or any(d % ndim in (0, 1) for d in dims):
        raise unsupported(node, "only reductions over spatial dims keep channels")
    return ctx.first_layout(node), True


def _cat(ctx: _Context, node: fx.Node, module=None):
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    ndim = len(_shape(node))
    if dim % ndim != 1:
        raise unsupported(node, f"cat along dim {dim}; only the channel dim 1 is supported")
    layout: tuple = ()
    for t in tensors:
        layout += ctx.layouts[t.name]
    return layout, True


def _no_tensor(ctx: _Context, node: fx.Node, module=None):
    return None, False


def _structured_output(ctx: _Context, node: fx.Node, module=None):
    """A namedtuple of outputs (GoogLeNet's, Inception's): its tensors are network outputs."""
    ctx.extra_outputs += [ctx.layouts[a.name] for a in ctx.tensor_args(node)]
    return None, False


# functions found by their qualified name, so that their library is not imported to list them
NAMED_FUNCTION_HANDLERS: dict[str, Callable] = {
    # an identity at inference; in training it drops whole samples of a residual branch
    "torchvision.ops.stochastic_depth.stochastic_depth": _passthrough(False),
}


def _function_handler(target) -> Callable | None:
    handler = FUNCTION_HANDLERS.get(target)
    if handler is not None:
        return handler
    if isinstance(target, type) and issubclass(target, tuple) and hasattr(target, "_fields"):
        return _structured_output
    return NAMED_FUNCTION_HANDLERS.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")


def _check_in(node: fx.Node, layout: Layout, expected: int, what: str) -> None:
    got = sum(s.width * s.factor for s in layout)
    if got != expected:
        raise unsupported(node, f"{what} expects {expected} input features, layout has {got}")


def _conv(ctx: _Context, node: fx.Node, module: nn.Conv2d):
    layout = ctx.first_layout(node)
    _check_in(node, layout, module.in_channels, "conv")
    if module.groups == 1:
        unit = ctx.uf.new(module.out_channels)
        ctx.producers.setdefault(unit, []).append(node.target)
        ctx.layers[node.target] = LayerRecord(node.target, "conv", layout, unit)
        return (Segment(unit, module.out_channels),), True
    if module.groups == module.in_channels == module.out_channels:
        ctx.layers[node.target] = LayerRecord(node.target, "dwconv", layout, None)
        return layout, True
    if module.in_channels != module.out_channels:
        raise unsupported(node, f"grouped conv with groups={module.groups} maps {module.in_channels} to "
                                f"{module.out_channels} channels; only grouped convs that keep the width are supported")
    if len(layout) != 1 or layout[0].factor != 1:
        raise unsupported(node, "grouped conv on a concatenation: its groups would straddle the parts")
    group_width = module.in_channels // module.groups
    unit = layout[0].unit
    ctx.multiples[unit] = math.lcm(ctx.multiples.get(unit, 1), group_width)
    ctx.layers[node.target] = LayerRecord(node.target, "gconv", layout, None, group_width)
    return layout, True


def _linear(ctx: _Context, node: fx.Node, module: nn.Linear):
    layout = ctx.first_layout(node)
    if len(_shape(node.args[0])) != 2:
        raise unsupported(node, "Linear on a tensor that is not (batch, features)")
    _check_in(node, layout, module.in_features, "linear")
    unit = ctx.uf.new(module.out_features)
    ctx.producers.setdefault(unit, []).append(node.target)
    ctx.layers[node.target] = LayerRecord(node.target, "linear", layout, unit)
    return (Segment(unit, module.out_features),), True


def _batchnorm(ctx: _Context, node: fx.Node, module):
    layout = ctx.first_layout(node)
    _check_in(node, layout, module.num_features, "batchnorm")
    ctx.layers[node.target] = LayerRecord(node.target, "bn", layout, None)
    return layout, False  # folded into the conv before it when deployed


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

MODULE_HANDLERS: dict[type, Callable] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm2d: _batchnorm,
    nn.BatchNorm1d: _batchnorm,
    nn.Flatten: _flatten,
    nn.Dropout: _passthrough(False),
    nn.Identity: _passthrough(False),
    **{t: _passthrough(False) for t in _ACTIVATIONS},
    **{t: _passthrough(True) for t in _POOLS},
}

FUNCTION_HANDLERS: dict = {
    operator.add: _elementwise, operator.iadd: _elementwise, torch.add: _elementwise,
    operator.sub: _elementwise, torch.sub: _elementwise,
    operator.mul: _elementwise, operator.imul: _elementwise, torch.mul: _elementwise,
    operator.truediv: _elementwise,
    torch.cat: _cat, torch.concat: _cat,
    torch.flatten: _flatten,
    getattr: _no_tensor,
    **{f: _passthrough(False) for f in (F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu,
                                        F.sigmoid, torch.sigmoid, torch.relu, F.gelu, F.dropout,
                                        torch.tanh, F.leaky_relu)},
    **{f: _passthrough(True) for f in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                                       F.max_pool2d, F.avg_pool2d)},
}

METHOD_HANDLERS: dict[str, Callable] = {
    "add": _elementwise, "add_": _elementwise, "mul": _elementwise, "mul_": _elementwise,
    "sub": _elementwise, "div": _elementwise,
    "relu": _passthrough(False), "relu_": _passthrough(False), "sigmoid": _passthrough(False),
    "contiguous": _passthrough(False), "clone": _passthrough(True),
    "flatten": _flatten, "view": _view, "reshape": _view,
    "mean": _mean, "size": _no_tensor, "dim": _no_tensor,
}


def _module_handler(module: nn.Module) -> Callable | None:
    for cls in type(module).__mro__:
        if cls in MODULE_HANDLERS:
            return MODULE_HANDLERS[cls]
    return None


def trace(model: nn.Module, tracer_cls: type[fx.Tracer] = fx.Tracer) -> fx.GraphModule:
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
        else:  # get_attr: a constant tensor would pin channels we cannot see
            raise unsupported(node, "constant tensors in forward() are not supported")
        ctx.layouts[node.name] = layout
        if layout is not None:
            shape = _shape(node)
            spatial = 1
            for s in (shape[2:] if shape is not None and len(shape) > 2 else ()):
                spatial *= s
            inputs = tuple(a.name for a in node.all_input_nodes if ctx.layout(a) is not None)
            nodes.append(NodeRecord(node.name, layout, inputs, allocates, spatial))

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
