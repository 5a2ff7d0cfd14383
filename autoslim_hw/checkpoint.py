"""Checkpoints: atomic to write, safe to load (`weights_only=True`), self-describing.

A checkpoint carries the model spec (architecture, widths, input size, classes)
and, for a retrained subnet, its channel config, so later commands need
nothing else to rebuild the network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ._io import atomic_path
from ._schema import FiniteNonNegative, NonEmpty, NonNegativeInt, Open, PositiveInt, validate
from .errors import CheckpointError
from .nn.config import ChannelConfig
from .nn.supernet import ModelSpec, Supernet

FORMAT = "autoslim-hw/checkpoint"
VERSION = 1


class _Spec(Open):
    arch: NonEmpty
    width_max: Annotated[FiniteNonNegative, Field(gt=0)]
    groups: PositiveInt
    divisor: PositiveInt
    input_size: PositiveInt
    num_classes: Annotated[int, Field(ge=2)]
    in_chans: PositiveInt
    extra: dict = {}


class _Metadata(Open):
    """What a checkpoint says of itself (the weights are checked by loading them)."""
    kind: Literal["supernet", "subnet"]
    spec: _Spec
    config: dict[str, PositiveInt] | None = None
    model: dict[str, Any]
    epoch: NonNegativeInt | None = None
    step: NonNegativeInt | None = None
    settings: dict | None = None

    @model_validator(mode="after")
    def _subnet_has_config(self):
        if self.kind == "subnet" and self.config is None:
            raise ValueError("a subnet checkpoint needs its channel config")
        return self


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` with format tags to `path` atomically (temp file + os.replace)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `autoslim-hw train --out runs/NAME`")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable autoslim-hw checkpoint ({reason[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an autoslim-hw checkpoint (a plain state_dict or another tool's file); "
                              "pass the supernet.pt written by `autoslim-hw train`")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, this autoslim-hw reads {VERSION}")
    validate(_Metadata, data, path, "autoslim-hw checkpoint", "it is damaged or was edited: train it again",
             error=CheckpointError)
    return data


def model_from_checkpoint(data: dict) -> tuple[Supernet, ChannelConfig | None, nn.Module]:
    """(supernet, config, runnable model). For a supernet checkpoint the runnable model is the
    supernet; for a retrained subnet it is the materialized plain network with its weights."""
    from .models import build_from_spec
    from .nn.materialize import materialize

    spec = ModelSpec.from_dict(data["spec"])
    supernet = build_from_spec(spec)
    config = None
    if data.get("config") is not None:
        config = ChannelConfig.from_dict(data["config"], supernet.space, strict=False)
    model = materialize(supernet, config) if data.get("kind") == "subnet" else supernet
    try:
        model.load_state_dict(data["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"the checkpoint's weights do not fit its model ({first[:160]}); it is damaged "
                              "or was edited: train it again") from None
    return supernet, config, model
