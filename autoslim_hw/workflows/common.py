"""What several workflows need: a checkpoint's model and data, and a config from any of the
forms a user may give one in."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .._io import read_text
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..errors import ConfigError, UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet


@dataclass
class LoadedCheckpoint:
    path: Path
    data: dict  # the checkpoint as saved
    supernet: Supernet
    config: ChannelConfig | None  # a retrained subnet's widths
    model: nn.Module  # the supernet, or the retrained subnet as a plain model

    @property
    def kind(self) -> str:
        return "subnet" if self.data.get("kind") == "subnet" else "supernet"

    @property
    def settings(self) -> dict:
        return self.data.get("settings") or {}


def open_checkpoint(path: str | Path, expect: str | None = None) -> LoadedCheckpoint:
    """A checkpoint and its model; with `expect` ("supernet"), a checkpoint of another kind is
    refused before its model is built."""
    path = Path(path)
    data = load_checkpoint(path)
    if expect == "supernet" and data.get("kind") != "supernet":
        raise UserError(f"{path} holds a retrained subnet, not a supernet; this needs the supernet.pt "
                        "written by `autoslim-hw train`")
    supernet, config, model = model_from_checkpoint(data)
    return LoadedCheckpoint(path, data, supernet, config, model)


def newest_checkpoint(root: Path = Path("runs")) -> Path:
    """The most recently written runs/*/supernet.pt: what `search` uses without --checkpoint."""
    found = sorted(root.glob("*/supernet.pt"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise UserError("no checkpoint under ./runs; train one with `autoslim-hw train --out runs/NAME` "
                        "(or `autoslim-hw demo`), or pass --checkpoint")
    return found[-1]


def checkpoint_splits(settings: dict, supernet: Supernet, data: str | None = None, data_dir: str | None = None):
    """The train / train_eval / search / val splits a checkpoint was trained with (the same seed,
    search split, limit, input size and channels), or of another dataset `data`."""
    from ..data import load_splits

    return load_splits(data or settings.get("data", "digits"), data_dir=data_dir or settings.get("data_dir"),
                       input_size=supernet.spec.input_size, in_chans=supernet.spec.in_chans,
                       search_size=settings.get("search_size", 0.1), seed=settings.get("seed", 0),
                       limit=settings.get("limit"))


def calibration_loader(splits, seed: int = 0, batch_size: int = 128):
    """Training images without augmentation, shuffled by `seed`: what BN is recalibrated with."""
    from ..data import make_loader

    return make_loader(splits.train_eval, batch_size, shuffle=True, seed=seed)


def config_from_options(supernet: Supernet, width: float | None = None, channels: Path | None = None,
                        layers: str | None = None, snap: bool = False) -> ChannelConfig:
    """One config from --width (uniform multiplier; default 1.0), --channels (a channel config
    JSON, or a search result's target entry) or --layers (the AutoSlim releases' list form).
    With `snap`, --width moves each unit to its nearest width option: the configs a supernet
    was trained on (1.0x lies between two of the 10 options of 0.15x..1.5x)."""
    given = [x is not None for x in (width, channels, layers)]
    if sum(given) > 1:
        raise UserError("give at most one of --width, --channels and --layers")
    if channels is not None:
        if not Path(channels).is_file():
            raise UserError(f"channel config {channels} does not exist; write one with "
                            "`autoslim-hw search` or `ChannelConfig.to_json()`")
        return ChannelConfig.from_json(read_text(channels, "channel config"), supernet.space, strict=False,
                                      source=f"channel config {channels}")
    if layers is not None:
        try:
            values = json.loads(layers)
        except json.JSONDecodeError:
            raise ConfigError(f"--layers must be a JSON list of integers like \"[32, 16, 96, 24]\", got {layers!r}") from None
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ConfigError("--layers must be a JSON list of integers")
        return supernet.space.from_layer_list(values, strict=False)
    return supernet.space.uniform(1.0 if width is None else width, snap=snap)


def model_for(model: str = "mobilenet_v2_cifar", input_size: int | None = None, width_mult: float | None = None,
              checkpoint: Path | None = None) -> Supernet:
    """The supernet of a checkpoint, or a built-in model (at an input size and base width)."""
    from ..models import create_model

    if checkpoint is not None:
        return open_checkpoint(checkpoint).supernet
    kwargs = {} if width_mult is None else {"width_mult": width_mult}
    return create_model(model, input_size=input_size, **kwargs)
