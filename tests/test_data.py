"""Datasets: sizes from the datasets' own documentation, splits, preprocessing, error messages.

Real data is used where it exists on this machine (sklearn's bundled digits always; Fashion-MNIST
from the Debian package and CIFAR-10 from the project's shared folder, else skipped); the file
layouts are checked on small synthetic copies written to tmp_path.
"""
import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DistributedSampler, TensorDataset

from autoslim_hw.data import cifar10 as cifar10_reader
from autoslim_hw.data.cifar10 import CLASSES as CIFAR10_CLASSES
from autoslim_hw.data import DATASETS, DataSplits, dataset_info, load_splits, make_loader
from autoslim_hw.errors import DataError, UserError

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def stack(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def raw(ds, x):
    """Undo the normalization of an item of ds."""
    return x * ds.std + ds.mean


def shifted(base, pad):
    """Every random crop with zero padding `pad` of base (C, H, W)."""
    h, w = base.shape[-2:]
    padded = F.pad(base, (pad,) * 4)
    return [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")


# --- names --------------------------------------------------------------------------------

def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DataError) as exc:
        load_splits("mnist")
    for name in ("digits", "fashion-mnist", "cifar10", "imagefolder:PATH"):
        assert name in str(exc.value)
    assert issubclass(DataError, UserError)
    with pytest.raises(DataError, match="imagefolder:PATH"):
        dataset_info("imagefolder:")
    assert DATASETS == ("digits", "fashion-mnist", "cifar10", "imagefolder:PATH")


def test_dataset_info():
    d, f, c = dataset_info("digits"), dataset_info("Fashion-MNIST"), dataset_info("cifar10")
    assert (d.num_classes, d.in_chans, d.native_size, len(d.mean)) == (10, 1, 8, 1)
    assert (f.num_classes, f.in_chans, f.native_size, len(f.std)) == (10, 1, 28, 1)
    assert (c.num_classes, c.in_chans, c.native_size, len(c.mean)) == (10, 3, 32, 3)


# --- digits: sizes, splits, preprocessing -------------------------------------------------

def test_digits_sizes_and_items(digits):
    assert isinstance(digits, DataSplits) and digits.info.name == "digits"
    n_train = len(digits.train) + len(digits.search)
    assert n_train + len(digits.val) == 1797  # sklearn docs: 1797 samples, 10 classes
    assert len(digits.val) in (359, 360)  # the fixed 20%
    assert len(digits.search) == round(0.1 * n_train)
    for ds in (digits.train, digits.train_eval, digits.search, digits.val):
        x, y = ds[0]
        assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int)
    assert set(digits.val.labels.tolist()) == set(digits.train.labels.tolist()) == set(range(10))


def test_digits_pixels_are_sklearns(digits):
    from sklearn.datasets import load_digits

    ref = load_digits()
    for ds in (digits.train_eval, digits.val):
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            img = (raw(ds, x) * 16).squeeze(0)
            match = [j for j in range(len(ref.images))
                     if torch.allclose(img, torch.from_numpy(ref.images[j]).float(), atol=1e-4)]
            assert match and y in {int(ref.target[j]) for j in match}


def test_digits_normalized_statistics(digits):
    x, _ = stack(digits.train_eval)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_split_is_disjoint_and_covers_the_training_set(digits):
    train, search = set(digits.train.indices.tolist()), set(digits.search.indices.tolist())
    assert not train & search
    assert train | search == set(range(len(digits.train) + len(digits.search)))
    assert torch.equal(digits.train_eval.indices, digits.train.indices)
    # The same by content: the images of train + search are those of the whole training set.
    whole = load_splits("digits", search_size=0)
    assert len(whole.search) == 0
    key = lambda x: sorted(map(tuple, x.flatten(1).tolist()))  # noqa: E731
    parts = torch.cat([stack(digits.train_eval)[0], stack(digits.search)[0]])
    assert key(parts) == key(stack(whole.train_eval)[0])


