"""The dataset files on disk, read into memory as uint8 `Split`s (`kit.data` holds them on a device and draws batches).

  fashion-mnist  IDX files from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/) or the four
                 standard .gz files placed in data/fashion-mnist/
  cifar10/100    the standard "python version" archives (cifar-10-python.tar.gz, cifar-100-python.tar.gz) in data/,
                 extracted or not; downloaded on first use when the network allows. Their pickles are read by an
                 unpickler that rebuilds numpy arrays and plain data only, so a tampered file cannot run code.
Every defect of a file (missing, truncated, not gzip, wrong header) is one sentence naming it and what to do.
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

import numpy as np
import torch

from kit.errors import KitError

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
