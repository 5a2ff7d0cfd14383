"""Numbers as people read them: 3.50M, 12.3 MiB."""
from __future__ import annotations


def human_count(n: float) -> str:
    """1234567 -> '1.23M' (decimal prefixes: the papers' MACs and params)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def human_bytes(n: float) -> str:
    """Binary prefixes, as file sizes and memory are shown: 1536 -> '1.5 KiB'."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
