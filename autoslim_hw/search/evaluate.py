"""Scoring candidate configs on the held-out search batches, exactly and fast.

Accuracy uses BatchNorm statistics of each evaluation batch (the paper's large-batch trick),
which makes an exact prefix cache possible: a candidate that slims unit k runs every layer
before the first layer of k exactly as the current config does, so those activations are
computed once per step and every candidate restarts from there (`PrefixRunner`).
"""
from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx

from ..errors import UserError
from ..nn.batchnorm import batch_statistics, recalibrate_bn
from ..nn.config import ChannelConfig
from ..nn.layers import channels_last_inputs
from ..nn.supernet import Supernet

PRECISIONS = ("fp32", "bf16")


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 convolutions run natively here: a CUDA GPU, or a CPU with AVX512-BF16 or
    AMX (elsewhere they are emulated, and slower than float32)."""
    if torch.device(device).type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Score:
    correct: int = 0
    total: int = 0
    loss_sum: float = 0.0

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / max(self.total, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.total, 1)

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.correct += int((logits.argmax(1) == y).sum())
        self.total += int(y.numel())
        self.loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))


_OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                 operator.itruediv: operator.truediv}


class PrefixRunner:
    """Runs the supernet's fx graph from any node on, reusing values computed before it.

    A unit's candidates change only the layers that read or write that unit, so the graph
    before the first such layer computes the same tensors as the current config does."""

    def __init__(self, supernet: Supernet):
        self.supernet = supernet
        self.gm = supernet.trace()  # shares the supernet's modules
        self.nodes = list(self.gm.graph.nodes)
        self.modules = dict(self.gm.named_modules())
        self.index = index = {n: i for i, n in enumerate(self.nodes)}
        self.last_use = [max((index[u] for u in n.users), default=i) for i, n in enumerate(self.nodes)]
        self.first_layer: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            slot = supernet.space.layers.get(n.target) if n.op == "call_module" else None
            if slot is not None:
                for unit in {u for u, _, _ in slot.in_segments} | {slot.out_unit}:
                    if unit is not None:
                        self.first_layer.setdefault(unit, i)

    def frontier(self, start: int) -> list[int]:
        """Nodes before `start` whose values are read at or after it."""
        return [i for i in range(start) if self.last_use[i] >= start]

    def run(self, x: torch.Tensor, start: int = 0, cached: dict[int, torch.Tensor] | None = None,
            snapshot_at: set[int] = frozenset()) -> tuple[torch.Tensor, dict[int, dict[int, torch.Tensor]]]:
        """Output of the graph, and for each index s in `snapshot_at` the frontier values of s as
        they stand just before node s runs (what a run from s needs as `cached`).

        In-place ops run out of place, so no tensor is ever overwritten; their result replaces
        the value of the tensor they would have written to, as the in-place op would have."""
        env: dict[int, torch.Tensor] = dict(cached or {})
        snaps: dict[int, dict[int, torch.Tensor]] = {}
        index = self.index
        for i in range(start, len(self.nodes)):
            node = self.nodes[i]
            if i in snapshot_at:
                snaps[i] = {j: env[j] for j in self.frontier(i)}
            args = fx.node.map_arg(node.args, lambda n: env[index[n]])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[index[n]])
            in_place = False
            if node.op == "placeholder":
                value = x
            elif node.op == "output":
                return args[0], snaps
            elif node.op == "get_attr":  # through the network's own modules: per-channel parameters read sliced
                value = self.supernet.net
                for part in node.target.split("."):
                    value = getattr(value, part)
            elif node.op == "call_module":
                value = self.modules[node.target](*args, **kwargs)
            elif node.op == "call_function":
                fn = _OUT_OF_PLACE.get(node.target, node.target)
                in_place = fn is not node.target or kwargs.get("inplace") is True
                if kwargs.get("inplace"):
                    kwargs = {**kwargs, "inplace": False}
                value = fn(*args, **kwargs)
            else:  # call_method; x.relu_() and friends become their out-of-place twins
                name = node.target[:-1] if node.target.endswith("_") and not node.target.endswith("__") \
                    else node.target
                in_place = name != node.target
                value = getattr(args[0], name)(*args[1:], **kwargs)
            env[i] = value
            if in_place and node.args and isinstance(node.args[0], fx.Node):
                env[index[node.args[0]]] = value  # later readers of the written tensor see the result
            for inp in node.all_input_nodes:  # free what nothing later reads
                j = index[inp]
                if self.last_use[j] == i:
                    env.pop(j, None)
        raise RuntimeError("graph has no output node")


class Evaluator:
    """Accuracy of candidate configs on fixed search batches.

    bn="batch": BN statistics from each evaluation batch (with the exact prefix cache when
    cache=True). bn="recalibrate": BN statistics re-estimated on `calib_loader` for every
    candidate, then eval mode (no cache: recalibration runs the whole network anyway);
    `calib_loader` must give the same batches at every pass (no shuffling), or candidates
    are compared on different images and a resumed or torchrun search differs."""

    def __init__(self, supernet: Supernet, batches: list[tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device | str = "cpu", cache: bool = True, bn: str = "batch",
                 calib_loader=None, calib_batches: int = 10, precision: str = "fp32",
                 channels_last: bool = False):
        if bn not in ("batch", "recalibrate"):
            raise UserError(f"--bn must be 'batch' or 'recalibrate', got {bn!r}")
        if precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision, self.channels_last = precision, channels_last
        if bn == "recalibrate" and calib_loader is None:
            raise ValueError("bn='recalibrate' needs calib_loader")
        self.supernet, self.batches, self.device = supernet, batches, torch.device(device)
        self.cache, self.bn = cache and bn == "batch", bn
        self.calib_loader, self.calib_batches = calib_loader, calib_batches
        self.runner = PrefixRunner(supernet) if self.cache else None
        self.evaluated = 0  # candidate evaluations, for speed reports

    @torch.no_grad()
    def score(self, config: ChannelConfig) -> Score:
        return self.scores(config, [(None, config)])[0]

    @torch.no_grad()
    def scores(self, current: ChannelConfig, candidates: list[tuple[str | None, ChannelConfig]]) -> list[Score]:
        """Scores of candidates, each (unit slimmed, or a tuple of units, or None; config)."""
        self.evaluated += len(candidates)
        with self._numerics():
            if self.bn == "recalibrate":
                return [self._recalibrated(cfg) for _, cfg in candidates]
            return self._batch_scores(current, candidates)

    @contextlib.contextmanager
    def _numerics(self):
        """float32 NCHW (exact), or the fast numerics: activations in channels-last layout and,
        with precision bf16, convolutions in bfloat16 (autocast)."""
        with contextlib.ExitStack() as stack:
            if self.precision == "bf16":
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if self.channels_last:
                stack.enter_context(channels_last_inputs(self.supernet))
            yield

    def _batch_scores(self, current: ChannelConfig, candidates: list[tuple[str | None, ChannelConfig]]) -> list[Score]:
        out = [Score() for _ in candidates]
        with batch_statistics(self.supernet):
            if not self.cache:
                for k, (_, cfg) in enumerate(candidates):
                    self.supernet.set_config(cfg)
                    for x, y in self.batches:
                        out[k].add(self.supernet(x.to(self.device)), y.to(self.device))
                return out
            starts = [self._start(unit) for unit, _ in candidates]
            for x, y in self.batches:
                x, y = x.to(self.device), y.to(self.device)
                self.supernet.set_config(current)
                _, fronts = self.runner.run(x, snapshot_at=set(starts))
                for k, (_, cfg) in enumerate(candidates):
                    self.supernet.set_config(cfg)
                    logits, _ = self.runner.run(x, starts[k], fronts[starts[k]])
                    out[k].add(logits, y)
        return out

    def _start(self, units: str | tuple[str, ...] | None) -> int:
        """The first graph node a candidate that slims `units` (one, several or none) changes."""
        if not units:
            return 0
        return min(self.runner.first_layer.get(u, 0) for u in ((units,) if isinstance(units, str) else units))

    def _recalibrated(self, config: ChannelConfig) -> Score:
        recalibrate_bn(self.supernet, config, self.calib_loader, self.calib_batches, self.device)
        s = Score()
        for x, y in self.batches:
            s.add(self.supernet(x.to(self.device)), y.to(self.device))
        return s
