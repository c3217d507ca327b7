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

Unlike the reference code (../shared/notes/neumeta-reference.md sec. 3) distances are scaled to integers
before fast-tsp sees them, the tour is rotated at the dummy city rather than spliced, class logits and
image channels are never permuted, the permutation is saved so a rerun is reproducible, and
equivalence is checked on real inputs.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from kit.config import PERMUTE_METHODS as METHODS  # 'tsp' uses fast-tsp; '2opt' is the numpy fallback
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


def l1_distances(features: torch.Tensor) -> np.ndarray:
    """(C, C) pairwise L1 distances between the rows of `features`, in float64."""
    return torch.cdist(features.double()[None], features.double()[None], p=1)[0].numpy()


def path_length(dist: np.ndarray, order) -> float:
    order = np.asarray(order)
    return float(dist[order[:-1], order[1:]].sum())


# ---------------------------------------------------------------- shortest Hamiltonian path solvers

def shortest_path(dist: np.ndarray, method: str = "tsp", seed: int = 0, seconds: float = 0.1) -> tuple[np.ndarray, str]:
    """(order of the channels, solver used) for an open path through all nodes of `dist` (n, n)."""
    n = len(dist)
    if method not in METHODS:
        raise KitError(f"Unknown permutation method {method!r}; choose one of {', '.join(METHODS)}.")
    if n <= 2:
        return np.arange(n), "trivial"  # every order of ≤ 2 channels has the same path length
    if method == "identity":
        return np.arange(n), "identity"
    if method == "random":
        return np.random.default_rng(seed).permutation(n), "random"
    if method == "greedy":
        return greedy_path(dist), "greedy"
    greedy = greedy_path(dist)
    try:
        import fast_tsp
    except ImportError:
        fast_tsp = None  # the report records '2opt' as the solver actually used
    if method == "tsp" and fast_tsp is not None:
        order, solver = _fast_tsp_path(dist, seconds, fast_tsp), "fast-tsp"
    else:
        order, solver = two_opt(dist, greedy, seconds), "2opt"
    # fast-tsp is a heuristic on rounded distances: never return a path longer than the greedy one.
    return (order, solver) if path_length(dist, order) <= path_length(dist, greedy) else (greedy, "greedy")


def _fast_tsp_path(dist: np.ndarray, seconds: float, fast_tsp) -> np.ndarray:
    """Open path via a closed tour with one dummy city, on distances scaled to fast-tsp's integers."""
    n = len(dist)
    top = dist.max()
    scaled = np.rint(dist * (60000.0 / top)).astype(np.int64) if top > 0 else np.zeros_like(dist, np.int64)
    full = np.empty((n + 1, n + 1), np.int64)  # fast-tsp takes integers up to 65535
    full[:n, :n] = scaled
    # Every tour pays the constant dummy distance twice, so the best tour is the best open path between the
    # dummy's two neighbours; M ≥ max/2 keeps the dummy's edges within the triangle inequality.
    full[n, :], full[:, n] = 30000, 30000
    full[n, n] = 0
    tour = list(fast_tsp.find_tour(full.tolist(), duration_seconds=seconds, max_threads=1))
    k = tour.index(n)
    return np.array(tour[k + 1:] + tour[:k])  # rotate at the dummy: never splice it out mid-path


def greedy_path(dist: np.ndarray) -> np.ndarray:
    """Nearest-neighbour paths from every start at once (vectorised); the shortest of them."""
    n = len(dist)
    starts = np.arange(n)
    paths = np.empty((n, n), np.int64)
    paths[:, 0] = starts
    visited = np.zeros((n, n), bool)
    visited[starts, starts] = True
    lengths = np.zeros(n)
    for step in range(1, n):
        d = np.where(visited, np.inf, dist[paths[:, step - 1]])  # (starts, candidates)
        nxt = d.argmin(axis=1)
        lengths += d[starts, nxt]
        paths[:, step] = nxt
        visited[starts, nxt] = True
    return paths[lengths.argmin()]


