"""Datasets held whole in memory as uint8 tensors; batches drawn and augmented on the device.

No DataLoader and no worker processes (as in airbench): a split is one (N, C, H, W) uint8 tensor
on the training device, a batch is an index slice of a seeded permutation, augmented there
(random crop with zero padding, horizontal flip) and normalised per batch with the training
split's per-channel mean and std. All randomness comes from one CPU `torch.Generator`, so a run
is deterministic under its seed and resumes exactly when the generator's state is restored.

Datasets (their files: `kit.datasets`): fashion-mnist (the default), cifar10, cifar100. A validation split is held
out of the training set (class-balanced); model selection uses it, never the test set. `for_prior` loads the dataset
a prior was trained on, with its validation split and normalisation, as every later notebook needs it.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from kit import config as C
from kit.config import DataConfig
from kit.datasets import FASHION_CLASSES, Split, read_cifar, read_fashion_mnist
from kit.errors import KitError
from kit.runtime import pick_device, project_path


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


def calibration(data: Data, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The calibration draw of pruning scores and of BN statistics: a class-balanced draw of `images` normalised,
    unaugmented training images (N, C, H, W) and labels (N,)."""
    split = data.splits["train"]
    idx = balanced_order(split.labels.cpu(), torch.Generator().manual_seed(seed))[:images].to(split.labels.device)
    return data.normalise(split.images[idx]), split.labels[idx]


def for_prior(prior_config: dict, device: str | torch.device = "cpu", batch_size: int | None = None,
              train_images: int = 0, val_images: int = 0, seed: int = 0, test_images: int = 0) -> Data:
    """The prior's dataset with the prior's validation split and normalisation (its seed and limits), e.g. for
    record['prior_config'] of a metamorph.pt or record['config'] of a smoothed.pt. `train_images` / `val_images` /
    `test_images` > 0 keep a class-balanced subset of those splits (drawn with `seed`, in that order); test is
    whole by default (the γ explorer evaluates a fixed subset of it)."""
    prior_cfg = C.from_dict(C.PriorConfig, prior_config)
    values = C.to_dict(prior_cfg.data)
    if batch_size:
        values["batch_size"] = batch_size
    data = load(C.from_dict(C.DataConfig, values), pick_device(str(device)), prior_cfg.seed)
    generator = torch.Generator().manual_seed(seed)
    for split, keep in (("train", train_images), ("val", val_images), ("test", test_images)):
        full = data.splits[split]
        if keep and keep < len(full):
            idx = balanced_order(full.labels.cpu(), generator)[:keep].sort().values.to(full.labels.device)
            data.splits[split] = Split(full.images[idx], full.labels[idx])
    if data.num_batches("train") < 1 or len(data.splits["train"]) < data.cfg.batch_size:
        raise KitError(f"train_images = {train_images} is less than one batch of {data.cfg.batch_size}; raise it or "
                       "lower batch_size.")
    return data
