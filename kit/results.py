"""Reading a run's results back: the metamorphic runs of notebook 03 and their mean ± std over seeds.

The pipeline writes each notebook-03 variant into `results/<run>/03_incremental_metamorphosis/<variant>/`
(`kit.pipeline.variants`); every one leaves a `metrics.json` that names its method, ablation, setting and seed.
Grouping uses those recorded fields, never folder names, so a hand-made run in another folder groups the same.
Notebook 04's rows (`baseline_rows`) are grouped over seeds the same way.

Every comparison here says whether its gap exceeds the seed spread (`kit.spread`, one rule for the summary,
report.md and the notebooks), or "one seed: no spread" when a side has a single seed.
"""
from __future__ import annotations

import math
from pathlib import Path


from kit import io, records
from kit.errors import KitError
from kit.spread import NO_SPREAD, Estimate, average, beyond_spread, spread_over, spread_words

MORPH_FOLDER = "03_incremental_metamorphosis"


def morph_folder(folder: str | Path) -> Path:
    """The folder holding notebook 03's variant folders: `folder`/03_incremental_metamorphosis when a run folder
    is given, else `folder` itself."""
    folder = Path(folder)
    return folder / MORPH_FOLDER if (folder / MORPH_FOLDER).is_dir() else folder


def morph_runs(folder: str | Path) -> dict[str, dict]:
    """{variant folder name: its metrics.json} for every finished run under `folder` (a run folder, or its
    03_incremental_metamorphosis/ folder); runs without metrics.json (unfinished) are left out. A record that is
    not what notebook 03 writes is refused in one sentence naming its file (`kit.records`)."""
    folder = morph_folder(folder)
    runs = {}
    for path in sorted(folder.glob("*/metrics.json")):
        runs[path.parent.name] = records.check_record(io.read_json(path, "metrics"), path)
    return runs


def runs_of(run_dir: str | Path | None) -> dict[str, dict]:
    """`morph_runs` of a run folder; {} when it has no notebook-03 folder (or run_dir is None), rather than
    reading the run folder's other notebooks as variants."""
    return morph_runs(run_dir) if run_dir is not None and (Path(run_dir) / MORPH_FOLDER).is_dir() else {}


def sibling_curves(run_out: str | Path, setting: str) -> dict[str, dict[str, float]]:
    """{label: accuracy per γ} of the other notebook-03 runs beside the run folder `run_out` (its siblings in the same
    03_incremental_metamorphosis/) on `setting`, the null control left out (it is a level, not a curve)."""
    run_out = Path(run_out)
    return {label(r): r["accuracy"] for name, r in morph_runs(run_out.parent).items()
            if name != run_out.name and r.get("setting") == setting and not is_null(r)}


def prior_accuracy(folder: str | Path, runs: dict[str, dict]) -> float | None:
    """The prior's test accuracy: as notebook-03 runs record it, else from notebook 01's metrics.json in the run
    folder `folder`; None when neither has it."""
    recorded = next((r["prior_accuracy"] for r in runs.values() if "prior_accuracy" in r), None)
    path = Path(folder) / "01_prior_training" / "metrics.json"
    if recorded is None and path.is_file():
        record = io.read_json(path, "prior record")
        value = record.get("test_accuracy") if isinstance(record, dict) else None
        recorded = value if records.number(value) and 0 <= value <= 1 else None
    return recorded


def null_accuracy(runs: dict[str, dict], setting: str) -> float | None:
    """The null control's test accuracy on `setting` (mean over its seeds), or None when it has not run."""
    values = [next(iter(r["accuracy"].values())) for r in runs.values()
              if is_null(r) and r.get("setting") == setting and r.get("accuracy")]
    return sum(values) / len(values) if values else None


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


def estimate(row: dict, gamma: str) -> Estimate | None:
    """(mean, std, seeds) of a `summarise` row at γ (`at`), or None where it has no value."""
    value = at(row, gamma)
    return None if value is None else (*value, row["seeds"])


