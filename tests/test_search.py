"""Greedy search: the choice rule on crafted scores, one pass for many targets, the exact
prefix cache against plain forwards (MobileNetV2 and ResNet-18 on real digits), resume, and
the `autoslim-hw search` command as a user runs it (errors, JSON, plots, torchrun)."""
import contextlib
import hashlib
import io
import itertools
import json
import operator
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from autoslim_hw import search as S
from autoslim_hw import slimmable
from autoslim_hw.counting import count_plain
from autoslim_hw.data import load_splits, make_loader
from autoslim_hw.errors import UserError
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model
from autoslim_hw.nn.config import ChannelConfig
from tests.cli_helpers import assert_user_error, run_cli, start_cli
from tests.conftest import randomize_bn

# --- a crafted supernet whose costs are known by hand ----------------------------------------

def crafted_supernet():
    """conv3x3 3->a, conv1x1 a->b, conv1x1 b->c, linear c->4 on 8x8 inputs.
    Units '0' (a), '3' (b) take {4, 8, 12}; unit '6' (c) takes {8, 16, 24}."""
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4))
    net = slimmable(model, width_max=1.0, groups=3, divisor=4, input_size=8)
    assert [(u.name, u.options) for u in net.space.free_units] == \
        [("0", (4, 8, 12)), ("3", (4, 8, 12)), ("6", (8, 16, 24))]
    return net


def macs_by_hand(a, b, c):
    return 3 * a * 9 * 64 + a * b * 64 + b * c * 64 + c * 4


def params_by_hand(a, b, c):  # convs, BN weight+bias, linear weight+bias
    return 27 * a + 2 * a + a * b + 2 * b + b * c + 2 * c + 4 * c + 4


def abc(config):
    return config["0"], config["3"], config["6"]


class FakeEvaluator:
    """Scores known by construction: every step a unit takes below its widest option costs
    penalty[unit] of 1000 correct answers and raises the mean loss by rise[unit]."""

    def __init__(self, supernet, penalty, rise):
        self.space, self.penalty, self.rise = supernet.space, penalty, rise
        self.evaluated, self.calls = 0, []

    def _score(self, config):
        steps = {u.name: u.options.index(u.max) - u.options.index(config[u.name]) for u in self.space.free_units}
        correct = 1000 - sum(self.penalty[u] * n for u, n in steps.items())
        loss = 1.0 + sum(self.rise[u] * n for u, n in steps.items())
        return S.Score(correct, 1000, loss * 1000)

    def score(self, config):
        return self._score(config)

    def scores(self, current, candidates):
        self.calls.append([u for u, _ in candidates])
        self.evaluated += len(candidates)
        return [self._score(cfg) for _, cfg in candidates]


def units_of(result):
    return [s["unit"] for s in result["trajectory"][1:]]


def test_hand_counts_match_the_independent_hook_count():
    net = crafted_supernet()
    for a, b, c in [(12, 12, 24), (8, 12, 24), (12, 4, 16), (4, 4, 8)]:
        cfg = ChannelConfig({"0": a, "3": b, "6": c})
        assert count_plain(materialize(net, cfg), (1, 3, 8, 8)) == (macs_by_hand(a, b, c), params_by_hand(a, b, c))


def test_greedy_takes_the_smallest_drop_each_step():
    net = crafted_supernet()
    ev = FakeEvaluator(net, penalty={"0": 30, "3": 10, "6": 20}, rise={"0": 0.1, "3": 0.1, "6": 0.1})
    result = S.greedy_search(net, ev, S.CostModel(net), [])  # no target: the whole pass
    # by hand: '3' costs least (1% per step) until it bottoms out, then '6' (2%), then '0' (3%)
    assert units_of(result) == ["3", "3", "6", "6", "0", "0"]
    assert [s["accuracy"] for s in result["trajectory"]] == pytest.approx([100, 99, 98, 96, 94, 91, 88])
    assert ev.calls[0] == ["0", "3", "6"] and ev.calls[2] == ["0", "6"]  # a unit at its minimum drops out
    assert [s["candidates_evaluated"] for s in result["trajectory"]] == [1, 3, 3, 2, 2, 1, 1]
    assert abc(result["trajectory"][-1]["config"]) == (4, 4, 8)
    assert [s["macs"] for s in result["trajectory"]] == \
        [macs_by_hand(*abc(s["config"])) for s in result["trajectory"]]
    assert result["status"] == "done"


