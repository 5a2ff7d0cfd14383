"""CIFAR-10: JPEG tarballs or folders (train/<class>/*.jpg, test/<class>/*.jpg), or torchvision's
python batches; decoded images are cached as arrays, once per version of the sources."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .._io import atomic_path
from ..errors import DataError
from ._registry import DatasetInfo, register_dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_REPO_ROOT = Path(__file__).resolve().parents[2]


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
    if classes != CLASSES:
        raise DataError(f"{where}: class folders {list(classes)} are not the CIFAR-10 classes {list(CLASSES)}")
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


# What a CIFAR-10 python batch is made of: plain containers and strings (no global at all),
# and numpy arrays. Nothing else may be built while reading one: a pickle can call any
# importable function, so a data folder from an untrusted source could otherwise run code.
_BATCH_GLOBALS = {(f"numpy{core}.{module}", name) for core in ("._core", ".core")
                  for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
_BATCH_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes, protocol 2


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                         "lists and strings")
        return super().find_class(module, name)


def load_batch(f) -> dict:
    """One CIFAR-10 python batch (torchvision's files; pickle is their format), read with only
    numpy arrays and plain containers allowed."""
    return _BatchUnpickler(f, encoding="latin1").load()


def _read_batches(folder: Path):
    def read(name):
        try:
            with open(folder / name, "rb") as f:
                d = load_batch(f)
            return torch.from_numpy(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32)), torch.tensor(d["labels"])
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise DataError(f"cannot read {folder / name}: {exc}") from exc

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    return (torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])), read("test_batch")


def _cache_dir() -> Path:
    return Path(os.environ.get("AUTOSLIM_HW_CACHE") or Path.home() / ".cache" / "autoslim-hw")


def _cached(tag: str, sources: list[Path], build):
    """build() once per version of the sources: decoding 60,000 JPEGs takes many times longer than
    loading the arrays."""
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


def read_cifar10(data_dir):
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




# mean/std measured on the training set
register_dataset(DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                 read_cifar10, flip=True, description="CIFAR-10, 32x32 colour (../shared/data/cifar10 or --data-dir)")
