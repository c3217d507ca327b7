"""Structured-pruning baselines: the prior with its metamorphic blocks' hidden channels pruned to h(γ).

Paper 002 sec. 4 and paper 000 Tables 1–2 compare metamorphosis against pruning the same channels of the prior
with torch-pruning's DepGraph (the papers' reference 11) and five importance criteria: random, magnitude L1 and
L2, Taylor (|w·∂L/∂w|) and Hessian (OBD, w²·E[g²]). Only the hidden channels of the chosen blocks are removed
(conv1's outputs, bn1, conv2's inputs: one DepGraph group per block), each block to exactly h(γ) = the width the
metamorphic network builds at γ (`kit.metamorph.width`); nothing else changes. Like NeuMeta's `prune/cifar.py`,
scores use the group's first layer (`group_reduction='first'`, i.e. conv1's filters) and there is no fine-tuning.

torch-pruning 1.6.1's `GroupHessianImportance.accumulate_grad` keeps only the last sample's squared gradient (it
tests the parameter's name but stores under the parameter; ../shared/notes/ecosystem.md sec. 1):
`HessianImportance` below accumulates the mean over samples as OBD needs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from kit import metamorph
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


def _gradients(model: nn.Module, imp, criterion: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Fill what a gradient criterion reads: ∂L/∂w of the batch (Taylor) or per-sample g² (Hessian)."""
    model.zero_grad(set_to_none=True)
    if criterion == "taylor":
        F.cross_entropy(model(images), labels).backward()
    elif criterion == "hessian":
        imp.zero_grad()
        losses = F.cross_entropy(model(images), labels, reduction="none")  # (B,)
        for i, loss in enumerate(losses):
            model.zero_grad(set_to_none=True)
            loss.backward(retain_graph=i < len(losses) - 1)
            imp.accumulate_grad(model)


def prune_blocks(model: nn.Module, blocks: list[str], gamma: float, criterion: str, images: torch.Tensor,
                 labels: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """A copy of `model` (a `kit.models.ResNet` with BatchNorm) with each block's hidden width cut to h(γ), the
    channels kept by `criterion`. `images` (B, C, H, W) trace the graph and, with `labels` (B,), give the
    gradients of 'taylor' and 'hessian' (B backward passes for 'hessian')."""
    imp = importance(criterion)
    if criterion in ("taylor", "hessian") and labels is None:
        raise KitError(f"The {criterion} criterion needs labelled images to compute gradients; pass labels.")
    model = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=images[:1])
    _gradients(model, imp, criterion, images, labels)
    removals = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random criterion's draw
        for name in blocks:
            conv1 = model.get_submodule(f"{name}.conv1")
            keep = metamorph.width(gamma, conv1.out_channels)
            if keep > conv1.out_channels:
                raise KitError(f"γ = {gamma} widens {name} ({conv1.out_channels} → {keep} channels); pruning only "
                               "removes channels, so use γ ≥ 0.")
            group = graph.get_pruning_group(conv1, tp.prune_conv_out_channels, idxs=list(range(conv1.out_channels)))
            scores = imp(group)  # (hidden,): every score first, so no pruning changes another block's
            removals.append((conv1, scores.argsort()[: conv1.out_channels - keep].tolist()))
    for conv1, drop in removals:
        if drop:
            graph.get_pruning_group(conv1, tp.prune_conv_out_channels, idxs=drop).prune()
    model.zero_grad(set_to_none=True)
    return model
