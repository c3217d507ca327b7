"""Paper 000's tables rebuilt from a run folder (notebook 05): Tables 1–2, the published reference, report.md.

Reads only `results/<run>/`: notebook 01's metrics.json (the prior), every notebook-03 run's metrics.json (grouped
over seeds by `kit.results`) and notebook 04's metrics.json (the baseline rows). Nothing here is typed by hand but
the published CIFAR-100 figures of paper 000 Tables 1–2, which come from data/published/htty_cifar100.csv and are
labelled as published. A missing input leaves its cells empty ("–") with a note saying what would fill them.

Table 1 is the multi-block setting (notebook 04's, else the most common multi-block one among the runs); Table 2
the one-block setting (the first block of Table 1's, "<setting>:1", else any one-block runs). Columns: accuracy
at γ = 0, 0.25, 0.5 and one unseen γ (the first evaluated γ between pool points), and the training cost. Every row
is a mean ± std over its seeds, notebook 04's Individual, slimmable and pruning rows included (the Individual γ = 0 is the
prior, trained once: one seed); the generated paragraph says of each gap whether it exceeds the seed spread.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from kit import config as C
from kit import diagnostics, io, names, records, results
from kit.spread import NO_SPREAD, spread_over
from kit.metamorph import gamma_key
from kit.runtime import PROJECT_ROOT

PUBLISHED = PROJECT_ROOT / "data" / "published" / "htty_cifar100.csv"
TABLE_GAMMAS = C.TABLE_GAMMAS  # the seen columns of paper 000 Tables 1–2
ALWAYS = ("individual", "neumeta", "htty", "null")  # rows shown (empty, with a note) even when not run


@dataclass
class RunRecords:
    """What a run folder holds; None / empty where a notebook has not written its record."""

    folder: Path
    prior: dict | None  # notebook 01's metrics.json
    morph: dict[str, dict]  # notebook 03: {variant folder: metrics.json}
    baselines: dict | None  # notebook 04's metrics.json (rows, setting, …)
    notes: list[str] = field(default_factory=list)  # what is missing, in words


def collect(folder: str | Path) -> RunRecords:
    """What `folder` holds; a record that is not what its notebook writes is refused in one sentence naming it."""
    folder = Path(folder)
    read = lambda p: io.read_json(p) if p.is_file() else None
    prior_path, base_path = folder / "01_prior_training" / "metrics.json", folder / "04_baselines" / "metrics.json"
    run = RunRecords(folder, records.check_prior(read(prior_path), prior_path), results.runs_of(folder),
                     None if (base := read(base_path)) is None else records.check_baselines(base, base_path))
    if run.prior is None:
        run.notes.append("No prior record (01_prior_training/metrics.json): run notebook 01.")
    if not run.morph:
        run.notes.append("No metamorphic runs (03_incremental_metamorphosis/*/metrics.json): run notebook 03.")
    if run.baselines is None:
        run.notes.append("No baselines (04_baselines/metrics.json): run notebook 04.")
    return run


def settings(run: RunRecords) -> tuple[str | None, str | None]:
    """(Table 1's multi-block setting, Table 2's one-block setting); None where the run has none."""
    multi = [r["setting"] for r in run.morph.values() if len(r.get("blocks", [])) > 1]
    main = (run.baselines or {}).get("setting") or (max(set(multi), key=multi.count) if multi else None)
    single = [r["setting"] for r in run.morph.values() if len(r.get("blocks", [])) == 1]
    one = f"{main}:1" if main and f"{main}:1" in single else (single[0] if single else None)
    return main, one


@dataclass
class Table:
    title: str
    columns: list[str]  # accuracy columns (γ labels), then the cost column
    rows: list[dict]  # {'name', 'key', 'seeds', 'values': [(mean %, std %) or None per column],
    #                    'counts': [seeds behind each value]} (counts absent: every value has 'seeds')
    notes: list[str]


def paper_table(run: RunRecords, setting: str | None, title: str, hint: str = "") -> Table:
    """Paper 000's Table 1/2 layout for one setting: mean ± std over seeds, in %, cost in minutes. `hint` says
    what would fill rows the run lacks."""
    if setting is None:
        return Table(title, [], [], [f"No metamorphic run in this setting in the run folder. {hint}".strip()])
    summary = results.summarise(run.morph, setting) if any(r.get("setting") == setting for r in run.morph.values()) else {}
    kinds = next((r["kind"] for r in summary.values() if not r.get("any_gamma")), {})
    unseen = next((g for g in sorted(kinds, key=float) if kinds[g] == "between"), None)
    gammas = [gamma_key(g) for g in TABLE_GAMMAS] + ([unseen] if unseen else [])
    device = _device(run)
    columns = [f"γ = {g}" + (" (unseen)" if g == unseen else "") for g in gammas] + [f"train cost (min, {device})"]
    rows, notes = [], []
    individual = _individual(run, setting)
    if individual is not None:
        rows.append({"name": names.ROW_NAMES["individual"], "key": "individual", "seeds": individual["seeds"],
                     "values": [individual["acc"].get(g) for g in gammas] + [individual["cost"]],
                     "counts": [individual["counts"].get(g, 0) for g in gammas] + [individual["seeds"]]})
        notes.append(f"Individual: γ = {', '.join(individual['trained'])} trained; γ = 0 is the prior itself, trained "
                     f"once ({NO_SPREAD})" + (f", the other γ over {individual['seeds']} seeds" if
                                               individual["seeds"] > 1 else "") +
                     "; its cost is the sum of their training times, as in paper 000.")
    slim = _slimmable(run, setting, gammas)
    if slim is not None:
        rows.append(slim)
        notes.append("Universally slimmable network: one network trained on HTTY's budget (the same optimiser steps "
                     "and images), BN recalibrated per width; γ = 0 is its widest width, not the prior; its cost is "
                     "that one training.")
    order = list(names.ROW_NAMES) + sorted(set(summary) - set(names.ROW_NAMES))
    for key in order:
        if key in ("individual", "slimmable"):
            continue
        row = summary.get(key)
        if row is None:
            if key in ALWAYS:
                rows.append({"name": names.display_name(key), "key": key, "seeds": 0, "values": [None] * len(columns)})
            continue
        acc = {g: tuple(100 * v for v in results.at(row, g)) for g in gammas if results.at(row, g) is not None}
        cost = tuple(s / 60 for s in row["train_seconds"])
        rows.append({"name": names.display_name(key), "key": key, "seeds": row["seeds"],
                     "values": [acc.get(g) for g in gammas] + [cost]})
    if individual is None:
        rows.insert(0, {"name": "Individual", "key": "individual", "seeds": 0, "values": [None] * len(columns)})
    rows += _pruning(run, setting, gammas)
    missing = [names.display_name(k) for k in ALWAYS if k not in summary and (k != "individual" or individual is None)]
    ablations = {m: [k for k in names.ROW_NAMES if k.startswith(m + " − ") and k not in summary]
                 for m in ("htty", "prefit", "blockwise")}
    words = {"htty": "HTTY", "prefit": "pre-fit recipe", "blockwise": "block-wise recipe"}
    absent = [f"{len(rows)} {words[m]} ablation row(s)" for m, rows in ablations.items() if rows]
    if missing or absent:
        notes.append("Not in this run folder: " + ", ".join(missing + absent) + f". {hint}".rstrip())
    if unseen is None and summary:
        notes.append("No evaluated γ falls between the pool's widths here (every width in the pool is seen), so "
                     "there is no unseen column.")
    return Table(title, columns, rows, notes)


def _individual(run: RunRecords, setting: str) -> dict | None:
    """Notebook 04's individually trained networks over their seeds: accuracy (mean, std in %) and seeds per γ; the
    cost (minutes) of one set of networks, the prior's training plus one network per trained γ, over the seeds that
    trained every γ."""
    base = run.baselines
    if not base or base.get("setting") != setting:
        return None
    rows = [r for r in results.baseline_rows(base) if r["family"] == "individual"]
    if not rows:
        return None
    prior = sum(r["train_seconds"][0] for r in rows if r["gamma"] == 0.0)
    trained = [r for r in rows if r["gamma"] != 0.0]
    seeds = set.intersection(*(set(r["by_seed"]) for r in trained)) if trained else set()
    totals = [prior + sum(r["by_seed"][s]["train_seconds"] for r in trained) for s in sorted(seeds)] or [prior]
    mean, std = results.mean_std(totals)
    return {"acc": {r["key"]: (100 * r["accuracy"][0], 100 * r["accuracy"][1]) for r in rows},
            "counts": {r["key"]: r["seeds"] for r in rows}, "seeds": max(r["seeds"] for r in rows),
            "cost": (mean / 60, std / 60), "trained": [r["key"] for r in rows]}


def _slimmable(run: RunRecords, setting: str, gammas: list[str]) -> dict | None:
    """The universally slimmable network of notebook 04 over its seeds at the table's γ; its cost is its one training
    per seed (recorded on each of its rows), mean ± std over the seeds, in minutes."""
    base = run.baselines
    if not base or base.get("setting") != setting:
        return None
    rows = {r["key"]: r for r in results.baseline_rows(base) if r["family"] == "slimmable"}
    if not rows:
        return None
    cells = [rows.get(g) for g in gammas]
    first = next(iter(rows.values()))
    cost = results.mean_std([r["train_seconds"] / 60 for r in first["by_seed"].values()])
    seeds = max(r["seeds"] for r in rows.values())
    return {"name": names.ROW_NAMES["slimmable"], "key": "slimmable", "seeds": seeds,
            "values": [None if c is None else (100 * c["accuracy"][0], 100 * c["accuracy"][1]) for c in cells] + [cost],
            "counts": [0 if c is None else c["seeds"] for c in cells] + [first["seeds"]]}


def _pruning(run: RunRecords, setting: str, gammas: list[str]) -> list[dict]:
    """One row per pruning criterion of notebook 04 (and per fine-tuned criterion), mean ± std over its seeds at the
    table's γ; its cost column is the fine-tuning time (0 without fine-tuning)."""
    base = run.baselines
    if not base or base.get("setting") != setting:
        return []
    groups: dict[str, list[dict]] = {}
    for r in results.baseline_rows(base):
        if r["family"] == "pruning":
            groups.setdefault(r["method"], []).append(r)
    out = []
    for method, rs in groups.items():
        by_gamma = {r["key"]: r for r in rs}
        cells = [by_gamma.get(g) for g in gammas]
        seeds = sorted(set.intersection(*(set(r["by_seed"]) for r in rs)))
        cost = results.mean_std([sum(r["by_seed"][s].get("train_seconds", 0.0) for r in rs) / 60 for s in seeds])
        name = f"Pruning, {names.CRITERION_NAMES.get(rs[0]['criterion'], rs[0]['criterion'])}" + \
               (", fine-tuned" if rs[0]["finetuned"] else " (no fine-tuning)")
        out.append({"name": name, "key": method, "seeds": max(r["seeds"] for r in rs),
                    "values": [None if c is None else (100 * c["accuracy"][0], 100 * c["accuracy"][1]) for c in cells]
                    + [cost], "counts": [0 if c is None else c["seeds"] for c in cells] + [max(r["seeds"] for r in rs)]})
    return out


