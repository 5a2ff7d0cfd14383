"""The lookup-table file's schema: what `LatencyTable.load` accepts. Required keys, types, and
latencies that are finite and not negative are checked when a file is read, so a damaged or
hand-edited table fails with one line naming the file and the field, not later as a NaN
prediction or a KeyError."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from .._schema import Finite, FiniteNonNegative, Open, validate
from ..profilers.latency import STATISTICS


def _statistic(v: str) -> str:
    if v not in STATISTICS:
        raise ValueError(f"must be one of {', '.join(STATISTICS)}")
    return v


class Device(Open):
    name: str
    kind: str = "host"


class Metadata(Open):
    device: Device
    runtime: str
    latency_statistic: Annotated[str, AfterValidator(_statistic)]


class Signature(Open):
    op: str


class Entry(Open):  # latencies in milliseconds
    sig: Signature
    ms: FiniteNonNegative
    # the runs' spread: for ops timed as a difference of two networks, a low percentile can
    # fall below zero where the latency itself does not
    p10_ms: Finite | None = None
    p90_ms: Finite | None = None
    passes_ms: list[Finite] | None = None


class TableFile(Open):
    metadata: Metadata
    entries: dict[str, Entry] = {}
    calibrations: dict[str, dict] = {}


def check_table(data: dict, path) -> None:
    """Raise a UserError naming the first field of `data` (a table file's JSON) that breaks the
    schema."""
    validate(TableFile, data, path, "lookup table", "rebuild it with `autoslim-hw profile`")
