"""Slimmable layers, channel units and configs, supernets, materialized subnets, BN statistics."""
from .batchnorm import batch_statistics, recalibrate_bn
from .config import ChannelConfig, ChannelSpace, LayerSlot, Unit, make_divisible
from .evaluate import evaluate, evaluate_config
from .layers import SlimmableBatchNorm1d, SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear
from .materialize import materialize
from .supernet import ModelSpec, Supernet, slimmable

__all__ = ["ChannelConfig", "ChannelSpace", "LayerSlot", "Unit", "make_divisible", "SlimmableConv2d",
           "SlimmableLinear", "SlimmableBatchNorm1d", "SlimmableBatchNorm2d", "ModelSpec", "Supernet",
           "slimmable", "materialize", "recalibrate_bn", "batch_statistics", "evaluate", "evaluate_config"]
