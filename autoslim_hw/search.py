"""Greedy slimming (AutoSlim, Yu & Huang 2019).

Start from the largest config. At each step, for every channel unit that can still
shrink, take the config with that unit one width option narrower, measure its accuracy
on the held-out search split, and keep the candidate that loses the least. Every config
of the trajectory gets its costs (MACs, params, memory, latency from a lookup table), so
one pass serves any number of targets: each target takes the first config on the
trajectory that meets it.

Accuracy uses BatchNorm statistics of each evaluation batch (the paper's large-batch
trick), which makes an exact prefix cache possible: a candidate that slims unit k runs
every layer before the first layer of k exactly as the current config does, so those
activations are computed once per step and every candidate restarts from there.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._io import atomic_write_bytes
from .counting import count, deployed_memory_bytes
from .errors import UserError
from .nn.config import ChannelConfig
from .nn.supernet import Supernet, _LeafTracer
from .nn.units import trace

FORMAT = "autoslim-hw/search"
VERSION = 1
COST_KINDS = ("latency_ms", "macs", "params", "memory")
_LABELS = {"latency_ms": "latency", "macs": "MACs", "params": "params", "memory": "memory"}


# --- targets --------------------------------------------------------------------------------

_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30}


def parse_quantity(text: str | float, option: str) -> float:
    """'200M' -> 2e8, '4.5G', '9MiB' -> 9 * 2**20, '3e8': a count or bytes with a suffix."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(|k|K|M|G|T|Ki|Mi|Gi)B?\s*", text)
        if m is None:
            raise UserError(f"{option} {text!r} is not a number; write e.g. 200M, 4.5G, 9MiB or 3e8")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not value > 0 or not math.isfinite(value):
        raise UserError(f"{option} must be a positive number, got {text!r}")
    return value


@dataclass(frozen=True)
class Target:
    """A conjunction of upper limits, kind -> limit (latency in ms, MACs, params, memory in bytes)."""

    constraints: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, **limits: float) -> "Target":
        unknown = set(limits) - set(COST_KINDS)
        if unknown or not limits:
            raise UserError(f"a target needs limits among {', '.join(COST_KINDS)}; got {sorted(limits)}")
        return cls(tuple(sorted(limits.items())))

    @property
    def limits(self) -> dict[str, float]:
        return dict(self.constraints)

    def met_by(self, costs: dict) -> bool:
        return all(costs.get(kind) is not None and costs[kind] <= limit for kind, limit in self.constraints)

    def describe(self) -> str:
        return ", ".join(f"{_LABELS[k]} <= {format_cost(k, v)}" for k, v in self.constraints)


def targets_from_options(latency_ms=(), flops=(), params=(), memory=()) -> list[Target]:
    """CLI targets: a kind given once applies to every target; kinds given n times pair up by
    position (`--latency-ms 70 --latency-ms 50 --flops 300M` = two targets, each with both)."""
    given = {"latency_ms": [parse_quantity(v, "--latency-ms") for v in latency_ms],
             "macs": [parse_quantity(v, "--flops") for v in flops],
             "params": [parse_quantity(v, "--params") for v in params],
             "memory": [parse_quantity(v, "--memory") for v in memory]}
    given = {k: v for k, v in given.items() if v}
    if not given:
        return []
    n = max(len(v) for v in given.values())
    bad = {k: len(v) for k, v in given.items() if len(v) not in (1, n)}
    if bad:
        raise UserError(f"repeat each constraint once or {n} times (one per target); got counts "
                        + ", ".join(f"{k}={c}" for k, c in bad.items()))
    return [Target.of(**{k: v[i] if len(v) > 1 else v[0] for k, v in given.items()}) for i in range(n)]


