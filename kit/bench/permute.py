"""`python -m kit bench permute`: weight smoothing of ResNet-56 (widths 16 and 64), time and TV reduction of the
kit's default solver budget against 2 s per group, in one run.
"""
from __future__ import annotations

import time

import torch

from kit import models, permute, train
from kit.runtime import project_path, seed_everything


def bench_permute(widths=(16, 64), depth: int = 56, seconds: float = 0.1, reference_seconds: float = 2.0,
                  checkpoint: str | None = None) -> list[dict]:
    """Smoothing time and TV reduction with `seconds` per group against `reference_seconds` per group, in one
    run. Without a checkpoint the networks are freshly initialised (BN folded), which have less structure
    to exploit than trained ones; pass a prior.pt to measure a trained network."""
    rows = []
    if checkpoint:  # a trained prior; `widths` and `depth` describe the fresh networks only
        net, record = train.load_prior(project_path(checkpoint))
        nets, shape = [net], tuple(record["input_shape"])
    else:
        seed_everything(0)
        nets, shape = [models.resnet(depth, w).eval() for w in widths], (3, 32, 32)
    permute.smooth(models.fold_bn(models.resnet(8, 4)), torch.randn(1, 3, 8, 8), "tsp", 0, 0.01)  # warm-up
    for net in nets:
        folded = models.fold_bn(net)
        x = torch.randn(8, *shape)
        groups = permute.channel_groups(folded)
        with torch.no_grad():
            logit_scale = folded(x).abs().max().item()  # untrained deep nets have huge logits: float32 rounding grows
        row = {"model": f"ResNet-{net.arch['depth']} width {net.arch['width']}", "groups": len(groups),
               "largest_group": max(g.channels(folded.state_dict()) for g in groups), "logit_scale": logit_scale,
               "kit_budget": seconds, "reference_budget": reference_seconds}
        for key, budget in (("kit", seconds), ("reference", reference_seconds)):
            t0 = time.perf_counter()
            _, report = permute.smooth(folded, x, "tsp", 0, budget)
            row[f"{key}_seconds"] = time.perf_counter() - t0
            row[f"{key}_tv_reduction"] = report["tv_reduction"]
            row[f"{key}_max_logit_diff"] = report["max_logit_diff"]
        row["tv_after_ratio"] = (1 - row["kit_tv_reduction"]) / (1 - row["reference_tv_reduction"])
        row["time_ratio"] = row["kit_seconds"] / row["reference_seconds"]
        rows.append(row)
    return rows


def print_permute(rows: list[dict]) -> None:
    for r in rows:
        print(f"bench permute: fast-tsp with {r['kit_budget']} s per group (kit) against {r['reference_budget']} s per group")
        print(f"  {r['model']}: {r['groups']} groups (largest {r['largest_group']} channels)")
        print(f"    kit:       {r['kit_seconds']:7.2f} s total, TV reduction {100 * r['kit_tv_reduction']:6.2f}%, "
              f"max logit diff {r['kit_max_logit_diff']:.1e} (largest |logit| {r['logit_scale']:.1e})")
        print(f"    reference: {r['reference_seconds']:7.2f} s total, TV reduction {100 * r['reference_tv_reduction']:6.2f}%")
        print(f"    TV after, kit / reference: {r['tv_after_ratio']:.4f}   time, kit / reference: {r['time_ratio']:.3f}")