def _device(run: RunRecords) -> str:
    for record in [run.prior, *run.morph.values()]:
        if record and record.get("provenance", {}).get("device"):
            return record["provenance"]["device"]
    return "device unknown"


def counts(row: dict) -> list[int]:
    """The number of seeds behind each of a table row's values."""
    return row.get("counts") or [row["seeds"]] * len(row["values"])


def _cell(value, seeds: int, row_seeds: int) -> str:
    """'82.00 ± 2.83' over seeds, '90.00' for one seed; a value over fewer seeds than its row says how many."""
    if value is None:
        return "–"
    mean, std = value
    text = f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f}"
    return text + (f" ({seeds} seed{'s' * (seeds > 1)})" if seeds < row_seeds else "")


def _cells(row: dict) -> list[str]:
    return [_cell(v, n, row["seeds"]) for v, n in zip(row["values"], counts(row))]


def to_rows(table: Table) -> list[dict]:
    """Numeric rows for the CSV: mean, std and seeds per column (empty where missing)."""
    out = []
    for row in table.rows:
        record = {"row": row["name"], "seeds": row["seeds"]}
        for column, value, n in zip(table.columns, row["values"], counts(row)):
            record[f"{column} mean"] = "" if value is None else round(value[0], 4)
            record[f"{column} std"] = "" if value is None else round(value[1], 4)
            record[f"{column} seeds"] = "" if value is None else n
        out.append(record)
    return out


