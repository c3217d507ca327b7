"""Data: the Fashion-MNIST reader, splits, balance, determinism, augmentation, and the CIFAR readers."""
import gzip
import io as _io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from kit import data as D
from kit import datasets
from kit.config import DataConfig
from kit.errors import KitError
from kit.runtime import project_path


@pytest.fixture(scope="module")
def fashion():
    return D.load(DataConfig(val_size=5000), "cpu", seed=0)


def test_fashion_mnist_shapes_and_sizes(fashion):
    assert fashion.input_shape == (1, 28, 28) and fashion.num_classes == 10
    assert {k: len(s) for k, s in fashion.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    assert fashion.splits["train"].images.dtype == torch.uint8
    # the published first labels of the training file (the split keeps file order)
    raw = datasets.read_fashion_mnist(project_path("data"))[0]
    assert raw.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_splits_are_class_balanced_and_disjoint(fashion):
    assert torch.bincount(fashion.splits["val"].labels).tolist() == [500] * 10
    assert torch.bincount(fashion.splits["train"].labels).tolist() == [5500] * 10
    assert torch.bincount(fashion.splits["test"].labels).tolist() == [1000] * 10
    # val and train together are exactly the original training images
    full = datasets.read_fashion_mnist(project_path("data"))[0]
    together = torch.cat([fashion.splits["train"].images, fashion.splits["val"].images]).flatten(1)
    key = lambda t: t.double() @ torch.randn(784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(key(together).sort().values, key(full.images.flatten(1)).sort().values)


def test_limits_keep_balance():
    d = D.load(DataConfig(val_size=100, train_limit=300, test_limit=200, batch_size=32), "cpu", seed=3)
    assert torch.bincount(d.splits["train"].labels).tolist() == [30] * 10
    assert torch.bincount(d.splits["val"].labels).tolist() == [10] * 10
    assert torch.bincount(d.splits["test"].labels).tolist() == [20] * 10


def test_deterministic_under_seed():
    cfg = DataConfig(val_size=100, train_limit=256, test_limit=100, batch_size=64)
    a, b, c = (D.load(cfg, "cpu", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.splits["val"].labels, b.splits["val"].labels)
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert not torch.equal(a.splits["train"].images, c.splits["train"].images)
    batches = lambda d, s: [x for x, _ in d.train_batches(torch.Generator().manual_seed(s))]
    assert all(torch.equal(x, y) for x, y in zip(batches(a, 5), batches(b, 5)))
    assert not torch.equal(batches(a, 5)[0], batches(a, 6)[0])


def test_normalisation_uses_training_statistics(fashion):
    x = fashion.normalise(fashion.splits["train"].images[:20000])
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02
    assert abs(fashion.mean.item() - 72.94) < 0.5  # published Fashion-MNIST training mean (0..255)


def test_crop_is_a_window_of_the_padded_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 10, 12), dtype=torch.uint8, generator=gen)
    out = D.augment_batch(x, padding=2, flip=False, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # looped oracle: some shift (dy, dx) of the padded image equals the output
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(padded[i, :, dy:dy + 10, dx:dx + 12], out[i])]
        assert windows, f"image {i} is not a crop of its padded image"
    shifted = sum(not torch.equal(out[i], x[i]) for i in range(len(x)))
    assert shifted > 40  # 24 of 25 shifts move the image


def test_flip_mirrors_about_half():
    x = torch.arange(16 * 4, dtype=torch.uint8).reshape(16, 1, 1, 4).repeat(4, 1, 1, 1)  # 64 images
    out = D.augment_batch(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48
    assert torch.equal(D.augment_batch(x, 0, False, torch.Generator()), x)


def test_missing_fashion_mnist_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(KitError, match="Fashion-MNIST was not found.*make data"):
        D.load(DataConfig(root=str(tmp_path)), "cpu")


def test_truncated_idx_file(tmp_path):
    path = tmp_path / "bad-idx3-ubyte.gz"
    header = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (5, 28, 28))
    path.write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(KitError, match="truncated"):
        datasets.read_idx(path)


def test_corrupt_gzip_is_one_clear_error(tmp_path):
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(KitError, match="not a readable gzip file"):
        datasets.read_idx(path)


def test_unknown_dataset():
    with pytest.raises(KitError, match="Unknown dataset 'mnist'"):
        DataConfig(name="mnist")


# ---------------------------------------------------------------- CIFAR, on archives written here

def _cifar_archive(root, name: str, per_batch: int = 30, extract: bool = False):
    """A small archive in the exact layout and pickle format of the official python-version CIFAR files."""
    spec = datasets.CIFAR[name]
    n_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(0)
    members = {}
    for member in spec["train"] + spec["test"]:
        labels = (np.arange(per_batch) % n_classes).tolist()
        entry = {b"batch_label": member.encode(), b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 spec["labels"]: labels, b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
        if name == "cifar100":
            entry[b"coarse_labels"] = [l % 20 for l in labels]
        members[member] = entry
    members[spec["meta"]] = {spec["names"]: [f"class{i}".encode() for i in range(n_classes)]}
    if extract:
        folder = root / spec["folder"]
        folder.mkdir(parents=True)
        for member, obj in members.items():
            (folder / member).write_bytes(pickle.dumps(obj))
    else:
        with tarfile.open(root / spec["archive"], "w:gz") as tar:
            for member, obj in members.items():
                raw = pickle.dumps(obj)
                info = tarfile.TarInfo(f"{spec['folder']}/{member}")
                info.size = len(raw)
                tar.addfile(info, _io.BytesIO(raw))
    return members


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("extract", [False, True])
def test_cifar_reader_on_standard_archive(tmp_path, name, extract):
    members = _cifar_archive(tmp_path, name, extract=extract)
    train, test, classes = datasets.read_cifar(name, tmp_path, download=False)
    spec = datasets.CIFAR[name]
    assert train.images.shape == (30 * len(spec["train"]), 3, 32, 32) and test.images.shape == (30, 3, 32, 32)
    assert len(classes) == (10 if name == "cifar10" else 100) and classes[3] == "class3"
    first = members[spec["train"][0]]
    # rows are stored channel-major (1024 red, 1024 green, 1024 blue), each row-major 32×32
    assert torch.equal(train.images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    assert train.labels[:5].tolist() == first[spec["labels"]][:5]


def test_cifar_load_through_config(tmp_path):
    _cifar_archive(tmp_path, "cifar10", per_batch=40)
    d = D.load(DataConfig(name="cifar10", root=str(tmp_path), val_size=50, batch_size=16, crop_padding=4), "cpu")
    assert d.input_shape == (3, 32, 32) and len(d.splits["train"]) == 150 and len(d.splits["val"]) == 50
    x, y = next(d.train_batches(torch.Generator().manual_seed(0)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)


def test_cifar_missing_names_the_file(tmp_path):
    with pytest.raises(KitError, match="put cifar-100-python.tar.gz .* in"):
        datasets.read_cifar("cifar100", tmp_path, download=False)


def test_cifar_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(KitError, match="not a readable .tar.gz"):
        datasets.read_cifar("cifar10", tmp_path, download=False)


def test_cifar_foreign_archive(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("something/else")
        tar.addfile(info, _io.BytesIO(b""))
    with pytest.raises(KitError, match="not the standard python-version archive"):
        datasets.read_cifar("cifar10", tmp_path, download=False)
