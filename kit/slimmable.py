"""A universally slimmable network on the metamorphic blocks: the baseline a user would pick instead of an INR.

Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques" (ICCV 2019, "US-Nets"): one network
whose channels are nested, so that width h is its first h channels, trained so that every width works:
  - the sandwich rule (sec. 4.1): every step trains the widest width, the narrowest and n − 2 random ones;
  - in-place distillation (sec. 4.2): the widest learns the labels, the others the widest's predictions (KL to its
    detached softmax), at no extra cost when they share its batch;
  - post-training BatchNorm calibration (sec. 3): BN statistics are re-estimated per width on training images,
    since the statistics of a mixture of widths fit none of them.
Here the metamorphic blocks of the prior (the same blocks, widths h(γ) = round((1 − γ)·H) as `kit.metamorph`) become
slimmable in their hidden width: the first h channels of conv1 and bn1 and the matching inputs of conv2. The prior's
hidden channels are first ordered by a pruning criterion of `kit.prune`, so that width h starts as the prior pruned to
h; everything else is the prior's, and every parameter trains. A slimmable network cannot grow: γ < 0 is refused.

`SlimmableNet.export(γ)` gives a plain, BN-folded `kit.models` ResNet, as a metamorphic network's export does.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from kit import config as C
from kit import data as D
from kit import io, metamorph, models, permute, train
from kit.errors import KitError


class SlimBlock(models.BasicBlock):
    """A BasicBlock computed at its first `active` hidden channels: conv1 C→h, bn1 on h channels, conv2 h→C."""

    def __init__(self, block: models.BasicBlock):
        nn.Module.__init__(self)
        self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = (block.conv1, block.bn1, block.conv2, block.bn2,
                                                                     block.shortcut)
        self.active = block.hidden  # hidden channels in use (≤ conv1.out_channels, the full width H)

    def forward(self, x):  # x: (B, cin, H, W) → (B, cout, H/stride, W/stride)
        h, c1, c2 = self.active, self.conv1, self.conv2
        out = F.conv2d(x, c1.weight[:h], None if c1.bias is None else c1.bias[:h], c1.stride, c1.padding)
        out = F.relu(_sliced_bn(self.bn1, out, h))  # (B, h, H', W')
        out = self.bn2(F.conv2d(out, c2.weight[:, :h], c2.bias, c2.stride, c2.padding))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def _sliced_bn(bn: nn.Module, x: torch.Tensor, h: int) -> torch.Tensor:
    """`bn` applied to its first h channels, with nn.BatchNorm2d's semantics (its running statistics of those channels
    updated in place in training mode; momentum None = the cumulative average that calibration uses)."""
    if isinstance(bn, nn.Identity):
        return x
    factor = 0.0
    if bn.training:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, bn.running_mean[:h], bn.running_var[:h], bn.weight[:h], bn.bias[:h], bn.training,
                        factor, bn.eps)


def ordered(prior: models.ResNet, scores: Mapping[str, torch.Tensor]) -> models.ResNet:
    """A copy of `prior` (with BN) computing the same function, each block of `scores` with its hidden channels in
    descending order of score (`kit.prune.block_scores`): its first h channels are what pruning to h keeps."""
    groups = [g for g in permute.channel_groups(prior) if g.name.removesuffix(".hidden") in scores]
    perms = {g.name: torch.argsort(scores[g.name.removesuffix(".hidden")].float(), descending=True, stable=True).tolist()
             for g in groups}
    out = copy.deepcopy(prior)
    out.load_state_dict(permute.apply_permutation(prior.state_dict(), groups, perms))
    return out


class SlimmableNet(nn.Module):
    """A ResNet (with BN) whose `blocks` are slimmable in their hidden width; `set_gamma(γ)` picks the widths."""

    def __init__(self, model: models.ResNet, blocks: Sequence[str]):
        super().__init__()
        if not model.arch["batchnorm"]:
            raise KitError("A slimmable network needs the prior with its BatchNorm (notebook 01's prior.pt), not a "
                           "BN-folded network: its statistics are recalibrated per width.")
        self.net, self.blocks = copy.deepcopy(model), list(blocks)
        for name in self.blocks:
            parent, _, index = name.rpartition(".")
            self.net.get_submodule(parent)[int(index)] = SlimBlock(self.net.get_submodule(name))
        self.reference = {b: self.net.get_submodule(b).conv1.out_channels for b in self.blocks}  # H per block
        self.calibrated: tuple | None = None  # the widths the BN statistics were last calibrated for

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        self.calibrated = None  # whatever statistics the state holds, no width is known to be calibrated
        return super().load_state_dict(state, strict, assign)

    def widths(self, gamma: metamorph.Gamma) -> dict[str, int]:
        """Hidden width of every slimmable block at γ (one number, or {block: γ}); γ < 0 is refused."""
        gammas = {b: (gamma.get(b, 0.0) if isinstance(gamma, Mapping) else gamma) for b in self.blocks}
        if isinstance(gamma, Mapping) and set(gamma) - set(self.blocks):
            raise KitError(f"{sorted(set(gamma) - set(self.blocks))[0]!r} is not a slimmable block; they are "
                           f"{', '.join(self.blocks)}.")
        for b, g in gammas.items():
            if isinstance(g, (int, float)) and g < 0:
                raise KitError(f"γ = {g} asks {b} for {metamorph.width(g, self.reference[b])} hidden channels, but a "
                               f"slimmable network cannot grow beyond its {self.reference[b]}; use γ ≥ 0.")
        return {b: metamorph.width(g, self.reference[b]) for b, g in gammas.items()}

    def set_gamma(self, gamma: metamorph.Gamma) -> "SlimmableNet":
        for b, h in self.widths(gamma).items():
            self.net.get_submodule(b).active = h
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) → logits (B, classes)
        if self.training:  # a training forward moves the running statistics: they no longer fit one width
            self.calibrated = None
        return self.net(x)

    @contextmanager
    def at(self, gamma: metamorph.Gamma):
        """Run at γ's widths inside the block; the widths before it are restored after."""
        before = {b: self.net.get_submodule(b).active for b in self.blocks}
        self.set_gamma(gamma)
        try:
            yield self
        finally:
            for b, h in before.items():
                self.net.get_submodule(b).active = h

    @torch.no_grad()
    def calibrate(self, gamma: metamorph.Gamma, images: torch.Tensor, batch_size: int = 128) -> "SlimmableNet":
        """Re-estimate every BN's running statistics at γ's widths from `images` (N, C, H, W; normalised, unaugmented):
        the cumulative average over batches of `batch_size`, in training mode; nothing else changes. Leaves the
        network at γ, in eval mode."""
        self.set_gamma(gamma)
        norms = [m for m in self.net.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [m.momentum for m in norms]
        device = next(self.parameters()).device
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        self.net.train()
        try:
            for start in range(0, len(images), batch_size):
                self.net(images[start:start + batch_size].to(device))
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        self.eval()
        self.calibrated = tuple(self.widths(gamma).values())
        return self

    @torch.no_grad()
    def plain(self, gamma: metamorph.Gamma) -> models.ResNet:
        """The plain ResNet (with BN, its statistics as they are now) made of the first h(γ) channels of every block."""
        widths, arch = self.widths(gamma), self.net.arch
        hidden = [widths.get(n, h) for (n, _), h in zip(self.net.blocks(), arch["hidden"])]
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not move the global RNG
            model = models.resnet(**{**arch, "hidden": hidden})
        state = {}
        for key, value in self.net.state_dict().items():
            for b, h in widths.items():
                if key.startswith(f"{b}.conv1.") or (key.startswith(f"{b}.bn1.") and value.ndim == 1):
                    value = value[:h]  # conv1's outputs and bn1's channels: (H, …) → (h, …)
                elif key == f"{b}.conv2.weight":
                    value = value[:, :h]  # conv2's inputs: (C, H, k, k) → (C, h, k, k)
            state[key] = value.detach().clone()
        model.load_state_dict(state)
        return model.to(next(self.parameters()).device).eval()

    def export(self, gamma: metamorph.Gamma, images: torch.Tensor | None = None, batch_size: int = 128) -> models.ResNet:
        """The BN-folded plain ResNet at γ (eval mode). With `images`, BN is calibrated at γ on them first; without,
        the statistics must already be calibrated for γ's widths (else one sentence)."""
        if images is not None:
            self.calibrate(gamma, images, batch_size)
        elif self.calibrated != tuple(self.widths(gamma).values()):
            raise KitError(f"The BN statistics are not calibrated for the widths of γ = {gamma}; pass calibration "
                           "images (training images, unaugmented) or call calibrate(γ, images) first.")
        return models.fold_bn(self.plain(gamma))

    def save(self, path: str | Path, **extra) -> Path:
        """slimmable.pt: the architecture, the slimmable blocks and every tensor (full width), plus `extra`."""
        return io.save_torch({"kind": "slimmable", "arch": self.net.arch, "blocks": self.blocks,
                              "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}, **extra}, path)


def load(path: str | Path) -> tuple[SlimmableNet, dict]:
    """(network in eval mode, the whole record) from a slimmable.pt; anything else is refused in one sentence."""
    record = io.load_torch(path, "slimmable checkpoint", "delete it and rerun notebook 04 to write it again")
    if not isinstance(record, dict) or record.get("kind") != "slimmable" or not {"arch", "blocks", "state_dict"} <= set(record):
        raise KitError(f"{path} is not a slimmable checkpoint of this kit (slimmable.pt from notebook 04); rerun "
                       "notebook 04 to write one.")
    source = f"slimmable checkpoint {path}"
    model = models.load_weights(models.from_arch(record["arch"], source), models.check_tensors(record["state_dict"],
                                                                                               source), source)
    names = [n for n, _ in model.blocks()]
    if not isinstance(record["blocks"], list) or not record["blocks"] or any(b not in names for b in record["blocks"]):
        raise KitError(f"The {source} names blocks this architecture does not have; use a file written by this kit.")
    return SlimmableNet(model, record["blocks"]).eval(), record


# ---------------------------------------------------------------- training: a Task on the kit's one loop

class SlimmableTask(train.Task):
    """US-Nets training of a `SlimmableNet`: one optimiser step is the sandwich of `widths_per_step` widths (γ = 0,
    γ = gamma_max, then uniform draws in between, one γ for every block), its gradient the sum of theirs."""

    def __init__(self, net: SlimmableNet, cfg: C.SlimmableConfig, seed: int, calibration: torch.Tensor):
        self.module, self.cfg, self.calibration = net, cfg, calibration  # calibration: (N, C, H, W) for evaluation
        self.accumulate = 1 if cfg.shared_batch else cfg.widths_per_step
        self.draws = torch.Generator().manual_seed(seed)  # the random widths of the sandwich; checkpointed
        self.sandwich: list[float] = []

    def draw_sandwich(self) -> list[float]:
        """The step's γ: the widest (0), the narrowest (gamma_max), then n − 2 uniform draws in [0, gamma_max]."""
        g = self.cfg.gamma_max
        rest = (torch.rand(self.cfg.widths_per_step - 2, generator=self.draws) * g).tolist()
        return [0.0, g, *rest]

    def _width_loss(self, logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        if teacher is None or not self.cfg.distill:
            return F.cross_entropy(logits, y)
        return F.kl_div(F.log_softmax(logits.float(), 1), F.softmax(teacher.float(), 1), reduction="batchmean")

    def loss(self, x, y, micro=0):
        net = self.module
        if micro == 0:
            self.sandwich = self.draw_sandwich()
        if self.cfg.shared_batch:  # every width on this batch; the widest's predictions teach the others
            total, widest = 0.0, None
            for g in self.sandwich:
                with net.at(g):
                    logits = net(x)
                total = total + self._width_loss(logits, y, None if widest is None else widest.detach())
                widest = logits if widest is None else widest
            return total, widest
        g = self.sandwich[micro]  # this batch at one width of the sandwich, the widest first
        teacher = None
        if micro > 0 and self.cfg.distill:
            with torch.no_grad(), net.at(0.0):
                teacher = net(x)
        with net.at(g):
            logits = net(x)
        # the loop weights each of the step's batches by its share of the images (1/n here): × n makes the step the sum
        return self._width_loss(logits, y, teacher) * self.accumulate, logits

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "draws": self.draws.get_state()}

    def load_state_dict(self, state: dict, source: str) -> None:
        models.load_weights(self.module, state["module"], source)
        self.draws.set_state(state["draws"])

    def evaluate(self, data: D.Data, split: str, runtime: C.RuntimeConfig) -> dict[str, float]:
        acc = evaluate_gammas(self.module, data, self.cfg.select_gammas, self.calibration, split, runtime,
                              self.cfg.batch_size)
        return {"accuracy": sum(acc.values()) / len(acc), "loss": None, **{f"accuracy@{g}": a for g, a in acc.items()}}


def evaluate_gammas(net: SlimmableNet, data: D.Data, gammas: Sequence[float], calibration: torch.Tensor,
                    split: str = "test", runtime: C.RuntimeConfig | None = None,
                    batch_size: int = 128) -> dict[str, float]:
    """{γ key: accuracy on `split`} of the network at each γ, its BN calibrated there on `calibration` first."""
    out = {}
    for g in gammas:
        net.calibrate(g, calibration, batch_size)
        out[metamorph.gamma_key(g)] = train.evaluate(net, data, split, runtime)["accuracy"]
    return out


def folder(out_dir: str | Path, seed: int, seeds: int) -> Path:
    """Where notebook 04 keeps the slimmable network of `seed`: out_dir/slimmable/, or slimmable-s<seed>/ when several
    seeds share out_dir."""
    return Path(out_dir) / ("slimmable" + (f"-s{seed}" if seeds > 1 else ""))


def budget(cfg: C.SlimmableConfig, train_images: int) -> dict[str, int]:
    """Optimiser steps, images drawn and width passes (one image's forward and backward at one width) of a run on
    `train_images` training images: what is matched against the metamorphic runs' budget."""
    batches = train_images // cfg.batch_size  # per epoch (`kit.data` drops a short last batch)
    steps = train.steps_per_epoch(batches, 1 if cfg.shared_batch else cfg.widths_per_step) * cfg.optim.epochs
    images = batches * cfg.batch_size * cfg.optim.epochs
    return {"steps": steps, "images": images, "width_passes": images * (cfg.widths_per_step if cfg.shared_batch else 1)}
