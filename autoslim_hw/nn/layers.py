"""Slimmable layers: ordinary Conv2d / Linear / BatchNorm modules whose active
widths are set per layer at run time.

The parameters are allocated at the supernet's largest width. A forward pass
uses the leading slice of each weight (a view, no copy), so every width shares
the same weights, as in slimmable networks and AutoSlim. A layer whose input
is a concatenation reads its input channels from several segments of the
weight; only that rare case gathers with an index tensor.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class _LeadingBlock(torch.autograd.Function):
    """`weight[:rows, :cols]` as one autograd op.

    Two chained slices cost two full-size zero-filled gradients in backward; this costs
    one. The forward returns a contiguous block because the CPU convolution kernels
    copy a strided weight into one anyway."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        ctx.full_shape, ctx.rows, ctx.cols = weight.shape, rows, cols
        return weight[:rows, :cols].contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        full = grad.new_zeros(ctx.full_shape)
        full[: ctx.rows, : ctx.cols] = grad
        return full, None, None


def leading_block(weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if rows == weight.shape[0]:
        return weight[:, :cols]
    if cols == weight.shape[1]:
        return weight[:rows]
    return _LeadingBlock.apply(weight, rows, cols)


class _Slimmable:
    """Mixin holding the active widths that `Supernet.set_config` writes."""

    active_in: int
    active_out: int
    in_index: torch.Tensor | None  # set only when the input is segmented (cat)

    def _init_active(self, in_max: int, out_max: int) -> None:
        self.active_in = in_max
        self.active_out = out_max
        self.in_index = None

    def set_active(self, active_in: int, active_out: int, in_index: torch.Tensor | None = None) -> None:
        self.active_in = active_in
        self.active_out = active_out
        self.in_index = in_index

    def extra_repr(self) -> str:  # shows the active slice next to the allocated shape
        return super().extra_repr() + f", active=({self.active_in}->{self.active_out})"


class SlimmableConv2d(_Slimmable, nn.Conv2d):
    """Conv2d with a slimmable width. A depthwise conv follows its input width; so does a
    grouped conv (`group_width` channels per group), whose groups scale with the width."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, depthwise: bool = False, bias: bool = True, padding_mode: str = "zeros",
                 group_width: int | None = None):
        self.group_width = 1 if depthwise else group_width  # None: dense
        groups = in_channels // self.group_width if self.group_width else 1
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        self.depthwise = depthwise
        self._init_active(in_channels, out_channels)

    @property
    def active_groups(self) -> int:
        return self.active_in // self.group_width if self.group_width else 1

    def active_weight(self) -> torch.Tensor:
        if self.active_out == self.out_channels and self.active_in == self.in_channels:
            return self.weight  # full width: skip the slicing ops and their backward
        if self.group_width:  # depthwise or grouped: (channels, channels per group, k, k)
            if self.in_index is not None:
                return self.weight.index_select(0, self.in_index)
            return self.weight[: self.active_out]
        if self.in_index is not None:
            return self.weight[: self.active_out].index_select(1, self.in_index)
        return leading_block(self.weight, self.active_out, self.active_in)

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out == self.out_channels:
            return self.bias
        if self.depthwise and self.in_index is not None:
            return self.bias.index_select(0, self.in_index)
        return self.bias[: self.active_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.active_weight(), self.active_bias()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.active_groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.active_groups)


class SlimmableLinear(_Slimmable, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self._init_active(in_features, out_features)

    def active_weight(self) -> torch.Tensor:
        if self.active_out == self.out_features and self.active_in == self.in_features:
            return self.weight
        if self.in_index is not None:
            return self.weight[: self.active_out].index_select(1, self.in_index)
        return leading_block(self.weight, self.active_out, self.active_in)

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out == self.out_features:
            return self.bias
        return self.bias[: self.active_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.active_weight(), self.active_bias())


class _SlimmableBatchNorm(_Slimmable):
    """BatchNorm over the active channels; running statistics are shared slices.

    Sharing statistics across widths is wrong for any width but the one trained
    last, which is why every config is BN-recalibrated before it is evaluated.
    """

    def _slice(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or self.active_in == self.num_features:
            return t
        if self.in_index is not None:
            return t.index_select(0, self.in_index)
        return t[: self.active_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, used by BN recalibration
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        running_mean, running_var = self.running_mean, self.running_var
        if running_mean is not None and self.in_index is not None and use_batch_stats and self.training:
            # index_select copies; write the updated statistics back afterwards
            mean, var = self._slice(running_mean), self._slice(running_var)
            out = F.batch_norm(x, mean, var, self._slice(self.weight), self._slice(self.bias),
                               True, momentum, self.eps)
            running_mean.index_copy_(0, self.in_index, mean)
            running_var.index_copy_(0, self.in_index, var)
            return out
        return F.batch_norm(
            x,
            self._slice(running_mean) if not self.training or self.track_running_stats else None,
            self._slice(running_var) if not self.training or self.track_running_stats else None,
            self._slice(self.weight), self._slice(self.bias),
            use_batch_stats, momentum, self.eps,
        )


class SlimmableBatchNorm2d(_SlimmableBatchNorm, nn.BatchNorm2d):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self._init_active(num_features, num_features)


class SlimmableBatchNorm1d(_SlimmableBatchNorm, nn.BatchNorm1d):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self._init_active(num_features, num_features)


class SlimmableLayerNorm(_Slimmable, nn.LayerNorm):
    """LayerNorm over the active channels: of a channels-last map or (batch, features), or, with
    `channels_first`, of an NCHW map (as torchvision's LayerNorm2d permutes around it).
    `plain_class` is the class `materialize` gives back (the model's own)."""

    def __init__(self, num_features: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 channels_first: bool = False, plain_class: type = nn.LayerNorm):
        super().__init__(num_features, eps, elementwise_affine, bias)
        self.channels_first = channels_first
        self.plain_class = plain_class
        self._init_active(num_features, num_features)

    def _slice(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or self.active_in == self.normalized_shape[0]:
            return t
        if self.in_index is not None:
            return t.index_select(0, self.in_index)
        return t[: self.active_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        y = F.layer_norm(x, (self.active_in,), self._slice(self.weight), self._slice(self.bias), self.eps)
        return y.permute(0, 3, 1, 2) if self.channels_first else y


class SlicedParameters:
    """Mixin for a module whose forward() reads per-channel parameters itself (ConvNeXt's
    `layer_scale`): reading one gives its active leading slice. The full parameter stays
    registered under its name, so state dicts and optimizers see one tensor."""

    _active_channels: dict  # name -> (active channels, allocated channels)

    def __getattr__(self, name: str):
        active = self.__dict__.get("_active_channels")
        if active is not None and name in active:
            full = super().__getattr__(name)  # a Proxy while torch.fx traces: compare ints only
            n, allocated = active[name]
            return full if n == allocated else full[:n]
        return super().__getattr__(name)


@contextlib.contextmanager
def unsliced_parameters(model: nn.Module):
    """Inside, per-channel parameters read whole: a graph traced there holds the parameter itself,
    not a slice of the active config (runs of that graph read them through the modules)."""
    saved = []
    for m in model.modules():
        if isinstance(m, SlicedParameters):
            active = m.__dict__["_active_channels"]
            saved.append((active, dict(active)))
            active.update({k: (full, full) for k, (_, full) in active.items()})
    try:
        yield
    finally:
        for active, before in saved:
            active.update(before)


_SLICED_CLASSES: dict[type, type] = {}


def with_sliced_parameters(module: nn.Module, names: dict[str, tuple[int, int]]) -> None:
    """Give `module` (in place) sliced reads of the parameters `names` (name -> (active, allocated
    channels))."""
    cls = type(module)
    if not isinstance(module, SlicedParameters):
        if cls not in _SLICED_CLASSES:
            _SLICED_CLASSES[cls] = type(cls.__name__, (SlicedParameters, cls), {"plain_class": cls})
        module.__class__ = _SLICED_CLASSES[cls]
        module.__dict__["_active_channels"] = {}
    module.__dict__["_active_channels"].update(names)


SLIMMABLE_TYPES = (SlimmableConv2d, SlimmableLinear, SlimmableBatchNorm2d, SlimmableBatchNorm1d, SlimmableLayerNorm)


def _channels_last_input(module, args):
    x = args[0]
    if x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


@contextlib.contextmanager
def channels_last_inputs(model: nn.Module):
    """Every convolution of `model` reads its input in channels-last layout while inside: oneDNN's
    CPU kernels run faster on it (the sums come in another order: results agree to rounding). A
    hook does it, not the input's layout alone, because a one-channel image has no layout to keep."""
    handles = [m.register_forward_pre_hook(_channels_last_input) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
