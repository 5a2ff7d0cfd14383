"""The dataset registry: what each dataset is (classes, channels, size, normalization) and how
to read it. A reader returns ((x_train, y_train), (x_test, y_test)), x as (N, C, H, W) uint8 or
float in 0..1. Adding a dataset is one module that calls `register_dataset`."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from ..errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_chans: int  # channels of the raw images
    native_size: int
    mean: tuple[float, ...]  # per raw channel, of images scaled to 0..1
    std: tuple[float, ...]


@dataclass
class DataSplits:
    info: DatasetInfo
    train: Dataset  # training images minus the search split, augmented
    train_eval: Dataset  # the same images without augmentation, for BN recalibration
    search: Dataset  # held out from the training set, for the width search
    val: Dataset  # the official test/val split (a fixed 20% for digits)
    skipped: Callable[[], list[str]] = list  # files that could not be read, skipped so far (image folders)


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    read: Callable  # (data_dir or None) -> ((x_train, y_train), (x_test, y_test))
    flip: bool  # horizontal flips are a valid augmentation (objects have no handedness)
    description: str


_REGISTRY: dict[str, DatasetEntry] = {}
IMAGEFOLDER = "imagefolder:PATH"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def register_dataset(info: DatasetInfo, read: Callable, flip: bool, description: str) -> None:
    _REGISTRY[info.name] = DatasetEntry(info, read, flip, description)


def list_datasets() -> list[str]:
    """Names a user may pass to --data (an ImageNet-style folder as imagefolder:PATH)."""
    return [*_REGISTRY, IMAGEFOLDER]


def dataset_entry(name: str) -> DatasetEntry:
    return _REGISTRY[name]


def parse_name(name: str) -> tuple[str, Path | None]:
    """(registered name or "imagefolder", the folder for imagefolder:PATH)."""
    key = str(name).strip()
    if key.lower().startswith("imagefolder:"):
        path = key.split(":", 1)[1]
        if not path:
            raise DataError("imagefolder needs a path: imagefolder:PATH with PATH/train/<class>/* and PATH/val/<class>/*")
        return "imagefolder", Path(path).expanduser()
    if key.lower() in _REGISTRY:
        return key.lower(), None
    close = difflib.get_close_matches(key.lower(), list(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint}; choose one of: {', '.join(list_datasets())}")


def folder_classes(folder: Path) -> list[str]:
    layout = "imagefolder:PATH expects PATH/train/<class>/* and PATH/val/<class>/*"
    if not folder.is_dir():
        raise DataError(f"{folder} is not a directory; {layout}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"{folder} holds no class folders; {layout}")
    if len(classes) < 2:
        raise DataError(f"{folder} holds one class folder ({classes[0]}); a classifier needs at least 2 classes: "
                        f"{layout}")
    return classes


def dataset_info(name: str) -> DatasetInfo:
    """What a model needs to know about a dataset, without loading its images."""
    kind, root = parse_name(name)
    if kind != "imagefolder":
        return _REGISTRY[kind].info
    return DatasetInfo("imagefolder", len(folder_classes(root / "train")), 3, 224, _IMAGENET_MEAN, _IMAGENET_STD)
