"""`python -m kit bench permute`: weight smoothing of ResNet-56 (widths 16 and 64) or of a trained prior, the kit's
deterministic search against fast-tsp under the 0.1 s-per-group wall-clock budget the kit used before, side by side
in one run: time, TV reduction, and whether two runs of each give the same order.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from kit import models, paths, permute, train
from kit.runtime import project_path, seed_everything


def fast_tsp_path(dist: np.ndarray, seconds: float) -> np.ndarray:
    """The reference: an open path from fast-tsp's closed tour through one dummy city (its distances must be
    integers ≤ 65535, so they are scaled), rotated at the dummy. fast-tsp stops on a clock: not reproducible."""
    import fast_tsp
    n = len(dist)
    top = dist.max()
    scaled = np.rint(dist * (60000.0 / top)).astype(np.int64) if top > 0 else np.zeros_like(dist, np.int64)
    full = np.full((n + 1, n + 1), 30000, np.int64)  # the dummy's edges: a constant ≥ max/2 keeps the triangle inequality
    full[:n, :n], full[n, n] = scaled, 0
    tour = list(fast_tsp.find_tour(full.tolist(), duration_seconds=seconds, max_threads=1))
    k = tour.index(n)
    return np.array(tour[k + 1:] + tour[:k])


def _smooth_with(folded: torch.nn.Module, solve) -> tuple[float, float, dict]:
    """(seconds, TV reduction, permutation) of smoothing `folded` with `solve(dist, group index)` for every group."""
    state, groups = folded.state_dict(), permute.channel_groups(folded)
    t0 = time.perf_counter()
    order = {g.name: [int(k) for k in solve(paths.l1_distances(permute.group_features(state, g)), i)]
             for i, g in enumerate(groups)}
    seconds = time.perf_counter() - t0
    smoothed = models.from_arch(folded.arch)
    smoothed.load_state_dict(permute.apply_permutation(state, groups, order))
    before, after = permute.total_variation(folded)[0], permute.total_variation(smoothed)[0]
    return seconds, 1 - after / before, order


def bench_permute(widths=(16, 64), depth: int = 56, kicks: int = 20, reference_seconds: float = 0.1,
                  checkpoint: str | None = None) -> list[dict]:
    """Per network: the kit's search ('tsp', `kicks`) and fast-tsp (`reference_seconds` per group), each run twice,
    timed over the same groups (distances included). Without a checkpoint the networks are freshly initialised (BN
    folded), which have less structure to exploit than trained ones; pass a prior.pt to measure a trained network."""
    if checkpoint:  # a trained prior; `widths` and `depth` describe the fresh networks only
        nets = [train.load_prior(project_path(checkpoint))[0]]
    else:
        seed_everything(0)
        nets = [models.resnet(depth, w).eval() for w in widths]
    try:
        import fast_tsp  # noqa: F401  (the reference is optional: the kit itself does not use it)
        reference = True
    except ImportError:
        reference = False
    rows = []
    for net in nets:
        folded = models.fold_bn(net)
        groups = permute.channel_groups(folded)
        row = {"model": f"ResNet-{net.arch['depth']} width {net.arch['width']}", "groups": len(groups),
               "largest_group": max(g.channels(folded.state_dict()) for g in groups), "kicks": kicks,
               "reference_budget": reference_seconds if reference else None}
        solvers = {"kit": lambda d, i: paths.shortest_path(d, "tsp", i, kicks)[0]}
        if reference:
            solvers["reference"] = lambda d, i: fast_tsp_path(d, reference_seconds) if len(d) > 2 else np.arange(len(d))
        for key, solve in solvers.items():
            first, second = _smooth_with(folded, solve), _smooth_with(folded, solve)
            row[f"{key}_seconds"] = min(first[0], second[0])
            row[f"{key}_tv_reduction"] = first[1]
            row[f"{key}_repeatable"] = first[2] == second[2]
        if reference:
            row["tv_reduction_difference"] = row["kit_tv_reduction"] - row["reference_tv_reduction"]  # fraction
            row["time_ratio"] = row["kit_seconds"] / row["reference_seconds"]
        rows.append(row)
    return rows


def print_permute(rows: list[dict]) -> None:
    for r in rows:
        ref = r["reference_budget"]
        print(f"bench permute: the kit's search ({r['kicks']} kicks per group) against "
              + (f"fast-tsp with {ref} s per group" if ref else "nothing (fast-tsp is not installed)"))
        print(f"  {r['model']}: {r['groups']} groups (largest {r['largest_group']} channels); each solver run twice")
        print(f"    kit:       {r['kit_seconds']:7.2f} s, TV reduction {100 * r['kit_tv_reduction']:6.3f}%, "
              f"same order both runs: {r['kit_repeatable']}")
        if ref:
            print(f"    fast-tsp:  {r['reference_seconds']:7.2f} s, TV reduction {100 * r['reference_tv_reduction']:6.3f}%, "
                  f"same order both runs: {r['reference_repeatable']}")
            print(f"    kit − fast-tsp TV reduction: {100 * r['tv_reduction_difference']:+.3f} points   "
                  f"time, kit / fast-tsp: {r['time_ratio']:.2f}")