@pytest.mark.parametrize("rise, expected", [
    ({"0": 0.5, "3": 0.1, "6": 0.0}, "3"),  # equal drop: the lower loss wins, though '0' comes first
    ({"0": 0.1, "3": 0.5, "6": 0.0}, "0"),
    ({"0": 0.2, "3": 0.2, "6": 0.0}, "0"),  # equal drop and loss: the earlier unit
])
def test_ties_break_by_lower_loss_then_unit_order(rise, expected):
    net = crafted_supernet()
    ev = FakeEvaluator(net, penalty={"0": 10, "3": 10, "6": 30}, rise=rise)
    result = S.greedy_search(net, ev, S.CostModel(net), [], max_steps=1)
    assert units_of(result) == [expected]


def test_drop_per_cost_divides_by_the_macs_saved():
    net = crafted_supernet()
    penalty = {"0": 30, "3": 25, "6": 20}  # drops of 3%, 2.5%, 2% per step
    rise = {"0": 0.01, "3": 0.01, "6": 0.01}
    first = S.greedy_search(net, FakeEvaluator(net, penalty, rise), S.CostModel(net), [], max_steps=1)
    assert units_of(first) == ["6"]  # the smallest plain drop
    # from (12, 12, 24): '0' 12->8 saves 1728*4 + 64*4*12 = 9984 MACs, '3' 12->8 saves 64*12*4 + 64*4*24
    # = 9216, '6' 24->16 saves 64*12*8 + 8*4 = 6176; drop per MAC: 3/9984 = 3.0e-4, 2.5/9216 = 2.7e-4,
    # 2/6176 = 3.2e-4, so '3'
    assert (macs_by_hand(12, 12, 24) - macs_by_hand(8, 12, 24), macs_by_hand(12, 12, 24) - macs_by_hand(12, 8, 24),
            macs_by_hand(12, 12, 24) - macs_by_hand(12, 12, 16)) == (9984, 9216, 6176)
    ev = FakeEvaluator(net, penalty, rise)
    result = S.greedy_search(net, ev, S.CostModel(net), [], criterion="drop-per-cost", cost_kind="macs")
    assert units_of(result)[0] == "3"
    # the whole pass against a reference written from the rule, costs from the hand formula
    config, expected = {"0": 12, "3": 12, "6": 24}, []
    options = {"0": (4, 8, 12), "3": (4, 8, 12), "6": (8, 16, 24)}
    while True:
        keys = []
        for i, u in enumerate(("0", "3", "6")):
            k = options[u].index(config[u])
            if k == 0:
                continue
            new = {**config, u: options[u][k - 1]}
            saved = macs_by_hand(*abc(config)) - macs_by_hand(*abc(new))
            keys.append((penalty[u] / 10 / saved, rise[u] / saved, i, u, new))
        if not keys:
            break
        *_, u, config = min(keys)
        expected.append(u)
    assert units_of(result) == expected and len(expected) == 6
    with pytest.raises(UserError, match="needs a cost"):
        S.greedy_search(net, ev, S.CostModel(net), [], criterion="drop-per-cost")
    with pytest.raises(UserError, match="--criterion"):
        S.greedy_search(net, ev, S.CostModel(net), [], criterion="accuracy")


def test_one_pass_for_several_targets_equals_separate_passes():
    net = crafted_supernet()
    penalty, rise = {"0": 30, "3": 10, "6": 20}, {"0": 0.1, "3": 0.1, "6": 0.1}
    # the pass visits (12,12,24) (12,8,24) (12,4,24) (12,4,16) (12,4,8) (8,4,8) (4,4,8):
    # MACs 48480 39264 30048 27968 25888 ...; params 952 800 648 568 488 ...
    a = S.Target.of(macs=35000)  # first met at step 2 (30048 MACs)
    b = S.Target.of(params=500)  # first met at step 4 (488 params)
    c = S.Target.of(macs=40000, params=700)  # both: step 2 (39264 MACs but 800 params at step 1)
    both = S.greedy_search(net, FakeEvaluator(net, penalty, rise), S.CostModel(net), [a, b, c])
    assert len(both["trajectory"]) == 5  # stops once the last target is met
    assert [t["step"] for t in both["targets"]] == [2, 4, 2]
    assert abc(both["targets"][0]["config"]) == (12, 4, 24) and abc(both["targets"][1]["config"]) == (12, 4, 8)
    for i, t in enumerate([a, b, c]):
        alone = S.greedy_search(net, FakeEvaluator(net, penalty, rise), S.CostModel(net), [t])
        assert alone["targets"] == [both["targets"][i]]
        assert len(alone["trajectory"]) == both["targets"][i]["step"] + 1
    entry = both["targets"][1]
    assert entry["macs"] == macs_by_hand(12, 4, 8) and entry["params"] == params_by_hand(12, 4, 8)
    assert entry["constraints"] == {"params": 500} and entry["met"] is True
    assert ChannelConfig.from_layer_list(net, entry["layers"]) == ChannelConfig(entry["config"])


