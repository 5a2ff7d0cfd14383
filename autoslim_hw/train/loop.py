"""The training run: data, model, optimizer, checkpoints every epoch (and every N steps),
exact resume, per-epoch evaluation after BN recalibration (see the package's docstring)."""
from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._io import check_output
from ..checkpoint import load_checkpoint, save_checkpoint
from ..distributed import DistInfo, init_distributed, select_device
from ..errors import UserError
from ..nn.batchnorm import recalibrate_bn
from ..nn.config import ChannelConfig
from ..nn.evaluate import evaluate, evaluate_config, topk_for
from ..nn.init import zero_init_residual
from ..nn.layers import channels_last_inputs
from ..nn.materialize import materialize
from ..nn.supernet import Supernet
from .recipe import (TrainSettings, autocast, config_rng, learning_rate, make_optimizer, resolve_defaults,
                     sandwich_backward, sandwich_configs)

log = logging.getLogger("autoslim_hw.train")


class _Run:
    """State of one training run: model, data, optimizer, progress, files."""

    def __init__(self, s: TrainSettings, out: Path, resume: bool, info: DistInfo, progress: bool,
                 arch: "ChannelConfig | Callable[[Supernet], ChannelConfig] | None"):
        from ..data import dataset_info, load_splits, make_loader
        from ..models import create_model

        self.s, self.out, self.info, self.progress = s, out, info, progress
        self.device = select_device(info)
        self.checkpoint_path = out / "supernet.pt"
        ckpt = None
        if resume:
            if not self.checkpoint_path.is_file():
                raise UserError(f"--resume: no checkpoint at {self.checkpoint_path}; start without --resume")
            ckpt = load_checkpoint(self.checkpoint_path)
            # runs saved before a setting existed were trained without it
            saved = TrainSettings(**{"zero_init_residual": False, **ckpt["settings"]})
            if (saved.model, saved.data, saved.arch) != (s.model, s.data, s.arch):
                raise UserError(f"--resume: {self.checkpoint_path} was trained with --model {saved.model} --data "
                                f"{saved.data}; pass the same options or another --out")
            # the only things a resume may change
            saved.epochs = s.epochs if s.epochs is not None else saved.epochs
            saved.save_every = s.save_every
            self.s = s = saved

        info_d = dataset_info(s.data)
        input_size = s.input_size or (32 if info_d.native_size <= 32 else 224)
        self.splits = load_splits(s.data, data_dir=s.data_dir, input_size=input_size,
                                  search_size=s.search_size, seed=s.seed, limit=s.limit)
        self.s = s = resolve_defaults(s, len(self.splits.train), info.world_size)
        torch.manual_seed(s.seed)  # the same initial weights on every rank and every rerun
        self.supernet = create_model(s.model, width_max=s.width_max, groups=s.groups,
                                     num_classes=info_d.num_classes, input_size=input_size,
                                     in_chans=info_d.in_chans, **s.model_kwargs)
        if s.arch is None and s.zero_init_residual and ckpt is None:
            zero_init_residual(self.supernet)  # every block starts as the identity (nn/init.py)
        self.config = None
        if ckpt is not None and ckpt.get("config") is not None:
            arch = ChannelConfig.from_dict(ckpt["config"], self.supernet.space, strict=False)
        if s.arch is not None and arch is None:
            raise ValueError("retraining (settings.arch) needs its config: pass arch=")
        if s.arch is not None:  # plain retraining of one subnet
            if callable(arch):
                arch = arch(self.supernet)
            self.config = self.supernet.space.validate(arch, strict=False)
            self.model = materialize(self.supernet, self.config)
        else:
            self.model = self.supernet
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, s)
        self.epoch, self.step = 0, 0
        self.rng_state = None
        self.last_config_digest = 0  # of the random configs of the last step (rank-local)
        self.epoch_losses: list[float] = []  # this epoch's step losses, kept across a resume
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.epoch, self.step = ckpt["epoch"], ckpt["step"]
            self.rng_state = ckpt.get("rng")
            self.epoch_losses = list(ckpt.get("epoch_losses", []))
        self.ddp = self.model
        if info.world_size > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[info.local_rank] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.make_loader = make_loader
        eval_bs = max(s.batch_size, 256)
        self.calib_loader = make_loader(self.splits.train_eval, s.batch_size, shuffle=True, seed=s.seed)
        self.val_loader = make_loader(self.splits.val, eval_bs, shuffle=False)
        self.steps_per_epoch = len(self.splits.train) // (s.batch_size * info.world_size)
        if self.steps_per_epoch < 1:
            raise UserError(f"--batch-size {s.batch_size} x {info.world_size} ranks is larger than the training "
                            f"set ({len(self.splits.train)} images); lower --batch-size")

    # one epoch's batch order, the same on every run; resumed runs skip what was done
    def epoch_loader(self, epoch: int, start_step: int):
        n = len(self.splits.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.s.seed * 100_003 + epoch)).tolist()
        per_rank = self.steps_per_epoch * self.s.batch_size
        mine = order[self.info.rank * per_rank:(self.info.rank + 1) * per_rank]
        mine = mine[start_step * self.s.batch_size:]
        subset = torch.utils.data.Subset(self.splits.train, mine)
        return self.make_loader(subset, self.s.batch_size, shuffle=False, drop_last=True)

    def save(self, path: Path | None = None) -> None:
        if not self.info.is_main:
            return
        payload = {
            "kind": "subnet" if self.config is not None else "supernet",
            "spec": self.supernet.spec.to_dict(),
            "config": None if self.config is None else dict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "step": self.step,
            "settings": self.s.to_dict(),
            # the Mersenne Twister's words, and the second normal deviate random.gauss keeps
            "rng": {"torch": torch.get_rng_state(), "python": list(self.py_rng.getstate()[1]),
                    "python_gauss": self.py_rng.getstate()[2]},
            "epoch_losses": list(self.epoch_losses),
        }
        save_checkpoint(path or self.checkpoint_path, payload)

    def _restore_rng(self) -> None:
        """Mid-epoch resume: continue both random streams exactly where they were."""
        state = self.rng_state
        torch.set_rng_state(state["torch"])
        self.py_rng.setstate((3, tuple(state["python"]), state.get("python_gauss")))


