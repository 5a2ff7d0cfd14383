"""Fashion-MNIST from its four IDX files (Debian's dataset-fashion-mnist, or --data-dir)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ._registry import DatasetInfo, register_dataset

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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


def read_fashion_mnist(data_dir):
    if data_dir:
        dirs = [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    else:
        env = os.environ.get("AUTOSLIM_HW_DATA")
        dirs = ([Path(env) / "fashion-mnist"] if env else []) + [SYSTEM_DIR]
    for d in dirs:
        found = [next((d / (f + ext) for ext in ("", ".gz") if (d / (f + ext)).is_file()), None)
                 for f in _FILES]
        if all(found):
            xtr, ytr, xte, yte = (_read_idx(p) for p in found)
            if xtr.ndim != 3 or xte.ndim != 3 or len(xtr) != len(ytr) or len(xte) != len(yte):
                raise DataError(f"{d}: the IDX files do not hold matching images and labels")
            return ((torch.from_numpy(xtr).unsqueeze(1), torch.from_numpy(ytr).long()),
                    (torch.from_numpy(xte).unsqueeze(1), torch.from_numpy(yte).long()))
    raise DataError(f"Fashion-MNIST not found (looked in {', '.join(map(str, dirs))}): install the Debian package "
                    f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data-dir with the four "
                    f"IDX files {', '.join(_FILES)} (.gz or not)")




# mean/std measured on the training set
register_dataset(DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)), read_fashion_mnist, flip=False,
                 description="Fashion-MNIST, 28x28 grayscale (Debian: dataset-fashion-mnist)")