def summarise(runs: dict[str, dict], setting: str | None = None) -> dict[str, dict]:
    """{label: {'seeds': n, 'accuracy': {γ: (mean, std)} (K-averaged), 'accuracy_k1': the same at K = 1 (None where
    a run did not record it), 'k_samples': the K values recorded, 'train_seconds': (mean, std) or None where a run did
    not record it}} over the runs of one setting (the most common one when None), grouping seeds of the same method
    and ablation."""
    if not runs:
        return {}
    settings = [r.get("setting") for r in runs.values()]
    if setting is not None and setting not in settings:
        raise KitError(f"No run of setting {setting!r} here; the settings run are: "
                       f"{', '.join(sorted(set(map(str, settings))))}.")
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
                     "accuracy_k1": ({g: mean_std([r["accuracy_k1"][g] for r in rs]) for g in gammas}
                                     if all(g in r.get("accuracy_k1", {}) for r in rs for g in gammas) else None),
                     "k_samples": sorted({r.get("k_samples") for r in rs if r.get("k_samples") is not None}),
                     "kind": rs[0].get("kind", {}), "any_gamma": all(is_null(r) for r in rs),
                     "train_seconds": (mean_std([r["train_seconds"] for r in rs])
                                       if all("train_seconds" in r for r in rs) else None)}
    return out


def is_null(metrics: dict) -> bool:
    """Whether a run is the null control (blocks removed, tail retrained): one network, the same at every γ."""
    return metrics.get("method") == "null"


def at(row: dict, gamma: str) -> tuple[float, float] | None:
    """(mean, std) of a `summarise` row at γ; the null control's one accuracy holds at every γ."""
    if row.get("any_gamma") and row["accuracy"]:
        return next(iter(row["accuracy"].values()))
    return row["accuracy"].get(gamma)


def versus_null(summary: dict[str, dict], margin: float = 0.01) -> dict[str, str]:
    """{label: one sentence} saying, per metamorphic row, whether its generated blocks carry function: its accuracy
    against the null control's (the same prior with those blocks removed and the tail retrained) at every γ it was
    evaluated. Within `margin` (a fraction) of the null control, or below it, the accuracy comes from the rest of
    the network, not from the generated blocks. Each sentence ends with where the gap exceeds the seed spread
    (`spread_over`). {} without a null control in the summary."""
    null = next((row for row in summary.values() if row.get("any_gamma")), None)
    if null is None or not null["accuracy"]:
        return {}
    level = estimate(null, next(iter(null["accuracy"])))
    out = {}
    for name, row in summary.items():
        if row.get("any_gamma") or row.get("baseline") or not row["accuracy"]:
            continue
        gaps = {g: m - level[0] for g, (m, _) in row["accuracy"].items()}
        lo, hi = min(gaps, key=gaps.get), max(gaps, key=gaps.get)
        span = f"{100 * gaps[lo]:+.2f} (γ = {lo}) … {100 * gaps[hi]:+.2f} (γ = {hi}) points against the null control"
        spread = spread_over({g: (estimate(row, g), level) for g in sorted(gaps, key=float)})
        if gaps[hi] <= margin:
            out[name] = f"{name}: {span}: nowhere clearly above it, so its generated blocks carry no function"
        elif gaps[lo] <= margin:
            above = ", ".join(g for g in sorted(gaps, key=float) if gaps[g] > margin)
            out[name] = (f"{name}: {span}: above it only at some γ ({above}); at the others the network does no better "
                         "than the prior with those blocks removed and its tail retrained")
        else:
            out[name] = f"{name}: {span}: above it at every γ, so the generated blocks carry function"
        out[name] += f" ({NO_SPREAD})." if spread == NO_SPREAD else f"; the gap is {spread}."
    return out


