"""The channel graph that unit discovery builds: for every tensor, its channel *layout* (the
units its channels come from, in order), the layers found so far, and the union-find that
ties units together. `unit_ops` fills it, one handler per op; `units.analyze` drives them."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx

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
    kind: str  # "conv" | "dwconv" | "gconv" | "linear" | "bn" | "ln" | "param" (a per-channel parameter)
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
    channels_last: bool = False  # (N, H, W, C): after a permute


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
        self.tuples: dict[str, list[Layout]] = {}  # chunk/split results: one layout per part
        self.grouped: dict[str, tuple[int, bool]] = {}  # (N, g, C/g, H, W) views: (g, dims 1 and 2 swapped)
        self.channels_last: set[str] = set()  # tensors whose channels are the last dim (after a permute)
        self.channel_params: dict[int, fx.Node] = {}  # unit of a per-channel parameter -> its get_attr node

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
        "LayerNorm over channels, activations, pooling, dropout, stochastic depth, add/sub/mul, per-channel "
        "parameters, cat, chunk and split on dim 1, channel shuffle (view to groups, transpose, view back), "
        "permute to channels-last and back, flatten/view(N, -1), namedtuple outputs; "
        "wrap other ops in a module that keeps channels, or pass the model without them"
    )


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
