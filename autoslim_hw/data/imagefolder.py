"""ImageNet-style folders (imagefolder:PATH, with PATH/train/<class>/* and PATH/val/<class>/*),
read lazily with torchvision."""
from __future__ import annotations

import copy

from torch.utils.data import Subset

from ..errors import DataError
from ._registry import DataSplits, folder_classes
from .memory import normalization, split_indices


def imagefolder_splits(info, root, size, chans, search_size, seed, limit) -> DataSplits:
    from torchvision import datasets, transforms as T

    for sub in ("train", "val"):
        folder_classes(root / sub)
    mean, std = normalization(info, chans)
    tail = ([T.Grayscale(1)] if chans == 1 else []) + [T.ToTensor(), T.Normalize(mean, std)]
    eval_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), *tail])
    try:
        train = datasets.ImageFolder(str(root / "train"), T.Compose([T.RandomResizedCrop(size),
                                                                     T.RandomHorizontalFlip(), *tail]))
        val = datasets.ImageFolder(str(root / "val"), eval_tf)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"imagefolder:{root}: {exc}") from exc
    if val.class_to_idx != train.class_to_idx:
        raise DataError(f"{root}/train and {root}/val have different class folders")
    train_eval = copy.copy(train)  # shares the file list: scanning ImageNet twice would take minutes
    train_eval.transform = eval_tf
    tr, se = (i.tolist() for i in split_indices(len(train), search_size, seed, limit))
    return DataSplits(info, Subset(train, tr), Subset(train_eval, tr), Subset(train_eval, se), val)
