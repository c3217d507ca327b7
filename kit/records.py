"""What a run folder's JSON records must hold before the kit reads them back.

The summary, report.md and notebooks 05–07 read the records notebooks 03 and 04 wrote. A record that is not what
its notebook writes (a list, a missing accuracy, a string where a number belongs, NaN or Infinity, which Python's
json reads but `kit.io.write_json` never writes) is refused in one sentence naming its file, instead of a
traceback or a NaN printed as a number.
"""
from __future__ import annotations

import math
from pathlib import Path

from kit.errors import KitError


def number(x) -> bool:
    """Whether `x` is a JSON number (not a boolean)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _non_finite(value, where: str = "") -> str | None:
    """The first place in a JSON value holding NaN or ±Infinity (which Python's json reads, but the kit never
    writes: `kit.io.write_json` refuses them), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "a value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, v in items:
        found = _non_finite(v, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def check_record(record, path: str | Path):
    """`record` (a notebook-03 metrics.json read from `path`) if it has what the summary and the report read: a JSON
    object whose `accuracy` maps γ (decimal strings) to numbers in [0, 1], numeric `train_seconds` and
    `prior_accuracy` where present, and no NaN or Infinity anywhere; else one sentence naming the file."""
    def bad(what: str):
        return KitError(f"{path} is not a notebook-03 record: {what}; rerun notebook 03 for this variant (or delete "
                        "its folder), since the kit never writes such a file.")
    if not isinstance(record, dict):
        raise bad(f"it holds a JSON {type(record).__name__}, not an object")
    accuracy = record.get("accuracy")
    if not isinstance(accuracy, dict) or not accuracy:
        raise bad("it has no 'accuracy' table (γ → test accuracy)")
    where = _non_finite(record)
    if where is not None:
        raise bad(f"'{where}' is NaN or Infinity, not a number")
    for g, a in accuracy.items():
        try:
            float(g)
        except ValueError:
            raise bad(f"its accuracy is keyed by {g!r}, not a γ") from None
        if not number(a) or not 0 <= a <= 1:
            raise bad(f"its accuracy at γ = {g} is {a!r}, not a number in [0, 1]")
    for key, lo, hi in (("train_seconds", 0, math.inf), ("prior_accuracy", 0, 1)):
        if key in record and not (number(record[key]) and lo <= record[key] <= hi):
            raise bad(f"its '{key}' is {record[key]!r}, not a number in [{lo}, {hi}]")
    for key in ("method", "ablation", "setting"):
        if key in record and not isinstance(record[key], str):
            raise bad(f"its '{key}' is {record[key]!r}, not a string")
    for key in ("kind", "config", "block_report"):
        if key in record and not isinstance(record[key], dict):
            raise bad(f"its '{key}' is not a JSON object")
    return record


def check_baselines(record, path: str | Path):
    """`record` (notebook 04's metrics.json read from `path`) if its rows are what `baseline_rows` reads; else one
    sentence naming the file."""
    def bad(what: str):
        return KitError(f"{path} is not a notebook-04 record: {what}; rerun notebook 04, since the kit never writes "
                        "such a file.")
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
        raise bad("it has no list of rows")
    where = _non_finite(record)
    if where is not None:
        raise bad(f"'{where}' is NaN or Infinity, not a number")
    for i, r in enumerate(record["rows"]):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("method", "family")):
            raise bad(f"row {i} has no method and family")
        if not number(r.get("gamma")) or not number(r.get("accuracy")) or not 0 <= r["accuracy"] <= 1:
            raise bad(f"row {i} ({r['method']}) has no numeric γ and accuracy in [0, 1]")
        if not number(r.get("train_seconds", 0.0)) or r.get("train_seconds", 0.0) < 0:
            raise bad(f"row {i} ({r['method']}) has a train_seconds that is not a number ≥ 0")
    return record


def check_prior(record, path: str | Path) -> dict | None:
    """`record` (notebook 01's metrics.json read from `path`, or None when absent) if it holds a test accuracy in
    [0, 1]; else one sentence naming the file."""
    accuracy = record.get("test_accuracy") if isinstance(record, dict) else None
    if record is not None and not (number(accuracy) and 0 <= accuracy <= 1):  # NaN fails the comparison too
        raise KitError(f"{path} is not a notebook-01 record (no test accuracy in [0, 1]); rerun notebook 01, since the "
                       "kit never writes such a file.")
    return record
