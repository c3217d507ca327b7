"""Command-line values: `--set KEY=VALUE` pairs, γ lists, and numbers that start with '-'.

Each turns what was typed into numbers and structures, or stops with one sentence saying what is wrong.
"""
from __future__ import annotations

import json
import math

from kit.errors import KitError


def pairs(items: list[str]) -> dict:
    """--set KEY=VALUE … as {KEY: value}; values are JSON (numbers, lists, true) or bare strings."""
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KitError(f"--set takes KEY=VALUE pairs; got {item!r}.")
        found[key] = parse_value(value)
    return found


def parse_value(text: str):
    """A --set or -p value: JSON (numbers, lists, true), else the bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as cifar10


NUMBER_OPTIONS = ("--gamma", "--gammas")  # options whose value may start with '-' (a negative γ such as -1e-3)
MAX_GAMMAS = 1000  # γ one `evaluate` call takes: each is a pass over the split (split a longer list over calls)


def attach_numbers(argv: list[str]) -> list[str]:
    """`--gammas -1e-3,0` as `--gammas=-1e-3,0`: argparse reads a value starting with '-' as an option unless it
    looks like a plain negative number (not -1e-3, -inf, or a comma-separated list)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in NUMBER_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            try:
                float(argv[i + 1].split(",")[0])
            except ValueError:
                pass  # another option (`--gammas --k 2`): argparse says the value is missing
            else:
                out.append(f"{argv[i]}={argv[i + 1]}")
                i += 2
                continue
        out.append(argv[i])
        i += 1
    return out


def finite_gamma(value: float, text: str | None = None) -> float:
    """`value` if finite; else one sentence (with `text`, what the user typed, e.g. -1e309 read as -inf)."""
    if not math.isfinite(value):
        raise KitError(f"γ must be a finite number; got {value}" + (f" (from {text!r})." if text else "."))
    return value


def parse_gammas(text: str) -> list[float]:
    """--gammas '0,0.25,-0.25' as numbers; one sentence for an empty element, a word, a non-finite γ, a γ listed
    twice (0, 0.0 and -0 are one γ: they would give duplicate rows) or more than MAX_GAMMAS of them."""
    from kit.metamorph import gamma_key
    items = [g.strip() for g in text.split(",")]
    if not any(items):
        raise KitError("--gammas needs at least one number, e.g. 0,0.25,0.5.")
    if not all(items):
        raise KitError(f"--gammas has an empty element in {text!r} (two commas in a row, or one at an end); list "
                       "numbers separated by single commas, e.g. 0,0.25,0.5.")
    try:
        gammas = [finite_gamma(float(g), g) for g in items]
    except ValueError:
        raise KitError(f"--gammas takes comma-separated numbers such as 0,0.25,-0.25; got {text!r}.") from None
    seen: dict[str, str] = {}
    for item, g in zip(items, gammas):
        if gamma_key(g) in seen:
            raise KitError(f"--gammas lists one γ twice ({seen[gamma_key(g)]} and {item} are both γ = {gamma_key(g)}); "
                           "list each γ once.")
        seen[gamma_key(g)] = item
    if len(gammas) > MAX_GAMMAS:
        raise KitError(f"--gammas lists {len(gammas)} γ; evaluate takes at most {MAX_GAMMAS} per call (each is a pass "
                       "over the split), so split the list over several calls.")
    return gammas
