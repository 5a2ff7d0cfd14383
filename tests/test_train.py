"""Supernet training: the distillation loss, BN recalibration, resume equality, retraining."""
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoslim_hw import slimmable
from autoslim_hw.train import (TrainSettings, learning_rate, recalibrate_bn, sandwich_configs,
                               soft_cross_entropy, train)

TINY = dict(data="digits", model="mobilenet_v2_cifar", model_kwargs={"width_mult": 0.35}, input_size=16,
            batch_size=32, limit=320, eval_batches=2, num_random=1, lr=0.05)


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


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_equals_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    train(TrainSettings(epochs=2, **TINY), full, progress=False)
    part = tmp_path / "part"
    # stopped mid-epoch 1 (after 5 of its 9 steps), then resumed to the end
    stopped = train(TrainSettings(epochs=2, save_every=5, **TINY), part, progress=False, stop_after_steps=5)
    assert stopped["stopped"]
    train(TrainSettings(epochs=2, save_every=5, **TINY), part, resume=True, progress=False)
    a, b = _metrics(full / "metrics.jsonl"), _metrics(part / "metrics.jsonl")
    assert len(a) == len(b) == 2
    for key in ("train_loss", "val_top1_largest", "val_top1_smallest"):
        assert a[-1][key] == pytest.approx(b[-1][key], abs=1e-5), key
    wa = torch.load(full / "supernet.pt", weights_only=True)["model"]
    wb = torch.load(part / "supernet.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


def test_training_learns_and_writes_the_run_layout(tmp_path):
    out = tmp_path / "run"
    metrics = train(TrainSettings(epochs=3, **{**TINY, "lr": 0.1}), out, progress=False)
    for name in ("supernet.pt", "spec.json", "metrics.jsonl", "train.log"):
        assert (out / name).is_file(), name
    assert json.loads((out / "spec.json").read_text())["arch"] == "mobilenet_v2_cifar"
    assert metrics["val_top1_largest"] > 30  # 10 classes: chance is 10%
    assert not list(out.glob(".*tmp"))