def slimmable_row(baselines: dict | None, setting: str | None) -> dict | None:
    """Notebook 04's universally slimmable network as a `summarise` row (mean ± std over its seeds per γ), flagged
    `baseline` (no generated blocks: not judged against the null control) and `cannot_grow` (γ < 0 is not applicable);
    None when notebook 04 did not train one on `setting`."""
    if not baselines or (setting is not None and baselines.get("setting") != setting):
        return None
    rows = [r for r in baseline_rows(baselines) if r["family"] == "slimmable"]
    if not rows:
        return None
    seconds = [r["train_seconds"] for r in rows[0]["by_seed"].values()]  # its one training, on each of its rows
    return {"seeds": max(r["seeds"] for r in rows), "setting": baselines.get("setting"),
            "accuracy": {r["key"]: r["accuracy"] for r in sorted(rows, key=lambda r: r["gamma"])}, "accuracy_k1": None,
            "k_samples": [], "kind": {}, "any_gamma": False, "train_seconds": mean_std(seconds), "baseline": True,
            "cannot_grow": True}


def versus_slimmable(summary: dict[str, dict], slim: dict) -> dict[str, dict[str, tuple[float, str]]]:
    """{label: {γ: (label − slimmable in points, spread words)}} for every metamorphic row at the γ both evaluated."""
    out = {}
    for name, row in summary.items():
        if row.get("any_gamma") or row.get("baseline"):
            continue
        common = [g for g in sorted(row["accuracy"], key=float) if g in slim["accuracy"]]
        out[name] = {g: (100 * (row["accuracy"][g][0] - slim["accuracy"][g][0]),
                         spread_words(estimate(row, g), estimate(slim, g))) for g in common}
    return {k: v for k, v in out.items() if v}


def versus_null_in(run_dir: str | Path | None, setting: str) -> dict[str, str]:
    """`versus_null` over every seed of every row the run folder holds on `setting` ({} without such runs): what
    notebooks 06 and 07 print beside their one-seed views."""
    runs = runs_of(run_dir)
    return versus_null(summarise(runs, setting)) if any(r.get("setting") == setting for r in runs.values()) else {}


def comparison(summary: dict[str, dict], prior_accuracy: float | None, ours: str = "htty",
               baseline: str = "neumeta") -> dict:
    """The figures paper 000's claims are judged by (sec. 4.2), from a `summarise` result: per γ the margin of
    `ours` over `baseline`, their seed spread (std_ours + std_baseline) and `spread_words`; the gap of `ours` to the
    prior at γ = 0 (the prior is one network: one seed, no spread); and, per method, the mean accuracy over seen γ
    minus that over unseen γ between pool points (the seen → between drop), with `spread_words` on the two
    averages (`average`)."""
    a, b = summary[ours], summary[baseline]
    margin = {}
    for g in a["accuracy"]:
        if g in b["accuracy"]:
            ea, eb = estimate(a, g), estimate(b, g)
            margin[g] = {"margin": ea[0] - eb[0], "spread": ea[1] + eb[1], "beyond": beyond_spread(ea, eb),
                         "words": spread_words(ea, eb)}
    drop, drop_words = {}, {}
    for name, row in summary.items():
        by_kind: dict[str, list] = {}
        for g in row["accuracy"]:
            by_kind.setdefault(row["kind"].get(g, "?"), []).append(estimate(row, g))
        if by_kind.get("seen") and by_kind.get("between"):
            seen, between = average(by_kind["seen"]), average(by_kind["between"])
            drop[name], drop_words[name] = seen[0] - between[0], spread_words(seen, between)
    zero = next((g for g in a["accuracy"] if float(g) == 0.0), None)
    gap = None if zero is None or prior_accuracy is None else prior_accuracy - a["accuracy"][zero][0]
    return {"margin": margin, "prior_gap": gap,
            "prior_gap_words": None if gap is None else spread_words((prior_accuracy, 0.0, 1), estimate(a, zero)),
            "seen_to_between_drop": drop, "seen_to_between_words": drop_words}


