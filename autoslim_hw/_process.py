"""Process-wide settings that make PyTorch on CPU faster here, applied by the command line.

- OpenMP threads that spin while they wait stall when another process holds a core; sleeping
  ones cost nothing on a quiet machine. `OMP_WAIT_POLICY=PASSIVE` is the default unless the
  environment says otherwise; it is read once, when torch loads.
- glibc returns every block above its mmap threshold (at most 32 MiB) to the kernel when it is
  freed, so each forward pass of a large batch maps its activations again and pays a page fault
  for every 4 KiB. `keep_freed_memory()` keeps freed blocks in the heap for reuse instead.

Both measured in benchmarks/RESULTS.md ("Process settings").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_applied = False


def prefer_passive_threads() -> None:
    """Default OMP_WAIT_POLICY to PASSIVE, if torch has not been imported yet."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory() -> bool:
    """Keep freed large blocks (up to 1 GiB each) in the heap instead of unmapping them, and do
    not trim the heap below 2 GiB. Returns whether it took effect (glibc only; elsewhere a no-op).
    The process's resident memory stays near its peak instead of falling back after each pass."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    return _applied
