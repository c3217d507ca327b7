"""Intra-network smoothing: permute channels so every weight tensor varies slowly along its channel axes.

NeuMeta (paper 002, sec. 3.3, eq. 7–8) makes the prior's weights smooth before an INR learns them:
channels that must move together ("cliques") are reordered so that the total variation (TV) of the
weights drops, while the network still computes exactly the same function. HTTY keeps this step
(paper 000, sec. 2.1).

Why one shortest Hamiltonian path per group is the whole problem: the TV of a tensor is the sum of
|adjacent differences| along its output axis plus along its input axis, and each (tensor, axis) pair
belongs to exactly one coupled group. A group's share of TV is therefore the L1 length of the path
that visits its channels in order, each channel being the concatenation of its slices in all member
tensors. Minimising every group's open path (a TSP with one dummy city, eq. 8) minimises TV exactly.

Unlike the reference code (../shared/notes/neumeta-reference.md sec. 3), which runs a TSP solver under a
wall-clock budget, the path comes from the kit's own deterministic search (nearest neighbour from every
start, 2-opt and Or-opt descent, seeded iterated local search bounded by a count of kicks), so the same
prior gives bit-identical smoothed weights on any machine under any load; open paths are solved as open
paths (no dummy city to splice out), class logits and image channels are never permuted, the permutation
is saved with the weights, and equivalence is checked on real inputs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kit import io, models, paths, train
from kit.config import PERMUTE_METHODS as METHODS
from kit.errors import KitError
from kit.models import ResNet


@dataclass
class Group:
    """Channels that must be permuted together: (tensor name, axis) pairs of equal size along that axis."""

    name: str  # e.g. 'stream1' (a residual stream) or 'layer2.3.hidden' (a block's inner channels)
    members: list[tuple[str, int]]

    def channels(self, state: dict[str, torch.Tensor]) -> int:
        name, axis = self.members[0]
        return state[name].shape[axis]


def channel_groups(model: torch.nn.Module) -> list[Group]:
    """The coupled channel groups of a CIFAR ResNet, derived from its structure.

    One group per residual stream (the stem or a projection's output, every conv2 output in it, and the
    inputs of the convs and classifier that read it) and one per block for its hidden channels. The class
    outputs of `fc` and the image channels of the stem are in no group, so they are never permuted."""
    if not isinstance(model, ResNet):
        raise KitError(f"No permutable channel groups are known for {type(model).__name__}; "
                       "smoothing supports kit.models ResNets.")
    state = model.state_dict()

    def produced(conv: str, bn: str) -> list[tuple[str, int]]:  # a conv's output channels and its norm
        names = [f"{conv}.weight", f"{conv}.bias"] + [f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        return [(n, 0) for n in names if n in state]

    groups, stream, streams = [], produced("stem.conv", "stem.bn"), 0
    for name, block in model.blocks():
        stream.append((f"{name}.conv1.weight", 1))
        if block.shortcut is not None:  # the block reads the old stream and starts a new one
            stream.append((f"{name}.shortcut.conv.weight", 1))
            streams += 1
            groups.append(Group(f"stream{streams}", stream))
            stream = produced(f"{name}.shortcut.conv", f"{name}.shortcut.bn")
        stream += produced(f"{name}.conv2", f"{name}.bn2")
        groups.append(Group(f"{name}.hidden", produced(f"{name}.conv1", f"{name}.bn1") + [(f"{name}.conv2.weight", 1)]))
    stream.append(("fc.weight", 1))
    groups.append(Group(f"stream{streams + 1}", stream))
    return groups


def _tv(t: torch.Tensor) -> float:
    """Sum of |adjacent differences| along axis 0 and (for ≥2-D tensors) along axis 1."""
    t = t.detach().double()
    tv = (t[1:] - t[:-1]).abs().sum()
    if t.ndim >= 2:
        tv = tv + (t[:, 1:] - t[:, :-1]).abs().sum()
    return tv.item()


def total_variation(model: torch.nn.Module) -> tuple[float, dict[str, float]]:
    """(total TV, TV per parameter tensor) as paper 002 defines it: weights along their output and input
    channel axes, biases and other 1-D parameters along their single axis."""
    per_tensor = {name: _tv(p) for name, p in model.named_parameters()}
    return sum(per_tensor.values()), per_tensor


def group_features(state: dict[str, torch.Tensor], group: Group) -> torch.Tensor:
    """(C, D) matrix: one row per channel, its slices in every learnable member tensor side by side."""
    parts = []
    for name, axis in group.members:
        if "running_" in name:  # statistics are permuted along, but are not weights: no share of TV
            continue
        t = state[name].detach().float().cpu().movedim(axis, 0)
        parts.append(t.reshape(t.shape[0], -1))
    return torch.cat(parts, dim=1)


# ---------------------------------------------------------------- applying and checking a permutation

def check_groups(state: dict[str, torch.Tensor], groups: list[Group]) -> None:
    """Every member of a group has the group's size along its axis, and every tensor is finite."""
    if not groups:
        raise KitError("The model has no permutable channel groups; nothing to smooth.")
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise KitError(f"Tensor {name} holds NaN or infinite values; smoothing needs a finite, trained network.")
    for g in groups:
        sizes = {n: state[n].shape[a] for n, a in g.members}
        if len(set(sizes.values())) != 1:
            first = next(iter(sizes.items()))
            odd = next((n, s) for n, s in sizes.items() if s != first[1])
            raise KitError(f"Group {g.name}: tensor {odd[0]} has {odd[1]} channels where {first[0]} has {first[1]}; "
                           "the channel groups do not match this model.")


