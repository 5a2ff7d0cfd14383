"""Supernet training with the sandwich rule and inplace distillation (AutoSlim,
after Yu & Huang's universally slimmable networks), and plain retraining.

Each step of supernet training:
- the largest config learns from the labels;
- the smallest and `num_random` random nonuniform configs learn from the largest
  one's (detached) soft predictions, mixed with the labels (`label_weight`);
- their losses are averaged, then one optimizer step.

recipe.py holds the settings, their defaults and what each config learns from; loop.py
the run: data, checkpoints, resume, evaluation.

Under `torchrun` every rank holds the same weights but samples its random
configs with its own seed, so one step sees world_size x num_random configs.
BN statistics are shared across widths, hence `recalibrate_bn` before any
config is evaluated.
"""
from .loop import train
from .recipe import (DEFAULT_EPOCHS, SAMPLINGS, TrainSettings, config_rng, learning_rate, make_optimizer,
                     resolve_defaults, sandwich_backward, sandwich_configs, soft_cross_entropy)

__all__ = ["TrainSettings", "train", "sandwich_backward", "sandwich_configs", "learning_rate", "resolve_defaults",
           "DEFAULT_EPOCHS", "SAMPLINGS", "config_rng", "make_optimizer", "soft_cross_entropy"]
