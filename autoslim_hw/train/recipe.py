"""The training recipe: settings and their defaults, the learning-rate schedule, how a sandwich
step samples its configs and what each config learns from."""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet


@dataclass
class TrainSettings:
    data: str = "digits"
    data_dir: str | None = None
    model: str = "mobilenet_v2_cifar"
    width_max: float = 1.5
    groups: int = 10
    input_size: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    epochs: int | None = None  # None: resolved per dataset (resolve_defaults)
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    schedule: str = "cosine"  # cosine | linear
    warmup_epochs: float | None = None
    label_smoothing: float = 0.0
    num_random: int = 2
    sampling: str = "around"  # random configs: around | per-unit | uniform (see sandwich_configs)
    distill: bool = True
    label_weight: float = 0.5  # share of the label loss in the distilled configs' loss (0: the paper's)
    zero_init_residual: bool = True  # supernets: every residual branch's last BN scale starts at 0
    seed: int = 0
    save_every: int = 0  # steps; 0 = once per epoch
    limit: int | None = None
    search_size: float = 0.1
    eval_batches: int = 20  # BN recalibration batches
    arch: str | None = None  # where the retrained subnet's config came from (retraining: no sandwich)
    workers: int = 0
    amp: bool = True  # CUDA only

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Refuse settings no run can use, naming the option (before anything is loaded or written)."""
        from ..errors import UserError

        def bad(option: str, value, rule: str) -> None:
            raise UserError(f"{option} must be {rule}, got {value!r}")

        def real(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for option, value, lo in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                  ("--groups", self.groups, 1), ("--num-random", self.num_random, 0),
                                  ("--save-every", self.save_every, 0), ("--seed", self.seed, 0),
                                  ("--eval-batches", self.eval_batches, 1), ("--workers", self.workers, 0)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < lo):
                bad(option, value, f"a whole number >= {lo}")
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size < 8):
            bad("--input-size", self.input_size, "at least 8 (pixels)")
        if self.lr is not None and not (real(self.lr) and self.lr > 0):
            bad("--lr", self.lr, "a number > 0")
        if not (real(self.width_max) and 0 < self.width_max <= 8):
            bad("--width-max", self.width_max, "in (0, 8]")
        for option, value, lo, hi, top in (("--weight-decay", self.weight_decay, 0, 1, True),
                                           ("--momentum", self.momentum, 0, 1, False),
                                           ("--label-smoothing", self.label_smoothing, 0, 1, False),
                                           ("--label-weight", self.label_weight, 0, 1, True)):
            if not (real(value) and lo <= value and (value <= hi if top else value < hi)):
                bad(option, value, f"between {lo} and {hi}" + ("" if top else f" (below {hi})"))
        if self.warmup_epochs is not None and not (real(self.warmup_epochs) and self.warmup_epochs >= 0):
            bad("--warmup-epochs", self.warmup_epochs, ">= 0")
        if self.schedule not in ("cosine", "linear"):
            bad("--schedule", self.schedule, "cosine or linear")
        if self.sampling not in SAMPLINGS:
            bad("--sampling", self.sampling, "one of " + ", ".join(SAMPLINGS))


# --- optimization ------------------------------------------------------------------------

def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.SGD:
    """SGD with momentum; no weight decay on BN parameters and biases (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": s.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=s.lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0)


def learning_rate(s: TrainSettings, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine or linear decay to zero: a pure function of the step,
    so resuming needs no scheduler state."""
    warmup = int(s.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return s.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if s.schedule == "linear":
        return s.lr * (1.0 - progress)
    return 0.5 * s.lr * (1.0 + math.cos(math.pi * progress))


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets: the inplace-distillation loss."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


SAMPLINGS = ("around", "per-unit", "uniform")


def sandwich_configs(space, rng: random.Random, num_random: int, sampling: str = "around") -> list[ChannelConfig]:
    """The largest, the smallest and `num_random` random configs, drawn:
    - around: each around its own random overall width, every unit's option scattered about it
      (ChannelSpace.sample_around): narrow to wide, near-uniform but not uniform, like the configs
      a greedy search walks through;
    - per-unit: each unit's width independently (the AutoSlim paper's). Nearly every such config
      has some unit at its narrowest option, and in short runs they interfere: they stay near
      chance and drag the middle widths down (benchmarks/RESULTS.md, "Supernet quality");
    - uniform: every unit at one random width multiplier (US-Nets')."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "per-unit":
        randoms = [space.sample(rng) for _ in range(num_random)]
    else:
        spread = 1.5 if sampling == "around" else 0.0
        randoms = [space.sample_around(rng, spread=spread) for _ in range(num_random)]
    return [space.largest(), space.smallest()] + randoms


# Epochs a dataset needs with the default batch size (more for small sets: a supernet's middle
# widths learn far slower than its largest and smallest, and need steps, not epochs).
DEFAULT_EPOCHS = {"digits": 40, "fashion-mnist": 10, "cifar10": 30}


def resolve_defaults(s: TrainSettings, train_images: int, world_size: int = 1) -> TrainSettings:
    """Fill what the user left out (None), from the dataset's size:
    - batch size: 128 per process, halved (down to 16) until an epoch has at least 50 steps;
    - learning rate: 0.14 x sqrt(total batch / 128), the square-root scaling rule (measured
      best at batch 16: 0.05, benchmarks/RESULTS.md "Supernet quality"); half that to retrain one
      subnet (`arch`): the sandwich averages the losses of configs that partly disagree, so its
      shared weights move less than one network's at the same rate, and wide subnets retrained
      at the supernet's rate diverge early;
    - warm-up: 5% of all steps, at least half an epoch's worth, at most 2 epochs;
    - epochs: DEFAULT_EPOCHS of the dataset (30 for folders)."""
    out = s
    if s.batch_size is None:
        batch = 128
        while batch > 16 and train_images // (batch * world_size) < 50:
            batch //= 2
        out = replace(out, batch_size=batch)
    if s.lr is None:
        base = 0.07 if s.arch is not None else 0.14
        out = replace(out, lr=round(base * math.sqrt(out.batch_size * world_size / 128), 6))
    if s.epochs is None:
        key = s.data.lower() if s.data.lower() in DEFAULT_EPOCHS else None
        out = replace(out, epochs=DEFAULT_EPOCHS.get(key, 30))
    if s.warmup_epochs is None:
        out = replace(out, warmup_epochs=min(2.0, max(0.5, 0.05 * out.epochs)))
    return out


def autocast(amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def sandwich_backward(supernet: Supernet, forward, configs: list[ChannelConfig], x, y, distill: bool = True,
                      label_smoothing: float = 0.0, amp: bool = False, no_sync=None,
                      label_weight: float = 0.0) -> float:
    """Backward of every config of one sandwich step, gradients accumulated.

    configs[0] (the largest) learns from the labels; the others learn from its softmax,
    detached, so the distillation loss never pushes the teacher, mixed with the labels' loss
    at `label_weight` (0: the paper's pure inplace distillation; 0.5, the default, keeps short
    runs from learning a still-untrained teacher's mistakes, benchmarks/RESULTS.md). Each config's loss counts
    1/len(configs), so the learning rate means what it means for one network. `no_sync` (DDP's)
    skips the all-reduce on all but the last backward. Returns the mean loss."""
    total, soft = 0.0, None
    for i, cfg in enumerate(configs):
        supernet.set_config(cfg)
        last = i == len(configs) - 1
        with (contextlib.nullcontext() if last or no_sync is None else no_sync()):
            with autocast(amp):
                logits = forward(x)
                if i == 0 or not distill:
                    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
                else:
                    loss = soft_cross_entropy(logits.float(), soft)
                    if label_weight > 0:
                        loss = (1 - label_weight) * loss + label_weight * F.cross_entropy(logits.float(), y)
            if i == 0:
                soft = F.softmax(logits.detach().float(), dim=1)
            (loss / len(configs)).backward()
        total += loss.item()
    supernet.set_config(supernet.space.largest())
    return total / len(configs)


def config_rng(seed: int, epoch: int, rank: int) -> random.Random:
    """Config sampling stream of one (epoch, rank): ranks differ, reruns repeat."""
    return random.Random(f"{seed}-{epoch}-{rank}")
