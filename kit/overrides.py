"""What one pipeline invocation may change in its notebooks, checked before any work (kit.pipeline).

`--set section.field=value` reaches, as its `SET` parameter, the one notebook that builds that config (prior: 01,
permute: 02, morph: 03, baseline: 04, explorer: 06); a field the notebook takes as a parameter of its own is
refused there, so SET can never silently override what the pipeline sets per run. `-p NAME VALUE` (or
`-p NN:NAME VALUE`) sets a parameter of every notebook declaring it, except those the pipeline sets itself; its
value is checked as the notebook will use it: through the config field the parameter sets (COVERED), with that
config's own checks, else against the type of the parameter's default.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path

from kit import config as C
from kit.errors import KitError

SECTIONS = {cls.SECTION: cls for cls in (C.PriorConfig, C.PermuteConfig, C.MorphConfig, C.BaselineConfig,
                                         C.ExplorerConfig)}  # --set's first key: the config it reaches
SECTION_NOTEBOOK = {"prior": "01", "permute": "02", "morph": "03", "baseline": "04", "explorer": "06"}  # builds it
COVERED = {"seed": "SEED", "runtime.device": "DEVICE", "data.name": "DATASET", "model.depth": "DEPTH",
           "model.width": "WIDTH", "optim.epochs": "EPOCHS", "method": "METHOD", "ablation": "ABLATION",
           "setting": "SETTING", "gammas_eval": "GAMMAS_EVAL", "epoch_scale": "EPOCH_SCALE",
           "kicks": "KICKS", "individual_gammas": "INDIVIDUAL_GAMMAS",
           "prune_gammas": "PRUNE_GAMMAS", "criteria": "CRITERIA", "finetune_epochs": "FINETUNE_EPOCHS",
           "eval_images": "EVAL_IMAGES", "k_max": "K_MAX", "record_gammas": "RECORD_GAMMAS"}  # config key: parameter


def split(overrides: dict[str, object]) -> dict[str, dict]:
    """{'morph.inr.hidden': 256, …} → {'morph': {'inr.hidden': 256}, …}; an unknown section is an error."""
    sets: dict[str, dict] = {}
    for key, value in overrides.items():
        section, _, rest = key.partition(".")
        if section not in SECTIONS or not rest:
            raise KitError(f"--set {key}=…: a pipeline override starts with the config it sets, one of "
                           f"{', '.join(SECTIONS)} (e.g. morph.inr.hidden=256, prior.optim.lr=0.05).")
        sets.setdefault(section, {})[rest] = value
    return sets


def check_set(section: str, values: dict, notebooks: list[Path], declared: dict, every: list) -> None:
    """--set section.… must reach its notebook through SET, and must not set a field that notebook takes as a
    parameter (the pipeline's own, such as SEED or a variant's METHOD, or one -p sets), which SET would override."""
    number = SECTION_NOTEBOOK[section]
    target = next((nb for nb in notebooks if nb.name[:2] == number), None)
    if target is None:
        return
    if "SET" not in declared[target]:
        raise KitError(f"--set {section}.…: {target.name} declares no SET parameter, so the override could not "
                       "reach it; add `SET = {}` to its parameters cell.")
    for key in values:
        parameter = COVERED.get(key)
        if parameter and parameter in declared[target]:
            owned = parameter in OWNED or parameter in per_run(every, target)
            hint = ("which the pipeline sets itself (its own option, or per run)" if owned
                    else f"so use -p {number}:{parameter} …")
            raise KitError(f"--set {section}.{key}: {target.name} takes it as its parameter {parameter}, {hint}.")


def per_run(every: list, notebook: Path) -> set[str]:
    """The parameters the pipeline sets per run of `notebook` (its variants' extra parameters, kit.pipeline)."""
    return {k for nb, _, extra in every if nb == notebook for k in extra}


OWNED = {"PROFILE", "DATASET", "SEED", "DEVICE", "RUN_DIR", "OUT_DIR", "SET"}  # set by the pipeline itself


def check_params(params: list[tuple[str, object]], every: list, declared: dict, profile: str = "quick",
                 sets: dict[str, dict] | None = None) -> dict[Path, dict]:
    """{notebook: {NAME: value}} for -p NAME VALUE (every notebook declaring NAME) or -p NN:NAME VALUE, each value
    checked for the profile's config (with the --set values `sets` of that notebook's section)."""
    chosen: dict[Path, dict] = {}
    for target, value in params:
        number, _, name = target.rpartition(":")
        if name in OWNED:
            raise KitError(f"-p {name}: the pipeline sets {name} itself; use its own option "
                           "(--profile, --dataset, --seed, --device, --out, --set).")
        hits = [nb for nb in declared if name in declared[nb] and (not number or nb.name[:2] == number)]
        if not hits:
            raise KitError(f"-p {target}: no notebook{' numbered ' + number if number else ''} declares a parameter "
                           f"{name!r}; the notebooks' parameters are listed in their parameters cells.")
        for nb in hits:
            owned = sorted(per_run(every, nb))
            if name in owned:
                raise KitError(f"-p {name}: the pipeline sets {name} per run of {nb.stem} ({', '.join(owned)}); "
                               "run that notebook with papermill yourself to choose it.")
            _check_value(target, value, nb, declared[nb][name], profile, sets or {})
            chosen.setdefault(nb, {})[name] = value
    return chosen


def _check_value(target: str, value: object, notebook: Path, parameter: dict, profile: str, sets: dict) -> None:
    """One sentence when -p's `value` would fail in `notebook`, whose parameters cell declares `parameter`
    (papermill's inspect_notebook: name, default as source text)."""
    name, said = parameter["name"], f"-p {target} {json.dumps(value, ensure_ascii=False)}"
    section = next((s for s, number in SECTION_NOTEBOOK.items() if number == notebook.name[:2]), None)
    key = next((k for k, p in COVERED.items() if p == name and section and _is_field(SECTIONS[section], k)), None)
    if key is not None:
        try:
            C.build(SECTIONS[section], profile, {**sets.get(section, {}), key: value})
        except KitError as err:
            raise KitError(f"{said}: {str(err)[:1].lower()}{str(err)[1:]}") from None
        return
    try:
        default = ast.literal_eval(parameter.get("default") or "None")
    except (ValueError, SyntaxError):
        return  # a default computed by an expression: no type to hold the value to
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,), tuple: (list,),
             dict: (dict,)}
    expected = kinds.get(type(default))
    if value is None or expected is None:
        return
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise KitError(f"{said}: {notebook.stem} declares {name} = {parameter['default']}, so it takes a "
                       f"{type(default).__name__}, not a {type(value).__name__} (VALUE is JSON: 3, 0.5, true, "
                       '"text", [1, 2]).')


def _is_field(cls: type, dotted: str) -> bool:
    """Whether `dotted` (e.g. 'optim.epochs') names a field of the config dataclass `cls`."""
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = typing.get_type_hints(cls)[part]
    return True