def test_split_reproducible_by_seed(digits):
    again, other = load_splits("digits", seed=0), load_splits("digits", seed=1)
    assert torch.equal(again.search.indices, digits.search.indices)
    assert torch.equal(stack(again.search)[0], stack(digits.search)[0])
    assert not torch.equal(other.search.indices, digits.search.indices)
    assert torch.equal(stack(other.val)[0], stack(digits.val)[0])  # val does not depend on seed


def test_search_size_and_limit():
    n = len(load_splits("digits", search_size=0).train)
    assert len(load_splits("digits", search_size=100).search) == 100
    half = load_splits("digits", search_size=0.5)
    assert len(half.search) == round(n / 2) and len(half.train) == n - round(n / 2)
    a, b, c = (load_splits("digits", limit=200, seed=s) for s in (3, 3, 4))
    assert (len(a.train), len(a.search), len(a.val)) == (180, 20, 1797 - n)
    assert torch.equal(stack(a.train_eval)[0], stack(b.train_eval)[0])
    assert not torch.equal(stack(a.train_eval)[0], stack(c.train_eval)[0])
    for bad in (dict(search_size=1.5), dict(search_size=-3), dict(search_size=n), dict(search_size="x"),
                dict(limit=0), dict(in_chans=2), dict(input_size=0)):
        with pytest.raises(DataError):
            load_splits("digits", **bad)