def format_cost(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    if kind == "latency_ms":
        return f"{value:.2f} ms"
    if kind == "memory":
        return f"{value / 2 ** 20:.2f} MiB"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(int(value))


# --- costs ----------------------------------------------------------------------------------

class CostModel:
    """Costs of a config at batch 1: MACs, params, memory (bytes: float32 weights as deployed,
    BN folded, plus the peak of live activations) and, with a lookup table, latency in ms."""

    def __init__(self, supernet: Supernet, table=None):
        self.supernet, self.table = supernet, table
        self._cache: dict[ChannelConfig, dict] = {}

    def __call__(self, config: ChannelConfig) -> dict:
        if config not in self._cache:
            c = count(self.supernet, config)
            costs = {"macs": c.macs, "params": c.params,
                     "memory": deployed_memory_bytes(self.supernet, config, counts=c), "latency_ms": None}
            if self.table is not None:
                costs["latency_ms"] = self.table.predict(self.supernet, config, memory=False).latency_ms
            self._cache[config] = costs
        return self._cache[config]


def uniform_baseline(space, cost: Callable[[ChannelConfig], float], limit: float,
                     at_least: bool = False) -> tuple[float, ChannelConfig] | None:
    """The uniform-width config one would pick without a search: the widest whose cost is within
    `limit`, or with at_least=True the narrowest whose cost reaches it (a baseline given at least
    the searched config's budget). (multiplier, config), or None when no uniform config qualifies."""
    ladder = space.uniform_ladder()
    if at_least:
        return next(((w, cfg) for w, cfg in ladder if cost(cfg) >= limit), None)
    return next(((w, cfg) for w, cfg in reversed(ladder) if cost(cfg) <= limit), None)


def check_feasible(targets: list[Target], costs: CostModel) -> None:
    """Every trajectory ends at the smallest config, so a target it misses is unreachable."""
    floor = costs(costs.supernet.space.smallest())
    for t in targets:
        for kind, limit in t.constraints:
            if kind == "latency_ms" and costs.table is None:
                raise UserError("a latency target needs a lookup table: pass --lut or build one with "
                                "`autoslim-hw profile`")
            if floor[kind] > limit:
                raise UserError(f"target {_LABELS[kind]} <= {format_cost(kind, limit)} is unreachable: the smallest "
                                f"config of this supernet needs {format_cost(kind, floor[kind])}")


# --- evaluating candidates --------------------------------------------------------------------

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


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode, except BatchNorm normalizes with the batch's own statistics and leaves the
    running statistics alone; in-place activations are switched off so that cached tensors
    are never overwritten."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    was_training, tracked = model.training, [bn.track_running_stats for bn in bns]
    model.eval()
    for bn in bns:
        bn.train()
        bn.track_running_stats = False
    for m in inplace:
        m.inplace = False
    try:
        yield
    finally:
        for bn, t in zip(bns, tracked):
            bn.track_running_stats = t
        for m in inplace:
            m.inplace = True
        model.train(was_training)


class PrefixRunner:
    """Runs the supernet's fx graph from any node on, reusing values computed before it.

    A unit's candidates change only the layers that read or write that unit, so the graph
    before the first such layer computes the same tensors as the current config does."""

    def __init__(self, supernet: Supernet):
        self.supernet = supernet
        self.gm = trace(supernet.net, _LeafTracer)  # shares the supernet's modules
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
            elif node.op == "get_attr":
                value = self.gm
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
                 calib_loader=None, calib_batches: int = 10):
        if bn not in ("batch", "recalibrate"):
            raise UserError(f"--bn must be 'batch' or 'recalibrate', got {bn!r}")
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
        """Scores of candidates, each (unit slimmed or None, config)."""
        self.evaluated += len(candidates)
        if self.bn == "recalibrate":
            return [self._recalibrated(cfg) for _, cfg in candidates]
        out = [Score() for _ in candidates]
        with batch_statistics(self.supernet):
            if not self.cache:
                for k, (_, cfg) in enumerate(candidates):
                    self.supernet.set_config(cfg)
                    for x, y in self.batches:
                        out[k].add(self.supernet(x.to(self.device)), y.to(self.device))
                return out
            starts = [self.runner.first_layer.get(unit, 0) if unit else 0 for unit, _ in candidates]
            for x, y in self.batches:
                x, y = x.to(self.device), y.to(self.device)
                self.supernet.set_config(current)
                _, fronts = self.runner.run(x, snapshot_at=set(starts))
                for k, (_, cfg) in enumerate(candidates):
                    self.supernet.set_config(cfg)
                    logits, _ = self.runner.run(x, starts[k], fronts[starts[k]])
                    out[k].add(logits, y)
        return out

    def _recalibrated(self, config: ChannelConfig) -> Score:
        from .train import recalibrate_bn

        recalibrate_bn(self.supernet, config, self.calib_loader, self.calib_batches, self.device)
        s = Score()
        for x, y in self.batches:
            s.add(self.supernet(x.to(self.device)), y.to(self.device))
        return s


# --- the greedy pass ----------------------------------------------------------------------------

def candidates_of(supernet: Supernet, config: ChannelConfig) -> list[tuple[str, ChannelConfig]]:
    """Every free unit slimmed by one width option, in unit order; units at their minimum drop out."""
    out = []
    for unit in supernet.space.free_units:
        lower = unit.step_down(config[unit.name])
        if lower is not None:
            out.append((unit.name, config.replace(unit.name, lower)))
    return out


def choose(current: Score, scores: list[Score], saved: list[float] | None) -> int:
    """Index of the candidate with the smallest accuracy drop (ties: the smaller loss, then
    the earlier unit). With `saved` (cost saved per candidate) the drop is per unit of cost."""
    def key(k: int):
        drop = current.accuracy - scores[k].accuracy
        rise = scores[k].loss - current.loss
        if saved is None:
            return (drop, rise, k)
        s = max(saved[k], 1e-12)
        return (drop / s, rise / s, k)
    return min(range(len(scores)), key=key)