def to_markdown(table: Table) -> str:
    head = ["run", "seeds", *table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        cells = [row["name"], str(row["seeds"] or "–"), *_cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "".join(f"\n\n*{n}*" for n in table.notes)


_LATEX = {"γ": r"$\gamma$", "±": r"$\pm$", "α": r"$\alpha$", "–": "--", "−": "--", "%": r"\%", "_": r"\_",
          "&": r"\&", "#": r"\#", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return re.sub("|".join(map(re.escape, _LATEX)), lambda m: _LATEX[m.group()], text)


def to_latex(table: Table, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); notes become the caption's second sentence."""
    head = ["run", "seeds", *table.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    for row in table.rows:
        cells = [row["name"], str(row["seeds"] or "–"), *_cells(row)]
        lines.append(" & ".join(latex_escape(c) for c in cells) + r" \\")
    caption = latex_escape(table.title + ". " + " ".join(table.notes))
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, folder: str | Path, stem: str) -> list[Path]:
    """<stem>.csv, <stem>.md and <stem>.tex in `folder`, each written atomically."""
    folder = Path(folder)
    rows = to_rows(table) or [{"row": "(none)", "note": " ".join(table.notes)}]
    return [io.write_csv(rows, folder / f"{stem}.csv"),
            io.write_text(f"### {table.title}\n\n" + to_markdown(table) + "\n", folder / f"{stem}.md"),
            io.write_text(to_latex(table, f"tab:{stem}"), folder / f"{stem}.tex")]


def published(path: str | Path = PUBLISHED) -> list[dict]:
    """Paper 000's printed CIFAR-100 rows (see data/published/README.md)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def reference_table(run: RunRecords, tables: dict[int, Table]) -> Table:
    """Paper 000's published rows (CIFAR-100, ResNet-56) each followed by the matching row of this run's table."""
    columns = ["γ = 0", "γ = 0.25", "γ = 0.5", "unseen γ", "train cost"]
    dataset = (run.prior or {}).get("config", {}).get("data", {}).get("name", "this run's dataset")
    rows = []
    for pub in published():
        if "higher capacity" in pub["network"]:
            continue  # no wide prior in the kit's runs: shown in the CSV, left out of this side-by-side table
        values = [(float(pub[k]), 0.0) for k in ("acc_0", "acc_0.25", "acc_0.5", "acc_unseen")]
        rows.append({"name": f"Table {pub['table']} · {pub['row']} — published (CIFAR-100, GPU h)", "key": pub["kit_row"],
                     "seeds": 1, "values": values + [(float(pub["train_cost_gpuh"]), 0.0)]})
        ours = next((r for r in tables[int(pub["table"])].rows if r["key"] == pub["kit_row"]), None)
        if ours is None:
            mine, n = [None] * 5, [0] * 5
        elif len(ours["values"]) == 5:
            mine, n = ours["values"], counts(ours)
        else:  # a table without an unseen column has four values: the three seen γ and the cost
            mine, n = ours["values"][:3] + [None, ours["values"][-1]], counts(ours)[:3] + [0, counts(ours)[-1]]
        rows.append({"name": f"Table {pub['table']} · {pub['row']} — this run ({dataset}, min)", "key": pub["kit_row"],
                     "seeds": ours["seeds"] if ours else 0, "values": mine, "counts": n})
    notes = ["Published figures are paper 000's, typed from its Tables 1–2 (data/published/htty_cifar100.csv); its "
             "unseen γ is not recoverable from the text, this run's is the first γ between pool points",
             "costs are GPU hours there and minutes on this run's device here"]
    return Table("Published (paper 000, CIFAR-100) against this run", columns, rows, notes)


def estimate(table: Table, key: str, column: int) -> tuple[float, float, int] | None:
    """(mean %, std %, seeds) of row `key` in column `column` of `table` (`kit.spread`), or None."""
    row = next((r for r in table.rows if r["key"] == key), None)
    if row is None or column >= len(row["values"]) or row["values"][column] is None:
        return None
    return (*row["values"][column], counts(row)[column])


def value(table: Table, key: str, column: int) -> float | None:
    """The mean (%) of row `key` in column `column` of `table`, or None."""
    row = next((r for r in table.rows if r["key"] == key), None)
    if row is None or column >= len(row["values"]) or row["values"][column] is None:
        return None
    return row["values"][column][0]


def block_reports(run: RunRecords, setting: str | None) -> dict[str, dict]:
    """{row key: the block reports notebook 03 recorded (γ = 0, against the prior's kernels)} of each method's runs in
    `setting`; several seeds are merged, each block keyed '<block> · seed <s>', so ranges span every seed."""
    groups: dict[str, list[dict]] = {}
    for r in run.morph.values():
        if setting and r.get("setting") == setting and r.get("block_report") and not results.is_null(r):
            groups.setdefault(results.label(r), []).append(r)
    return {key: {f"{b} · seed {r.get('seed', 0)}" if len(rs) > 1 else b: row for r in rs
                  for b, row in r["block_report"].items()} for key, rs in groups.items()}


def describe_table(table: Table, blocks: dict[str, dict] | None = None) -> str:
    """One generated paragraph: HTTY against NeuMeta and Individual, each pair averaged over the accuracy columns
    both have and said to be beyond the seed spread or not in each (`kit.spread.spread_over`), each method against
    the null control the same way, and the training costs. `blocks` ({row key: block report}, `block_reports`) adds what each method's
    generated blocks measured, and a caveat to every gap of HTTY's when its blocks are switched off."""
    if not table.rows:
        return " ".join(table.notes)
    blocks = blocks or {}
    acc_cols = range(len(table.columns) - 1)

    def versus(a: str, b: str) -> tuple[float, float, int, str] | None:
        """(a's mean, b's mean over the accuracy columns both have, their number, `spread_over` those columns)."""
        pairs = {table.columns[c].removeprefix("γ = "): (estimate(table, a, c), estimate(table, b, c)) for c in acc_cols}
        pairs = {g: (x, y) for g, (x, y) in pairs.items() if x is not None and y is not None}
        if not pairs:
            return None
        n = len(pairs)
        return sum(x[0] for x, _ in pairs.values()) / n, sum(y[0] for _, y in pairs.values()) / n, n, spread_over(pairs)

    parts = []
    for other, name in (("neumeta", "NeuMeta"), ("individual", "the individually trained networks")):
        if (v := versus("htty", other)) is not None:
            parts.append(f"over the {v[2]} γ column(s) both have, HTTY averages {v[0]:.2f}% against {name}' "
                         f"{v[1]:.2f}% ({v[0] - v[1]:+.2f} points; {v[3]})".replace("NeuMeta'", "NeuMeta's"))
    text = "; ".join(parts) + "." if parts else "HTTY did not run in this setting."
    text = text[0].upper() + text[1:]
    if parts and diagnostics.block_state(blocks.get("htty", {})) == diagnostics.OFF:
        text += (f" Caveat: HTTY's generated blocks are switched off in this run ({diagnostics.block_numbers(blocks['htty'])}),"
                 " so these gaps come from the rest of the network, which every γ shares, not from generated weights.")
    for key in ("htty", "prefit", "blockwise", "neumeta"):
        if (v := versus(key, "null")) is not None:
            text += (f" {names.display_name(key)} averages {v[0] - v[1]:+.2f} points against the null control (the prior with "
                     f"these blocks removed, tail retrained){': its generated blocks add nothing' if v[0] - v[1] <= 1 else ''}"
                     f"; {v[3]}.")
    for key in ("blockwise", "prefit", "htty"):
        if (v := versus(key, "slimmable")) is not None:
            text += (f" Against the universally slimmable network trained on HTTY's budget, {names.display_name(key)} averages "
                     f"{v[0] - v[1]:+.2f} points over {v[2]} γ column(s); {v[3]}.")
    cost = {k: value(table, k, len(table.columns) - 1) for k in ("htty", "neumeta", "individual", "slimmable")}
    if cost["htty"] is not None and cost["neumeta"] is not None:
        text += f" Training took {cost['htty']:.1f} min for HTTY and {cost['neumeta']:.1f} min for NeuMeta" + (
            f", {cost['slimmable']:.1f} min for the slimmable network." if cost["slimmable"] is not None else ".")
    measured = [diagnostics.block_sentence(names.display_name(k), blocks[k]) for k in blocks if value_row(table, k)]
    if measured:
        text += " What the block reports measured (γ = 0, against the prior's kernels): " + " ".join(measured)
    return text + ("" if not table.notes else " " + " ".join(table.notes))


def value_row(table: Table, key: str) -> bool:
    """Whether `table` has a row `key` with at least one value."""
    return any(r["key"] == key and any(v is not None for v in r["values"]) for r in table.rows)


def write_report(path: str | Path, header: str, sections: list[tuple[str, str, str]]) -> Path:
    """report.md: `header`, then per section (title, generated paragraph, Markdown body: a table or an image)."""
    body = [header]
    for title, paragraph, content in sections:
        body += [f"## {title}", paragraph, content]
    return io.write_text("\n\n".join(body) + "\n", path)
