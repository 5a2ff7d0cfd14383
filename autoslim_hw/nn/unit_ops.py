"""How each op moves channels: one handler per module type, function or method, in the tables
at the bottom. Supporting another op is one entry there. A handler takes (context, node,
module or None) and returns the node's layout and whether it allocates a tensor when deployed."""
from __future__ import annotations

import math
import operator
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .channel_graph import Layout, LayerRecord, Segment, _Context, _shape, unsupported

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
