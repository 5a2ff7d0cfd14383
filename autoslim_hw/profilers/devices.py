"""Devices are data, not code: each host device is a JSON file in `device_specs/` (what to run
on, with which settings); a phone's record is built from what its benchmark run reported.
Adding a host device is one file there, or a JSON file of the same form passed by its path
(`profile --device my-device.json`)."""
from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Literal

from .._io import read_json
from .._schema import NonEmpty, Open, PositiveInt, validate
from ..errors import UserError

DEVICE_FORMAT = "autoslim-hw/device"
KINDS = ("host", "phone")


class DeviceFile(Open):
    """A device file: what to measure on, and how."""
    format: Literal["autoslim-hw/device"] | None = None
    version: Literal[1] | None = None
    name: NonEmpty
    description: NonEmpty
    threads: PositiveInt = 1
    pin_core: bool = True
    kind: Literal["host", "phone"] = "host"
    extra: dict = {}


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    description: str
    threads: int = 1
    pin_core: bool = True  # pin this process to one core while measuring
    kind: str = "host"  # host | phone (measured elsewhere, imported)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The table's record of the device: for a host, this host's CPU too."""
        out = asdict(self)
        if self.kind == "host":
            out.update(cpu_model=cpu_model(), cpu_id=cpu_id(), machine=platform.machine())
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "device spec") -> "DeviceSpec":
        """A device from its JSON, checked against `DeviceFile`."""
        d = validate(DeviceFile, data, source, "device file",
                     "see the files of `autoslim-hw devices` (name, description, threads >= 1, "
                     "pin_core, kind host|phone)")
        return cls(d.name, d.description, d.threads, d.pin_core, d.kind, dict(d.extra))


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, DeviceSpec]:
    out = {}
    for entry in sorted(resources.files(__package__).joinpath("device_specs").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            spec = DeviceSpec.from_dict(json.loads(entry.read_text()), f"device spec {entry.name}")
            out[spec.name] = spec
    return out


def list_devices() -> list[DeviceSpec]:
    return list(_shipped().values())


def get_device(name: str) -> DeviceSpec:
    """A shipped device by name, or a device file by its path (a name ending in .json)."""
    devices = _shipped()
    if name.endswith(".json"):
        fix = "copy one of `autoslim-hw devices` and edit it"
        return DeviceSpec.from_dict(read_json(name, "device file", fix), name)
    if name not in devices:
        raise UserError(f"unknown device {name!r}; available: {', '.join(devices)}, or a device file "
                        "(a .json path; see `autoslim-hw devices`)")
    return devices[name]


def phone_device(name: str, description: str, fields: dict) -> DeviceSpec:
    """The record of a device measured elsewhere (a phone, or this host through `lut run-local`):
    kind and pinning from its run's device.txt fields, which are kept as `extra`."""
    kind = fields.get("device_kind") or "phone"
    return DeviceSpec(name, description, threads=1, pin_core=fields.get("pinned") == "yes",
                      kind=kind if kind in KINDS else "phone", extra=dict(fields))


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
    name ("AMD EPYC"), which VMs of different generations share, and those run the same layers
    at very different speeds. Elsewhere: the processor string."""
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
