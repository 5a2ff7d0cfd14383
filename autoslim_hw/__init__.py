"""autoslim-hw: hardware-aware channel-width search (AutoSlim) for CNNs."""
from ._process import keep_freed_memory, prefer_passive_threads

prefer_passive_threads()  # before torch loads: see _process
from .nn import ChannelConfig, ModelSpec, Supernet, slimmable

__version__ = "0.1.0"

__all__ = ["ChannelConfig", "keep_freed_memory", "ModelSpec", "Supernet", "slimmable", "__version__"]
