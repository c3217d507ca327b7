"""Reading a run's results back: the metamorphic runs of notebook 03 and their mean ± std over seeds.

The pipeline writes each notebook-03 variant into `results/<run>/03_incremental_metamorphosis/<variant>/`
(`kit.pipeline.variants`); every one leaves a `metrics.json` that names its method, ablation, setting and seed.
Grouping uses those recorded fields, never folder names, so a hand-made run in another folder groups the same.
"""
from __future__ import annotations

import math
from pathlib import Path

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
    """'htty', 'neumeta', or 'htty − <component>' for an ablation row (block sweeps differ by `setting`)."""
    name = metrics.get("method", "?")
    if metrics.get("ablation", "none") != "none":
        name += f" − {metrics['ablation']}"
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
