"""ImageNet-style folders (imagefolder:PATH, with PATH/train/<class>/* and PATH/val/<class>/*),
read lazily with torchvision.

A file that does not decode (truncated, not an image) is skipped, not fatal: checking a million
files up front would take longer than many runs, and one bad JPEG should not end a day of
training. Its place in the batch goes to the next readable image, its path is logged once, and
`DataSplits.skipped()` lists them all for the run's summary (DataLoader workers' skips too: the
list is a file)."""
from __future__ import annotations

import atexit
import copy
import logging
import os
import tempfile
from pathlib import Path

from torch.utils.data import Dataset, Subset

from ..errors import DataError
from ._registry import DataSplits, folder_classes
from .memory import normalization, split_indices

log = logging.getLogger("autoslim_hw")


class SkipUnreadable(Dataset):
    """A torchvision ImageFolder whose unreadable files give way to the next readable one."""

    def __init__(self, folder, skip_log: Path):
        self.folder, self.skip_log = folder, skip_log

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        n = len(self.folder)
        for k in range(n):
            j = (i + k) % n
            try:
                return self.folder[j]
            except (OSError, SyntaxError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
                self._record(self.folder.samples[j][0], exc)
        raise DataError(f"no image of {self.folder.root} can be read")

    def _record(self, path: str, exc: Exception) -> None:
        seen = self.skip_log.read_text().splitlines() if self.skip_log.exists() else []
        if path not in seen:
            with open(self.skip_log, "a") as f:
                f.write(path + "\n")
            log.warning("skipping unreadable image %s (%s)", path, str(exc).splitlines()[0][:120] if str(exc) else
                        type(exc).__name__)

    def with_transform(self, transform) -> "SkipUnreadable":
        folder = copy.copy(self.folder)  # shares the file list: scanning ImageNet twice would take minutes
        folder.transform = transform
        return SkipUnreadable(folder, self.skip_log)


def _skip_log() -> Path:
    fd, name = tempfile.mkstemp(prefix="autoslim-hw-skipped-", suffix=".txt")
    os.close(fd)
    pid = os.getpid()
    atexit.register(lambda: os.getpid() == pid and os.path.exists(name) and os.unlink(name))
    return Path(name)


def imagefolder_splits(info, root, size, chans, search_size, seed, limit) -> DataSplits:
    from torchvision import datasets, transforms as T

    for sub in ("train", "val"):
        folder_classes(root / sub)
    mean, std = normalization(info, chans)
    tail = ([T.Grayscale(1)] if chans == 1 else []) + [T.ToTensor(), T.Normalize(mean, std)]
    eval_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), *tail])
    skip_log = _skip_log()
    try:
        train = SkipUnreadable(datasets.ImageFolder(str(root / "train"), T.Compose(
            [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *tail])), skip_log)
        val = SkipUnreadable(datasets.ImageFolder(str(root / "val"), eval_tf), skip_log)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"imagefolder:{root}: {exc}") from exc
    if val.folder.class_to_idx != train.folder.class_to_idx:
        raise DataError(f"{root}/train and {root}/val have different class folders")
    train_eval = train.with_transform(eval_tf)
    tr, se = (i.tolist() for i in split_indices(len(train), search_size, seed, limit))

    def skipped() -> list[str]:
        return skip_log.read_text().splitlines() if skip_log.exists() else []

    return DataSplits(info, Subset(train, tr), Subset(train_eval, tr), Subset(train_eval, se), val, skipped)
