"""MACs, parameters and memory of a supernet config, analytically.

Conventions (the AutoSlim paper's, and the published MobileNet/ResNet counts):
- MACs: conv `Cin * Cout * k * k * Ho * Wo / groups`, linear `in * out`; BatchNorm,
  activations, adds and pooling are free.
- params: every parameter element the config uses (BN scale and shift included).
- memory: "a summary of all feature maps and weights", in elements, as the paper's Table 1
  counts it: every parameter (BN included) plus the output of every conv and linear layer,
  the input not included (BN and activations run in place; adds and pools are not counted).
  tests/test_counting.py checks it against Table 1 (MobileNetV1/V2 and MNasNet at their
  published widths, ResNet-50).
- peak_activation_bytes: float32 bytes of the tensors alive at once under a simple
  liveness model (a tensor lives from its producer to its last consumer).

What a deployed network needs is another measure, kept under its own names:
`peak_activation_bytes` (above), `memory_counts(...).folded_param_bytes` (BN folded) and
`deployed_bytes` (the two summed: the search's `memory` cost), and ONNX Runtime's own profile
(`profilers.memory.profile_onnx_memory`).

`memory_counts` adds per-layer bytes (parameters, input and output activations) and the
parameter bytes as deployed, with each BN folded into its conv (what ONNX Runtime holds;
compare `profilers.memory.profile_onnx_memory`).

Spatial sizes do not depend on widths, so one shape pass per input size serves
every config; counting a config is then arithmetic over the layer table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .nn.config import ChannelConfig, slot_widths
from .nn.layers import SLIMMABLE_TYPES
from .nn.supernet import Supernet, slot_module

BYTES_PER_ELEMENT = 4  # float32


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    macs: int
    params: int


@dataclass(frozen=True)
class Counts:
    macs: int
    params: int
    memory: int  # elements, the paper's convention: params + conv/linear outputs
    feature_elements: int  # the conv/linear outputs of that sum
    peak_activation_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


FEATURE_KINDS = ("conv", "dwconv", "gconv", "linear")  # the layers whose outputs the paper's memory counts


def _hw(shape: tuple[int, ...], channels_last: bool = False) -> tuple[int, int]:
    if len(shape) != 4:
        return (1, 1)
    return (shape[1], shape[2]) if channels_last else (shape[2], shape[3])


def layer_costs(supernet: Supernet, config: ChannelConfig | None = None, input_size=None) -> list[LayerCost]:
    config = supernet.config if config is None else config
    widths = supernet.space.widths(config)
    geometry = supernet.layer_geometry(input_size)
    last = supernet.channels_last_nodes
    costs = []
    for slot in supernet.space.layers.values():
        module = slot_module(supernet.net, slot)
        cin, cout = slot_widths(slot, widths)
        # a layer outside the inference graph (a training-only head): its params, no work
        in_shape, out_shape = geometry.get(slot.name, ((0, 0, 0, 0), (0, 0, 0, 0)))
        channels_last = slot.name.replace(".", "_") in last  # its input and output: (N, H, W, C)
        out_hw = _hw(out_shape, channels_last)
        groups, kernel, stride, macs = 1, (1, 1), (1, 1), 0
        if slot.kind in ("conv", "dwconv", "gconv"):
            kh, kw = module.kernel_size
            groups = cin if slot.kind == "dwconv" else cin // slot.group_width if slot.kind == "gconv" else 1
            macs = cin // groups * cout * kh * kw * out_hw[0] * out_hw[1]
            params = cout * (cin // groups) * kh * kw + (cout if module.bias is not None else 0)
            kernel, stride = (kh, kw), tuple(module.stride)
        elif slot.kind == "linear":  # on (batch, features), or on each position of a channels-last map
            macs = cin * cout * out_hw[0] * out_hw[1] if slot.name in geometry else 0
            params = cin * cout + (cout if module.bias is not None else 0)
        elif slot.kind == "param":  # one value per channel
            params = cin
        elif slot.kind == "ln":
            params = (int(module.weight is not None) + int(module.bias is not None)) * cin
        else:  # bn: free at inference, two parameters per channel
            params = 2 * cin if module.affine else 0
        costs.append(LayerCost(slot.name, slot.kind, cin, cout, kernel, stride, groups,
                               _hw(in_shape, channels_last), out_hw, macs, params))
    return costs


def _fixed_params(supernet: Supernet) -> int:
    """Parameters outside slimmable layers (they do not change with the config)."""
    total = 0
    for module in supernet.net.modules():
        if isinstance(module, SLIMMABLE_TYPES):
            continue
        sliced = module.__dict__.get("_active_channels", {})  # per-channel parameters: counted as layers
        total += sum(p.numel() for name, p in module.named_parameters(recurse=False) if name not in sliced)
    return total


def _node_elements(supernet: Supernet, widths: dict[str, int], input_size) -> dict[str, int]:
    geometry = supernet.layer_geometry(input_size)
    out = {}
    for node in supernet.nodes:
        if node.name not in geometry:  # outside the inference graph
            out[node.name] = 0
            continue
        shape = geometry[node.name][1]
        spatial = 1
        for s in (shape[1:-1] if node.channels_last else shape[2:]):
            spatial *= s
        out[node.name] = spatial * sum(widths[u] * f for u, _, f in node.layout)
    return out


def peak_live(steps: list[tuple[list[str], list[tuple[str, int, str | None]]]],
              initial: dict[str, int] | None = None, keep: set[str] = frozenset()) -> tuple[int, list[int]]:
    """Peak of live tensor sizes in a graph run in the order of `steps`, and the live size while
    each step runs. A step is (input names, outputs), each output (name, size, alias): an output
    with an alias shares that tensor's storage (a view, or an op fused into its producer) and
    allocates nothing. A tensor lives from the step that writes it (`initial` ones: from the
    start) to its last reader; those in `keep` (graph outputs) to the end. Names that are neither
    initial nor written by a step (weights) are ignored. The one liveness model of the package:
    `count` applies it to a supernet's graph, `profilers.memory` to ONNX Runtime's."""
    initial = dict(initial or {})
    storage = {name: name for name in initial}
    size = dict(initial)
    for _, outputs in steps:
        for name, nbytes, alias in outputs:
            if alias is not None and alias in storage:
                storage[name] = storage[alias]
            else:
                storage[name], size[name] = name, nbytes
    last = {s: -1 for s in size}
    for i, (inputs, outputs) in enumerate(steps):
        for name in [*inputs, *(o[0] for o in outputs)]:
            if name in storage:
                last[storage[name]] = max(last[storage[name]], i)
    for name in keep:
        if name in storage:
            last[storage[name]] = len(steps)
    ends: dict[int, int] = {}
    for name, i in last.items():
        ends[i] = ends.get(i, 0) + size[name]
    live = sum(initial.values())
    peak, per_step = live, []
    for i, (_, outputs) in enumerate(steps):
        live += sum(size[name] for name, _, _ in outputs if storage[name] == name)
        peak = max(peak, live)
        per_step.append(live)
        live -= ends.get(i, 0)
    return peak, per_step


def _peak_live(supernet: Supernet, elements: dict[str, int]) -> int:
    nodes = supernet.nodes
    steps = [(list(n.inputs), [(n.name, elements[n.name], None if n.allocates or not n.inputs else n.inputs[0])])
             for n in nodes]
    return peak_live(steps, keep={nodes[-1].name})[0] * BYTES_PER_ELEMENT


def count(supernet: Supernet, config: ChannelConfig | None = None, input_size=None) -> Counts:
    """Counts of `supernet` at `config` (default: its active config), batch 1."""
    config = supernet.config if config is None else supernet.space.validate(config, strict=False)
    widths = supernet.space.widths(config)
    costs = layer_costs(supernet, config, input_size)
    macs = sum(c.macs for c in costs)
    params = sum(c.params for c in costs) + _fixed_params(supernet)
    features = sum(c.cout * c.out_hw[0] * c.out_hw[1] for c in costs if c.kind in FEATURE_KINDS)
    elements = _node_elements(supernet, widths, input_size)
    return Counts(macs, params, params + features, features, _peak_live(supernet, elements))


@dataclass(frozen=True)
class LayerMemory:
    """Analytic float32 bytes of one slimmable layer at a config, batch 1."""

    name: str
    kind: str
    param_bytes: int
    input_bytes: int  # the activation the layer reads
    output_bytes: int  # the activation it writes (BN: in place once folded)


@dataclass(frozen=True)
class MemoryCounts:
    layers: tuple[LayerMemory, ...]
    param_bytes: int  # params * 4, BN included (the `count` convention)
    folded_param_bytes: int  # as deployed: each BN folded into the conv/linear before it
    peak_activation_bytes: int  # = count(...).peak_activation_bytes

    @property
    def deployed_bytes(self) -> int:
        """Batch 1 as deployed: float32 weights with BN folded, plus the peak of live activations."""
        return self.folded_param_bytes + self.peak_activation_bytes

    def to_dict(self) -> dict:
        return asdict(self)


def layer_memory(supernet: Supernet, config: ChannelConfig | None = None, input_size=None) -> list[LayerMemory]:
    """Per slimmable layer: parameter bytes and input/output activation bytes."""
    out = []
    for c in layer_costs(supernet, config, input_size):
        out.append(LayerMemory(c.name, c.kind, c.params * BYTES_PER_ELEMENT,
                               c.cin * c.in_hw[0] * c.in_hw[1] * BYTES_PER_ELEMENT,
                               c.cout * c.out_hw[0] * c.out_hw[1] * BYTES_PER_ELEMENT))
    return out


def memory_counts(supernet: Supernet, config: ChannelConfig | None = None, input_size=None,
                  counts: Counts | None = None) -> MemoryCounts:
    """Analytic memory of a config: per-layer bytes, parameter bytes with and without BN
    folding, and the liveness peak of the activations (see `count`; pass its result as
    `counts` when you have it, to not count twice).
    Folding a BN into the conv (or linear) before it removes its scale and shift and
    gives that layer a bias of `channels` elements unless it had one already."""
    counts = counts or count(supernet, config, input_size)
    costs = layer_costs(supernet, config, input_size)
    layers = layer_memory(supernet, config, input_size)
    slot_of_node = {name.replace(".", "_"): name for name in supernet.space.layers}
    node_of_slot = {v: k for k, v in slot_of_node.items()}
    nodes = {n.name: n for n in supernet.nodes}
    folded = counts.params
    for c in costs:
        if c.kind != "bn":
            continue
        # the layer that wrote the BN's input, looking through views (no new tensor)
        node = nodes.get(node_of_slot.get(c.name))
        prev = node.inputs[0] if node is not None and node.inputs else None
        while prev in nodes and prev not in slot_of_node and not nodes[prev].allocates and nodes[prev].inputs:
            prev = nodes[prev].inputs[0]
        src = slot_of_node.get(prev)
        has_bias = src is not None and getattr(supernet.net.get_submodule(src), "bias", None) is not None
        folded += (0 if has_bias else c.cin) - c.params
    return MemoryCounts(tuple(layers), counts.params * BYTES_PER_ELEMENT, folded * BYTES_PER_ELEMENT,
                        counts.peak_activation_bytes)


def deployed_memory_bytes(supernet: Supernet, config: ChannelConfig | None = None,
                          counts: Counts | None = None) -> int:
    """What a config needs at batch 1 as deployed: float32 weights with BN folded, plus the
    peak of live activations (the `memory` cost of search targets and table predictions)."""
    return memory_counts(supernet, config, counts=counts).deployed_bytes


def count_plain(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, params) of an ordinary model by running it with hooks: an independent
    check on `count`, and the way to count an exported subnet."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += (module.in_channels // module.groups) * module.out_channels * kh * kw * output.shape[2] * output.shape[3]
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features * (output.numel() // output.shape[-1])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs, sum(p.numel() for p in model.parameters())
