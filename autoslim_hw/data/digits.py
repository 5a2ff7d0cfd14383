"""scikit-learn's digits: 1,797 8x8 grayscale images, bundled with scikit-learn (works offline)."""
from __future__ import annotations

import torch

from ._registry import DatasetInfo, register_dataset

_VAL_SEED = 1234  # digits has no test split; this fixes one for every run


def read_digits(data_dir):
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    d = load_digits()
    x = torch.from_numpy(d.images / 16.0).float().unsqueeze(1)  # values are 0..16
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(_VAL_SEED))
    n_val = round(0.2 * len(x))
    tr, val = perm[n_val:].sort().values, perm[:n_val].sort().values
    return (x[tr], y[tr]), (x[val], y[val])




# mean/std measured on all 1797 images, as 0..16 / 16
register_dataset(DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3760,)), read_digits, flip=False,
                 description="scikit-learn's 8x8 digits, bundled (offline)")
