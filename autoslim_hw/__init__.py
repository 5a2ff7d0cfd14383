"""autoslim-hw: hardware-aware channel-width search (AutoSlim) for CNNs."""
from .nn import ChannelConfig, ModelSpec, Supernet, slimmable

__version__ = "0.1.0"

__all__ = ["ChannelConfig", "ModelSpec", "Supernet", "slimmable", "__version__"]
