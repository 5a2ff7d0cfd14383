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

def _passthrough(allocates: bool, any_dim: bool = False) -> Callable:
    """An op that keeps channels. `any_dim`: it works on each element (an activation) and so
    also on a channels-last tensor; pooling does not."""
    def handler(ctx: _Context, node: fx.Node, module=None):
        return ctx.first_layout(node), allocates
    handler.any_dim = any_dim
    return handler


def _any_dim(handler: Callable) -> Callable:
    handler.any_dim = True  # the op follows the channels wherever they are (see units.analyze)
    return handler


@_any_dim
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
    src_shape = _shape(src)
    if shape is None or src_shape is None or shape[0] != src_shape[0]:
        raise unsupported(node, "only views that keep the batch dim are supported")
    if len(shape) == 2:
        return _flatten_layout(ctx, node, src), False
    if len(src_shape) == 4 and len(shape) == 5 and shape[1] * shape[2] == src_shape[1] and shape[3:] == src_shape[2:]:
        ctx.grouped[node.name] = (shape[1], False)  # the channels viewed as (groups, channels per group)
        return ctx.layouts[src.name], False
    if src.name in ctx.grouped and len(shape) == 4 and shape[1] == src_shape[1] * src_shape[2] \
            and shape[2:] == src_shape[3:]:
        groups, swapped = ctx.grouped[src.name]
        layout = ctx.layouts[src.name]
        return (_shuffle(ctx, node, layout, groups) if swapped else layout), False
    raise unsupported(node, "only view/reshape to (batch, -1), or to channel groups and back (a channel shuffle), "
                            "is supported")


