"""Zero-initialised residual branches: every residual block starts as the identity.

Each residual add whose deeper input ends in a BatchNorm (through pass-through ops such as
stochastic depth) gets that BatchNorm's scale set to zero, as torchvision's
`zero_init_residual` does for ResNets and BigNAS (Yu et al., 2020) does for supernets: at the
start every block passes its input on, so a narrow config is a shallow network that trains, not a
deep one whose narrow branches add noise. The shortcut side (identity or projection) keeps its
scale; it is the input whose exclusive path back to the pair's common ancestors is shorter.
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

_ADDS = {operator.add, operator.iadd, torch.add}
_PASS_MODULES = (nn.Dropout, nn.Identity)
# torchvision's StochasticDepth module is traced through to this function; named as
# nn/unit_ops.py names it, so torchvision is not imported here
_STOCHASTIC_DEPTH = "torchvision.ops.stochastic_depth.stochastic_depth"


def _passes_through(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Ops that forward their one input unchanged at inference (stochastic depth, dropout)."""
    if node.op == "call_module":
        return isinstance(modules[node.target], _PASS_MODULES)
    return node.op == "call_function" and \
        f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__qualname__', '')}" == _STOCHASTIC_DEPTH


def _ancestors(node: fx.Node, memo: dict[fx.Node, frozenset]) -> frozenset:
    """The node and every node it depends on (iterative: deep networks would exhaust recursion)."""
    stack = [node]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        pending = [a for a in n.all_input_nodes if a not in memo]
        if pending:
            stack.extend(pending)
            continue
        out = {n}
        for a in n.all_input_nodes:
            out |= memo[a]
        memo[n] = frozenset(out)
        stack.pop()
    return memo[node]


def residual_branch_norms(graph_module: fx.GraphModule) -> list[str]:
    """Qualified names of the BatchNorms that end a residual block's branch, in graph order."""
    modules = dict(graph_module.named_modules())
    memo: dict[fx.Node, frozenset] = {}
    found: list[str] = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target not in _ADDS:
            continue
        ins = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if len(ins) != 2:
            continue
        anc = [_ancestors(a, memo) for a in ins]
        common = anc[0] & anc[1]
        depth = [len(a - common) for a in anc]
        if depth[0] == depth[1]:
            continue  # two branches alike: not a residual block
        branch = ins[0] if depth[0] > depth[1] else ins[1]
        while _passes_through(branch, modules):
            branch = branch.args[0]
        if branch.op == "call_module" and isinstance(modules[branch.target], nn.modules.batchnorm._BatchNorm):
            if branch.target not in found:
                found.append(branch.target)
    return found


@torch.no_grad()
def zero_init_residual(supernet) -> list[str]:
    """Set the scale of every residual branch's last BatchNorm to zero; returns their names
    (in `supernet.net`). A network without residual adds is left as it was."""
    names = residual_branch_norms(supernet.trace())
    for name in names:
        bn = supernet.net.get_submodule(name)
        if bn.weight is not None:
            bn.weight.zero_()
    return names
