"""The search result file: the trajectory, the configs picked for each target, and what was
searched with; written atomically after every step, so a killed search resumes from it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field

from .._io import atomic_write_json, check_tagged, read_tagged
from .._schema import Finite, FiniteNonNegative, Open, validate
from ..errors import ConfigError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .costs import COST_KINDS, Target

FORMAT = "autoslim-hw/search"
VERSION = 1


def select_targets(supernet: Supernet, trajectory: list[dict], targets: list[Target]) -> list[dict]:
    """For each target, the first config of the trajectory that meets it."""
    out = []
    for t in targets:
        hit = next((s for s in trajectory if t.met_by(s)), None)
        entry = {"constraints": t.limits, "met": hit is not None}
        if hit is not None:
            cfg = ChannelConfig(hit["config"])
            entry.update(step=hit["step"], config=hit["config"], layers=supernet.space.to_layer_list(cfg),
                         **{k: hit[k] for k in ("accuracy", *COST_KINDS)})
        out.append(entry)
    return out


def result_dict(header: dict, trajectory: list[dict], targets: list[dict], status: str) -> dict:
    return {"format": FORMAT, "version": VERSION, "status": status, **header, "trajectory": trajectory,
            "targets": targets}


def write_result(path: str | os.PathLike, result: dict) -> None:
    atomic_write_json(path, result, indent=1)


def load_result(path: str | os.PathLike, data: dict | None = None) -> dict:
    """A search output file, checked for its format tag and schema (`data`: its JSON, when the
    caller has already read it)."""
    path = Path(path)
    if path.is_dir():
        from ..errors import UserError

        raise UserError(f"{path} is a directory, not a search result; pass the JSON file `autoslim-hw search` "
                        "wrote (search.json)")
    if data is None:
        data = read_tagged(path, FORMAT, "search result", "run `autoslim-hw search` first", versions=(VERSION,))
    else:
        data = check_tagged(data, path, FORMAT, "search result", "run `autoslim-hw search` first", versions=(VERSION,))
    validate(_ResultFile, data, path, "search result", "rerun `autoslim-hw search` (with --restart)")
    return data


# --- the file's schema: what load_result accepts ------------------------------------------------

Widths = dict[str, Annotated[int, Field(ge=1)]]


class _Score(Open):  # exact counts: a resumed search compares candidates with them
    correct: Annotated[int, Field(ge=0)]
    total: Annotated[int, Field(ge=1)]
    loss_sum: Finite


class _Step(Open):
    step: Annotated[int, Field(ge=0)]
    score: _Score
    config: Widths
    accuracy: Annotated[FiniteNonNegative, Field(le=100)]
    macs: Annotated[int, Field(ge=0)]
    params: Annotated[int, Field(ge=0)]
    memory: Annotated[int, Field(ge=0)]
    latency_ms: FiniteNonNegative | None = None


class _Target(Open):
    constraints: dict[str, FiniteNonNegative]
    met: bool
    config: Widths | None = None


class _ResultFile(Open):
    status: str
    trajectory: list[_Step]
    targets: list[_Target]


def search_target_config(entry: dict, space, where: str) -> ChannelConfig:
    """The config of a search result's target, held to the supernet's width options: a search
    only visits them, so any other width means the file was edited or belongs to another
    supernet (`search --resume` refuses it too)."""
    try:
        return ChannelConfig.from_dict(entry["config"], space, strict=True, source=where)
    except ConfigError as exc:
        msg = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
        raise ConfigError(f"{msg}; a search result only holds widths of the supernet's grid, so this "
                          "file was edited or belongs to another supernet") from None
