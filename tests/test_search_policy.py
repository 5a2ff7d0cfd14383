"""The exact step against a reference written from the paper's rule, and the fast policy's
promises: several units only far from every target, single steps across each target, fewer
candidates scored, picks never on an old score, and a resumed fast search equal to an
uninterrupted one."""
import itertools
import math

import pytest
import torch
from torch import nn

from autoslim_hw import search as S
from autoslim_hw import slimmable
from autoslim_hw.data import load_splits, make_loader
from autoslim_hw.models import create_model
from autoslim_hw.nn.batchnorm import batch_statistics
from autoslim_hw.search.policy import EXACT, FAST, StepPolicy, excess, lands_well, units_per_step
from tests.conftest import randomize_bn


def wide_supernet():
    """Six free units of ten options each: enough candidates for multi-unit steps."""
    layers, cin = [], 3
    for _ in range(6):
        layers += [nn.Conv2d(cin, 40, 3, padding=1, bias=False), nn.BatchNorm2d(40), nn.ReLU()]
        cin = 40
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, 4))
    net = slimmable(model, width_max=1.0, groups=10, divisor=4, input_size=8)
    assert len(net.space.free_units) == 6 and all(len(u.options) == 10 for u in net.space.free_units)
    return net


class AdditiveEvaluator:
    """Each option a unit loses below its widest costs penalty[unit] correct answers of 10,000 and
    raises the loss by penalty[unit] / 1000: scores known by construction."""

    def __init__(self, net, penalty):
        self.space, self.penalty = net.space, penalty
        self.calls, self.evaluated = [], 0

    def _score(self, config):
        lost = sum(self.penalty[u.name] * (u.options.index(u.max) - u.options.index(config[u.name]))
                   for u in self.space.free_units)
        return S.Score(10_000 - lost, 10_000, (1.0 + lost / 1000) * 10_000)

    def score(self, config):
        return self._score(config)

    def scores(self, current, candidates):
        self.calls.append([(u, dict(c)) for u, c in candidates])
        self.evaluated += len(candidates)
        return [self._score(c) for _, c in candidates]


PENALTY = {"0": 7, "3": 3, "6": 5, "9": 2, "12": 11, "15": 4}


def test_units_per_step_and_landing_by_hand():
    fast = StepPolicy("t", max_units=1 / 3, near=0.03, reach=0.5)
    assert units_per_step(fast, 30, None) == 1  # no target: the paper's step
    assert units_per_step(fast, 30, 0.02) == 1  # inside the near zone
    assert units_per_step(fast, 30, 0.5) == 10 and units_per_step(fast, 2, 0.5) == 1
    assert units_per_step(EXACT, 30, 0.5) == 1
    t = S.Target.of(macs=100)
    assert excess({"macs": 150}, t) == pytest.approx(0.5)
    # from 50% above: at most half the way to the 3% zone, i.e. not below 3% + 0.5 * 47% = 26.5%
    assert lands_well(fast, {"macs": 150}, {"macs": 127}, [t])
    assert not lands_well(fast, {"macs": 150}, {"macs": 126}, [t])
    assert not lands_well(fast, {"macs": 104}, {"macs": 102.9}, [t])  # into the near zone
    assert lands_well(fast, {"macs": 90}, {"macs": 60}, [t])  # a met target does not limit


def test_fast_policy_keeps_its_promises():
    net = wide_supernet()
    costs = S.CostModel(net)
    top = costs(net.space.largest())["macs"]
    targets = [S.Target.of(macs=0.6 * top), S.Target.of(macs=0.3 * top)]
    policy = StepPolicy("t", max_units=1 / 3, near=0.03, reach=0.5, rescore=1 / 3, stale_after=3)
    ev = AdditiveEvaluator(net, PENALTY)
    result = S.greedy_search(net, ev, costs, targets, policy=policy)
    traj = result["trajectory"]
    assert all(t["met"] for t in result["targets"])
    multi = 0
    for a, b in itertools.pairwise(traj):
        changed = [u for u in a["config"] if a["config"][u] != b["config"][u]]
        assert changed == sorted(b.get("units", [b["unit"]]), key=lambda u: list(a["config"]).index(u))
        for u in changed:  # one option each
            opts = net.space.units[u].options
            assert opts.index(b["config"][u]) == opts.index(a["config"][u]) - 1
        unmet = [t for t in targets if not t.met_by(a)]
        if len(changed) > 1:
            multi += 1
            assert all(excess(a, t) > policy.near for t in unmet)  # only far from every target
            assert lands_well(policy, a, b, targets)
            assert len(changed) <= math.floor(policy.max_units * 6)
    assert multi >= 3
    for t in result["targets"]:  # every target is crossed by a single-unit step
        assert "units" not in traj[t["step"]]
    # fewer candidates scored than the paper's step would score along the same steps
    per_step = [len([u for u in net.space.free_units if u.options.index(s["config"][u.name]) > 0])
                for s in traj[:-1]]
    assert sum(s["candidates_evaluated"] for s in traj[1:]) < sum(per_step)
    # with additive penalties the best unit is known: the first pick of every step is the unit
    # that loses least among those that can still shrink
    for a, b in itertools.pairwise(traj):
        can = [u.name for u in net.space.free_units if u.options.index(a["config"][u.name]) > 0]
        assert b["unit"] == min(can, key=lambda u: (PENALTY[u], u))


