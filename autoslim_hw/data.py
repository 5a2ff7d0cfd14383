"""Datasets for training a slimmable supernet and searching its widths.

The small datasets (digits, fashion-mnist, cifar10) live in memory as one tensor per split,
resized once, and are augmented per item on tensors: on a few CPU cores a PIL pipeline would
be the bottleneck of training. ImageNet-style folders are read lazily with torchvision.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import io
import numbers
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ._io import atomic_path
from .errors import DataError

DATASETS = ("digits", "fashion-mnist", "cifar10", "imagefolder:PATH")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")
_REPO_ROOT = Path(__file__).resolve().parent.parent
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what PIL's convert("L") uses
_DIGITS_VAL_SEED = 1234  # digits has no test split; this fixes one for every run


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


# Mean/std measured on each training set (digits: all 1797 images, as 0..16 / 16).
_INFOS = {
    "digits": DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3760,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _parse(name: str) -> tuple[str, Path | None]:
    key = str(name).strip()
    if key.lower().startswith("imagefolder:"):
        path = key.split(":", 1)[1]
        if not path:
            raise DataError("imagefolder needs a path: imagefolder:PATH with PATH/train/<class>/* and PATH/val/<class>/*")
        return "imagefolder", Path(path).expanduser()
    if key.lower() in _INFOS:
        return key.lower(), None
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def _folder_classes(folder: Path) -> list[str]:
    layout = "imagefolder:PATH expects PATH/train/<class>/* and PATH/val/<class>/*"
    if not folder.is_dir():
        raise DataError(f"{folder} is not a directory; {layout}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"{folder} holds no class folders; {layout}")
    return classes


def dataset_info(name: str) -> DatasetInfo:
    """What a model needs to know about a dataset, without loading its images."""
    kind, root = _parse(name)
    if kind != "imagefolder":
        return _INFOS[kind]
    return DatasetInfo("imagefolder", len(_folder_classes(root / "train")), 3, 224, _IMAGENET_MEAN, _IMAGENET_STD)


# --- in-memory datasets -------------------------------------------------------------------

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


def _prepare(images: torch.Tensor, chans: int, size: int) -> torch.Tensor:
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


def _normalization(info: DatasetInfo, chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if chans == info.in_chans:
        return info.mean, info.std
    if chans == 3:
        return info.mean * 3, info.std * 3
    # RGB -> luminance: the mean is exact; the std assumes fully correlated channels, close for photos.
    return (sum(w * m for w, m in zip(_LUMA, info.mean)),), (sum(w * s for w, s in zip(_LUMA, info.std)),)


def _split(n: int, search_size: int | float, seed: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
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


# --- readers: each returns ((x_train, y_train), (x_test, y_test)), x as (N, C, H, W) ------

def _load_digits(data_dir):
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    d = load_digits()
    x = torch.from_numpy(d.images / 16.0).float().unsqueeze(1)  # values are 0..16
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(_DIGITS_VAL_SEED))
    n_val = round(0.2 * len(x))
    tr, val = perm[n_val:].sort().values, perm[:n_val].sort().values
    return (x[tr], y[tr]), (x[val], y[val])


def _read_idx(path: Path) -> np.ndarray:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    # IDX: two zero bytes, a type code (8 = unsigned byte), the rank, then big-endian int32 sizes.
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 8:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=raw[3], offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims))
    if data.size != np.prod(dims):
        raise DataError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims).copy()


def _load_fashion_mnist(data_dir):
    if data_dir:
        dirs = [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    else:
        env = os.environ.get("AUTOSLIM_HW_DATA")
        dirs = ([Path(env) / "fashion-mnist"] if env else []) + [FASHION_MNIST_SYSTEM_DIR]
    for d in dirs:
        found = [next((d / (f + ext) for ext in ("", ".gz") if (d / (f + ext)).is_file()), None)
                 for f in _FASHION_FILES]
        if all(found):
            xtr, ytr, xte, yte = (_read_idx(p) for p in found)
            if xtr.ndim != 3 or xte.ndim != 3 or len(xtr) != len(ytr) or len(xte) != len(yte):
                raise DataError(f"{d}: the IDX files do not hold matching images and labels")
            return ((torch.from_numpy(xtr).unsqueeze(1), torch.from_numpy(ytr).long()),
                    (torch.from_numpy(xte).unsqueeze(1), torch.from_numpy(yte).long()))
    raise DataError(f"Fashion-MNIST not found (looked in {', '.join(map(str, dirs))}): install the Debian package "
                    f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data-dir with the four "
                    f"IDX files {', '.join(_FASHION_FILES)} (.gz or not)")


def _decode(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        a = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    except OSError as exc:
        raise DataError(f"cannot decode {where}: {exc}") from exc
    if a.shape != (32, 32, 3):
        raise DataError(f"{where} is {a.shape[1]}x{a.shape[0]}, CIFAR-10 images are 32x32")
    return a


def _stack(items: list, where: str):
    """(class, file name, HWC array) triples -> tensors, in class then file order whatever the source order."""
    items.sort(key=lambda t: t[:2])
    classes = tuple(sorted({c for c, _, _ in items}))
    if classes != CIFAR10_CLASSES:
        raise DataError(f"{where}: class folders {list(classes)} are not the CIFAR-10 classes {list(CIFAR10_CLASSES)}")
    x = torch.from_numpy(np.stack([a for _, _, a in items])).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([classes.index(c) for c, _, _ in items])


def _read_tar(path: Path):
    items = []
    try:
        with tarfile.open(path) as tf:
            for m in tf:  # streamed: nothing is extracted to disk
                parts = PurePosixPath(m.name).parts
                if m.isfile() and len(parts) >= 2 and parts[-1].lower().endswith(_IMAGE_EXTS):
                    items.append((parts[-2], parts[-1], _decode(tf.extractfile(m).read(), f"{path}:{m.name}")))
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return _stack(items, str(path))


def _read_folder(folder: Path):
    items = [(f.parent.name, f.name, _decode(f.read_bytes(), str(f)))
             for f in folder.glob("*/*") if f.suffix.lower() in _IMAGE_EXTS]
    return _stack(items, str(folder))


def _read_batches(folder: Path):
    def read(name):
        try:
            with open(folder / name, "rb") as f:  # torchvision's own files; pickle is their format
                d = pickle.load(f, encoding="latin1")
            return torch.from_numpy(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32)), torch.tensor(d["labels"])
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise DataError(f"cannot read {folder / name}: {exc}") from exc

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    return (torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])), read("test_batch")


def _cache_dir() -> Path:
    return Path(os.environ.get("AUTOSLIM_HW_CACHE") or Path.home() / ".cache" / "autoslim-hw")


def _cached(tag: str, sources: list[Path], build):
    """build() once per version of the sources: decoding 60,000 JPEGs takes ~15 s, loading the arrays < 1 s."""
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    path = _cache_dir() / f"{tag}-{hashlib.sha1(repr(stamp).encode()).hexdigest()[:16]}.npz"
    names = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path) as z:
            xtr, ytr, xte, yte = (torch.from_numpy(z[k]) for k in names)
            return (xtr, ytr), (xte, yte)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent or unreadable: rebuild
    (xtr, ytr), (xte, yte) = build()
    try:
        with atomic_path(path) as tmp:  # a concurrent reader never sees a half-written file
            with open(tmp, "wb") as f:
                np.savez(f, **{k: v.numpy() for k, v in zip(names, (xtr, ytr, xte, yte))})
    except OSError:  # a read-only cache only costs the decode next time
        pass
    return (xtr, ytr), (xte, yte)


def _cifar10_dirs(data_dir) -> list[Path]:
    if data_dir:
        return [Path(data_dir), Path(data_dir) / "cifar10"]
    env = os.environ.get("AUTOSLIM_HW_DATA")
    return ([Path(env) / "cifar10"] if env else []) + [Path("data/cifar10"), _REPO_ROOT.parent / "shared/data/cifar10"]


def _load_cifar10(data_dir):
    dirs = _cifar10_dirs(data_dir)
    for d in dirs:
        tars = [d / "cifar10-train.tar.gz", d / "cifar10-test.tar.gz"]
        if all(t.is_file() for t in tars):
            return _cached("cifar10", tars, lambda: (_read_tar(tars[0]), _read_tar(tars[1])))
        for b in (d / "cifar-10-batches-py", d):
            if (b / "data_batch_1").is_file() and (b / "test_batch").is_file():
                return _read_batches(b)
        if (d / "train").is_dir() and (d / "test").is_dir():
            # Folder mtimes change when files are added, removed or renamed (not when edited in place).
            sources = sorted(p for s in ("train", "test") for p in (d / s).iterdir() if p.is_dir())
            return _cached("cifar10", sources, lambda: (_read_folder(d / "train"), _read_folder(d / "test")))
    raise DataError(
        f"CIFAR-10 not found (looked in {', '.join(map(str, dirs))}). Pass --data-dir (or set AUTOSLIM_HW_DATA to a "
        f"folder holding cifar10/) with one of: cifar10-train.tar.gz and cifar10-test.tar.gz (JPEGs as "
        f"train/<class>/*.jpg, test/<class>/*.jpg); the torchvision folder cifar-10-batches-py/, which "
        f"torchvision.datasets.CIFAR10(root, download=True) writes where there is internet; or extracted "
        f"train/<class>/ and test/<class>/ image folders")


_READERS = {"digits": _load_digits, "fashion-mnist": _load_fashion_mnist, "cifar10": _load_cifar10}


# --- public entry points ------------------------------------------------------------------

def _imagefolder_splits(info, root, size, chans, search_size, seed, limit) -> DataSplits:
    from torchvision import datasets, transforms as T

    for sub in ("train", "val"):
        _folder_classes(root / sub)
    mean, std = _normalization(info, chans)
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
    tr, se = (i.tolist() for i in _split(len(train), search_size, seed, limit))
    return DataSplits(info, Subset(train, tr), Subset(train_eval, tr), Subset(train_eval, se), val)


def load_splits(name: str, *, data_dir: str | None = None, input_size: int | None = None,
                in_chans: int | None = None, search_size: int | float = 0.1, seed: int = 0,
                limit: int | None = None) -> DataSplits:
    """Load a dataset as train / train_eval / search / val datasets of (image, label) items.

    Images are float32 (in_chans, input_size, input_size), normalized by the dataset's mean/std.
    search_size is a number of training images or a fraction of them; the split is fixed by seed.
    limit keeps a seeded random subset of that many training images, before the split.
    """
    kind, root = _parse(name)
    info = dataset_info(name)
    size = info.native_size if input_size is None else input_size
    chans = info.in_chans if in_chans is None else in_chans
    if not isinstance(size, numbers.Integral) or size < 1:
        raise DataError(f"input_size must be a positive integer, got {input_size!r}")
    if chans not in (1, 3):
        raise DataError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if kind == "imagefolder":
        return _imagefolder_splits(info, root, size, chans, search_size, seed, limit)
    if data_dir is not None and kind != "digits" and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    (xtr, ytr), (xte, yte) = _READERS[kind](data_dir)
    tr, se = _split(len(xtr), search_size, seed, limit)
    if limit is not None and limit < len(xtr):  # only resize what is used
        keep = torch.cat([tr, se]).sort().values
        xtr, ytr = xtr[keep], ytr[keep]
        tr, se = torch.searchsorted(keep, tr), torch.searchsorted(keep, se)
    xtr, xte = _prepare(xtr, chans, size), _prepare(xte, chans, size)
    mean, std = _normalization(info, chans)
    flip = kind == "cifar10"  # digits and clothes have a handedness; CIFAR objects do not

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