def test_targets_and_quantities():
    assert S.parse_quantity("200M", "--flops") == 200e6
    assert S.parse_quantity("4.5G", "--flops") == 4.5e9
    assert S.parse_quantity("9MiB", "--memory") == 9 * 2 ** 20
    assert S.parse_quantity("3e8", "--flops") == 3e8
    assert S.parse_quantity("750k", "--params") == 750e3
    for bad in ("abc", "-5", "0", "nan", "5X", ""):
        with pytest.raises(UserError, match="--flops"):
            S.parse_quantity(bad, "--flops")
    ts = S.targets_from_options(latency_ms=["70", "50"], flops=["300M"])
    assert [t.limits for t in ts] == [{"latency_ms": 70, "macs": 3e8}, {"latency_ms": 50, "macs": 3e8}]
    with pytest.raises(UserError, match="once or 3 times"):
        S.targets_from_options(latency_ms=["1", "2", "3"], flops=["1M", "2M"])
    assert S.Target.of(macs=10).met_by({"macs": 10}) and not S.Target.of(latency_ms=1).met_by({"latency_ms": None})


def test_unreachable_target_names_the_minimum():
    net = crafted_supernet()
    costs = S.CostModel(net)
    S.check_feasible([S.Target.of(macs=10016)], costs)  # the smallest config: (4, 4, 8) = 10016 MACs
    with pytest.raises(UserError, match=r"unreachable.*10\.02K"):
        S.check_feasible([S.Target.of(macs=10015)], costs)
    with pytest.raises(UserError, match="lookup table"):
        S.check_feasible([S.Target.of(latency_ms=5)], costs)


