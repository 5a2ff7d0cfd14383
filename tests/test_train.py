"""Supernet training: the distillation loss, BN recalibration, resume equality, retraining."""
import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.nn.batchnorm import recalibrate_bn
from autoslim_hw.train import (TrainSettings, config_rng, learning_rate, sandwich_backward, sandwich_configs,
                               soft_cross_entropy, train)

TINY = dict(data="digits", model="mobilenet_v2_cifar", model_kwargs={"width_mult": 0.35}, input_size=16,
            batch_size=32, limit=320, eval_batches=2, num_random=1)


def test_soft_cross_entropy_is_kl_plus_target_entropy():
    logits, target = torch.randn(5, 7), F.softmax(torch.randn(5, 7), dim=1)
    kl = F.kl_div(F.log_softmax(logits, 1), target, reduction="batchmean")
    entropy = -(target * target.log()).sum(1).mean()
    assert torch.allclose(soft_cross_entropy(logits, target), kl + entropy, atol=1e-6)


def test_sandwich_has_largest_smallest_and_random():
    net = slimmable(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, 4)), input_size=8)
    cfgs = sandwich_configs(net.space, random.Random(0), 3)
    assert cfgs[0] == net.space.largest() and cfgs[1] == net.space.smallest() and len(cfgs) == 5


def _levels(space, cfg):
    """Each unit's width as a fraction of its option range (0: narrowest, 1: widest)."""
    return [u.options.index(cfg[u.name]) / (len(u.options) - 1) for u in space.free_units if len(u.options) > 1]


def test_around_sampling_spans_narrow_to_wide_where_per_unit_clusters():
    from statistics import mean, pstdev

    from autoslim_hw.models import create_model

    space = create_model("mobilenet_v2_cifar", input_size=32, num_classes=10).space
    rng = random.Random(0)
    draw = lambda sampling: [mean(_levels(space, c)) for _ in range(100)  # noqa: E731
                             for c in sandwich_configs(space, rng, 2, sampling)[2:]]
    # the mean of ~25 independent uniform levels has a standard deviation of about 0.29 / 5
    assert pstdev(draw("per-unit")) < 0.1
    around = draw("around")
    assert pstdev(around) > 0.2 and min(around) < 0.15 and max(around) > 0.85
    for cfg in sandwich_configs(space, rng, 20, "uniform")[2:]:  # one level for every unit
        levels = _levels(space, cfg)
        assert max(levels) - min(levels) <= 0.5 + 1e-9  # rounding to options of 2-10 choices
    with pytest.raises(ValueError, match="sampling"):
        sandwich_configs(space, rng, 1, "mixed")


def test_default_batch_lr_warmup_and_epochs_follow_the_documented_rules():
    from autoslim_hw.train import resolve_defaults

    # digits-sized: 128 -> 64 -> 32 -> 16 (1437 // 32 = 44 steps is under 50; 16 is the floor)
    s = resolve_defaults(TrainSettings(data="digits"), train_images=1437)
    assert (s.batch_size, s.epochs) == (16, 40)
    assert s.lr == pytest.approx(0.14 * (16 / 128) ** 0.5, abs=1e-6)
    assert s.warmup_epochs == 2.0  # 5% of 40 epochs
    # CIFAR-10-sized on 2 ranks: 45000 // 256 = 175 steps, so 128 per rank; lr by the total batch
    s = resolve_defaults(TrainSettings(data="cifar10"), train_images=45000, world_size=2)
    assert (s.batch_size, s.epochs, s.warmup_epochs) == (128, 30, 1.5)
    assert s.lr == pytest.approx(0.14 * 2 ** 0.5, abs=1e-6)
    # retraining one subnet: half the supernet's rate
    s = resolve_defaults(TrainSettings(data="digits", arch="search.json:0"), train_images=1437)
    assert s.lr == pytest.approx(0.07 * (16 / 128) ** 0.5, abs=1e-6)
    # what the user gave stays
    s = resolve_defaults(TrainSettings(data="cifar10", batch_size=64, lr=0.3, epochs=2, warmup_epochs=0), 45000)
    assert (s.batch_size, s.lr, s.epochs, s.warmup_epochs) == (64, 0.3, 2, 0)


def test_learning_rate_schedule():
    s = TrainSettings(lr=0.4, warmup_epochs=1, schedule="cosine")
    assert learning_rate(s, 0, 100, 10) == pytest.approx(0.04)
    assert learning_rate(s, 10, 100, 10) == pytest.approx(0.4)
    assert learning_rate(s, 55, 100, 10) == pytest.approx(0.2)  # half way through the decay
    s.schedule = "linear"
    assert learning_rate(s, 55, 100, 10) == pytest.approx(0.2)


def test_recalibration_gives_the_exact_mean_of_the_batches():
    torch.manual_seed(0)
    net = slimmable(nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)), input_size=8)
    cfg = net.space.smallest()
    batches = [(torch.randn(6, 3, 8, 8) + i, torch.zeros(6, dtype=torch.long)) for i in range(4)]
    recalibrate_bn(net, cfg, batches, batches=3)
    conv, bn = net.net[0], net.net[1]
    width = cfg["0"]
    with torch.no_grad():  # by hand: per-batch channel means, averaged with equal weights
        means = [F.conv2d(x, conv.weight[:width]).mean((0, 2, 3)) for x, _ in batches[:3]]
    assert torch.allclose(bn.running_mean[:width], torch.stack(means).mean(0), atol=1e-5)
    assert not net.training and bn.momentum == 0.1