def _log_json(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train(s: TrainSettings, out: str | os.PathLike, resume: bool = False, progress: bool = True,
          stop_after_steps: int | None = None,
          arch: "ChannelConfig | Callable[[Supernet], ChannelConfig] | None" = None) -> dict:
    """Train a supernet (or, with `arch`, that subnet from scratch: a config, or a function of the
    built supernet that gives it; `s.arch` names where it came from) into `out`. Returns the last metrics. `stop_after_steps` ends the run early after
    saving (used to test resuming)."""
    out = Path(out)
    s.check()
    check_output(out, "directory")  # before any work
    info = init_distributed()
    run = _Run(s, out, resume, info, progress, arch)
    s = run.s
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.json").write_text(json.dumps(run.supernet.spec.to_dict(), indent=2))
        handler = logging.FileHandler(out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.info("start: %s resume=%s world_size=%d", json.dumps(s.to_dict()), resume, info.world_size)
    total_steps = s.epochs * run.steps_per_epoch
    metrics: dict = {}
    amp = s.amp and run.device.type == "cuda"
    layout = channels_last_inputs(run.model)  # oneDNN's convolutions run faster on it
    layout.__enter__()
    try:
        while run.epoch < s.epochs:
            epoch = run.epoch
            start_step = run.step - epoch * run.steps_per_epoch
            # every (epoch, rank) gets its own seeded streams: a resumed run repeats them exactly
            torch.manual_seed(s.seed * 7919 + epoch * 104_729 + info.rank)
            run.py_rng = config_rng(s.seed, epoch, info.rank)
            if start_step > 0 and run.rng_state is not None:
                run._restore_rng()
            run.rng_state = None
            loader = run.epoch_loader(epoch, start_step)
            metrics = _train_epoch(run, loader, epoch, start_step, total_steps, amp, stop_after_steps)
            if metrics.get("stopped"):
                return metrics
            run.epoch += 1
            metrics.update(_epoch_eval(run))
            metrics["epoch"] = run.epoch
            if skipped := run.splits.skipped():  # unreadable files of an image folder (logged as met)
                metrics["skipped_images"] = len(skipped)
            if info.world_size > 1:
                metrics.update(_rank_agreement(run))
            if info.is_main:
                _log_json(out / "metrics.jsonl", metrics)
                log.info("epoch %d: %s", run.epoch, json.dumps(metrics))
            run.save()
    finally:
        layout.__exit__(None, None, None)
        if info.world_size > 1 and dist.is_initialized():
            dist.barrier()
        if info.is_main:
            for h in list(log.handlers):
                log.removeHandler(h)
                h.close()
    return metrics


def _train_epoch(run: _Run, loader, epoch: int, start_step: int, total_steps: int, amp: bool,
                 stop_after_steps: int | None) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    s, model, ddp, opt = run.s, run.model, run.ddp, run.optimizer
    model.train()
    losses, seen, t0 = run.epoch_losses, 0, time.perf_counter()
    show = run.progress and run.info.is_main
    bar = Progress(TextColumn(f"epoch {epoch + 1}/{s.epochs}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.0f} img/s"),
                   TimeRemainingColumn(), disable=not show, transient=False)
    with bar:
        task = bar.add_task("train", total=run.steps_per_epoch, completed=start_step, loss=float("nan"), ips=0.0)
        for x, y in loader:
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            if run.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            lr = learning_rate(s, run.step, total_steps, run.steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = _sandwich_step(run, ddp, x, y, amp) if run.config is None else _plain_step(ddp, x, y, s, amp)
            opt.step()
            run.step += 1
            losses.append(loss)
            seen += x.shape[0] * run.info.world_size
            ips = seen / (time.perf_counter() - t0)
            bar.update(task, advance=1, loss=loss, ips=ips)
            if s.save_every and run.step % s.save_every == 0:
                run.save()
            if stop_after_steps is not None and run.step >= stop_after_steps:
                run.save()
                return {"stopped": True, "step": run.step}
    metrics = {"step": run.step, "train_loss": sum(losses) / max(len(losses), 1),
               "images_per_s": seen / (time.perf_counter() - t0),
               # the last step's rate, also when a resume found this epoch's steps all done
               "lr": learning_rate(s, max(run.step - 1, 0), total_steps, run.steps_per_epoch)}
    run.epoch_losses = []
    return metrics


def _rank_agreement(run: _Run) -> dict:
    """Weights must agree across ranks; the configs they sampled must not."""
    weights = torch.tensor([sum(p.detach().double().sum().item() for p in run.model.parameters())],
                           dtype=torch.float64, device=run.device)
    configs = torch.tensor([run.last_config_digest], dtype=torch.int64, device=run.device)
    all_w = [torch.zeros_like(weights) for _ in range(run.info.world_size)]
    all_c = [torch.zeros_like(configs) for _ in range(run.info.world_size)]
    dist.all_gather(all_w, weights)
    dist.all_gather(all_c, configs)
    return {"ranks_in_sync": all(torch.equal(w, all_w[0]) for w in all_w),
            "distinct_rank_configs": len({int(c) for c in all_c}) == len(all_c)}


def _sandwich_step(run: _Run, ddp, x, y, amp: bool) -> float:
    s = run.s
    configs = sandwich_configs(run.supernet.space, run.py_rng, s.num_random, s.sampling)
    run.last_config_digest = zlib.crc32(json.dumps([dict(c) for c in configs[2:]]).encode())
    return sandwich_backward(run.supernet, ddp, configs, x, y, s.distill, s.label_smoothing, amp,
                             getattr(ddp, "no_sync", None), s.label_weight)


def _plain_step(ddp, x, y, s: TrainSettings, amp: bool) -> float:
    with autocast(amp):
        loss = F.cross_entropy(ddp(x), y, label_smoothing=s.label_smoothing)
    loss.backward()
    return loss.item()


def _epoch_eval(run: _Run) -> dict:
    """Accuracy after BN recalibration: the largest and smallest configs (supernet), or the
    subnet itself."""
    s = run.s
    if run.config is not None:
        recalibrate_bn(run.model, None, run.calib_loader, s.eval_batches, run.device)
        res = evaluate(run.model, run.val_loader, run.device, topk_for(run.supernet.spec.num_classes))
        return {"val_top1": res["top1"], "val_loss": res["loss"]}
    out = {}
    for name, cfg in (("largest", run.supernet.space.largest()), ("smallest", run.supernet.space.smallest())):
        res = evaluate_config(run.supernet, cfg, run.calib_loader, run.val_loader, s.eval_batches, run.device)
        out[f"val_top1_{name}"] = res["top1"]
    run.supernet.set_config(run.supernet.space.largest())
    return out