def test_load_result_rejects_other_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        S.load_result(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(UserError, match="not a readable search result"):
        S.load_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not an autoslim-hw search result"):
        S.load_result(tmp_path / "other.json")


# --- the exact prefix cache on real networks and real digits ---------------------------------

def recording(evaluator, module=None):
    """Keep every candidate's score, to compare more than the chosen ones, and count the calls
    of `module` while candidates are scored."""
    seen, calls, on = [], [0], [False]
    inner = evaluator.scores
    if module is not None:
        module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + on[0]))

    def scores(current, candidates):
        on[0] = True
        try:
            out = inner(current, candidates)
        finally:
            on[0] = False
        seen.append([(u, dict(c), s.correct, s.total, s.loss_sum) for (u, c), s in zip(candidates, out)])
        return out
    evaluator.scores = scores
    return seen, calls


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Two threads on two shared cores can be several times slower than one; the commands run
    under test get the same setting (and torchrun gives each rank one thread anyway)."""
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def mnv2_cached(tmp_path_factory):
    """MobileNetV2-CIFAR with random BN affines (so candidates differ) on two 8-image batches of
    the digits search split; three cached steps, with the output file as it stood after step 1."""
    torch.manual_seed(0)
    net = create_model("mobilenet_v2_cifar", input_size=16, width_mult=0.25, in_chans=1, num_classes=10)
    randomize_bn(net, (8, 1, 16, 16))
    search = load_splits("digits", input_size=16).search
    batches = [b for _, b in zip(range(2), make_loader(search, 8, shuffle=False))]
    tmp = tmp_path_factory.mktemp("mnv2")
    out, after_one = tmp / "search.json", tmp / "after_step1.json"

    def snapshot(step):  # the file a run killed after its first step leaves behind
        if step["step"] == 1:
            shutil.copy(out, after_one)

    torch.set_num_threads(1)
    ev = S.Evaluator(net, batches, cache=True)
    seen, stem = recording(ev, net.net.features[0][0])
    result = S.greedy_search(net, ev, S.CostModel(net), [], out=out, max_steps=3, on_step=snapshot)
    return {"net": net, "batches": batches, "result": result, "seen": seen, "stem": stem[0], "out": out,
            "after_one": after_one}


def test_cache_gives_the_uncached_trajectory_mobilenet_v2(mnv2_cached):
    net, batches = mnv2_cached["net"], mnv2_cached["batches"]
    ev = S.Evaluator(net, batches, cache=False)
    seen, stem = recording(ev, net.net.features[0][0])
    plain = S.greedy_search(net, ev, S.CostModel(net), [], max_steps=3)
    cached = mnv2_cached["result"]
    assert len(plain["trajectory"]) == 4
    assert plain["trajectory"] == cached["trajectory"]  # units, configs, scores and costs, bit for bit
    assert seen == mnv2_cached["seen"]  # every candidate's score, not only the chosen ones
    losses = [loss for step in seen for *_, loss in step]
    assert len(set(losses)) > len(losses) // 2  # the candidates really differ
    # the cache skips work: without it the stem runs for every candidate; with it only for the
    # current config and the candidate that slims the stem's own unit
    n_cands = sum(s["candidates_evaluated"] for s in plain["trajectory"][1:])
    assert stem[0] == len(batches) * (1 + n_cands)
    assert mnv2_cached["stem"] <= 2 * len(batches) * len(plain["trajectory"])
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU6))  # switched back on


def test_resume_from_an_interrupted_file_equals_the_uninterrupted_run(mnv2_cached):
    net, batches = mnv2_cached["net"], mnv2_cached["batches"]
    partial = S.load_result(mnv2_cached["after_one"])
    assert partial["status"] == "running" and len(partial["trajectory"]) == 2
    out = mnv2_cached["out"].with_name("resumed.json")
    ev = S.Evaluator(net, batches, cache=True)
    resumed = S.greedy_search(net, ev, S.CostModel(net), [], out=out, max_steps=3, resume_from=partial)
    # only steps 2 and 3 ran
    assert ev.evaluated == sum(s["candidates_evaluated"] for s in mnv2_cached["result"]["trajectory"][2:])
    assert S.load_result(out)["trajectory"] == S.load_result(mnv2_cached["out"])["trajectory"]
    assert resumed["status"] == "done"


def test_cache_gives_the_uncached_trajectory_resnet18():
    """ResNet-18 adds residuals (`out += identity`) and ReLU(inplace=True): cached tensors must
    survive them."""
    torch.manual_seed(1)
    torch.set_num_threads(1)
    net = create_model("resnet18", input_size=32, in_chans=1, num_classes=10, width_max=1.0, groups=4)
    randomize_bn(net, (4, 1, 32, 32))
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in net.modules())
    search = load_splits("digits", input_size=32).search
    batches = [b for _, b in zip(range(2), make_loader(search, 4, shuffle=False))]
    runs = []
    for cache in (True, False):
        ev = S.Evaluator(net, batches, cache=cache)
        seen, _ = recording(ev)
        if cache:
            assert sum(n.target is operator.add for n in ev.runner.nodes) == 8  # one per residual block
        runs.append((S.greedy_search(net, ev, S.CostModel(net), [], max_steps=2), seen))
    (cached, seen_c), (plain, seen_p) = runs
    assert len(plain["trajectory"]) == 3 and plain["trajectory"] == cached["trajectory"]
    assert seen_c == seen_p
    assert len({loss for step in seen_p for *_, loss in step}) > 1
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))


class InPlaceNet(nn.Module):
    """In-place tensor methods after the first layer of a unit: an in-place op on a cached
    tensor would corrupt every later candidate of the step."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.c1, self.b1 = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.b1(self.c1(x)).relu_()
        x.mul_(0.5)  # the stem's output, cached for the candidates that slim c1
        y = self.b2(self.c2(y))
        y += x
        z = self.b3(self.c3(y.relu_()))
        z.mul_(2.0)
        return self.fc(z.mean((2, 3)))


def test_cache_survives_in_place_tensor_methods():
    torch.manual_seed(2)
    net = slimmable(InPlaceNet(), width_max=1.0, groups=4, divisor=2, input_size=8)
    randomize_bn(net, (8, 1, 8, 8))
    batches = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))) for _ in range(2)]
    runs = []
    for cache in (True, False):
        ev = S.Evaluator(net, batches, cache=cache)
        seen, _ = recording(ev)
        if cache:
            assert {n.target for n in ev.runner.nodes if n.op == "call_method"} >= {"relu_", "mul_"}
        runs.append((S.greedy_search(net, ev, S.CostModel(net), []), seen))
    (cached, seen_c), (plain, seen_p) = runs
    assert cached["trajectory"][-1]["config"] == dict(net.space.smallest())  # the whole pass
    assert plain["trajectory"] == cached["trajectory"] and seen_c == seen_p
    assert len({loss for step in seen_p for *_, loss in step}) > 3


