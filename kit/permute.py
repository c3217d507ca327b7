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

import numpy as np
import torch

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


def l1_distances(features: torch.Tensor) -> np.ndarray:
    """(C, C) pairwise L1 distances between the rows of `features`, in float64."""
    return torch.cdist(features.double()[None], features.double()[None], p=1)[0].numpy()


def path_length(dist: np.ndarray, order) -> float:
    order = np.asarray(order)
    return float(dist[order[:-1], order[1:]].sum())


# ---------------------------------------------------------------- shortest Hamiltonian path solvers
# Every solver is deterministic and bounded by counts (kicks, moves), never by a clock: the same network gives the
# same order on any machine under any load, so everything trained on the smoothed prior can be reproduced.

def shortest_path(dist: np.ndarray, method: str = "tsp", seed: int = 0, kicks: int = 20) -> tuple[np.ndarray, str]:
    """(order of the channels, solver used) for an open path through all nodes of `dist` (n, n), symmetric.
    'tsp': nearest-neighbour from every start, then descent over 2-opt and Or-opt moves, then `kicks` rounds of
    iterated local search (a seeded segment swap, descent again, kept if shorter); '2opt': the first two steps
    with 2-opt moves only; 'greedy': the first step; 'random' (seeded) and 'identity' for the ablation."""
    n = len(dist)
    if method not in METHODS:
        raise KitError(f"Unknown permutation method {method!r}; choose one of {', '.join(METHODS)}.")
    if n <= 2:
        return np.arange(n), "trivial"  # every order of ≤ 2 channels has the same path length
    if method == "identity":
        return np.arange(n), "identity"
    if method == "random":
        return np.random.default_rng(seed).permutation(n), "random"
    greedy = greedy_path(dist)
    if method == "greedy":
        return greedy, "greedy"
    if method == "2opt":
        return descend(dist, greedy, or_opt=False), "2opt"
    return iterated_local_search(dist, descend(dist, greedy), kicks, seed), "ils"


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


def descend(dist: np.ndarray, order, or_opt: bool = True, max_moves: int | None = None) -> np.ndarray:
    """Best-improvement local search on an open path: each step applies the single best move among every segment
    reversal (2-opt) and, with `or_opt`, every relocation of a run of 1–3 channels, either way round, to any other
    place (Or-opt); it stops when no move shortens the path (or after `max_moves`, default 20·n, a bound that a
    descent from a greedy path does not reach in practice). Vectorised over all moves."""
    order = np.array(order)
    n = len(order)
    if n < 3:
        return order
    # Positions 0 and n + 1 of the padded matrix are two free ends (distance 0 to every channel): with them every
    # move is the same formula, including moves at the path's ends.
    upper = np.triu(np.ones((n, n), bool), 1)  # 2-opt reverses positions i < j
    lengths = (1, 2, 3) if or_opt else ()
    rows = {L: np.arange(1, n - L + 2)[:, None] for L in lengths if n - L + 1 >= 1}
    slots = np.arange(1, n + 2)[None, :]  # slot e: between padded positions e − 1 and e
    valid = {L: (slots <= i - 1) | (slots >= i + L + 1) for L, i in rows.items()}  # not touching the run itself
    tol = 1e-12 * n * float(dist.max())  # a shorter path by more than rounding
    for _ in range(20 * n if max_moves is None else max_moves):
        E = np.zeros((n + 2, n + 2))
        E[1:-1, 1:-1] = dist[np.ix_(order, order)]  # (n+2, n+2): distances between the channels at two positions
        edge = np.diagonal(E, 1)  # (n+1,): edge k joins positions k and k + 1
        # reverse positions i..j: edges (i−1, i), (j, j+1) become (i−1, j), (i, j+1); delta[i−1, j−1]
        delta = np.where(upper, E[:-2, 1:-1] + E[1:-1, 2:] - edge[:n, None] - edge[None, 1:], np.inf)
        k = int(delta.argmin())
        best, move = delta.flat[k], ("2opt", *divmod(k, n))
        for L in rows:
            r = n - L + 1  # runs at positions i..i+L−1, i = 1..r: cutting one out joins (i−1) and (i+L)
            gain = edge[:r] + edge[L:L + r] - E[np.arange(r), np.arange(r) + L + 1]  # (r,)
            # put it into slot e, in order (i next to e − 1) or reversed: (r, n+1); dist is symmetric
            fwd = E[1:r + 1, :n + 1] + E[L:n + 1, 1:] - edge[None, :]
            rev = E[L:n + 1, :n + 1] + E[1:r + 1, 1:] - edge[None, :]
            d = np.where(valid[L], np.minimum(fwd, rev) - gain[:, None], np.inf)
            k = int(d.argmin())
            if d.flat[k] < best:
                best, move = d.flat[k], ("or", *divmod(k, n + 1), L, bool(rev.flat[k] < fwd.flat[k]))
        if not best < -tol:
            break
        order = _apply_move(order, move)
    return order


def _apply_move(order: np.ndarray, move: tuple) -> np.ndarray:
    """The path after a move of `descend` (indices there are padded positions minus one)."""
    if move[0] == "2opt":
        _, i, j = move
        order = order.copy()
        order[i:j + 1] = order[i:j + 1][::-1]
        return order
    _, i, e, L, reverse = move  # the run order[i:i+L] goes before order[e] (e = n: at the end)
    run = order[i:i + L][::-1] if reverse else order[i:i + L]
    rest = np.concatenate([order[:i], order[i + L:]])
    at = e if e < i else e - L
    return np.concatenate([rest[:at], run, rest[at:]])


def iterated_local_search(dist: np.ndarray, order: np.ndarray, kicks: int, seed: int) -> np.ndarray:
    """`kicks` rounds of: swap two adjacent segments of the best path (cut points drawn by a generator seeded with
    `seed`, the 'double bridge' of an open path), descend, keep the result if strictly shorter."""
    n = len(order)
    best, best_len = np.array(order), path_length(dist, order)
    rng = np.random.default_rng(seed)
    for _ in range(kicks if n >= 4 else 0):  # three distinct cut points need 4 channels
        a, b, c = np.sort(rng.choice(np.arange(1, n), 3, replace=False))
        trial = descend(dist, np.concatenate([best[:a], best[b:c], best[a:b], best[c:]]))
        length = path_length(dist, trial)
        if length < best_len:
            best, best_len = trial, length
    return best


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
        dist = l1_distances(group_features(state, g))
        if permutation is not None:
            if sorted(permutation.get(g.name, [])) != list(range(len(dist))):
                raise KitError(f"The saved permutation has no valid order for group {g.name} ({len(dist)} channels); "
                               "it belongs to another network: delete it and smooth again.")
            order, solver = np.asarray(permutation[g.name]), "saved"
        else:
            order, solver = shortest_path(dist, method, seed + i, kicks)
        solved[g.name] = [int(k) for k in order]
        rows.append({"group": g.name, "channels": len(dist), "solver": solver,
                     "path_before": path_length(dist, np.arange(len(dist))), "path_after": path_length(dist, order)})
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
    from pathlib import Path

    from kit import io, models, train
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


def compare_methods(model: torch.nn.Module, example_input: torch.Tensor, seed: int = 0,
                    kicks: int = 20, methods=METHODS) -> dict[str, float]:
    """Total TV of `model` after smoothing with each method (the ablation of paper 002's permutation)."""
    return {m: smooth(model, example_input, m, seed, kicks)[1]["tv_after"] for m in methods}
