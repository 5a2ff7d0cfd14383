"""Slimmable layers, channel units and configs."""
from .config import ChannelConfig, ChannelSpace, LayerSlot, Unit, make_divisible
from .layers import SlimmableBatchNorm1d, SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear
from .supernet import ModelSpec, Supernet, slimmable

__all__ = ["ChannelConfig", "ChannelSpace", "LayerSlot", "Unit", "make_divisible", "SlimmableConv2d",
           "SlimmableLinear", "SlimmableBatchNorm1d", "SlimmableBatchNorm2d", "ModelSpec", "Supernet",
           "slimmable"]