def test_recalibrated_scores_do_not_depend_on_the_evaluation_order():
    """--bn recalibrate: every candidate is recalibrated on the same images, so a candidate's
    score is the same whichever candidates ran before it (resume and torchrun rely on that)."""
    from autoslim_hw.workflows.search import recalibration_loader as calibration_loader

    torch.manual_seed(3)
    net = crafted_supernet()
    images = torch.utils.data.TensorDataset(torch.randn(96, 3, 8, 8), torch.zeros(96, dtype=torch.long))
    loader = calibration_loader(images, seed=5, batch_size=16, batches=4)
    first, second = [x for x, _ in loader], [x for x, _ in loader]
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(torch.cat(first), images.tensors[0][:64])  # a seeded random subset
    batches = [(torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))) for _ in range(2)]
    ev = S.Evaluator(net, batches, bn="recalibrate", calib_loader=loader, calib_batches=4)
    cands = S.candidates_of(net, net.space.largest())
    forward = ev.scores(net.space.largest(), cands)
    backward = ev.scores(net.space.largest(), cands[::-1])[::-1]
    assert forward == backward
    assert len({s.loss_sum for s in forward}) == len(cands)


# --- the command ---------------------------------------------------------------------------

TRAIN = ["--data", "digits", "--limit", "128", "--input-size", "16", "--width-mult", "0.25", "--groups", "2",
         "--batch-size", "32", "--epochs", "1"]