def table(summary: dict[str, dict], prior_accuracy: float | None) -> str:
    """A Markdown table: one row per method / ablation (mean ± std over its seeds, in %), γ as columns, each γ's
    kind (seen / between / smaller / larger) and the prior's accuracy ('–' when not recorded) as rows. The null
    control, one network with no generated block, shows its one accuracy in every column; a row that cannot grow (the
    slimmable network) shows 'n/a' at γ < 0."""
    gammas = sorted({g for row in summary.values() if not row.get("any_gamma") for g in row["accuracy"]}, key=float)
    gammas = gammas or sorted({g for row in summary.values() for g in row["accuracy"]}, key=float)
    kinds = next((row["kind"] for row in summary.values() if not row.get("any_gamma")), {})
    lines = ["| run | seeds | " + " | ".join(f"γ = {g}" for g in gammas) + " |",
             "|---|---|" + "---|" * len(gammas),
             "| (kind) | | " + " | ".join(kinds.get(g, "") for g in gammas) + " |",
             "| prior | | " + " | ".join("–" if prior_accuracy is None else f"{100 * prior_accuracy:.2f}"
                                          for _ in gammas) + " |"]
    for name, row in summary.items():
        cells = []
        for g in gammas:
            if at(row, g) is None:
                cells.append("n/a" if row.get("cannot_grow") and float(g) < 0 else "–")
                continue
            mean, std = at(row, g)
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}" if row["seeds"] > 1 else f"{100 * mean:.2f}")
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recipe_figures(runs: dict[str, dict], baselines: dict | None, method: str = "prefit") -> dict | None:
    """The figures the quick targets judge a recipe by (`kit.bench.prefit.TARGETS`), measured on one run folder
    (mean over `method`'s seeds on its main setting); no thresholds here (they are the caller's). Gaps are in points
    (percentage points):
      prior_gap_at_0        prior − recipe at γ = 0
      worst_seen_gap        largest prior − recipe over the seen γ in [0, 0.5]
      seen_to_between_drop  mean over seen γ − mean over between γ
      worst_between_gap     largest (mean of its two neighbouring evaluated pool γ) − recipe, over the between γ
      worst_mixed_gap       largest prior − recipe over the networks whose blocks sit at different pool γ (mean over seeds)
      min_over_null         smallest recipe − null control over γ ≤ 0.5 (None without a null control)
      min_over_pruning      smallest recipe − best pruning criterion without fine-tuning, over the γ both have
      over_finetuned        {γ: recipe − best fine-tuned pruning} where notebook 04 fine-tuned
      over_slimmable        {γ: recipe − the universally slimmable network (mean over its seeds)} where notebook 04
                            trained one
      max_kernel_error, min_branch_scale   over the generated blocks at γ = 0, worst seed"""
    mine = {k: r for k, r in runs.items() if r.get("method") == method and r.get("ablation", "none") == "none"
            and r.get("config", {}).get("epoch_scale", 1) == 1}
    if not mine:
        return None
    setting = max({r["setting"] for r in mine.values()}, key=len)
    mine = {k: r for k, r in mine.items() if r["setting"] == setting}
    row = summarise(mine, setting)[method]
    acc = {g: m for g, (m, _) in row["accuracy"].items()}
    prior = next(iter(mine.values()))["prior_accuracy"]
    kinds = row["kind"]
    seen = [g for g in acc if kinds.get(g) == "seen" and 0 <= float(g) <= 0.5]
    between = [g for g in acc if kinds.get(g) == "between"]
    null = null_accuracy(runs, setting)
    out = {"method": method, "setting": setting, "seeds": len(mine), "prior_accuracy": prior, "accuracy": acc,
           "prior_gap_at_0": 100 * (prior - acc["0"]) if "0" in acc else None,
           "worst_seen_gap": max(100 * (prior - acc[g]) for g in seen) if seen else None,
           "seen_to_between_drop": (100 * (sum(acc[g] for g in seen) / len(seen) - sum(acc[g] for g in between)
                                           / len(between)) if seen and between else None),
           "null_accuracy": null,
           "min_over_null": None if null is None else min(100 * (a - null) for g, a in acc.items() if float(g) <= 0.5),
           "max_kernel_error": max(v for r in mine.values() for b in (r.get("block_report") or {}).values()
                                   for k, v in b.items() if k.startswith("error") and k.endswith("weight")),
           "min_branch_scale": min(b["branch scale"] for r in mine.values()
                                   for b in (r.get("block_report") or {}).values()),
           "worst_between_gap": _worst_between_gap(acc, kinds, next(iter(mine.values()))["pool"]),
           "worst_mixed_gap": _worst_mixed_gap(mine.values(), prior),
           "min_over_pruning": None, "over_finetuned": {}, "over_slimmable": {}}
    if baselines and baselines.get("setting") == setting:
        pruned: dict[bool, dict[str, float]] = {False: {}, True: {}}  # best criterion's mean over seeds, per γ
        for b in baseline_rows(baselines):
            if b["family"] == "pruning":
                g = b["key"]
                pruned[b["finetuned"]][g] = max(pruned[b["finetuned"]].get(g, 0.0), b["accuracy"][0])
        common = [g for g in pruned[False] if g in acc]
        out["min_over_pruning"] = min(100 * (acc[g] - pruned[False][g]) for g in common) if common else None
        out["over_finetuned"] = {g: 100 * (acc[g] - a) for g, a in pruned[True].items() if g in acc}
        slim = slimmable_row(baselines, setting)
        out["over_slimmable"] = {g: 100 * (acc[g] - m) for g, (m, _) in (slim or {"accuracy": {}})["accuracy"].items()
                                 if g in acc}
    return out


