"""Shortest open Hamiltonian paths through a group's channels: the search that orders them for smoothing.

`kit.permute` reduces the total variation of a network's weights to one open path per coupled channel group (paper
002 sec. 3.3, eq. 7–8): the L1 distance between two channels is the length of the edge joining them. Every solver here
is deterministic and bounded by counts (kicks, moves), never by a clock: the same network gives the same order on any
machine under any load, so everything trained on the smoothed prior can be reproduced. 'tsp' is nearest neighbour
from every start, best-improvement descent over 2-opt and Or-opt moves (vectorised over all moves), then seeded
iterated local search; open paths are solved as open paths (no dummy city to splice out, unlike eq. 8).
"""
from __future__ import annotations

import numpy as np
import torch

from kit.config import PERMUTE_METHODS as METHODS
from kit.errors import KitError


def l1_distances(features: torch.Tensor) -> np.ndarray:
    """(C, C) pairwise L1 distances between the rows of `features`, in float64."""
    return torch.cdist(features.double()[None], features.double()[None], p=1)[0].numpy()


def path_length(dist: np.ndarray, order) -> float:
    order = np.asarray(order)
    return float(dist[order[:-1], order[1:]].sum())


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
