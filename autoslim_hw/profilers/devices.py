"""Devices are specs, not code: what to run on, with which settings."""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass, field

from ..errors import UserError


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    description: str
    threads: int = 1
    pin_core: bool = True  # pin this process to one core while measuring
    kind: str = "host"  # host | phone (measured elsewhere, imported)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "cpu_model": cpu_model(), "cpu_id": cpu_id(), "machine": platform.machine()}


DEVICES = {
    "cpu-1core": DeviceSpec("cpu-1core", "this host's CPU, one thread, the process pinned to one core"),
    "cpu-2core": DeviceSpec("cpu-2core", "this host's CPU, two threads, not pinned", threads=2, pin_core=False),
}


def get_device(name: str) -> DeviceSpec:
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; available: {', '.join(DEVICES)} (see `autoslim-hw devices`)")
    return DEVICES[name]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip() and fields:
                    break  # the first processor's block is enough
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_id() -> str:
    """Vendor, family and model numbers: the CPU's generation. A VM often shows only a generic
    name ("AMD EPYC"), which two VMs of different generations share; on two such VMs here the
    same layers ran 2.3x apart. Elsewhere: the processor string."""
    fields = _cpuinfo()
    if "vendor_id" in fields:
        return f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    if "CPU implementer" in fields:  # arm64 Linux
        return f"arm implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return platform.processor() or platform.machine()


def measurement_core() -> int | None:
    """The last core this process may use (the first is where the OS tends to put work)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[-1]