def test_distillation_targets_are_detached():
    torch.manual_seed(0)
    net = slimmable(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, 4)), input_size=8)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    configs = [net.space.largest(), net.space.smallest()]
    sandwich_backward(net, net, configs, x, y, label_weight=0.0)
    got = [p.grad.clone() for p in net.parameters()]
    # by hand: the mean of the largest's label loss and the smallest's soft loss against a
    # constant target
    net.zero_grad()
    net.set_config(configs[0])
    teacher = net(x)
    loss = F.cross_entropy(teacher, y)
    net.set_config(configs[1])
    loss = (loss + soft_cross_entropy(net(x), F.softmax(teacher, 1).detach())) / 2
    loss.backward()
    assert all(torch.allclose(a, b.grad, atol=1e-6) for a, b in zip(got, net.parameters()))
    # with a label weight w, the student's loss is (1 - w) x soft loss + w x label loss
    net.zero_grad()
    sandwich_backward(net, net, configs, x, y, label_weight=0.3)
    mixed = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.set_config(configs[0])
    teacher = net(x)
    net.set_config(configs[1])
    student = net(x)
    (F.cross_entropy(teacher, y) / 2 + (0.7 * soft_cross_entropy(student, F.softmax(teacher, 1).detach())
                                        + 0.3 * F.cross_entropy(student, y)) / 2).backward()
    assert all(torch.allclose(a, b.grad, atol=1e-6) for a, b in zip(mixed, net.parameters()))
    net.zero_grad()
    sandwich_backward(net, net, configs, x, y, label_weight=0.0)
    # had the target not been detached, the teacher's weights would get other gradients
    net.zero_grad()
    net.set_config(configs[0])
    teacher = net(x)
    net.set_config(configs[1])
    (F.cross_entropy(teacher, y) + soft_cross_entropy(net(x), F.softmax(teacher, 1))).backward()
    assert not all(torch.allclose(a, b.grad, atol=1e-6) for a, b in zip(got, net.parameters()))


def test_sampled_configs_stay_in_bounds_and_ranks_differ():
    from autoslim_hw.models import create_model

    space = create_model("mobilenet_v2_cifar").space
    per_rank = [[space.sample(config_rng(0, 0, rank)) for _ in range(3)] for rank in (0, 1)]
    for cfgs in per_rank:
        for cfg in cfgs:
            space.validate(cfg)  # every width is one of its unit's options
            assert all(space.smallest()[k] <= v <= space.largest()[k] for k, v in cfg.items())
    assert per_rank[0] != per_rank[1]
    assert per_rank[0] == [space.sample(config_rng(0, 0, 0)) for _ in range(3)]


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    metrics = train(TrainSettings(epochs=3, **TINY), out, progress=False)
    return out, metrics


def test_training_learns_and_writes_the_run_layout(tiny_run):
    out, metrics = tiny_run
    for name in ("supernet.pt", "spec.json", "metrics.jsonl", "train.log"):
        assert (out / name).is_file(), name
    assert json.loads((out / "spec.json").read_text())["arch"] == "mobilenet_v2_cifar"
    assert len(_metrics(out / "metrics.jsonl")) == 3
    assert metrics["val_top1_largest"] > 25  # 10 balanced classes: chance is 10%
    assert not list(out.glob(".*tmp"))


def test_bn_recalibration_restores_a_narrow_config(tmp_path):
    from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint
    from autoslim_hw.data import load_splits, make_loader
    from autoslim_hw.nn.evaluate import evaluate

    # long enough for the smallest config to learn something (27 steps of TINY leave it near
    # chance, where the margin below depends on the thread count's rounding)
    settings = TrainSettings(epochs=6, **{**TINY, "limit": 640})
    train(settings, tmp_path / "run", progress=False)
    net, _, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "supernet.pt"))
    splits = load_splits("digits", input_size=16, limit=settings.limit)
    val = make_loader(splits.val, 256, shuffle=False)
    calib = make_loader(splits.train_eval, 64, shuffle=True)
    recalibrate_bn(net, net.space.largest(), calib, batches=4)
    cfg = net.space.smallest()
    net.set_config(cfg)
    stale = evaluate(net, val, topk=(1,))["top1"]  # the narrow config on the widest one's statistics
    bn = net.net.features[1].conv[2]
    before = bn.running_var.clone()
    recalibrate_bn(net, cfg, calib, batches=4)
    assert not torch.allclose(before, bn.running_var)
    assert evaluate(net, val, topk=(1,))["top1"] > stale + 5


@pytest.mark.parametrize("stop", [3, 5])
def test_resume_equals_uninterrupted_run(tmp_path, stop):
    small = {**TINY, "limit": 192}  # 5 steps per epoch
    full = tmp_path / "full"
    train(TrainSettings(epochs=2, **small), full, progress=False)
    part = tmp_path / "part"
    # killed mid-epoch 1 (after 3 of its 5 steps), or after its last step but before the epoch's
    # end (its evaluation and checkpoint), then resumed to the end
    stopped = train(TrainSettings(epochs=2, save_every=stop, **small), part, progress=False, stop_after_steps=stop)
    assert stopped["stopped"]
    train(TrainSettings(epochs=2, save_every=stop, **small), part, resume=True, progress=False)
    a, b = _metrics(full / "metrics.jsonl"), _metrics(part / "metrics.jsonl")
    assert len(a) == len(b) == 2
    for rec_a, rec_b in zip(a, b):
        for key in ("train_loss", "lr", "val_top1_largest", "val_top1_smallest"):
            assert rec_a[key] == pytest.approx(rec_b[key], abs=1e-5), key
    wa = torch.load(full / "supernet.pt", weights_only=True)["model"]
    wb = torch.load(part / "supernet.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
