"""Runtime backends for latency and memory measurement (one module per runtime)."""
from .base import Backend, Latency, MeasureSettings, get_backend, pinned_to_core

__all__ = ["Backend", "Latency", "MeasureSettings", "get_backend", "pinned_to_core"]