def two_opt(dist: np.ndarray, order: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """Best-improvement 2-opt on an open path (segment reversals, vectorised), until no move helps or the
    time budget is spent. Deterministic."""
    order = np.array(order)
    n = len(order)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        # Reversing order[i..j] replaces edges (i-1, i) and (j, j+1) by (i-1, j) and (i, j+1); at the path's
        # ends the missing edge costs nothing either way.
        prev = np.concatenate([[-1], order[:-1]])  # node before position i (-1: none)
        nxt = np.concatenate([order[1:], [-1]])  # node after position j
        d_prev = np.where(prev >= 0, dist[prev.clip(0), order], 0.0)  # (n,) cost of edge (i-1, i)
        d_next = np.where(nxt >= 0, dist[order, nxt.clip(0)], 0.0)  # (n,) cost of edge (j, j+1)
        new_a = np.where(prev[:, None] >= 0, dist[prev.clip(0)][:, order], 0.0)  # (i, j): edge (i-1, j)
        new_b = np.where(nxt[None, :] >= 0, dist[order][:, nxt.clip(0)], 0.0)  # (i, j): edge (i, j+1)
        delta = new_a + new_b - d_prev[:, None] - d_next[None, :]
        delta[np.tril_indices(n)] = 0.0  # only i < j
        i, j = np.unravel_index(delta.argmin(), delta.shape)
        if delta[i, j] >= -1e-9 * max(1.0, dist.max()):
            break
        order[i:j + 1] = order[i:j + 1][::-1]
    return order


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
           seconds_per_group: float = 0.1, permutation: dict[str, list[int]] | None = None,
           progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """(smoothed copy of `model`, report). The report holds TV before/after (total and per tensor), each
    group's path length and solve time, the solver used, the largest logit difference on
    `example_input`, and the permutation itself (group name → new order), which `permutation=` reuses.
    A group's `seconds` is the solver's time alone (its distances are computed before the clock starts)."""
    from tqdm.auto import tqdm

    groups = channel_groups(model)
    state = model.state_dict()
    check_groups(state, groups)
    tv_before, per_before = total_variation(model)
    solved, rows = {}, []
    for i, g in enumerate(tqdm(groups, desc=f"smooth ({method})", disable=not progress)):
        dist = l1_distances(group_features(state, g))
        t0 = time.perf_counter()
        if permutation is not None:
            if sorted(permutation.get(g.name, [])) != list(range(len(dist))):
                raise KitError(f"The saved permutation has no valid order for group {g.name} ({len(dist)} channels); "
                               "it belongs to another network: delete it and smooth again.")
            order, solver = np.asarray(permutation[g.name]), "saved"
        else:
            order, solver = shortest_path(dist, method, seed + i, seconds_per_group)
        solved[g.name] = [int(k) for k in order]
        rows.append({"group": g.name, "channels": len(dist), "solver": solver, "seconds": time.perf_counter() - t0,
                     "path_before": path_length(dist, np.arange(len(dist))), "path_after": path_length(dist, order)})
    smoothed = copy.deepcopy(model)
    smoothed.load_state_dict(apply_permutation(state, groups, solved))
    tv_after, per_after = total_variation(smoothed)
    report = {"method": method, "seed": seed, "seconds_per_group": seconds_per_group,
              "solvers": sorted({r["solver"] for r in rows}), "tv_before": tv_before,
              "tv_after": tv_after, "tv_reduction": 1 - tv_after / tv_before if tv_before else 0.0,
              "solve_seconds": sum(r["seconds"] for r in rows), "groups": rows,
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
                      seconds_per_group: float = 0.1, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Fold the prior's BatchNorm, smooth it, and write out_path (same record layout as prior.pt, plus the
    permutation). When out_path already holds a permutation computed by `method` for this very prior, it is
    reused, so reruns give the same network even though fast-tsp itself is not deterministic."""
    from pathlib import Path

    from kit import io, models, train
    prior, record = train.load_prior(prior_path)
    folded = models.fold_bn(prior)
    digest = state_digest(folded)
    saved, old = None, {}
    if Path(out_path).exists():
        previous = io.load_torch(out_path, "smoothed checkpoint")
        old = previous.get("report", {})
        settings = (old.get("method"), old.get("seed"), old.get("seconds_per_group"))
        if previous.get("prior_digest") == digest and settings == (method, seed, seconds_per_group):
            saved = old["permutation"]
    smoothed, report = smooth(folded, example_input, method, seed, seconds_per_group, saved, progress)
    report["reused_permutation"] = saved is not None
    if saved is not None:  # report how the permutation was found, not the instant of reading it back
        report["groups"], report["solve_seconds"], report["solvers"] = old["groups"], old["solve_seconds"], old["solvers"]
    io.save_torch({"arch": smoothed.arch, "state_dict": smoothed.state_dict(), "report": report,
                   "prior": str(prior_path), "prior_digest": digest, "dataset": record.get("dataset"),
                   "input_shape": record.get("input_shape"), "config": record.get("config"),
                   "metrics": record.get("metrics")}, out_path)
    return smoothed, report


def compare_methods(model: torch.nn.Module, example_input: torch.Tensor, seed: int = 0,
                    seconds_per_group: float = 0.1, methods=METHODS) -> dict[str, float]:
    """Total TV of `model` after smoothing with each method (the ablation of paper 002's permutation)."""
    return {m: smooth(model, example_input, m, seed, seconds_per_group)[1]["tv_after"] for m in methods}