def test_picks_are_never_made_on_an_old_score():
    net = wide_supernet()
    costs = S.CostModel(net)
    top = costs(net.space.largest())["macs"]
    ev = AdditiveEvaluator(net, PENALTY)
    policy = StepPolicy("t", max_units=1 / 3, near=0.03, reach=0.5, rescore=1 / 6, stale_after=5)
    result = S.greedy_search(net, ev, costs, [S.Target.of(macs=0.4 * top)], policy=policy)
    calls = iter(ev.calls)
    for i, (a, b) in enumerate(itertools.pairwise(result["trajectory"])):
        # every candidate scored while deciding this step (the combined config of a multi-unit
        # step is scored last, from the same state)
        n = b["candidates_evaluated"] - (1 if "units" in b else 0)
        scored = set()
        while n > 0:
            call = next(calls)
            scored |= {u for u, _ in call}
            n -= len(call)
        if "units" in b:
            next(calls)
        assert b["unit"] in scored, f"step {i + 1} slimmed {b['unit']} on an old score"


def digits_net(batches: int, batch_size: int):
    """A 0.25x MobileNetV2-CIFAR with random BN affines (seeded, one thread) and the first
    `batches` batches of the real digits search split."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = create_model("mobilenet_v2_cifar", input_size=16, width_mult=0.25, in_chans=1, num_classes=10)
    randomize_bn(net, (8, 1, 16, 16))
    loader = make_loader(load_splits("digits", input_size=16).search, batch_size, shuffle=False)
    return net, [b for _, b in zip(range(batches), loader)]


def test_exact_policy_is_the_papers_rule_bit_for_bit():
    """Three steps on MobileNetV2-CIFAR (random BN affines, real digits) against a reference
    written from the rule: every unit one option narrower, plain forward with each batch's BN
    statistics, the smallest accuracy drop, then the smallest loss rise, then the earlier unit."""
    net, batches = digits_net(batches=2, batch_size=16)
    result = S.greedy_search(net, S.Evaluator(net, batches), S.CostModel(net), [], max_steps=3, policy=EXACT)

    def score(cfg):
        s = S.Score()
        net.set_config(cfg)
        with batch_statistics(net), torch.no_grad():
            for x, y in batches:
                s.add(net(x), y)
        return s

    config, current, expected = net.space.largest(), None, []
    current = score(config)
    for _ in range(3):
        keys = []
        for i, u in enumerate(net.space.free_units):
            lower = u.step_down(config[u.name])
            if lower is None:
                continue
            s = score(config.replace(u.name, lower))
            keys.append((current.accuracy - s.accuracy, s.loss - current.loss, i, u.name, s))
        drop, rise, _, unit, s = min(keys, key=lambda k: k[:3])
        config, current = config.replace(unit, net.space.units[unit].step_down(config[unit])), s
        expected.append((unit, s.correct, s.total, s.loss_sum))
    got = [(st["unit"], st["score"]["correct"], st["score"]["total"], st["score"]["loss_sum"])
           for st in result["trajectory"][1:]]
    assert got == expected


def test_resumed_fast_search_equals_the_uninterrupted_one(tmp_path):
    net, batches = digits_net(batches=1, batch_size=32)
    costs = S.CostModel(net)
    targets = [S.Target.of(macs=0.5 * costs(net.space.largest())["macs"])]
    fast = FAST  # bf16 where native, channels-last: deterministic in one process all the same
    full_out, part_out = tmp_path / "full.json", tmp_path / "part.json"

    def evaluator():
        return S.Evaluator(net, batches, precision=fast.precision, channels_last=fast.channels_last)

    full = S.greedy_search(net, evaluator(), costs, targets, out=full_out, policy=fast)
    assert len(full["trajectory"]) >= 5 and any("memo" in s for s in full["trajectory"])
    partial = {**S.load_result(full_out), "trajectory": full["trajectory"][:3], "status": "running"}
    resumed = S.greedy_search(net, evaluator(), costs, targets, out=part_out, policy=fast, resume_from=partial)
    assert resumed["trajectory"] == full["trajectory"] and resumed["targets"] == full["targets"]
