"""Greedy slimming (AutoSlim, Yu & Huang 2019).

Start from the largest config. At each step, for every channel unit that can still shrink,
take the config with that unit one width option narrower, measure its accuracy on the held-out
search split, and keep the candidate that loses the least. Every config of the trajectory gets
its costs (every registered cost kind), so one pass serves any number of targets: each target
takes the first config on the trajectory that meets it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .costs import COST_KINDS, CostModel, Target
from .evaluate import Evaluator, Score
from .policy import EXACT, StepPolicy, gap, lands_well, units_per_step
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
                 evaluated: int, units: list[str] | None = None, memo: dict | None = None) -> dict:
    record = {"step": step, "unit": unit, "config": dict(config), "accuracy": score.accuracy, "loss": score.loss,
              **{k: costs[k] for k in COST_KINDS}, "candidates_evaluated": evaluated,
              "score": asdict(score)}  # exact counts, so a resumed pass compares like the original
    if units is not None and len(units) > 1:
        record["units"] = units
    if memo is not None:  # the lazy policy's last scores, so a resumed pass decides like the original
        record["memo"] = {u: list(v) for u, v in memo.items()}
    return record


def greedy_search(supernet: Supernet, evaluator: Evaluator, costs: CostModel, targets: list[Target],
                  out: Path | None = None, header: dict | None = None, criterion: str = "drop",
                  cost_kind: str | None = None, resume_from: dict | None = None, rank: int = 0,
                  world_size: int = 1, max_steps: int | None = None,
                  on_step: Callable[[dict], None] | None = None, policy: StepPolicy = EXACT) -> dict:
    """Run the pass until every target is met (or nothing can shrink); return the result dict.
    `policy`: the paper's exact step (EXACT) or a faster one (see search.policy). Under torchrun
    each rank scores its share of the candidates and all ranks agree on the step."""
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
    memo = {u: tuple(v) for u, v in (last.get("memo") or {}).items()}
    while not all(any(t.met_by(s) for s in state.trajectory) for t in targets) or not targets:
        if max_steps is not None and len(state.trajectory) > max_steps:
            break
        cands = candidates_of(supernet, config)
        if not cands:
            break
        saved = None
        if criterion == "drop-per-cost":
            here = costs(config)[cost_kind]
            saved = [here - costs(cfg)[cost_kind] for _, cfg in cands]
        if policy.exact or (policy.max_units <= 0 and policy.rescore >= 1):
            mine = list(range(rank, len(cands), world_size))
            scores = _gather(evaluator.scores(config, [cands[k] for k in mine]), mine, len(cands), world_size)
            k = choose(current, scores, saved)
            units, (unit, config) = [cands[k][0]], cands[k]
            current, evaluated, step_memo = scores[k], len(cands), None
        else:
            step = _FastStep(supernet, evaluator, costs, targets, policy, cands, config, current, saved, memo,
                             len(state.trajectory), rank, world_size)
            units, config, current, evaluated = step.run()
            unit, memo = units[0], step.memo
            step_memo = memo
        state.trajectory.append(_step_record(len(state.trajectory), unit, config, current, costs(config),
                                             evaluated, units, step_memo))
        _save(out, state, supernet, targets, rank)
        if on_step:
            on_step(state.trajectory[-1])
    state.status = "done"
    return _save(out, state, supernet, targets, rank)


class _FastStep:
    """One step under a faster policy (search.policy): lazy re-scoring, several units when far."""

    def __init__(self, supernet, evaluator, costs, targets, policy, cands, config, current, saved, memo, step,
                 rank, world_size):
        self.supernet, self.evaluator, self.costs, self.targets = supernet, evaluator, costs, targets
        self.policy, self.cands, self.config, self.current, self.saved = policy, cands, config, current, saved
        self.memo, self.step, self.rank, self.world_size = dict(memo), step, rank, world_size
        self.fresh: dict[int, Score] = {}
        self.evaluated = 0

    def key(self, i: int):
        """(drop, loss rise, index): from this step's score, or the unit's last one."""
        if i in self.fresh:
            s = self.fresh[i]
            drop, rise = self.current.accuracy - s.accuracy, s.loss - self.current.loss
        else:
            drop, rise = self.memo[self.cands[i][0]][:2]
        if self.saved is not None:
            per = max(self.saved[i], 1e-12)
            drop, rise = drop / per, rise / per
        return (drop, rise, i)

    def score(self, indices) -> None:
        todo = sorted(set(indices) - set(self.fresh))
        if not todo:
            return
        mine = todo[self.rank::self.world_size]
        got = _gather(self.evaluator.scores(self.config, [self.cands[i] for i in mine]), mine, len(self.cands),
                      self.world_size)
        for i in todo:
            self.fresh[i] = got[i]
            s = got[i]
            unit, cand = self.cands[i]
            self.memo[unit] = (self.current.accuracy - s.accuracy, s.loss - self.current.loss, self.step, cand[unit])
        self.evaluated += len(todo)

    def trusted(self, i: int) -> bool:
        """Scored this step, or recently at the same width (only the rest of the network moved)."""
        unit, cand = self.cands[i]
        entry = self.memo.get(unit)
        return i in self.fresh or (entry is not None and entry[3] == cand[unit]
                                   and self.step - entry[2] < self.policy.stale_after)

    def run(self) -> tuple[list[str], ChannelConfig, Score, int]:
        n, policy = len(self.cands), self.policy
        # never scored, or too long ago: score now; of the rest, the best share by their last scores
        known = [i for i in range(n) if self.cands[i][0] in self.memo
                 and self.step - self.memo[self.cands[i][0]][2] < policy.stale_after]
        unknown = [i for i in range(n) if i not in known]
        best_known = sorted(known, key=self.key)[:max(0, math.ceil(policy.rescore * n) - len(unknown))]
        self.score(unknown + best_known)
        here = self.costs(self.config)
        most = units_per_step(policy, n, gap(here, self.targets))
        while True:  # the best pick scored now, the others at least at their current width
            order = sorted(range(n), key=self.key)
            doubtful = [i for i in order[:1] if i not in self.fresh] + \
                [i for i in order[1:most] if not self.trusted(i)]
            if not doubtful:
                break
            self.score(doubtful)
        k = most
        while k > 1 and not lands_well(policy, here, self.costs(self._slim(order[:k])), self.targets):
            k -= 1
        picks = order[:k]
        units = [self.cands[i][0] for i in picks]
        # a slimmed unit's next candidate is another width: its last score stays only as a guess
        # to rank by, re-scored before the unit is picked again
        if k == 1:
            return units, self.cands[picks[0]][1], self.fresh[picks[0]], self.evaluated
        config = self._slim(picks)
        score = self.evaluator.scores(self.config, [(tuple(units), config)])[0]  # every rank: one evaluation
        return units, config, score, self.evaluated + 1

    def _slim(self, picks: list[int]) -> ChannelConfig:
        config = self.config
        for i in picks:
            unit, cand = self.cands[i]
            config = config.replace(unit, cand[unit])
        return config


def _gather(mine: list[Score], indices: list[int], n: int, world_size: int) -> list[Score]:
    """The scores of all ranks, by candidate index (None where no rank scored one)."""
    if world_size == 1:
        out: list = [None] * n
        for i, s in zip(indices, mine):
            out[i] = s
        return out
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
