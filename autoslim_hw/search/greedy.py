"""Greedy slimming (AutoSlim, Yu & Huang 2019).

Start from the largest config. At each step, for every channel unit that can still shrink,
take the config with that unit one width option narrower, measure its accuracy on the held-out
search split, and keep the candidate that loses the least. Every config of the trajectory gets
its costs (every registered cost kind), so one pass serves any number of targets: each target
takes the first config on the trajectory that meets it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .costs import COST_KINDS, CostModel, Target
from .evaluate import Evaluator, Score
from .result import result_dict, select_targets, write_result

CRITERIA = ("drop", "drop-per-cost")


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
        return result_dict(self.header, self.trajectory, targets, self.status)


def _step_record(step: int, unit: str | None, config: ChannelConfig, score: Score, costs: dict,
                 evaluated: int) -> dict:
    return {"step": step, "unit": unit, "config": dict(config), "accuracy": score.accuracy, "loss": score.loss,
            **{k: costs[k] for k in COST_KINDS}, "candidates_evaluated": evaluated,
            "score": asdict(score)}  # exact counts, so a resumed pass compares like the original


def greedy_search(supernet: Supernet, evaluator: Evaluator, costs: CostModel, targets: list[Target],
                  out: Path | None = None, header: dict | None = None, criterion: str = "drop",
                  cost_kind: str | None = None, resume_from: dict | None = None, rank: int = 0,
                  world_size: int = 1, max_steps: int | None = None,
                  on_step: Callable[[dict], None] | None = None) -> dict:
    """Run the pass until every target is met (or nothing can shrink); return the result dict.
    Under torchrun each rank scores its share of the candidates and all ranks agree on the step."""
    if criterion not in CRITERIA:
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
        write_result(out, result)
    return result