def _worst_between_gap(acc: dict[str, float], kinds: dict[str, str], pool: list[float]) -> float | None:
    """Largest (mean of the two evaluated pool γ around it) − accuracy over the between-pool γ, in points."""
    gaps = []
    for g, a in acc.items():
        if kinds.get(g) != "between":
            continue
        x = float(g)
        on_pool = [k for k in acc if any(math.isclose(float(k), p, abs_tol=1e-9) for p in pool)]
        lo = [k for k in on_pool if float(k) < x]
        hi = [k for k in on_pool if float(k) > x]
        if lo and hi:
            near = (acc[max(lo, key=float)] + acc[min(hi, key=float)]) / 2
            gaps.append(100 * (near - a))
    return max(gaps) if gaps else None


def _worst_mixed_gap(runs, prior: float) -> float | None:
    """Largest prior − accuracy (points) over the per-block-width networks (`metrics['mixed']`), mean over runs."""
    per: dict[str, list[float]] = {}
    for r in runs:
        for m in r.get("mixed") or []:
            per.setdefault(repr(sorted(m["gammas"].items())), []).append(m["accuracy"])
    return max(100 * (prior - sum(v) / len(v)) for v in per.values()) if per else None


# ---------------------------------------------------------------- notebook 04's rows

def baseline_rows(baselines: dict | None) -> list[dict]:
    """Notebook 04's rows grouped over seeds, in their recorded order: one per method × γ (a fine-tuned criterion
    is its own method), each {'method', 'family', 'criterion', 'finetuned', 'gamma' (float), 'key' (γ string),
    'accuracy': (mean, std), 'seeds': n, 'parameters', 'macs', 'train_seconds': (mean, std), 'by_seed': {seed: row}}.
    A seed's row recorded twice counts once (the later). The individually trained network at γ = 0 is the prior
    itself, trained once: one seed, however many seeds the other rows have."""
    from kit.metamorph import gamma_key
    groups: dict[tuple, dict] = {}
    for r in (baselines or {}).get("rows", []):
        seeds = groups.setdefault((r["method"], bool(r.get("finetuned")), gamma_key(r["gamma"])), {})
        if r["family"] == "individual" and float(r["gamma"]) == 0.0 and seeds:
            continue  # the prior: one network
        seeds[r.get("seed", 0)] = r
    out = []
    for (method, finetuned, key), seeds in groups.items():
        first, rows = next(iter(seeds.values())), list(seeds.values())
        out.append({"method": method, "family": first["family"], "criterion": first.get("criterion", ""),
                    "finetuned": finetuned, "gamma": float(first["gamma"]), "key": key, "seeds": len(rows),
                    "accuracy": mean_std([r["accuracy"] for r in rows]), "parameters": first.get("parameters"),
                    "macs": first.get("macs"), "train_seconds": mean_std([r.get("train_seconds", 0.0) for r in rows]),
                    "by_seed": dict(seeds)})
    return out
