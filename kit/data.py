"""Datasets held whole in memory as uint8 tensors; batches drawn and augmented on the device.

No DataLoader and no worker processes (as in airbench): a split is one (N, C, H, W) uint8 tensor
on the training device, a batch is an index slice of a seeded permutation, augmented there
(random crop with zero padding, horizontal flip) and normalised per batch with the training
split's per-channel mean and std. All randomness comes from one CPU `torch.Generator`, so a run
is deterministic under its seed and resumes exactly when the generator's state is restored.

Datasets:
  fashion-mnist  (default) IDX files from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/)
                 or the four standard .gz files placed in data/fashion-mnist/
  cifar10/100    the standard "python version" archives (cifar-10-python.tar.gz, cifar-100-python.tar.gz)
                 in data/, extracted or not; downloaded on first use when the network allows
A validation split is held out of the training set (class-balanced); model selection uses it, never the test set.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import pickle
import shutil
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from kit.config import DataConfig
from kit.errors import KitError
from kit.runtime import project_path

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR = {
    "cifar10": dict(title="CIFAR-10", archive="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], labels=b"labels",
                    meta="batches.meta", names=b"label_names", md5="c58f30108f718f92721af3b95e74349a"),
    "cifar100": dict(title="CIFAR-100", archive="cifar-100-python.tar.gz", folder="cifar-100-python",
                     train=["train"], test=["test"], labels=b"fine_labels",
                     meta="meta", names=b"fine_label_names", md5="eb9058c3a382ffc7106e4002c42a8d85"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


class Data:
    """A dataset's train / val / test splits on one device, with batch iterators."""

    def __init__(self, name: str, classes: list[str], train: Split, val: Split, test: Split,
                 cfg: DataConfig, device: torch.device):
        self.name, self.classes, self.cfg, self.device = name, classes, cfg, torch.device(device)
        self.mean, self.std = channel_stats(train.images)  # (C,), (C,) in pixel units 0..255
        self.splits = {k: Split(s.images.to(self.device), s.labels.to(self.device))
                       for k, s in (("train", train), ("val", val), ("test", test))}
        self._shift = self.mean.to(self.device).view(1, -1, 1, 1)
        self._scale = (1.0 / self.std).to(self.device).view(1, -1, 1, 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def num_batches(self, split: str = "train") -> int:
        n = len(self.splits[split])
        return n // self.cfg.batch_size if split == "train" else -(-n // self.cfg.eval_batch_size)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → float32, zero mean and unit variance per channel."""
        return (images.float() - self._shift) * self._scale

    def train_batches(self, generator: torch.Generator, augmented: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented training batches (the last partial batch is dropped).

        The epoch's random draws (order, crop shifts, flips) are made on the CPU generator once per epoch
        and moved to the device then, so no step waits on a host-to-device copy of random numbers."""
        split, bs = self.splits["train"], self.cfg.batch_size
        n = len(split)
        order = torch.randperm(n, generator=generator)
        pad = self.cfg.crop_padding if augmented else 0
        shifts, flips = draw_augmentation(n, pad, augmented and self.cfg.flip, generator)
        to_device = lambda t: None if t is None else t.to(self.device, non_blocking=True)
        order, shifts, flips = to_device(order), to_device(shifts), to_device(flips)
        for i in range(n // bs):
            sl = slice(i * bs, (i + 1) * bs)
            x = augment(split.images[order[sl]], pad, None if shifts is None else shifts[sl],
                        None if flips is None else flips[sl])
            yield self.normalise(x), split.labels[order[sl]]

    def eval_batches(self, split: str = "test") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data, bs = self.splits[split], self.cfg.eval_batch_size
        for i in range(0, len(data), bs):
            yield self.normalise(data.images[i:i + bs]), data.labels[i:i + bs]


def crop(x: torch.Tensor, padding: int, shifts: torch.Tensor) -> torch.Tensor:
    """Crop each image at its shift (dy, dx) ∈ [0, 2p]² out of its zero-padded copy; one gather for the batch.

    x: (B, C, H, W) uint8, shifts: (B, 2) → (B, C, H, W) uint8, channels-last in memory (what the convs prefer).
    """
    B, C, H, W = x.shape
    padded = F.pad(x, (padding,) * 4)  # (B, C, H+2p, W+2p)
    rows = shifts[:, 0, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(W, device=x.device)  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B,H,W,C) → (B,C,H,W)


def augment(x: torch.Tensor, padding: int, shifts: torch.Tensor | None, flips: torch.Tensor | None) -> torch.Tensor:
    """Crop at `shifts` (B, 2) when padding > 0, then mirror the images where `flips` (B,) is True."""
    if padding > 0:
        x = crop(x, padding, shifts)
    if flips is not None:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


def draw_augmentation(n: int, padding: int, flip: bool, generator: torch.Generator):
    """Random draws for n images: crop shifts (n, 2) in [0, 2p] (None without padding), flips (n,) (None without)."""
    shifts = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator) if padding > 0 else None
    flips = (torch.rand(n, generator=generator) < 0.5) if flip else None
    return shifts, flips


def augment_batch(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding, then random horizontal flip, with draws from `generator`."""
    shifts, flips = draw_augmentation(x.shape[0], padding, flip, generator)
    to_device = lambda t: None if t is None else t.to(x.device)
    return augment(x, padding, to_device(shifts), to_device(flips))


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in chunks: no float copy of the whole split."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to("cpu", torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    std = ((squares - count * mean**2) / (count - 1)).sqrt()
    return mean.float(), std.float()


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random order of indices that deals the classes round-robin, so any prefix is class-balanced."""
    perm = torch.randperm(len(labels), generator=generator)
    lab = labels[perm]
    by_class = torch.argsort(lab, stable=True)
    counts = torch.bincount(lab)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(perm)
    rank[by_class] = torch.arange(len(lab)) - starts[lab[by_class]]  # position within its class
    return perm[torch.argsort(rank * (int(lab.max()) + 1) + lab, stable=True)]


def load(cfg: DataConfig, device: torch.device | str = "cpu", seed: int = 0) -> Data:
    """Read a dataset, hold out the validation split, apply limits, and put it on `device`."""
    root = project_path(cfg.root)
    if cfg.name == "fashion-mnist":
        (train, test), classes = read_fashion_mnist(root), FASHION_CLASSES
    else:
        train, test, classes = read_cifar(cfg.name, root)
    generator = torch.Generator().manual_seed(seed)
    order = balanced_order(train.labels, generator)
    if not 0 < cfg.val_size < len(order):
        raise KitError(f"val_size must be between 1 and {len(order) - 1} for {cfg.name}; got {cfg.val_size}.")
    val_idx, train_idx = order[:cfg.val_size], order[cfg.val_size:]
    if cfg.train_limit:
        train_idx = train_idx[:cfg.train_limit]
    if len(train_idx) < cfg.batch_size:
        raise KitError(f"The training split has {len(train_idx)} images, fewer than one batch of "
                       f"{cfg.batch_size}; raise train_limit or lower batch_size.")
    test_idx = balanced_order(test.labels, generator)[:cfg.test_limit] if cfg.test_limit else None
    pick = lambda s, idx: s if idx is None else Split(s.images[idx.sort().values], s.labels[idx.sort().values])
    return Data(cfg.name, classes, pick(train, train_idx), pick(train, val_idx), pick(test, test_idx), cfg, device)


# ---------------------------------------------------------------- Fashion-MNIST (IDX files)

def fashion_mnist_dir(root: Path) -> Path:
    """The first folder holding all four Fashion-MNIST files: data/fashion-mnist/, then Debian's."""
    candidates = [Path(root) / "fashion-mnist", FASHION_SYSTEM_DIR]
    for folder in candidates:
        if all((folder / f).is_file() for pair in FASHION_FILES.values() for f in pair):
            return folder
    raise KitError(f"Fashion-MNIST was not found in {candidates[0]}/ or {FASHION_SYSTEM_DIR}/; run `make data` "
                   "(installs Debian's dataset-fashion-mnist) or put the four standard .gz files in "
                   f"{candidates[0]}/.")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as a uint8 array of the shape its header declares."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise KitError(f"{path} is not a readable gzip file ({type(err).__name__}); replace it with the standard file.") from None
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):  # 0x08: unsigned byte data
        raise KitError(f"{path} is not a uint8 IDX file (magic {magic:#x}); replace it with the standard file.")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise KitError(f"{path} is truncated ({data.size} bytes for shape {shape}); replace it with the standard file.")
    return data.reshape(shape)


def read_fashion_mnist(root: Path) -> tuple[Split, Split]:
    folder = fashion_mnist_dir(root)
    splits = []
    for images_file, labels_file in FASHION_FILES.values():
        images = torch.from_numpy(read_idx(folder / images_file).copy()).unsqueeze(1)  # (N, 1, 28, 28)
        labels = torch.from_numpy(read_idx(folder / labels_file).astype(np.int64))
        splits.append(Split(images, labels))
    return splits[0], splits[1]


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100 (python pickles)

def read_cifar(name: str, root: Path, download: bool = True) -> tuple[Split, Split, list[str]]:
    """The standard python-version CIFAR files, from data/<folder>/ or straight from data/<archive>."""
    spec, root = CIFAR[name], Path(root)
    folder, archive = root / spec["folder"], root / spec["archive"]
    if not folder.is_dir() and not archive.is_file():
        if not download:
            raise KitError(_cifar_missing(spec, root))
        fetch_cifar(name, root)
    names = spec["train"] + spec["test"] + [spec["meta"]]
    if folder.is_dir():
        raw = {m: (folder / m).read_bytes() if (folder / m).is_file() else None for m in names}
        where = folder
    else:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                raw = {m: _tar_member(tar, f"{spec['folder']}/{m}") for m in names}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise KitError(f"{archive} is not a readable .tar.gz ({type(err).__name__}); delete it and download "
                           "or place the standard archive again.") from None
        where = archive
    missing = [m for m, b in raw.items() if b is None]
    if missing:
        raise KitError(f"{where} has no member {missing[0]}; it is not the standard python-version archive.")
    unpickled = {m: _unpickle(b, where / m if where is folder else where) for m, b in raw.items()}
    parts = [[unpickled[m] for m in spec[split]] for split in ("train", "test")]
    classes = [n.decode() for n in unpickled[spec["meta"]][spec["names"]]]
    splits = []
    for batches in parts:
        images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(b[spec["labels"]], dtype=np.int64) for b in batches])
        splits.append(Split(torch.from_numpy(images.copy()), torch.from_numpy(labels)))
    return splits[0], splits[1], classes


