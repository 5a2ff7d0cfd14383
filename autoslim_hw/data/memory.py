"""Small datasets held in memory as one tensor per split, resized once, augmented per item on
tensors (on a few CPU cores a PIL pipeline would be the bottleneck of training); and the
seeded split of a training set into train and search images."""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import DataError
from ._registry import DatasetInfo

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what PIL's convert("L") uses


class InMemoryImages(Dataset):
    """Some images of a split held as one (N, C, H, W) tensor: uint8 in 0..255 or float in 0..1.

    train, train_eval and search share `images` and differ only in `indices` and augmentation.
    `labels` holds the labels of this dataset's items, so class counts need no decoding.
    """

    def __init__(self, images, labels, indices, mean, std, chans: int, augment: bool, flip: bool):
        self.images, self.indices, self.labels = images, indices, labels[indices]
        self.scale = 1 / 255 if images.dtype == torch.uint8 else 1.0
        self.chans, self.flip = chans, flip
        self.pad = max(1, images.shape[-1] // 8) if augment else 0  # 4 px at 32, as in the CIFAR recipes
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x = self.images[self.indices[i]].float() * self.scale
        if self.pad:
            # Zero (black) padding before normalization, as torchvision's RandomCrop(padding=) on a PIL image.
            p, (h, w) = self.pad, x.shape[-2:]
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = F.pad(x, (p, p, p, p))[:, dy:dy + h, dx:dx + w]
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        x = x.expand(self.chans, -1, -1)  # grayscale -> RGB by replication, without a copy in memory
        return (x - self.mean) / self.std, int(self.labels[i])


def prepare(images: torch.Tensor, chans: int, size: int) -> torch.Tensor:
    """Channel conversion and resizing, once for the whole split, chunked to bound peak memory."""
    to_luma, resize = images.shape[1] == 3 and chans == 1, images.shape[-1] != size
    if not (to_luma or resize):
        return images
    out = []
    for chunk in images.split(4096):
        x = chunk.float()
        if to_luma:
            x = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if resize:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < images.shape[-1])
        if images.dtype == torch.uint8:  # stay uint8: 4x less memory, rounding costs < 1/255
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        out.append(x)
    return torch.cat(out)


def normalization(info: DatasetInfo, chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if chans == info.in_chans:
        return info.mean, info.std
    if chans == 3:
        return info.mean * 3, info.std * 3
    # RGB -> luminance: the mean is exact; the std assumes fully correlated channels, close for photos.
    return (sum(w * m for w, m in zip(_LUMA, info.mean)),), (sum(w * s for w, s in zip(_LUMA, info.std)),)


def split_indices(n: int, search_size: int | float, seed: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted train and search indices among n images, after a random subset of `limit` of them."""
    if limit is not None and (not isinstance(limit, numbers.Integral) or limit < 2):
        raise DataError(f"limit must be an integer of at least 2, got {limit!r}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)[:limit]
    total = len(perm)
    if isinstance(search_size, bool) or not isinstance(search_size, numbers.Real):
        raise DataError(f"search_size must be a number of images or a fraction, got {search_size!r}")
    if isinstance(search_size, numbers.Integral):
        k = int(search_size)
    elif 0 < search_size < 1:
        k = max(1, round(search_size * total))
    else:
        raise DataError(f"search_size {search_size} must be a fraction in (0, 1) or a number of images")
    if not 0 <= k < total:
        raise DataError(f"search_size {search_size} must leave training images: the training set has {total}")
    return perm[k:].sort().values, perm[:k].sort().values