def apply_permutation(state: dict[str, torch.Tensor], groups: list[Group],
                      permutation: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """A new state dict with every member of every group reordered along its axis."""
    out = dict(state)
    for g in groups:
        perm = torch.as_tensor(permutation[g.name], dtype=torch.long)
        for name, axis in g.members:
            out[name] = out[name].index_select(axis, perm.to(out[name].device))
    return out


@torch.no_grad()
def max_logit_difference(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    a_mode, b_mode = a.training, b.training
    x = x.to(next(a.parameters()).device)
    diff = (a.eval()(x) - b.eval()(x)).abs().max().item()
    a.train(a_mode), b.train(b_mode)
    return diff


def smooth(model: torch.nn.Module, example_input: torch.Tensor, method: str = "tsp", seed: int = 0,
           kicks: int = 20, permutation: dict[str, list[int]] | None = None,
           progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """(smoothed copy of `model`, report). The report holds TV before/after (total and per tensor), each
    group's path length and the solver used, the largest logit difference on `example_input`, and the
    permutation itself (group name → new order), which `permutation=` reuses. Nothing in it reads a clock, so
    the report, like the weights, is the same on every run (`bench permute` times the search)."""
    from tqdm.auto import tqdm

    groups = channel_groups(model)
    state = model.state_dict()
    check_groups(state, groups)
    tv_before, per_before = total_variation(model)
    solved, rows = {}, []
    for i, g in enumerate(tqdm(groups, desc=f"smooth ({method})", disable=not progress)):
        dist = paths.l1_distances(group_features(state, g))
        if permutation is not None:
            if sorted(permutation.get(g.name, [])) != list(range(len(dist))):
                raise KitError(f"The saved permutation has no valid order for group {g.name} ({len(dist)} channels); "
                               "it belongs to another network: delete it and smooth again.")
            order, solver = np.asarray(permutation[g.name]), "saved"
        else:
            order, solver = paths.shortest_path(dist, method, seed + i, kicks)
        solved[g.name] = [int(k) for k in order]
        rows.append({"group": g.name, "channels": len(dist), "solver": solver,
                     "path_before": paths.path_length(dist, np.arange(len(dist))),
                     "path_after": paths.path_length(dist, order)})
    smoothed = copy.deepcopy(model)
    smoothed.load_state_dict(apply_permutation(state, groups, solved))
    tv_after, per_after = total_variation(smoothed)
    report = {"method": method, "seed": seed, "kicks": kicks,
              "solvers": sorted({r["solver"] for r in rows}), "tv_before": tv_before,
              "tv_after": tv_after, "tv_reduction": 1 - tv_after / tv_before if tv_before else 0.0,
              "groups": rows,
              "tv_per_tensor_before": per_before, "tv_per_tensor_after": per_after,
              "max_logit_diff": max_logit_difference(model, smoothed, example_input), "permutation": solved}
    return smoothed, report


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a network's tensors: identifies the exact prior a permutation was computed for."""
    import hashlib
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def smooth_checkpoint(prior_path, out_path, example_input: torch.Tensor, method: str = "tsp", seed: int = 0,
                      kicks: int = 20, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Fold the prior's BatchNorm, smooth it, and write out_path (same record layout as prior.pt, plus the
    permutation). When out_path already holds a permutation computed with these settings for this very prior,
    it is reused rather than searched again (the search is deterministic: it would find the same one)."""
    prior, record = train.load_prior(prior_path)
    folded = models.fold_bn(prior)
    digest = state_digest(folded)
    saved, old = None, {}
    if Path(out_path).exists():
        previous = io.load_torch(out_path, "smoothed checkpoint", regenerate="delete it and rerun notebook 02")
        previous = previous if isinstance(previous, dict) else {}
        old = previous.get("report", {})
        settings = (old.get("method"), old.get("seed"), old.get("kicks"))
        if previous.get("prior_digest") == digest and settings == (method, seed, kicks):
            saved = old["permutation"]
    smoothed, report = smooth(folded, example_input, method, seed, kicks, saved, progress)
    report["reused_permutation"] = saved is not None
    if saved is not None:  # report how the permutation was found, not that it was read back
        report["groups"], report["solvers"] = old["groups"], old["solvers"]
    io.save_torch({"arch": smoothed.arch, "state_dict": smoothed.state_dict(), "report": report,
                   "prior": str(prior_path), "prior_digest": digest, "dataset": record.get("dataset"),
                   "input_shape": record.get("input_shape"), "config": record.get("config"),
                   "metrics": record.get("metrics")}, out_path)
    return smoothed, report


def load_smoothed(path: str | Path) -> tuple[ResNet, dict]:
    """(BN-folded, permuted prior, record) from the smoothed.pt `smooth_checkpoint` writes: plain data only
    (`io.load_torch`), its architecture within `models`' bounds and its weights finite, else one sentence naming the
    file."""
    record = io.load_torch(path, "smoothed prior", "if an older version of this kit wrote it, delete it and rerun "
                                                   "notebook 02 (`python -m kit pipeline` on its run folder does)")
    if not isinstance(record, dict) or not {"arch", "config", "state_dict", "report"} <= set(record):
        raise KitError(f"{path} is not a smoothed prior (notebook 02's smoothed.pt); run notebook 02 first "
                       "(METHOD='identity' there keeps the prior's channel order).")
    source = f"smoothed prior {path}"
    state = models.check_tensors(record["state_dict"], source)
    prior = models.load_weights(models.from_arch(record["arch"], source), state, source)
    if record.get("input_shape") is not None:
        models.check_input_shape(record["input_shape"], source, prior.arch["in_channels"])
    return prior.eval(), record


def compare_methods(model: torch.nn.Module, example_input: torch.Tensor, seed: int = 0,
                    kicks: int = 20, methods=METHODS) -> dict[str, float]:
    """Total TV of `model` after smoothing with each method (the ablation of paper 002's permutation)."""
    return {m: smooth(model, example_input, m, seed, kicks)[1]["tv_after"] for m in methods}
