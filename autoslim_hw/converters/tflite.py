"""Write a plain PyTorch CNN as a .tflite file with the flatbuffer schema alone.

No converter package: the model is traced with torch.fx and each node becomes
one LiteRT builtin op, in NHWC layout. BatchNorm is folded into the conv before
it and ReLU/ReLU6 fused into the op before them, as a converter would, so the
file runs the ops the lookup tables price. Anything else is refused with
UnsupportedOperationError naming the node.
"""
from __future__ import annotations

import math
import operator
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as fb
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .._io import atomic_write_bytes
from ..errors import UnsupportedOperationError
from ._tflite_file import NHWC_DESCRIPTION, OP, TfliteFile, _new  # noqa: F401  (NHWC_DESCRIPTION: re-exported)

ACT = fb.ActivationFunctionType

_FUSED = {None: ACT.NONE, "relu": ACT.RELU, "relu6": ACT.RELU6}
_STATIC = ("size", getattr, operator.getitem, operator.floordiv)  # shape arithmetic: fixed by the input shapes


def _nhwc(shape) -> list[int]:
    shape = list(shape)
    return [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else shape


def _same_padding(size: int, k: int, s: int, d: int, p: int) -> str | None:
    """'VALID' or 'SAME' when TF padding gives PyTorch's symmetric padding p on this dim, else None."""
    eff = d * (k - 1) + 1
    out = (size + 2 * p - eff) // s + 1
    if p == 0:
        return "VALID"
    out_same = math.ceil(size / s)
    before = max((out_same - 1) * s + eff - size, 0) // 2
    return "SAME" if out == out_same and before == p else None


class _Writer(TfliteFile):
    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.modules = dict(gm.named_modules())
        self.env: dict[fx.Node, int] = {}  # node -> index of the tensor holding its value
        self.nonneg: set[int] = set()  # tensors known >= 0 (after a relu): zero padding is safe for maxpool
        self.parts: dict[fx.Node, list[int]] = {}  # chunk nodes -> their parts' tensors
        self.grouped: dict[fx.Node, bool] = {}  # channel-group views of a shuffle -> groups swapped yet

    # --- graph walking ---
    def kind(self, node: fx.Node):
        """The module class, function or method name a node runs."""
        if node.op == "call_module":
            return type(self.modules[node.target])
        return node.target if node.op in ("call_function", "call_method") else node.op

    def shape(self, node: fx.Node) -> list[int]:
        return list(node.meta["tensor_meta"].shape)

    def act(self, node: fx.Node) -> str | None:
        """'relu' or 'relu6' if the node is one, in any of its spellings."""
        k = self.kind(node)
        if k is F.relu6 or k is nn.ReLU6:
            return "relu6"
        return "relu" if k in (nn.ReLU, F.relu, torch.relu, torch.relu_, "relu", "relu_") else None

    def fuse_next(self, node: fx.Node, cls: type) -> fx.Node | None:
        """The single user of `node` if it is a `cls` module (so it can be folded into node's op)."""
        user = next(iter(node.users)) if len(node.users) == 1 else None
        return user if user is not None and user.op == "call_module" and self.kind(user) is cls else None

    def fuse_act(self, node: fx.Node) -> tuple[fx.Node, str | None]:
        """The node ending the chain node -> (relu | relu6), and the activation fused into node's op."""
        user = next(iter(node.users)) if len(node.users) == 1 else None
        act = self.act(user) if user is not None else None
        return (user, act) if act else (node, None)

    def error(self, node: fx.Node, why: str = "") -> UnsupportedOperationError:
        k = self.kind(node)
        what = getattr(k, "__name__", str(k))
        why = f": {why}" if why else ""
        return UnsupportedOperationError(f"cannot write node {node.name!r} ({what}) to .tflite{why}")

    def finish(self, first: fx.Node, last: fx.Node, out: int, nonneg: bool = False) -> None:
        """Map every node from `first` to `last` (a fused chain) to tensor `out`."""
        if nonneg:
            self.nonneg.add(out)
        node = first
        while True:
            self.env[node] = out
            if node is last:
                return
            node = next(iter(node.users))

    def conv(self, node: fx.Node, m: nn.Conv2d) -> None:
        x, (n, cin, h, w) = self.env[node.args[0]], self.shape(node.args[0])
        if m.padding_mode != "zeros" or m.groups not in (1, cin):
            raise self.error(node, "only zero padding and groups 1 or in_channels are supported")
        weight = m.weight.detach().double()
        bias = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_channels, dtype=torch.float64)
        last = node
        bn = self.fuse_next(node, nn.BatchNorm2d)
        if bn is not None:  # fold: y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta
            b = self.modules[bn.target]
            if b.running_mean is None:
                raise self.error(bn, "a BatchNorm without running statistics cannot be folded")
            scale = b.running_var.double().add(b.eps).rsqrt()
            if b.affine:
                scale = scale * b.weight.detach().double()
            bias = (bias - b.running_mean.double()) * scale + (b.bias.detach().double() if b.affine else 0)
            weight, last = weight * scale[:, None, None, None], bn
        last, act = self.fuse_act(last)
        (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
        if isinstance(m.padding, str):  # PyTorch's 'same' (stride 1) splits the padding as TF SAME does
            padding = fb.Padding.SAME if m.padding == "same" else fb.Padding.VALID
        else:
            x, padding = self.pad(node, x, [n, h, w, cin], [(kh, sh, dh, m.padding[0]), (kw, sw, dw, m.padding[1])])
        out = _nhwc(self.shape(last))
        b_idx = self.const(bias.float().numpy(), f"{node.name}.bias")
        common = dict(padding=padding, strideH=sh, strideW=sw, dilationHFactor=dh, dilationWFactor=dw,
                      fusedActivationFunction=_FUSED[act])
        if m.groups == 1 or cin == 1:
            w_idx = self.const(weight.permute(0, 2, 3, 1).float().numpy(), f"{node.name}.weight")  # OHWI
            y = self.op(OP.CONV_2D, [x, w_idx, b_idx], out, last.name, _new(fb.Conv2DOptionsT, **common),
                        fb.BuiltinOptions.Conv2DOptions)
        else:  # depthwise: output channel i * multiplier + j reads input channel i, in PyTorch and TFLite alike
            w_idx = self.const(weight.permute(1, 2, 3, 0).float().numpy(), f"{node.name}.weight")  # 1HWO
            opts = _new(fb.DepthwiseConv2DOptionsT, depthMultiplier=m.out_channels // cin, **common)
            y = self.op(OP.DEPTHWISE_CONV_2D, [x, w_idx, b_idx], out, last.name, opts,
                        fb.BuiltinOptions.DepthwiseConv2DOptions)
        self.finish(node, last, y, act is not None)

    def pad(self, node: fx.Node, x: int, nhwc: list[int], dims, zero_pad_ok: bool = True) -> tuple[int, int]:
        """TF padding for (kernel, stride, dilation, pad) per spatial dim; a PAD op when neither fits."""
        modes = {_same_padding(size, *d) for size, d in zip(nhwc[1:3], dims)}
        if len(modes) == 1 and None not in modes:
            return x, fb.Padding.SAME if modes == {"SAME"} else fb.Padding.VALID
        if not zero_pad_ok:
            raise self.error(node, "its padding is not TF SAME and its input may be negative (PyTorch pads with -inf)")
        (ph, pw) = dims[0][3], dims[1][3]
        pads = self.const(np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32), f"{node.name}.pads")
        out = [nhwc[0], nhwc[1] + 2 * ph, nhwc[2] + 2 * pw, nhwc[3]]
        y = self.op(OP.PAD, [x, pads], out, f"{node.name}.pad", fb.PadOptionsT(), fb.BuiltinOptions.PadOptions)
        if x in self.nonneg:
            self.nonneg.add(y)
        return y, fb.Padding.VALID

    def maxpool(self, node: fx.Node, k, s, p, d, ceil: bool) -> None:
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(s or k), pair(p)
        if pair(d) != (1, 1) or ceil:
            raise self.error(node, "dilation and ceil_mode are not supported")
        x, nhwc = self.env[node.args[0]], _nhwc(self.shape(node.args[0]))
        x, padding = self.pad(node, x, nhwc, [(kh, sh, 1, ph), (kw, sw, 1, pw)], zero_pad_ok=x in self.nonneg)
        opts = _new(fb.Pool2DOptionsT, padding=padding, strideH=sh, strideW=sw, filterHeight=kh, filterWidth=kw)
        y = self.op(OP.MAX_POOL_2D, [x], _nhwc(self.shape(node)), node.name, opts, fb.BuiltinOptions.Pool2DOptions)
        self.finish(node, node, y, x in self.nonneg)

    def linear(self, node: fx.Node, m: nn.Linear) -> None:
        if len(self.shape(node.args[0])) != 2:
            raise self.error(node, "only 2-D inputs (batch, features) are supported")
        last, act = self.fuse_act(node)
        bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_features)
        ins = [self.env[node.args[0]], self.const(m.weight.detach().numpy(), f"{node.name}.weight"),
               self.const(bias.numpy(), f"{node.name}.bias")]
        opts = _new(fb.FullyConnectedOptionsT, fusedActivationFunction=_FUSED[act])
        y = self.op(OP.FULLY_CONNECTED, ins, self.shape(last), last.name, opts, fb.BuiltinOptions.FullyConnectedOptions)
        self.finish(node, last, y, act is not None)

    def add(self, node: fx.Node) -> None:
        a, b = node.args[:2]
        if node.kwargs or len(node.args) != 2 or not all(isinstance(v, fx.Node) and v in self.env for v in (a, b)) \
                or self.shape(a) != self.shape(b):
            raise self.error(node, "only the sum of two tensors of one shape is supported")
        last, act = self.fuse_act(node)
        opts = _new(fb.AddOptionsT, fusedActivationFunction=_FUSED[act])
        y = self.op(OP.ADD, [self.env[a], self.env[b]], _nhwc(self.shape(last)), last.name, opts,
                    fb.BuiltinOptions.AddOptions)
        self.finish(node, last, y, act is not None)

    def mean(self, node: fx.Node, axes, keep_dims: bool) -> None:
        if len(self.shape(node.args[0])) != 4 or sorted(a % 4 for a in axes) != [2, 3]:
            raise self.error(node, "only the mean over H and W of an NCHW tensor is supported")
        opts = _new(fb.ReducerOptionsT, keepDims=keep_dims)
        ins = [self.env[node.args[0]], self.const(np.array([1, 2], np.int32), f"{node.name}.axes")]
        y = self.op(OP.MEAN, ins, _nhwc(self.shape(node)), node.name, opts, fb.BuiltinOptions.ReducerOptions)
        self.finish(node, node, y)

    def reshape(self, node: fx.Node) -> None:
        src, out = self.shape(node.args[0]), self.shape(node)
        if src == out:
            self.env[node] = self.env[node.args[0]]
            return
        if len(src) == 4 and len(out) == 5 and out[1] * out[2] == src[1] and out[3:] == src[2:]:
            # a channel shuffle's view into (groups, channels per group): NHWC (N*H*W, groups, C/groups)
            self.grouped[node] = False
            self._reshape(node, [src[0] * src[2] * src[3], out[1], out[2]])
            return
        if node.args[0] in self.grouped and len(out) == 4:
            if not self.grouped[node.args[0]]:
                raise self.error(node, "a view back from channel groups that were not swapped")
            self._reshape(node, _nhwc(out))
            return
        # (N, C, 1, 1) -> (N, C) keeps the channel order in NHWC too; larger spatial would not
        if len(src) != 4 or src[2:] != [1, 1] or out != src[:2]:
            raise self.error(node, f"only flattening 1x1 spatial maps is supported, not {src} -> {out}")
        self._reshape(node, out)

    def _reshape(self, node: fx.Node, out: list[int]) -> None:
        opts = _new(fb.ReshapeOptionsT, newShape=out)
        y = self.op(OP.RESHAPE, [self.env[node.args[0]], self.const(np.array(out, np.int32), f"{node.name}.shape")],
                    out, node.name, opts, fb.BuiltinOptions.ReshapeOptions)
        self.finish(node, node, y, self.env[node.args[0]] in self.nonneg)

    def transpose(self, node: fx.Node) -> None:
        src = node.args[0]
        if src not in self.grouped or sorted(d % 5 for d in node.args[1:3]) != [1, 2]:
            raise self.error(node, "only the transpose of a channel shuffle is supported")
        x = self.env[src]
        rows, groups, per = self.tensors[x].shape
        perm = self.const(np.array([0, 2, 1], np.int32), f"{node.name}.perm")
        y = self.op(OP.TRANSPOSE, [x, perm], [rows, per, groups], node.name, fb.TransposeOptionsT(),
                    fb.BuiltinOptions.TransposeOptions)
        self.grouped[node] = True
        self.finish(node, node, y, x in self.nonneg)

    def cat(self, node: fx.Node) -> None:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if len(self.shape(node)) != 4 or dim % 4 != 1:
            raise self.error(node, "only concatenating NCHW maps along the channels is supported")
        ins = [self.env[t] for t in tensors]
        opts = _new(fb.ConcatenationOptionsT, axis=3)
        y = self.op(OP.CONCATENATION, ins, _nhwc(self.shape(node)), node.name, opts,
                    fb.BuiltinOptions.ConcatenationOptions)
        self.finish(node, node, y, all(i in self.nonneg for i in ins))

    def chunk(self, node: fx.Node) -> None:
        """x.chunk(n, dim=1) into equal parts: SPLIT along NHWC's channels; getitem picks a part."""
        src = node.args[0]
        n = node.args[1] if len(node.args) > 1 else node.kwargs.get("chunks")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        shape = self.shape(src)
        if len(shape) != 4 or dim % 4 != 1 or not isinstance(n, int) or shape[1] % n:
            raise self.error(node, "only chunking NCHW maps into equal parts along the channels is supported")
        part = _nhwc([shape[0], shape[1] // n, shape[2], shape[3]])
        axis = self.const(np.array(3, np.int32), f"{node.name}.axis")
        outs = self.op(OP.SPLIT, [axis, self.env[src]], part, node.name, _new(fb.SplitOptionsT, numSplits=n),
                       fb.BuiltinOptions.SplitOptions, outputs=n)
        self.parts[node] = outs if n > 1 else [outs]
        for o in self.parts[node]:
            if self.env[src] in self.nonneg:
                self.nonneg.add(o)

    def unary(self, node: fx.Node, code: int, nonneg: bool = False) -> None:
        y = self.op(code, [self.env[node.args[0]]], _nhwc(self.shape(node)), node.name)
        self.finish(node, node, y, nonneg)

    def _mul(self, a: int, b: int, shape: list[int], name: str) -> int:
        return self.op(OP.MUL, [a, b], shape, name, _new(fb.MulOptionsT, fusedActivationFunction=ACT.NONE),
                       fb.BuiltinOptions.MulOptions)

    def mul(self, node: fx.Node) -> None:
        """The product of two maps, one of them (N, C, 1, 1) or of equal shape (squeeze-and-excitation)."""
        a, b = node.args[:2]
        if node.kwargs or len(node.args) != 2 or not all(isinstance(v, fx.Node) and v in self.env for v in (a, b)):
            raise self.error(node, "only the product of two tensors is supported")
        y = self._mul(self.env[a], self.env[b], _nhwc(self.shape(node)), node.name)
        self.finish(node, node, y, self.env[a] in self.nonneg and self.env[b] in self.nonneg)

    def silu(self, node: fx.Node) -> None:
        """x * sigmoid(x): LOGISTIC then MUL (what converters emit for SiLU)."""
        x, shape = self.env[node.args[0]], _nhwc(self.shape(node))
        s = self.op(OP.LOGISTIC, [x], shape, f"{node.name}.sigmoid")
        self.finish(node, node, self._mul(x, s, shape, node.name))

    def hardsigmoid(self, node: fx.Node) -> None:
        """relu6(x + 3) / 6: ADD, RELU6, MUL (LiteRT has no hard sigmoid op)."""
        x, shape = self.env[node.args[0]], _nhwc(self.shape(node))
        three = self.const(np.array([3.0], np.float32), f"{node.name}.three")
        t = self.op(OP.ADD, [x, three], shape, f"{node.name}.add", _new(fb.AddOptionsT, fusedActivationFunction=ACT.RELU6),
                    fb.BuiltinOptions.AddOptions)
        sixth = self.const(np.array([1 / 6], np.float32), f"{node.name}.sixth")
        self.finish(node, node, self._mul(t, sixth, shape, node.name), nonneg=True)

    def visit(self, node: fx.Node) -> None:
        k, m = self.kind(node), self.modules.get(node.target) if node.op == "call_module" else None
        args = lambda *names: {**dict(zip(names, node.args)), **node.kwargs}  # noqa: E731
        if k is nn.Conv2d:
            self.conv(node, m)
        elif k is nn.Linear:
            self.linear(node, m)
        elif k in (nn.Dropout, nn.Identity) or (k is F.dropout and args("x", "p", "training").get("training") is False):
            self.env[node] = self.env[node.args[0]]
        elif k is nn.AdaptiveAvgPool2d or k is F.adaptive_avg_pool2d:
            size = m.output_size if m is not None else args("x", "output_size")["output_size"]
            if size not in (1, (1, 1), [1, 1]):
                raise self.error(node, "only output size 1 is supported")
            self.mean(node, (2, 3), keep_dims=True)
        elif k in (torch.mean, "mean"):
            a = args("x", "dim", "keepdim")
            if a.get("dim") is None or a.get("dtype") is not None:
                raise self.error(node, "only x.mean((2, 3)) is supported")
            self.mean(node, a["dim"], bool(a.get("keepdim", False)))
        elif k in (torch.flatten, torch.reshape, "flatten", "view", "reshape", nn.Flatten):
            self.reshape(node)
        elif k in (operator.add, operator.iadd, torch.add, "add", "add_"):
            self.add(node)
        elif k in (torch.cat, torch.concat):
            self.cat(node)
        elif k in ("chunk", torch.chunk):
            self.chunk(node)
        elif k is operator.getitem and node.args[0] in self.parts:
            self.env[node] = self.parts[node.args[0]][node.args[1]]
        elif k in ("transpose", torch.transpose):
            self.transpose(node)
        elif k == "contiguous":
            self.env[node] = self.env[node.args[0]]
            if node.args[0] in self.grouped:
                self.grouped[node] = self.grouped[node.args[0]]
        elif k is nn.MaxPool2d:
            self.maxpool(node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        elif k is F.max_pool2d:
            a = args("x", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
            self.maxpool(node, a["kernel_size"], a.get("stride"), a.get("padding", 0), a.get("dilation", 1),
                         a.get("ceil_mode", False))
        elif k is nn.Hardswish or k is F.hardswish:
            self.unary(node, OP.HARD_SWISH)
        elif k in (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid"):
            self.unary(node, OP.LOGISTIC, nonneg=True)
        elif k is nn.SiLU or k is F.silu:
            self.silu(node)
        elif k is nn.Hardsigmoid or k is F.hardsigmoid:
            self.hardsigmoid(node)
        elif k in (operator.mul, torch.mul, "mul"):
            self.mul(node)
        elif getattr(k, "__qualname__", None) == "stochastic_depth" and node.args[3:4] == (False,):
            self.env[node] = self.env[node.args[0]]  # stochastic depth at inference: the identity
        elif self.act(node):
            self.unary(node, OP.RELU6 if self.act(node) == "relu6" else OP.RELU, nonneg=True)
        elif k in (nn.BatchNorm2d, nn.BatchNorm1d, F.batch_norm):
            raise self.error(node, "BatchNorm is folded into the conv right before it; this one follows no conv")
        else:
            raise self.error(node)


def _trace(model: nn.Module, input_shapes) -> fx.GraphModule:
    """The eval-mode graph (as export_onnx exports), each node's output shape in node.meta."""
    was_training = model.training
    model.eval()
    try:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as e:  # data-dependent control flow and the like
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UnsupportedOperationError(f"cannot trace {type(model).__name__} with torch.fx: {msg}") from e
        with torch.no_grad():
            ShapeProp(gm).propagate(*[torch.randn(s) for s in input_shapes])
        return gm
    finally:
        model.train(was_training)


def write_tflite(model: nn.Module, input_shapes: list[tuple[int, ...]], path: str | os.PathLike) -> Path:
    """Write `model` (plain PyTorch, NCHW inputs) as a float32 .tflite file, converted in eval mode.
    The file's 4-D inputs and outputs are NHWC; others keep their shape."""
    gm = _trace(model, input_shapes)
    w = _Writer(gm)
    inputs, outputs = [], []
    for node in gm.graph.nodes:
        if node in w.env:  # already folded into an earlier op
            continue
        if node.op == "placeholder":
            w.env[node] = w.tensor(_nhwc(w.shape(node)), node.name)
            inputs.append(w.env[node])
        elif node.op == "output":
            results = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
            outputs = [w.env[r] for r in results]
        elif w.kind(node) in _STATIC and "tensor_meta" not in node.meta:
            continue  # read by view/reshape, whose output shape ShapeProp already knows
        elif node.op == "get_attr":
            raise w.error(node, "constant tensors in the graph are not supported")
        else:
            w.visit(node)
    atomic_write_bytes(path, w.serialize(inputs, outputs))
    return Path(path)
