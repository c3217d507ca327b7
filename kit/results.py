"""Reading a run's results back: the metamorphic runs of notebook 03 and their mean ± std over seeds.

The pipeline writes each notebook-03 variant into `results/<run>/03_incremental_metamorphosis/<variant>/`
(`kit.pipeline.variants`); every one leaves a `metrics.json` that names its method, ablation, setting and seed.
Grouping uses those recorded fields, never folder names, so a hand-made run in another folder groups the same.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from kit import io

MORPH_FOLDER = "03_incremental_metamorphosis"


def morph_runs(folder: str | Path) -> dict[str, dict]:
    """{variant folder name: its metrics.json} for every finished run under `folder` (a run folder, or its
    03_incremental_metamorphosis/ folder); runs without metrics.json (unfinished) are left out."""
    folder = Path(folder)
    if (folder / MORPH_FOLDER).is_dir():
        folder = folder / MORPH_FOLDER
    runs = {}
    for path in sorted(folder.glob("*/metrics.json")):
        record = io.read_json(path, "metrics")
        runs[path.parent.name] = record
    return runs


def label(metrics: dict) -> str:
    """'htty', 'neumeta', or 'htty − <component>' for an ablation row, with ' ×3 epochs' for extended training
    (paper 000 Fig. 6, `epoch_scale`); block sweeps differ by `setting`."""
    name = metrics.get("method", "?")
    if metrics.get("ablation", "none") != "none":
        name += f" − {metrics['ablation']}"
    scale = metrics.get("config", {}).get("epoch_scale", 1)
    if scale != 1:
        name += f" ×{scale} epochs"
    return name


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)


def summarise(runs: dict[str, dict], setting: str | None = None) -> dict[str, dict]:
    """{label: {'seeds': n, 'accuracy': {γ: (mean, std)}, 'train_seconds': (mean, std)}} over the runs of one
    setting (the most common one when None), grouping seeds of the same method and ablation."""
    if not runs:
        return {}
    settings = [r.get("setting") for r in runs.values()]
    setting = setting or max(set(settings), key=settings.count)
    groups: dict[str, list[dict]] = {}
    for r in runs.values():
        if r.get("setting") == setting:
            groups.setdefault(label(r), []).append(r)
    out = {}
    for name, rs in groups.items():
        gammas = [g for g in rs[0]["accuracy"] if all(g in r["accuracy"] for r in rs)]
        out[name] = {"seeds": len(rs), "setting": setting,
                     "accuracy": {g: mean_std([r["accuracy"][g] for r in rs]) for g in gammas},
                     "kind": rs[0].get("kind", {}),
                     "train_seconds": mean_std([r.get("train_seconds", float("nan")) for r in rs])}
    return out


def comparison(summary: dict[str, dict], prior_accuracy: float, ours: str = "htty", baseline: str = "neumeta") -> dict:
    """The figures paper 000's claims are judged by (sec. 4.2), from a `summarise` result: per γ the margin of
    `ours` over `baseline` and their seed spreads (std); the gap of `ours` to the prior at γ = 0; and, per method,
    the mean accuracy over seen γ minus that over unseen γ between pool points (the seen → between drop)."""
    a, b = summary[ours], summary[baseline]
    margin = {g: {"margin": a["accuracy"][g][0] - b["accuracy"][g][0],
                  "spread": a["accuracy"][g][1] + b["accuracy"][g][1]} for g in a["accuracy"] if g in b["accuracy"]}
    drop = {}
    for name, row in summary.items():
        by_kind: dict[str, list[float]] = {}
        for g, (mean, _) in row["accuracy"].items():
            by_kind.setdefault(row["kind"].get(g, "?"), []).append(mean)
        if by_kind.get("seen") and by_kind.get("between"):
            drop[name] = sum(by_kind["seen"]) / len(by_kind["seen"]) - sum(by_kind["between"]) / len(by_kind["between"])
    zero = next((g for g in a["accuracy"] if float(g) == 0.0), None)
    return {"margin": margin, "prior_gap": None if zero is None else prior_accuracy - a["accuracy"][zero][0],
            "seen_to_between_drop": drop}


def table(summary: dict[str, dict], prior_accuracy: float) -> str:
    """A Markdown table: one row per method / ablation (mean ± std over its seeds, in %), γ as columns, each γ's
    kind (seen / between / smaller / larger) and the prior's accuracy as rows."""
    gammas = sorted({g for row in summary.values() for g in row["accuracy"]}, key=float)
    kinds = next(iter(summary.values()))["kind"]
    lines = ["| run | seeds | " + " | ".join(f"γ = {g}" for g in gammas) + " |",
             "|---|---|" + "---|" * len(gammas),
             "| (kind) | | " + " | ".join(kinds.get(g, "") for g in gammas) + " |",
             "| prior | | " + " | ".join(f"{100 * prior_accuracy:.2f}" for _ in gammas) + " |"]
    for name, row in summary.items():
        cells = []
        for g in gammas:
            if g not in row["accuracy"]:
                cells.append("–")
                continue
            mean, std = row["accuracy"][g]
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}" if row["seeds"] > 1 else f"{100 * mean:.2f}")
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@torch.no_grad()
def block_report(net) -> dict[str, dict[str, float]]:
    """Per generated block of a `MetamorphicNet`, at γ = 0 without noise: α (1 without α-scaling), the relative
    error ‖W − W*‖ / ‖W*‖ of each generated tensor against the prior's, and the branch scale ‖α·W2‖ / ‖W2*‖ of
    its second kernel. A branch scale near 0 means the block is all but the identity: accuracy then comes from
    the rest of the network, whatever γ builds (a flat accuracy curve)."""
    weights, targets = net.generate(0.0), net.prior_tensors()
    alphas = net.alphas()
    out = {}
    for block in net.active_blocks:
        alpha = alphas.get(block, 1.0)
        row = {"alpha": alpha}
        for part in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
            w, t = weights[f"{block}.{part}"].float(), targets[f"{block}.{part}"].float()
            row[f"error {part}"] = float((w - t).norm() / t.norm())
            if part == "conv2.weight":
                row["branch scale"] = float(abs(alpha) * w.norm() / t.norm())
        out[block] = row
    return out
