"""How much work a greedy step does: the paper's exact step, or a faster one.

The paper's step scores every candidate (each channel unit one width option narrower) and
slims the one unit that loses least. Two approximations cut the work where it matters least:

- **Several units per step, far from every target.** While the config's cost is above the
  next target by more than `near`, a step slims the `k` best units at once (each one option,
  at most `max_units` of the candidates), but covers at most `reach` of the remaining way to
  that zone, so k shrinks as the target nears; within `near` of it, steps slim one unit again,
  and every target is crossed with single steps.
- **Lazy re-scoring.** A candidate that lost badly at its last scoring rarely becomes the best
  one step later, so each step re-scores only the best `rescore` share of the candidates (by
  their last scores), those never scored and those scored `stale_after` steps ago or more;
  the others keep their last score. A candidate about to be slimmed on an old score is always
  scored again first.

`EXACT` is the paper's step; `FAST` is what `autoslim-hw search` uses unless `--exact` is given.
How close FAST lands to EXACT: benchmarks/search_quality.py (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .costs import Target


@dataclass(frozen=True)
class StepPolicy:
    name: str
    max_units: float = 0.0  # share of the candidates a step may slim at once when far (0: always one)
    near: float = 0.05  # within this relative distance above the next target, one unit per step
    reach: float = 0.5  # a step covers at most this share of the way to that zone
    rescore: float = 1.0  # share of the candidates re-scored every step (1: all, the paper's)
    stale_after: int = 1  # a reused score is at most this many steps old
    precision: str = "fp32"  # numerics of the forward passes: fp32, or bf16 where it runs natively
    channels_last: bool = False

    @property
    def exact(self) -> bool:
        return self.max_units <= 0 and self.rescore >= 1 and self.precision == "fp32" and not self.channels_last

    def to_dict(self) -> dict:
        return asdict(self)


EXACT = StepPolicy("exact")
FAST = StepPolicy("fast", max_units=1 / 3, near=0.03, reach=0.5, rescore=0.25, stale_after=6, precision="bf16",
                  channels_last=True)
POLICIES = {"exact": EXACT, "fast": FAST}


def gap(costs: dict, targets: list[Target]) -> float | None:
    """How far the config is above the nearest unmet target: for each unmet target the largest
    relative excess over its limits (cost / limit - 1), the smallest of those; None when every
    target is met or there are none."""
    over = [excess(costs, t) for t in targets if not t.met_by(costs)]
    return min(over) if over else None


def excess(costs: dict, target: Target) -> float:
    """How far `costs` are above the target's limits: the largest cost / limit - 1."""
    return max(costs[k] / limit - 1 for k, limit in target.constraints)


def units_per_step(policy: StepPolicy, candidates: int, distance: float | None) -> int:
    """The most units a step may slim at `distance` above the nearest target: one within
    `near` (or with no target), else max_units x candidates."""
    if policy.max_units <= 0 or distance is None or distance <= policy.near or candidates <= 1:
        return 1
    return max(1, math.floor(policy.max_units * candidates))


def lands_well(policy: StepPolicy, before: dict, after: dict, targets: list[Target]) -> bool:
    """Whether a multi-unit step from costs `before` to `after` stays out of every unmet target's
    near zone and covers at most `reach` of the way to it."""
    for t in targets:
        if t.met_by(before):
            continue
        start, end = excess(before, t), excess(after, t)
        if end < policy.near or end < policy.near + (1 - policy.reach) * (start - policy.near):
            return False
    return True