def run_main(*args):
    """The CLI entry point in this process (no interpreter start-up): for the error paths,
    which never reach the search. Same code as the console script, same exit codes."""
    from autoslim_hw.cli import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["autoslim-hw", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def synthetic_table(supernet, path, device="cpu-1core", keys=None):
    """A latency table with made-up but monotone per-layer times, for this model by default."""
    from autoslim_hw.lookup_tables import enumerate_signatures
    from autoslim_hw.lookup_tables.build import new_table
    from autoslim_hw.lookup_tables.table import model_key
    from autoslim_hw.profilers import MeasureSettings, get_backend
    from autoslim_hw.profilers.devices import get_device

    table = new_table(get_device(device), get_backend("onnxruntime"), MeasureSettings())
    table.metadata["models"] = [{"key": k} for k in (keys or [model_key(supernet)])]
    for sig in enumerate_signatures(supernet):
        table.add(sig, 0.002 + 1e-7 * sig.h * sig.w * sig.cin * sig.cout * sig.kernel ** 2 / sig.groups, 0.0, 0.0)
    table.save(path)
    return table


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """A supernet trained through the CLI, a synthetic table for it, and one search run."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        return _cli_setup(root)


def _cli_setup(root):
    from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint

    r = run_cli("train", *TRAIN, "--out", root / "run", cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = root / "run" / "supernet.pt"
    supernet, _, _ = model_from_checkpoint(load_checkpoint(ckpt))
    table = synthetic_table(supernet, root / "lut.json")
    space = supernet.space
    shape = (1, 1, 16, 16)
    macs_max = count_plain(materialize(supernet, space.largest()), shape)[0]
    lat_max = table.predict(supernet, space.largest()).latency_ms
    # two targets, each also under a latency limit: the first met after a step or so, the second later
    # the paper's exact step: its scores are checked against plain float32 forwards below (the
    # fast default is tested in test_search_policy.py and test_cli_fast_search_*)
    opts = ["--checkpoint", ckpt, "--lut", root / "lut.json", "--latency-ms", f"{0.995 * lat_max:.6f}",
            "--flops", f"{0.97 * macs_max:.0f}", "--flops", f"{0.88 * macs_max:.0f}", "--exact"]
    out = root / "run" / "search.json"
    r = run_cli("search", *opts, "--out", out, cwd=root)
    return {"root": root, "ckpt": ckpt, "supernet": supernet, "table": table, "opts": opts, "out": out, "run": r,
            "shape": shape,
            "limits": [(0.995 * lat_max, round(0.97 * macs_max)), (0.995 * lat_max, round(0.88 * macs_max))]}


def search_images(supernet, checkpoint):
    """The held-out split exactly as the search command loads it, as one batch."""
    s = torch.load(checkpoint, weights_only=True)["settings"]
    split = load_splits(s["data"], input_size=16, in_chans=1, search_size=s["search_size"], seed=s["seed"],
                        limit=s["limit"]).search
    x, y = next(iter(make_loader(split, 4096, shuffle=False)))
    return x, y


def accuracy_by_hand(supernet, config, x, y):
    """Top-1 of the materialized plain network with BatchNorm on the batch's own statistics."""
    model = materialize(supernet, config).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


def test_cli_search_end_to_end(cli):
    r = cli["run"]
    assert r.returncode == 0, r.stderr[-3000:]
    supernet, table, out = cli["supernet"], cli["table"], cli["out"]
    data = json.loads(out.read_text())
    assert data["status"] == "done" and data["model"]["arch"] == "mobilenet_v2_cifar"
    lut = cli["root"] / "lut.json"
    assert data["lut"]["sha256"] == hashlib.sha256(lut.read_bytes()).hexdigest()
    assert (data["lut"]["device"], data["lut"]["runtime"]) == ("cpu-1core", "onnxruntime")
    # the file says which memory its memory fields are: deployed bytes, not the paper's count
    assert "BN folded" in data["costs"]["memory"] and "Table 1" in data["costs"]["memory"]
    traj = data["trajectory"]
    assert [s["step"] for s in traj] == list(range(len(traj))) and traj[0]["unit"] is None
    x, y = search_images(supernet, cli["ckpt"])
    for s in traj:
        assert {"step", "unit", "config", "accuracy", "macs", "params", "memory", "latency_ms"} <= set(s)
        cfg = ChannelConfig(s["config"])
        assert (s["macs"], s["params"]) == count_plain(materialize(supernet, cfg), cli["shape"])
        assert s["latency_ms"] == pytest.approx(table.predict(supernet, cfg).latency_ms)
        assert s["memory"] > 0
    for a, b in itertools.pairwise(traj):  # one unit, one option narrower per step
        changed = [k for k in a["config"] if a["config"][k] != b["config"][k]]
        assert changed == [b["unit"]] and b["config"][b["unit"]] < a["config"][b["unit"]]
    assert len(data["targets"]) == 2
    for t, (lat, flops) in zip(data["targets"], cli["limits"]):
        assert t["met"] and t["constraints"]["macs"] == flops and t["constraints"]["latency_ms"] == pytest.approx(lat)
        lat = t["constraints"]["latency_ms"]  # the limit as the command parsed it
        assert {"constraints", "config", "layers", "accuracy", "macs", "params", "memory", "latency_ms"} <= set(t)
        ok = [count_plain(materialize(supernet, ChannelConfig(s["config"])), cli["shape"])[0] <= flops
              and table.predict(supernet, ChannelConfig(s["config"])).latency_ms <= lat for s in traj]
        assert ok.index(True) == t["step"] and t["config"] == traj[t["step"]]["config"]  # the first that fits
        assert ChannelConfig.from_layer_list(supernet, t["layers"]) == ChannelConfig(t["config"])
        assert t["accuracy"] == pytest.approx(accuracy_by_hand(supernet, ChannelConfig(t["config"]), x, y))
    assert data["targets"][1]["step"] == len(traj) - 1 >= 2  # stops at the last target
    assert traj[0]["accuracy"] == pytest.approx(accuracy_by_hand(supernet, supernet.space.largest(), x, y))
    for png in ("search_trajectory.png", "search_channels.png"):
        assert (out.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "configs on the trajectory" in r.stdout


def test_cli_flops_guided_search_divides_the_drop_by_the_macs_saved(cli):
    """--criterion drop-per-cost --cost flops under a latency target: its first step slims the unit
    whose accuracy drop per MAC saved is the smallest, recomputed here by hand (plain networks,
    counted MACs), and the result records MACs as the cost, not the target's latency."""
    root, supernet = cli["root"], cli["supernet"]
    out = root / "per_mac.json"
    lat = 0.995 * cli["table"].predict(supernet, supernet.space.largest()).latency_ms
    r = run_cli("search", "--checkpoint", cli["ckpt"], "--lut", root / "lut.json", "--latency-ms", f"{lat:.6f}",
                "--criterion", "drop-per-cost", "--cost", "flops", "--exact", "--out", out, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert (data["settings"]["criterion"], data["settings"]["cost"]) == ("drop-per-cost", "macs")
    x, y = search_images(supernet, cli["ckpt"])
    start = ChannelConfig(data["trajectory"][0]["config"])
    acc0, macs0 = accuracy_by_hand(supernet, start, x, y), count_plain(materialize(supernet, start), cli["shape"])[0]
    ratios = {}
    for unit in supernet.space.free_units:
        lower = [w for w in unit.options if w < start[unit.name]]
        if lower:
            cand = start.replace(unit.name, lower[-1])
            saved = macs0 - count_plain(materialize(supernet, cand), cli["shape"])[0]
            ratios[unit.name] = (acc0 - accuracy_by_hand(supernet, cand, x, y)) / saved
    picked = data["trajectory"][1]["unit"]
    assert ratios[picked] == pytest.approx(min(ratios.values()), abs=1e-12), (picked, ratios)


def test_cli_resume_continues_a_truncated_file(cli):
    full = json.loads(cli["out"].read_text())
    assert len(full["trajectory"]) >= 3
    partial = {**full, "status": "running", "trajectory": full["trajectory"][:2], "targets": []}
    out = cli["root"] / "resumed.json"
    out.write_text(json.dumps(partial))
    r = run_cli("search", *cli["opts"], "--out", out, "--resume", cwd=cli["root"])
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["status"] == "done"
    assert again["trajectory"] == full["trajectory"] and again["targets"] == full["targets"]


def test_cli_default_checkpoint_is_the_newest(cli, tmp_path):
    for name, mtime in (("a", 1_000_000), ("c", 2_000_000), ("b", 3_000_000)):  # b: newest, not last by name
        (tmp_path / "runs" / name).mkdir(parents=True)
        shutil.copy(cli["ckpt"], tmp_path / "runs" / name / "supernet.pt")
        os.utime(tmp_path / "runs" / name / "supernet.pt", (mtime, mtime))
    largest = json.loads(cli["out"].read_text())["trajectory"][0]["macs"]
    r = run_cli("search", "--flops", str(largest), cwd=tmp_path)  # met by the largest config: no step
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runs/b/supernet.pt" in r.stdout and "newest" in r.stdout
    data = json.loads((tmp_path / "runs" / "b" / "search.json").read_text())
    assert data["checkpoint"]["path"] == "runs/b/supernet.pt" and len(data["trajectory"]) == 1
    assert not (tmp_path / "runs" / "a" / "search.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run_cli("search", "--flops", "1M", cwd=empty), "no checkpoint under ./runs")


def test_cli_user_errors(cli, tmp_path, monkeypatch):
    from autoslim_hw.checkpoint import save_checkpoint

    monkeypatch.chdir(tmp_path)
    ckpt, supernet, root = cli["ckpt"], cli["supernet"], cli["root"]
    base = ["search", "--checkpoint", ckpt]
    # the real console script, start-up included
    assert_user_error(run_cli(*base, "--flops", "abc", cwd=tmp_path), "--flops 'abc' is not a number")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    assert_user_error(run_cli("search", "--checkpoint", corrupt, "--flops", "1M", cwd=tmp_path),
                      "not a readable autoslim-hw checkpoint")
    # the rest through the same entry point in this process
    smallest = supernet.space.smallest()
    macs_min = count_plain(materialize(supernet, smallest), cli["shape"])[0]
    assert_user_error(run_main(*base, "--flops", "1K", "--out", tmp_path / "s.json"),
                      "unreachable", f"{macs_min / 1e6:.2f}M")
    lat_min = cli["table"].predict(supernet, smallest).latency_ms
    assert_user_error(run_main(*base, "--lut", root / "lut.json", "--latency-ms", "0.0001", "--out", tmp_path / "s.json"),
                      "unreachable", f"{lat_min:.2f} ms")
    assert_user_error(run_main(*base, "--lut", root / "lut.json", "--device", "cpu-2core", "--latency-ms", "50"),
                      "'cpu-1core'", "'cpu-2core'", "--allow-mismatch")
    other = tmp_path / "other_model.json"
    synthetic_table(supernet, other, keys=["mobilenet_v2_cifar@32-0badc0de"])
    assert_user_error(run_main(*base, "--lut", other, "--latency-ms", "50"),
                      "profiled for mobilenet_v2_cifar@32-0badc0de", "--allow-mismatch")
    assert_user_error(run_main(*base, "--latency-ms", "50"), "no lookup table", "autoslim-hw profile")
    # a finished search may be extended with --resume, but only with the same settings
    done = tmp_path / "done.json"
    shutil.copy(cli["out"], done)
    assert_user_error(run_main("search", *cli["opts"], "--out", done, "--resume", "--batch-size", "64"),
                      "--resume", "different settings")
    assert_user_error(run_main("search", *cli["opts"], "--out", done, "--resume", "--restart"), "not both")
    assert_user_error(run_main("search", *cli["opts"], "--out", tmp_path / "none.json", "--resume"), "no search in")
    running = tmp_path / "running.json"
    running.write_text(json.dumps({**json.loads(done.read_text()), "status": "running"}))
    assert_user_error(run_main("search", *cli["opts"], "--out", running), "interrupted", "--resume", "--restart")
    not_json = tmp_path / "not_json.json"
    not_json.write_text("{")
    assert_user_error(run_main("search", *cli["opts"], "--out", not_json), "not a readable search result")
    subnet = tmp_path / "subnet.pt"
    save_checkpoint(subnet, {"kind": "subnet", "spec": supernet.spec.to_dict(), "config": dict(smallest), "model": {}})
    assert_user_error(run_main("search", "--checkpoint", subnet, "--flops", "1M"), "not a supernet")
    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(2)}, plain)
    assert_user_error(run_main("search", "--checkpoint", plain, "--flops", "1M"), "not an autoslim-hw checkpoint")
    assert_user_error(run_main(*base, "--flops", "1M", "--flops", "2M", "--params", "1M", "--params", "2M",
                               "--params", "3M"), "once or 3 times")
    assert_user_error(run_main(*base, "--flops", "5M", "--criterion", "best", "--out", tmp_path / "s.json"),
                      "--criterion")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_torchrun_two_ranks_same_trajectory(cli):
    out = cli["root"] / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
           "-m", "autoslim_hw", "search", *map(str, cli["opts"]), "--out", str(out)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=cli["root"])
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = json.loads(cli["out"].read_text()), json.loads(out.read_text())
    # each rank scores half the candidates, on one thread like the single-process run: bit for bit
    assert two["trajectory"] == one["trajectory"] and two["targets"] == one["targets"]
    assert two["status"] == "done" and len(two["trajectory"]) >= 3


@pytest.mark.slow
def test_cli_recalibrate_search_resumes_to_the_same_trajectory(cli):
    opts = [*cli["opts"], "--bn", "recalibrate"]
    full_out, part_out = cli["root"] / "recal.json", cli["root"] / "recal_resumed.json"
    r = run_cli("search", *opts, "--out", full_out, cwd=cli["root"])
    assert r.returncode == 0, r.stderr[-3000:]
    full = json.loads(full_out.read_text())
    assert full["settings"]["bn"] == "recalibrate" and len(full["trajectory"]) >= 3
    part_out.write_text(json.dumps({**full, "status": "running", "trajectory": full["trajectory"][:2]}))
    r = run_cli("search", *opts, "--out", part_out, "--resume", cwd=cli["root"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(part_out.read_text())["trajectory"] == full["trajectory"]


def test_ctrl_c_during_search_then_resume_gives_the_same_result(cli):
    """A whole pass (no targets), interrupted after two steps: exit 130, a readable file with
    the steps so far, and --resume ends with the uninterrupted pass's trajectory."""
    import signal
    import time

    opts = ["search", "--checkpoint", cli["ckpt"], "--lut", cli["root"] / "lut.json", "--exact"]
    full = cli["root"] / "full.json"
    r = run_cli(*opts, "--out", full, cwd=cli["root"])
    assert r.returncode == 0, r.stderr[-2000:]
    out = cli["root"] / "interrupted.json"
    proc = start_cli(*opts, "--out", out, cwd=cli["root"])

    def steps():
        try:
            return len(json.loads(out.read_text())["trajectory"])
        except (OSError, ValueError):
            return 0

    while steps() < 2 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    partial = json.loads(out.read_text())
    assert partial["status"] == "running" and len(partial["trajectory"]) >= 2
    r = run_cli(*opts, "--out", out, "--resume", cwd=cli["root"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["trajectory"] == json.loads(full.read_text())["trajectory"]


def test_a_search_target_off_the_grid_is_refused():
    """A search only visits width options; an edited result with another width is refused the
    way `search --resume` refuses it, by export and `train --arch` alike."""
    from autoslim_hw.errors import ConfigError
    from autoslim_hw.models import create_model
    from autoslim_hw.search.result import search_target_config

    space = create_model("mobilenet_v2_cifar", input_size=32, num_classes=10).space
    good = dict(space.uniform(0.6, snap=True))
    assert search_target_config({"config": good}, space, "target 0") == space.uniform(0.6, snap=True)
    unit = space.free_units[5]
    off = next(w for w in range(1, unit.max) if w not in unit.options)
    with pytest.raises(ConfigError, match=f"target 0 of x.json: width {off} for unit '{unit.name}' is not an option"):
        search_target_config({"config": {**good, unit.name: off}}, space, "target 0 of x.json")