def fetch_cifar(name: str, root: Path) -> Path:
    """Download the standard archive into `root` (checked by MD5); a clear message when offline."""
    spec, root = CIFAR[name], Path(root)
    target = root / spec["archive"]
    root.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        print(f"Downloading {spec['title']} to {target} …", flush=True)
        with urllib.request.urlopen(CIFAR_URL + spec["archive"], timeout=30) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except (OSError, http.client.HTTPException) as err:
        partial.unlink(missing_ok=True)
        raise KitError(_cifar_missing(spec, root) + f" (Download failed: {err}.)") from None
    if hashlib.md5(partial.read_bytes()).hexdigest() != spec["md5"]:
        partial.unlink()
        raise KitError(f"The downloaded {spec['archive']} has the wrong checksum; retry, or place the file by hand.")
    partial.replace(target)
    return target


def _cifar_missing(spec: dict, root: Path) -> str:
    return (f"{spec['title']} is not in {root}/: put {spec['archive']} (the 'python version' archive) in {root}/, "
            f"or extract it to {root / spec['folder']}/.")


def _tar_member(tar: tarfile.TarFile, member: str) -> bytes | None:
    try:
        return tar.extractfile(member).read()
    except (KeyError, AttributeError):  # absent, or not a regular file
        return None


class _Refused(pickle.UnpicklingError):
    """A pickle named a Python object beyond numpy arrays (the message is its module.name)."""


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that rebuilds plain data and numpy arrays only: all the standard CIFAR files hold. A pickle may
    name any Python callable to run while it is read; a file placed in data/ by hand (from anywhere) must not."""

    def find_class(self, module: str, name: str):
        key = (module.replace("numpy.core.", "numpy._core."), name)  # the files predate numpy 2's renaming
        allowed = {("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
                   ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # pickle protocol 5
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("_codecs", "encode"): codecs.encode}.get(key)  # bytes in a protocol-2 pickle written by Python 3
        if allowed is None:
            raise _Refused(f"{module}.{name}")
        return allowed


def _unpickle(raw: bytes, where: Path) -> dict:
    import io as bytes_io
    try:
        return _ArraysOnly(bytes_io.BytesIO(raw), encoding="bytes").load()
    except _Refused as err:
        raise KitError(f"{where} names a Python object ({err}) beyond the arrays of a CIFAR file, which opening it "
                       "would have to run as code, so it is refused; replace it with the standard file.") from None
    except Exception as err:
        raise KitError(f"{where} is not a readable CIFAR pickle ({type(err).__name__}); replace it with the standard file.") from None
