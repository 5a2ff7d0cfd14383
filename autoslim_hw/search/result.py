"""The search result file: the trajectory, the configs picked for each target, and what was
searched with; written atomically after every step, so a killed search resumes from it."""
from __future__ import annotations

import os
from pathlib import Path

from .._io import atomic_write_json, read_tagged
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


def load_result(path: str | os.PathLike) -> dict:
    """A search output file, checked for its format tag."""
    path = Path(path)
    if path.is_dir():
        from ..errors import UserError

        raise UserError(f"{path} is a directory, not a search result; pass the JSON file `autoslim-hw search` "
                        "wrote (search.json)")
    return read_tagged(path, FORMAT, "search result", "run `autoslim-hw search` first", versions=(VERSION,))