def test_in_chans_and_input_size(digits):
    big = load_splits("digits", input_size=32, in_chans=3)
    x, _ = big.val[5]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    # Bilinear resizing of the native 8x8 image, computed here independently.
    small = raw(digits.val, digits.val[5][0])
    expect = F.interpolate(small[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(raw(big.val, x)[0], expect[0], atol=1e-5)


def test_augmentation_is_a_padded_random_crop_without_flip():
    s = load_splits("digits", input_size=32, limit=50)
    base = raw(s.train_eval, s.train_eval[0][0])
    crops = shifted(base, 4)  # padding is 1/8 of 32
    seen = set()
    for _ in range(40):
        aug = raw(s.train, s.train[0][0])
        hits = [k for k, c in enumerate(crops) if torch.allclose(aug, c, atol=1e-5)]
        assert hits, "an augmented item is not a padded crop of the image"
        seen.add(hits[0])
    assert len(seen) > 5
    assert torch.equal(s.train_eval[0][0], s.train_eval[0][0])  # no augmentation there


# --- Fashion-MNIST ------------------------------------------------------------------------

def write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">i4").tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    xtr, xte = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    ytr, yte = np.arange(12) % 10, np.arange(5)
    write_idx(tmp_path / "train-images-idx3-ubyte", xtr)  # plain and gzipped are both read
    write_idx(tmp_path / "train-labels-idx1-ubyte", ytr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte)
    s = load_splits("fashion-mnist", data_dir=str(tmp_path), search_size=0)
    x, y = stack(s.train_eval)
    assert torch.equal((raw(s.train_eval, x) * 255).round().to(torch.uint8).squeeze(1), torch.from_numpy(xtr).byte())
    assert y.tolist() == ytr.tolist() and s.val.labels.tolist() == yte.tolist()
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x0d\x01garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        load_splits("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(DataError) as exc:
        load_splits("fashion-mnist", data_dir=str(tmp_path))
    assert "dataset-fashion-mnist" in str(exc.value) and "--data-dir" in str(exc.value)


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_real():
    s = load_splits("fashion-mnist", search_size=0)
    assert (len(s.train), len(s.val)) == (60000, 10000)  # Zalando's README: 60,000 + 10,000
    assert s.train.labels.bincount().tolist() == [6000] * 10 and s.val.labels.bincount().tolist() == [1000] * 10
    x, y = s.val[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert abs(s.train_eval.images.float().mean().item() / 255 - s.info.mean[0]) < 1e-3


# --- CIFAR-10: the three layouts, the cache, the real data ---------------------------------

def fake_cifar(rng, per_class):
    imgs = rng.integers(0, 256, (10 * per_class, 32, 32, 3), dtype=np.uint8)
    return imgs, np.repeat(np.arange(10), per_class)


def png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")  # lossless, so pixels can be compared exactly
    return buf.getvalue()


def write_tar(path, split, imgs, labels):
    with tarfile.open(path, "w:gz") as tf:
        for i in reversed(range(len(imgs))):  # member order must not matter
            blob = png(imgs[i])
            info = tarfile.TarInfo(f"{split}/{CIFAR10_CLASSES[labels[i]]}/{i:04d}.jpg")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))


@pytest.fixture
def cifar_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSLIM_HW_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    train, test = fake_cifar(rng, 2), fake_cifar(rng, 1)
    tars, folders, batches = tmp_path / "tars", tmp_path / "folders", tmp_path / "batches" / "cifar-10-batches-py"
    tars.mkdir()
    write_tar(tars / "cifar10-train.tar.gz", "train", *train)
    write_tar(tars / "cifar10-test.tar.gz", "test", *test)
    for split, (imgs, labels) in (("train", train), ("test", test)):
        for i, (a, y) in enumerate(zip(imgs, labels)):
            f = folders / split / CIFAR10_CLASSES[y] / f"{i:04d}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(png(a))
    batches.mkdir(parents=True)
    for name, sl, (imgs, labels) in [(f"data_batch_{i + 1}", slice(4 * i, 4 * i + 4), train) for i in range(5)] + \
                                    [("test_batch", slice(None), test)]:
        rows = imgs[sl].transpose(0, 3, 1, 2).reshape(-1, 3072)
        (batches / name).write_bytes(pickle.dumps({"data": rows, "labels": labels[sl].tolist()}))
    return dict(tars=tars, folders=folders, batches=batches.parent, train=train, test=test)


class _Payload:
    """Unpickling this would create a file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar10_batch_with_code_is_refused_without_running_it(cifar_layouts, tmp_path):
    from autoslim_hw.errors import UserError

    marker = tmp_path / "payload_ran"
    batch = cifar_layouts["batches"] / "cifar-10-batches-py" / "data_batch_3"
    good = pickle.loads(batch.read_bytes())
    batch.write_bytes(pickle.dumps({**good, "labels": _Payload(marker)}))
    with pytest.raises(UserError, match="data_batch_3"):
        load_splits("cifar10", data_dir=str(cifar_layouts["batches"]), search_size=0)
    assert not marker.exists()


def test_cifar10_layouts_agree(cifar_layouts):
    xtr, ytr = (torch.from_numpy(a) for a in cifar_layouts["train"])
    xte = torch.from_numpy(cifar_layouts["test"][0])
    for layout in ("tars", "folders", "batches"):
        s = load_splits("cifar10", data_dir=str(cifar_layouts[layout]), search_size=0)
        assert torch.equal(s.train_eval.images.permute(0, 2, 3, 1), xtr), layout
        assert torch.equal(s.train_eval.labels, ytr) and torch.equal(s.val.images.permute(0, 2, 3, 1), xte)
        x, y = s.val[3]
        assert x.shape == (3, 32, 32) and y == 3
    gray = load_splits("cifar10", data_dir=str(cifar_layouts["tars"]), in_chans=1, input_size=16)
    assert gray.val[0][0].shape == (1, 16, 16)
    luma = (xte[:1].permute(0, 3, 1, 2).float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
    expect = F.interpolate(luma, size=(16, 16), mode="bilinear", antialias=True)[0] / 255
    assert (raw(gray.val, gray.val[0][0]) - expect).abs().max() < 0.5 / 255 + 1e-5  # stored as rounded uint8


def test_cifar10_flips_and_crops(cifar_layouts):
    s = load_splits("cifar10", data_dir=str(cifar_layouts["tars"]), search_size=0)
    base = raw(s.train_eval, s.train_eval[0][0])
    straight, flipped = shifted(base, 4), shifted(base.flip(-1), 4)
    kinds = set()
    for _ in range(40):
        aug = raw(s.train, s.train[0][0])
        kinds |= {"straight" for c in straight if torch.allclose(aug, c, atol=1e-5)}
        kinds |= {"flipped" for c in flipped if torch.allclose(aug, c, atol=1e-5)}
    assert kinds == {"straight", "flipped"}


def test_cifar10_cache(cifar_layouts, monkeypatch):
    tars = cifar_layouts["tars"]
    first = load_splits("cifar10", data_dir=str(tars), search_size=0)
    assert len(list((tars.parent / "cache").glob("cifar10-*.npz"))) == 1
    with monkeypatch.context() as m:  # a second load must not decode
        m.setattr(cifar10_reader, "_read_tar", lambda *a: pytest.fail("decoded again despite the cache"))
        again = load_splits("cifar10", data_dir=str(tars), search_size=0)
    assert torch.equal(again.train_eval.images, first.train_eval.images)
    new = fake_cifar(np.random.default_rng(7), 2)
    write_tar(tars / "cifar10-train.tar.gz", "train", *new)
    os.utime(tars / "cifar10-train.tar.gz", ns=(1, 1))  # a new mtime even on a coarse clock
    changed = load_splits("cifar10", data_dir=str(tars), search_size=0)
    assert torch.equal(changed.train_eval.images.permute(0, 2, 3, 1), torch.from_numpy(new[0]))


def test_cifar10_default_locations(cifar_layouts, tmp_path, monkeypatch):
    root = tmp_path / "env"
    (root / "cifar10").mkdir(parents=True)
    for f in cifar_layouts["tars"].iterdir():
        (root / "cifar10" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("AUTOSLIM_HW_DATA", str(root))
    assert len(load_splits("cifar10", search_size=0).train) == 20  # the env folder comes before the shared one
    monkeypatch.delenv("AUTOSLIM_HW_DATA")
    monkeypatch.chdir(cifar_layouts["folders"].parent)
    (tmp_path / "data").mkdir()
    (tmp_path / "folders").rename(tmp_path / "data" / "cifar10")
    assert len(load_splits("cifar10", search_size=0).train) == 20  # ./data/cifar10


def test_cifar10_missing(tmp_path):
    with pytest.raises(DataError) as exc:
        load_splits("cifar10", data_dir=str(tmp_path))
    for hint in ("cifar10-train.tar.gz", "cifar-10-batches-py", "download=True", "--data-dir"):
        assert hint in str(exc.value)
    with pytest.raises(DataError, match="not a directory"):
        load_splits("cifar10", data_dir=str(tmp_path / "nowhere"))


@pytest.mark.skipif(not (SHARED_CIFAR / "cifar10-train.tar.gz").is_file(), reason="no shared CIFAR-10 tars")
def test_cifar10_real():
    s = load_splits("cifar10", data_dir=str(SHARED_CIFAR))  # the first load decodes (~20 s), then cached
    assert (len(s.train) + len(s.search), len(s.val)) == (50000, 10000)
    labels = torch.cat([s.train.labels, s.search.labels])
    assert labels.bincount().tolist() == [5000] * 10 and s.val.labels.bincount().tolist() == [1000] * 10
    mean = s.train_eval.images.float().mean((0, 2, 3))  # all 50,000: train_eval shares the whole tensor
    assert torch.allclose(mean, torch.tensor([125.3, 122.9, 113.9]), atol=0.1)  # the data README
    x, y = next(iter(make_loader(s.train_eval, 1000, shuffle=True)))
    assert x.shape == (1000, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.mean((0, 2, 3)).abs().max() < 0.05 and (x.std((0, 2, 3)) - 1).abs().max() < 0.05


# --- imagefolder ----------------------------------------------------------------------------

def test_imagefolder(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 4), ("val", 1)):
        for c in ("ant", "bee", "cow"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    name = f"imagefolder:{tmp_path}"
    assert dataset_info(name).num_classes == 3 and dataset_info(name).native_size == 224
    s = load_splits(name, input_size=16, search_size=3)
    assert (len(s.train), len(s.train_eval), len(s.search), len(s.val)) == (9, 9, 3, 3)
    x, y = s.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y in (0, 1, 2)
    assert torch.equal(s.train_eval[0][0], s.train_eval[0][0])
    assert sorted(s.val[i][1] for i in range(3)) == [0, 1, 2]
    assert load_splits(name, input_size=16, in_chans=1).val[0][0].shape == (1, 16, 16)
    (tmp_path / "val" / "cow").rename(tmp_path / "val" / "dog")
    with pytest.raises(DataError, match="different class folders"):
        load_splits(name)
    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="val"):
        load_splits(name)
    with pytest.raises(DataError, match="PATH/train"):
        dataset_info(f"imagefolder:{tmp_path / 'nowhere'}")


def test_imagefolder_with_one_class_is_refused(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "ant").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / "ant" / "0.png")
    with pytest.raises(DataError, match="one class folder"):
        dataset_info(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match="at least 2 classes"):
        load_splits(f"imagefolder:{tmp_path}")


def test_imagefolder_skips_unreadable_files_and_counts_them(tmp_path):
    """A run over a folder with a non-image and a truncated PNG finishes; the summary says how many
    files it skipped, and the skipped files never reach a batch."""
    import io
    import json

    from tests.cli_helpers import run_cli

    rng = np.random.default_rng(3)
    for split, n in (("train", 12), ("val", 3)):
        for c in ("ant", "bee"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    (tmp_path / "train" / "ant" / "0.png").write_bytes(b"this is no image")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "train" / "bee" / "1.png").write_bytes(buf.getvalue()[:40])  # cut inside the pixel data
    s = load_splits(f"imagefolder:{tmp_path}", input_size=8, search_size=0)
    items = [s.train_eval[i] for i in range(len(s.train_eval))]
    assert len(items) == 24 and all(x.shape == (3, 8, 8) for x, _ in items)
    assert sorted(Path(p).name for p in s.skipped()) == ["0.png", "1.png"]
    out = tmp_path / "run"
    r = run_cli("train", "--data", f"imagefolder:{tmp_path}", "--input-size", "8", "--width-mult", "0.35",
                "--epochs", "1", "--batch-size", "4", "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["skipped_images"] == 2
    assert "skipped_images=2" in r.stdout and "skipping unreadable image" in r.stderr, (r.stdout, r.stderr)


# --- loaders --------------------------------------------------------------------------------

def test_make_loader_order_is_seeded():
    ds = TensorDataset(torch.arange(100))
    order = lambda seed: torch.cat([b for (b,) in make_loader(ds, 16, shuffle=True, seed=seed)]).tolist()  # noqa: E731
    assert order(3) == order(3) and order(3) != order(4) and sorted(order(3)) == list(range(100))
    assert torch.cat([b for (b,) in make_loader(ds, 16, shuffle=False)]).tolist() == list(range(100))
    assert len(list(make_loader(ds, 16, shuffle=False, drop_last=True))) == 6


def test_make_loader_with_distributed_sampler():
    ds = TensorDataset(torch.arange(100))
    parts = [torch.cat([b for (b,) in make_loader(ds, 8, shuffle=False, sampler=DistributedSampler(
        ds, num_replicas=2, rank=r, shuffle=True, seed=0))]).tolist() for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 50 and sorted(parts[0] + parts[1]) == list(range(100))
    with pytest.raises(ValueError):
        make_loader(ds, 8, shuffle=True, sampler=DistributedSampler(ds, num_replicas=2, rank=0))


def test_make_loader_batches_and_augmentation_with_workers(digits):
    first = [next(iter(make_loader(digits.train, 32, shuffle=True, seed=5, num_workers=1))) for _ in range(2)]
    x, y = first[0]
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(first[0][0], first[1][0])  # the seed fixes the workers' augmentation too
