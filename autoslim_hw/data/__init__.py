"""Datasets for training a slimmable supernet and searching its widths: a registry (digits,
fashion-mnist, cifar10, one module each) plus ImageNet-style folders, all loaded as the same
train / train_eval / search / val splits."""
from __future__ import annotations

import numbers
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..errors import DataError
from . import digits  # noqa: F401, I001  (registration, in the order --help lists them)
from . import fashion_mnist  # noqa: F401
from . import cifar10  # noqa: F401
from ._registry import (DataSplits, DatasetInfo, dataset_entry, dataset_info, list_datasets, parse_name,
                        register_dataset)
from .memory import InMemoryImages, normalization, prepare, split_indices

DATASETS = tuple(list_datasets())


def load_splits(name: str, *, data_dir: str | None = None, input_size: int | None = None,
                in_chans: int | None = None, search_size: int | float = 0.1, seed: int = 0,
                limit: int | None = None) -> DataSplits:
    """Load a dataset as train / train_eval / search / val datasets of (image, label) items.

    Images are float32 (in_chans, input_size, input_size), normalized by the dataset's mean/std.
    search_size is a number of training images or a fraction of them; the split is fixed by seed.
    limit keeps a seeded random subset of that many training images, before the split.
    """
    kind, root = parse_name(name)
    info = dataset_info(name)
    size = info.native_size if input_size is None else input_size
    chans = info.in_chans if in_chans is None else in_chans
    if not isinstance(size, numbers.Integral) or size < 1:
        raise DataError(f"input_size must be a positive integer, got {input_size!r}")
    if chans not in (1, 3):
        raise DataError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if kind == "imagefolder":
        from .imagefolder import imagefolder_splits

        return imagefolder_splits(info, root, size, chans, search_size, seed, limit)
    if data_dir is not None and kind != "digits" and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    entry = dataset_entry(kind)
    (xtr, ytr), (xte, yte) = entry.read(data_dir)
    tr, se = split_indices(len(xtr), search_size, seed, limit)
    if limit is not None and limit < len(xtr):  # only resize what is used
        keep = torch.cat([tr, se]).sort().values
        xtr, ytr = xtr[keep], ytr[keep]
        tr, se = torch.searchsorted(keep, tr), torch.searchsorted(keep, se)
    xtr, xte = prepare(xtr, chans, size), prepare(xte, chans, size)
    mean, std = normalization(info, chans)
    flip = entry.flip  # digits and clothes have a handedness; CIFAR objects do not

    def make(x, y, idx, augment):
        return InMemoryImages(x, y, idx, mean, std, chans, augment, flip)

    return DataSplits(info, train=make(xtr, ytr, tr, True), train_eval=make(xtr, ytr, tr, False),
                      search=make(xtr, ytr, se, False), val=make(xte, yte, torch.arange(len(xte)), False))


def make_loader(dataset, batch_size: int, *, shuffle: bool, sampler=None, drop_last: bool = False,
                num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A DataLoader whose order (and worker seeds, hence augmentation with workers) is fixed by seed.

    With a DistributedSampler pass shuffle=False: the sampler shuffles, and needs set_epoch() each epoch.
    """
    if sampler is not None and shuffle:
        raise ValueError("pass shuffle=False with a sampler: the sampler decides the order")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, drop_last=drop_last,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(int(seed)),
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


__all__ = ["DATASETS", "DataSplits", "DatasetInfo", "dataset_info", "list_datasets", "load_splits",
           "make_loader", "register_dataset"]