def _parts(node: fx.Node, layout: Layout, n: int) -> list[Layout]:
    """A layout cut into n equal parts along the channels, each part whole segments: n segments of
    equal size (a concatenation), or one segment whose channels span a multiple of n features
    (a shuffled tensor: each part then spans 1/n of every channel's features)."""
    if len(layout) == n and len({s.width * s.factor for s in layout}) == 1:
        return [(s,) for s in layout]
    if len(layout) == 1 and layout[0].factor % n == 0:
        s = layout[0]
        return [(Segment(s.unit, s.width, s.factor // n),)] * n
    raise unsupported(node, f"splitting channels into {n} parts that are not whole units (a split inside one "
                            "unit's channels would not slim with it)")


def _shuffle(ctx: _Context, node: fx.Node, layout: Layout, groups: int) -> Layout:
    """ShuffleNet's channel shuffle: channel i of each of the `groups` parts side by side. The
    parts are tied to one unit (so they slim together) and the result keeps that unit's order:
    each of its channels spans `groups` times the features."""
    parts = _parts(node, layout, groups)
    if len({(p[0].width, p[0].factor) for p in parts}) != 1:
        raise unsupported(node, "channel shuffle of parts with different widths")
    for p in parts[1:]:
        ctx.uf.union(parts[0][0].unit, p[0].unit)
    first = parts[0][0]
    return (Segment(first.unit, first.width, first.factor * groups),)


def _dim_arg(node: fx.Node, position: int, default):
    return node.args[position] if len(node.args) > position else node.kwargs.get("dim", default)


def _chunk(ctx: _Context, node: fx.Node, module=None):
    """x.chunk(n, dim=1) / torch.split(x, size, dim=1) into equal parts: a tuple of layouts that
    `getitem` picks from."""
    src = node.args[0]
    dim = _dim_arg(node, 2, 0)
    if dim % len(_shape(src)) != 1:
        raise unsupported(node, f"split along dim {dim}; only the channel dim 1 is supported")
    size = node.args[1] if len(node.args) > 1 else node.kwargs.get("chunks", node.kwargs.get("split_size_or_sections"))
    channels = _shape(src)[1]
    if node.target in ("split", torch.split):
        if not isinstance(size, int) or channels % size:
            raise unsupported(node, f"split into unequal parts ({size}); only equal parts are supported")
        size = channels // size
    if not isinstance(size, int) or size < 1 or channels % size:
        raise unsupported(node, f"chunk into {size} parts of {channels} channels; only equal parts are supported")
    ctx.tuples[node.name] = _parts(node, ctx.layouts[src.name], size)
    return None, False


def _getitem(ctx: _Context, node: fx.Node, module=None):
    src, index = node.args[0], node.args[1]
    if isinstance(src, fx.Node) and src.name in ctx.tuples:
        return ctx.tuples[src.name][index], False
    if ctx.layout(src) is not None:
        raise unsupported(node, "indexing or slicing a feature map")
    return None, False  # an int of a size() or a shape


def _transpose(ctx: _Context, node: fx.Node, module=None):
    src = node.args[0]
    dims = sorted(d % 5 for d in node.args[1:3]) if len(node.args) >= 3 else None
    if src.name not in ctx.grouped or dims != [1, 2]:
        raise unsupported(node, "transpose of a feature map; only swapping channel groups (a channel shuffle) "
                                "is supported")
    groups, swapped = ctx.grouped[src.name]
    ctx.grouped[node.name] = (groups, not swapped)
    return ctx.layouts[src.name], True  # the shuffle copies


@_any_dim
def _same_tensor(ctx: _Context, node: fx.Node, module=None):
    """contiguous(): the same channels (a copy only where the layout changed)."""
    src = node.args[0]
    if isinstance(src, fx.Node) and src.name in ctx.grouped:
        ctx.grouped[node.name] = ctx.grouped[src.name]
    return ctx.first_layout(node), False


@_any_dim
def _mean(ctx: _Context, node: fx.Node, module=None):
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    ndim = len(_shape(node.args[0]))
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    channel_dim = ndim - 1 if node.args[0].name in ctx.channels_last else 1
    if not dims or any(d % ndim in (0, channel_dim) for d in dims):
        raise unsupported(node, "only reductions over spatial dims keep channels")
    return ctx.first_layout(node), True


def _cat(ctx: _Context, node: fx.Node, module=None):
    tensors = node.args[0]
    dim = _dim_arg(node, 1, 0)
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
    "torchvision.ops.stochastic_depth.stochastic_depth": _passthrough(False, any_dim=True),
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


@_any_dim
def _linear(ctx: _Context, node: fx.Node, module: nn.Linear):
    layout = ctx.first_layout(node)
    if len(_shape(node.args[0])) != 2 and node.args[0].name not in ctx.channels_last:
        raise unsupported(node, "Linear on a tensor that is not (batch, features) or channels-last (after a permute)")
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


@_any_dim
def _layernorm(ctx: _Context, node: fx.Node, module: nn.LayerNorm):
    """LayerNorm over the channels: of a channels-last map or (batch, features), or of a
    channels-first map when the module permutes itself (torchvision's LayerNorm2d: told apart
    from a LayerNorm over the width by running it)."""
    src = node.args[0]
    shape, layout = _shape(src), ctx.first_layout(node)
    channels = tuple(module.normalized_shape)
    if src.name in ctx.channels_last or len(shape) == 2:
        if channels != (shape[-1],):
            raise unsupported(node, f"LayerNorm over {channels}, not the channels")
    elif len(shape) == 4 and channels == (shape[1],) and _normalizes_dim1(module, shape[1]):
        pass
    else:
        raise unsupported(node, f"LayerNorm over {channels} of a {tuple(shape)} map: only over the channels")
    _check_in(node, layout, channels[0], "layernorm")
    ctx.layers[node.target] = LayerRecord(node.target, "ln", layout, None)
    return layout, True


@torch.no_grad()
def _normalizes_dim1(module: nn.LayerNorm, channels: int) -> bool:
    x = torch.randn(1, channels, 3, 2, generator=torch.Generator().manual_seed(0))
    x = x.to(next(module.parameters(), x).device)
    try:
        got = module(x)
    except RuntimeError:
        return False
    want = F.layer_norm(x.permute(0, 2, 3, 1), (channels,), module.weight, module.bias, module.eps).permute(0, 3, 1, 2)
    return torch.allclose(got, want, atol=1e-5)


_TO_LAST, _TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


def _permute(ctx: _Context, node: fx.Node, module=None):
    """(N, C, H, W) <-> (N, H, W, C), as around a channels-last LayerNorm or Linear (ConvNeXt)."""
    src = node.args[0]
    dims = node.args[1] if len(node.args) == 2 else node.args[1:]
    dims = tuple(dims if dims else node.kwargs.get("dims", ()))
    last = src.name in ctx.channels_last
    if dims == _TO_LAST and not last:
        ctx.channels_last.add(node.name)
    elif dims != _TO_FIRST or not last:
        raise unsupported(node, f"permute{dims}; only (0, 2, 3, 1) to channels-last and (0, 3, 1, 2) back "
                                "are supported")
    return ctx.first_layout(node), True


def _channel_param(ctx: _Context, node: fx.Node, module=None):
    """A parameter with one value per channel, (C,) or (C, 1, 1), that scales or shifts a map
    (ConvNeXt's layer scale): it slims with the map it meets (see `units.analyze`)."""
    try:
        tensor = ctx.gm.get_parameter(node.target)
    except AttributeError:
        raise unsupported(node, "constant tensors in forward() are not supported; only per-channel "
                                "parameters") from None
    shape = tuple(tensor.shape)
    if len(shape) not in (1, 3) or any(d != 1 for d in shape[1:]):
        raise unsupported(node, f"a parameter of shape {shape} in forward(); only per-channel parameters "
                                "(C,) or (C, 1, 1) are supported")
    unit = ctx.uf.new(shape[0])
    ctx.channel_params[unit] = node
    if len(shape) == 1:
        ctx.channels_last.add(node.name)
    ctx.layers[node.target] = LayerRecord(node.target, "param", (Segment(unit, shape[0]),), None)
    return (Segment(unit, shape[0]),), False


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

MODULE_HANDLERS: dict[type, Callable] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm2d: _batchnorm,
    nn.BatchNorm1d: _batchnorm,
    nn.Flatten: _flatten,
    nn.LayerNorm: _layernorm,
    nn.Dropout: _passthrough(False, any_dim=True),
    nn.Identity: _passthrough(False, any_dim=True),
    **{t: _passthrough(False, any_dim=True) for t in _ACTIVATIONS},
    **{t: _passthrough(True) for t in _POOLS},
}

FUNCTION_HANDLERS: dict = {
    operator.add: _elementwise, operator.iadd: _elementwise, torch.add: _elementwise,
    operator.sub: _elementwise, torch.sub: _elementwise,
    operator.mul: _elementwise, operator.imul: _elementwise, torch.mul: _elementwise,
    operator.truediv: _elementwise,
    torch.cat: _cat, torch.concat: _cat,
    torch.flatten: _flatten,
    torch.chunk: _chunk, torch.split: _chunk, torch.transpose: _transpose, torch.permute: _permute,
    operator.getitem: _getitem, operator.floordiv: _elementwise,
    getattr: _no_tensor,
    **{f: _passthrough(False, any_dim=True) for f in (F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu,
                                        F.sigmoid, torch.sigmoid, torch.relu, F.gelu, F.dropout,
                                        torch.tanh, F.leaky_relu)},
    **{f: _passthrough(True) for f in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                                       F.max_pool2d, F.avg_pool2d)},
}

METHOD_HANDLERS: dict[str, Callable] = {
    "add": _elementwise, "add_": _elementwise, "mul": _elementwise, "mul_": _elementwise,
    "sub": _elementwise, "div": _elementwise,
    "relu": _passthrough(False, any_dim=True), "relu_": _passthrough(False, any_dim=True),
    "sigmoid": _passthrough(False, any_dim=True),
    "contiguous": _same_tensor, "clone": _passthrough(True, any_dim=True), "permute": _permute,
    "chunk": _chunk, "split": _chunk, "transpose": _transpose,
    "flatten": _flatten, "view": _view, "reshape": _view,
    "mean": _mean, "size": _no_tensor, "dim": _no_tensor,
}


def _module_handler(module: nn.Module) -> Callable | None:
    for cls in type(module).__mro__:
        if cls in MODULE_HANDLERS:
            return MODULE_HANDLERS[cls]
    return None
