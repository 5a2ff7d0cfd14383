"""Runtime backends (convert, load, time, run) found by name, timing loops, devices, memory."""
from .base import Backend, RuntimeEntry, backend_entry, backend_for_format, get_backend, list_backends, register_backend
from .latency import HOST_STATISTIC, STATISTICS, Latency, MeasureSettings, summarize, time_runs
from .timing import measure_interleaved, pinned_to_core

__all__ = ["Backend", "Latency", "MeasureSettings", "RuntimeEntry", "backend_entry", "backend_for_format",
           "get_backend", "list_backends", "register_backend", "measure_interleaved", "pinned_to_core",
           "summarize", "time_runs", "HOST_STATISTIC", "STATISTICS"]