@dataclass
class SearchState:
    """What the output JSON holds; written atomically after every step."""

    header: dict
    trajectory: list[dict] = field(default_factory=list)
    status: str = "running"

    def to_dict(self, targets: list[dict]) -> dict:
        return {"format": FORMAT, "version": VERSION, "status": self.status, **self.header,
                "trajectory": self.trajectory, "targets": targets}


def _step_record(step: int, unit: str | None, config: ChannelConfig, score: Score, costs: dict,
                 evaluated: int) -> dict:
    return {"step": step, "unit": unit, "config": dict(config), "accuracy": score.accuracy, "loss": score.loss,
            **{k: costs[k] for k in COST_KINDS}, "candidates_evaluated": evaluated,
            "score": asdict(score)}  # exact counts, so a resumed pass compares like the original


def select_targets(supernet: Supernet, trajectory: list[dict], targets: list[Target]) -> list[dict]:
    out = []
    for t in targets:
        hit = next((s for s in trajectory if t.met_by(s)), None)
        entry = {"constraints": t.limits, "met": hit is not None}
        if hit is not None:
            cfg = ChannelConfig(hit["config"])
            entry.update(step=hit["step"], config=hit["config"], layers=supernet.space.to_layer_list(cfg),
                         **{k: hit[k] for k in ("accuracy", *COST_KINDS)})
        out.append(entry)
    return out


def greedy_search(supernet: Supernet, evaluator: Evaluator, costs: CostModel, targets: list[Target],
                  out: Path | None = None, header: dict | None = None, criterion: str = "drop",
                  cost_kind: str | None = None, resume_from: dict | None = None, rank: int = 0,
                  world_size: int = 1, max_steps: int | None = None,
                  on_step: Callable[[dict], None] | None = None) -> dict:
    """Run the pass until every target is met (or nothing can shrink); return the result dict.
    Under torchrun each rank scores its share of the candidates and all ranks agree on the step."""
    if criterion not in ("drop", "drop-per-cost"):
        raise UserError(f"--criterion must be 'drop' or 'drop-per-cost', got {criterion!r}")
    if criterion == "drop-per-cost" and cost_kind is None:
        raise UserError("--criterion drop-per-cost needs a cost: give a target (latency, FLOPs, params or memory)")
    state = SearchState(header or {})
    if resume_from is not None:
        state.trajectory = list(resume_from["trajectory"])
    if not state.trajectory:
        config = supernet.space.largest()
        score = evaluator.score(config)
        state.trajectory.append(_step_record(0, None, config, score, costs(config), 1))
        _save(out, state, supernet, targets, rank)
        if on_step:
            on_step(state.trajectory[-1])
    last = state.trajectory[-1]
    config = supernet.space.validate(ChannelConfig(last["config"]))
    current = Score(**last["score"])
    while not all(any(t.met_by(s) for s in state.trajectory) for t in targets) or not targets:
        if max_steps is not None and len(state.trajectory) > max_steps:
            break
        cands = candidates_of(supernet, config)
        if not cands:
            break
        mine = list(range(rank, len(cands), world_size))
        scores = _gather(evaluator.scores(config, [cands[k] for k in mine]), mine, len(cands), world_size)
        saved = None
        if criterion == "drop-per-cost":
            here = costs(config)[cost_kind]
            saved = [here - costs(cfg)[cost_kind] for _, cfg in cands]
        k = choose(current, scores, saved)
        unit, config = cands[k]
        current = scores[k]
        state.trajectory.append(_step_record(len(state.trajectory), unit, config, current, costs(config),
                                             len(cands)))
        _save(out, state, supernet, targets, rank)
        if on_step:
            on_step(state.trajectory[-1])
    state.status = "done"
    return _save(out, state, supernet, targets, rank)


def _gather(mine: list[Score], indices: list[int], n: int, world_size: int) -> list[Score]:
    if world_size == 1:
        return mine
    import torch.distributed as dist

    parts: list = [None] * world_size
    dist.all_gather_object(parts, [(i, asdict(s)) for i, s in zip(indices, mine)])
    scores: list[Score | None] = [None] * n
    for part in parts:
        for i, s in part:
            scores[i] = Score(**s)
    return scores  # type: ignore[return-value]


def _save(out: Path | None, state: SearchState, supernet: Supernet, targets: list[Target], rank: int) -> dict:
    result = state.to_dict(select_targets(supernet, state.trajectory, targets))
    if out is not None and rank == 0:
        atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())
    return result


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_result(path: str | os.PathLike) -> dict:
    """A search output file, checked for its format tag."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"search result {path} does not exist; run `autoslim-hw search` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is not a readable search result ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not an autoslim-hw search result (no '{FORMAT}' format tag)")
    if data.get("version") != VERSION:
        raise UserError(f"{path} has search format version {data.get('version')}; this autoslim-hw reads {VERSION}")
    return data
