"""Structured-pruning baselines: the prior with its metamorphic blocks' hidden channels pruned to h(γ).

Paper 002 sec. 4 and paper 000 Tables 1–2 compare metamorphosis against pruning the same channels of the prior
with torch-pruning's DepGraph (the papers' reference 11) and five importance criteria: random, magnitude L1 and
L2, Taylor (|w·∂L/∂w|) and Hessian (OBD, w²·E[g²]). Only the hidden channels of the chosen blocks are removed
(conv1's outputs, bn1, conv2's inputs: one DepGraph group per block), each block to exactly h(γ) = the width the
metamorphic network builds at γ (`kit.metamorph.width`); nothing else changes. Like NeuMeta's `prune/cifar.py`,
scores use the group's first layer (`group_reduction='first'`, i.e. conv1's filters) and there is no fine-tuning.
Scores do not depend on γ: notebook 04 keeps them per seed under a fingerprint of what they depend on (`saved_scores`),
so a rerun with other γ and the γ explorer reuse them instead of recomputing (the Hessian's 1,280 backward passes).

torch-pruning 1.6.1's `GroupHessianImportance.accumulate_grad` keeps only the last sample's squared gradient (it
tests the parameter's name but stores under the parameter; ../shared/notes/ecosystem.md sec. 1):
`HessianImportance` below accumulates the mean over samples as OBD needs.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from kit import io, metamorph, permute
from kit.errors import KitError

CRITERIA = ("random", "l1", "l2", "taylor", "hessian")


class HessianImportance(tp.importance.GroupHessianImportance):
    """OBD importance w²·E[g²] with E[g²] the mean over every `accumulate_grad` call (fixed 1.6.1 accumulation)."""

    def accumulate_grad(self, model: nn.Module) -> None:
        for param in model.parameters():
            if param.grad is not None:
                g2 = param.grad.detach().pow(2)
                if param in self._accu_grad:
                    self._accu_grad[param] += g2
                    self._counter[param] += 1
                else:
                    self._accu_grad[param] = g2.clone()
                    self._counter[param] = 1


def importance(criterion: str):
    """The torch-pruning importance object of a criterion name."""
    if criterion not in CRITERIA:
        raise KitError(f"Unknown pruning criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    return {"random": lambda: tp.importance.RandomImportance(),
            "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first"),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2, group_reduction="first"),
            "taylor": lambda: tp.importance.GroupTaylorImportance(group_reduction="first"),
            "hessian": lambda: HessianImportance(group_reduction="first")}[criterion]()


def _gradients(model: nn.Module, imp, criterion: str, images: torch.Tensor, labels: torch.Tensor,
               batch_size: int) -> None:
    """Fill what a gradient criterion reads, over every image in chunks of `batch_size`: ∂L/∂w of the mean loss
    (Taylor) or the mean per-sample g² (Hessian, one backward pass per image as OBD needs)."""
    model.zero_grad(set_to_none=True)
    if criterion == "hessian":
        imp.zero_grad()
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]  # (b, C, H, W), (b,)
        if criterion == "taylor":  # gradients add up over chunks, each weighted by its share of the images
            (F.cross_entropy(model(x), y) * (len(y) / len(labels))).backward()
        elif criterion == "hessian":  # one image per forward: a backward through a batched graph costs the batch
            for i in range(len(y)):
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()  # eval mode: as in the batch
                imp.accumulate_grad(model)


def block_scores(model: nn.Module, blocks: list[str], criterion: str, images: torch.Tensor,
                 labels: torch.Tensor | None = None, seed: int = 0, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """{block: importance of each of its hidden channels (hidden,)} under `criterion`. `images` (B, C, H, W)
    trace the graph and, with `labels` (B,), give the gradients of 'taylor' and 'hessian'. Scores do not depend
    on γ: compute them once and prune to every γ with `prune_to`."""
    imp = importance(criterion)
    if criterion in ("taylor", "hessian") and labels is None:
        raise KitError(f"The {criterion} criterion needs labelled images to compute gradients; pass labels.")
    model = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=images[:1])
    if labels is not None:
        _gradients(model, imp, criterion, images, labels, batch_size)
    scores = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random criterion's draw
        for name in blocks:
            conv1 = model.get_submodule(f"{name}.conv1")
            group = graph.get_pruning_group(conv1, tp.prune_conv_out_channels, idxs=list(range(conv1.out_channels)))
            scores[name] = imp(group).detach().clone()  # (hidden,)
    return scores


def prune_to(model: nn.Module, scores: dict[str, torch.Tensor], gamma: metamorph.Gamma,
             example: torch.Tensor) -> nn.Module:
    """A copy of `model` with each block of `scores` cut to h(γ) hidden channels, the highest-scoring kept; γ is one
    number or {block: γ} (non-uniform; a block left out keeps γ = 0). `example` (1+, C, H, W) traces the graph."""
    if isinstance(gamma, Mapping) and set(gamma) - set(scores):
        raise KitError(f"{sorted(set(gamma) - set(scores))[0]!r} is not a pruned block; they are {', '.join(scores)}.")
    model = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example[:1])
    for name, score in scores.items():
        conv1 = model.get_submodule(f"{name}.conv1")
        g = gamma.get(name, 0.0) if isinstance(gamma, Mapping) else gamma
        keep = metamorph.width(g, conv1.out_channels)
        if keep > conv1.out_channels:
            raise KitError(f"γ = {g} widens {name} ({conv1.out_channels} → {keep} channels); pruning only "
                           "removes channels, so use γ ≥ 0.")
        drop = score.argsort()[: conv1.out_channels - keep].tolist()
        if drop:  # each block's own group: pruning one block leaves the others' channels and scores valid
            graph.get_pruning_group(conv1, tp.prune_conv_out_channels, idxs=drop).prune()
    return model


def prune_blocks(model: nn.Module, blocks: list[str], gamma: float, criterion: str, images: torch.Tensor,
                 labels: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """A copy of `model` (a `kit.models.ResNet` with BatchNorm) with each block's hidden width cut to h(γ), the
    channels kept by `criterion` (scores from `images` and `labels`, see `block_scores`)."""
    if gamma < 0:
        raise KitError(f"γ = {gamma} widens the blocks; pruning only removes channels, so use γ ≥ 0.")
    return prune_to(model, block_scores(model, blocks, criterion, images, labels, seed), gamma, images)


def score_fingerprint(prior: nn.Module, blocks: list[str], calibration_images: int, seed: int) -> dict:
    """What channel scores depend on: the prior's weights, the blocks, the calibration draw."""
    return {"prior": permute.state_digest(prior), "blocks": list(blocks), "calibration_images": calibration_images,
            "seed": seed}


def scores_path(out_dir: str | Path, seed: int) -> Path:
    """Where one seed's channel scores are kept (each seed draws its own calibration images)."""
    return Path(out_dir) / f"scores-s{seed}.pt"


def saved_scores(out_dir: str | Path, fingerprint: dict) -> dict[str, dict[str, torch.Tensor]]:
    """{criterion: {block: scores (hidden,)}} saved in `out_dir` under this fingerprint ({} if none or another)."""
    path = scores_path(out_dir, fingerprint["seed"])
    saved = io.load_torch(path, "pruning scores") if path.is_file() else {}
    return {c: {b: t.cpu() for b, t in v.items()} for c, v in saved.get("scores", {}).items()} \
        if saved.get("fingerprint") == fingerprint else {}


def save_scores(out_dir: str | Path, fingerprint: dict, scores: dict[str, dict[str, torch.Tensor]]) -> None:
    """Keep {criterion: {block: scores}} in `out_dir` under `fingerprint` (atomically: `io.save_torch`)."""
    io.save_torch({"fingerprint": fingerprint, "scores": scores}, scores_path(out_dir, fingerprint["seed"]))
