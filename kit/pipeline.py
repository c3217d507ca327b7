"""Runs the numbered notebooks headlessly with papermill, in order of their number, resuming where it stopped.

    python -m kit pipeline --profile quick --dataset fashion-mnist --out results/<run> [--seeds N] [--force]

Each notebook `notebooks/NN_name.ipynb` is executed into `results/<run>/NN_name/NN_name.ipynb`
(the executed notebook is the lab record) and writes its artifacts beside it. A notebook gets,
among PROFILE, DATASET, SEED, DEVICE, OUT_DIR (its own folder) and RUN_DIR (the run's folder),
those it declares in its `parameters` cell. A notebook with `variants` runs once per variant, each into its own
sub-folder (notebook 03: HTTY and NeuMeta, and in `full`/`paper` ablations, the block-count sweep and 3× epochs,
into `03_incremental_metamorphosis/<variant>/`). `--seeds N` runs HTTY and NeuMeta over seeds SEED … SEED+N−1
(into `htty-s<seed>/` etc. when N > 1); by default 3 in `full`/`paper` and 1 elsewhere; the other rows run once.

Skip-if-complete: a run that succeeds leaves `.pipeline-stamp.json` in its folder (its parameters, the sha256 of
its notebook, a fresh id, the ids of its upstream runs' stamps, the finish time). A later invocation skips a run
whose stamp still matches: same parameters, same notebook source, its metrics.json present, and the same stamp ids
for every run of every lower-numbered notebook (notebook 03's variants do not depend on one another). So an
interrupted or re-invoked pipeline resumes where it stopped, and rerunning notebook 01 reruns everything after it;
with `--only`, the upstream stamps are those on disk. A run's stamp is deleted before it executes, so a failure
never passes for completion. `--force` reruns everything.

Cell output streams to the terminal; the first failing run stops the pipeline with its name and cell.
`pipeline.json` in the run folder records each run: status ok, skipped (seconds 0) or failed.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kit import io
from kit.errors import KitError
from kit.runtime import PROJECT_ROOT, provenance

NOTEBOOKS = PROJECT_ROOT / "notebooks"
STAMP = ".pipeline-stamp.json"  # hidden: results.morph_runs and friends glob for metrics.json, not for this
_NUMBERED = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
SEEDS = {"full": 3, "paper": 3}  # default seeds of HTTY and NeuMeta per profile (1 elsewhere); ablation rows run one


def variants(stem: str, profile: str, seed: int = 0, seeds: int | None = None) -> list[tuple[str, dict]]:
    """[(sub-folder, extra parameters)]: the runs the pipeline makes of a notebook ([('', {})]: one, in its folder).

    Notebook 03 runs the null control (blocks removed, tail retrained; evaluated once: it has no γ), HTTY, NeuMeta
    and the kit's 'prefit' recipe over `seeds` seeds (None: SEEDS's default for the profile); the null control, HTTY
    and NeuMeta on the setting's first block alone (paper 000 Table 2); plus, in `full` and `paper`, NeuMeta on the
    first k metamorphic blocks for every smaller k (the Fig. 4 sweep; HTTY's own stages give its curve), one run per
    ablation row of paper 000 Table 1 and of the prefit recipe, and HTTY with 3× the epochs (Fig. 6)."""
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise KitError(f"The number of seeds must be an integer ≥ 1; got {seeds!r}.")
    seeds = SEEDS.get(profile, 1) if seeds is None else seeds
    tag = (lambda s: f"-s{s}") if seeds > 1 else (lambda s: "")
    if stem == "07_why_blocks_switch_off":  # the study reads the first seed's runs of notebook 03
        return [("", {"PAPER": f"htty{tag(seed)}", "OURS": f"prefit{tag(seed)}", "NULL": f"null{tag(seed)}",
                      "BASELINE": f"neumeta{tag(seed)}"})]
    if stem != "03_incremental_metamorphosis":
        return [("", {})]
    from kit import config as C
    from kit import metamorph, models
    prior, morph = C.build(C.PriorConfig, profile), C.build(C.MorphConfig, profile)
    # the null control first (its γ-independent accuracy is one evaluation), so every later run's plot can draw it
    runs = [(f"null{tag(seed + i)}", {"METHOD": "null", "SEED": seed + i, "GAMMAS_EVAL": [0.0]}) for i in range(seeds)]
    runs.append(("null-blocks1", {"METHOD": "null", "SETTING": f"{morph.setting}:1", "GAMMAS_EVAL": [0.0], "SEED": seed}))
    runs += [(f"{m}{tag(seed + i)}", {"METHOD": m, "SEED": seed + i}) for m in ("htty", "neumeta", "prefit")
             for i in range(seeds)]
    with_blocks = metamorph.blocks_for(models.resnet(prior.model.depth, prior.model.width), morph.setting)
    sweep = range(1, len(with_blocks)) if profile in SEEDS else [1][:len(with_blocks) - 1]  # k < all blocks
    # one block (paper 000 Table 2) in every profile; HTTY's stages give its Fig. 4 curve, NeuMeta sweeps k
    # runs on fewer blocks feed Table 2 and Fig. 4, which read only the table's γ (each evaluated γ costs a pass
    # over the test split: ~1 min of the quick profile's 25 per run)
    table = sorted({*C.TABLE_GAMMAS, *morph.select_gammas})
    runs.append(("htty-blocks1", {"METHOD": "htty", "SETTING": f"{morph.setting}:1", "GAMMAS_EVAL": table, "SEED": seed}))
    runs += [(f"neumeta-blocks{k}", {"METHOD": "neumeta", "SETTING": f"{morph.setting}:{k}", "GAMMAS_EVAL": table,
                                     "SEED": seed}) for k in sweep]
    if profile in SEEDS:
        runs += [(f"{m}-no-{a}", {"METHOD": m, "ABLATION": a, "SEED": seed}) for m in ("htty", "prefit")
                 for a in C.ABLATIONS[m] if a != "none"]
        runs.append(("htty-x3", {"METHOD": "htty", "EPOCH_SCALE": 3, "SEED": seed}))
    return runs


def discover(folder: str | Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks of `folder`, in order of their number."""
    found = sorted(p for p in Path(folder).glob("*.ipynb") if _NUMBERED.match(p.name))
    if not found:
        raise KitError(f"No numbered notebooks (NN_name.ipynb) in {folder}; run from a checkout of the kit.")
    return found


def run(profile: str = "quick", dataset: str | None = None, out: str | Path = "results/quick",
        device: str = "auto", seed: int = 0, only: list[str] | None = None,
        folder: str | Path = NOTEBOOKS, timeout: int | None = None, seeds: int | None = None,
        force: bool = False) -> list[dict]:
    """Execute the numbered notebooks (or those whose number is in `only`), skipping the runs whose stamp says
    they are up to date unless `force`; returns one record per run.
    dataset=None leaves each notebook on its profile's dataset (e.g. CIFAR-100 for `paper`);
    seeds=None runs HTTY and NeuMeta over the profile's default number of seeds (SEEDS)."""
    import nbclient.exceptions as nbx
    import papermill as pm  # imported here: `import kit` stays light

    from kit import config as C
    from kit.runtime import pick_device
    C.build(C.PriorConfig, profile, {"data.name": dataset, "runtime.device": device})  # names checked before any work
    pick_device(device)
    out = Path(out).resolve()  # OUT_DIR and RUN_DIR are absolute, so stamps match however `out` is spelled
    notebooks = discover(folder)
    if only and not any(p.name[:2] in only for p in notebooks):
        raise KitError(f"No notebook numbered {', '.join(only)} in {folder}.")
    every = [(nb, sub, extra) for nb in notebooks for sub, extra in variants(nb.stem, profile, seed, seeds)]
    runs = [r for r in every if not only or r[0].name[:2] in only]  # `every` still names the upstream runs
    header = {"profile": profile, "dataset": dataset, "seed": seed,
              "seeds": SEEDS.get(profile, 1) if seeds is None else seeds, "device": device, "force": force}
    offered = {"PROFILE": profile, "DATASET": dataset, "SEED": seed, "DEVICE": device, "RUN_DIR": str(out)}
    records: list[dict] = []
    for i, (notebook, sub, extra) in enumerate(runs, 1):
        name = _name(notebook, sub)
        nb_out = out / name
        executed = nb_out / notebook.name
        declared = pm.inspect_notebook(str(notebook))
        params = {k: v for k, v in {**offered, **extra, "OUT_DIR": str(nb_out)}.items() if k in declared}
        upstream = {_name(nb, s): (_read_stamp(out / _name(nb, s)) or {}).get("id")
                    for nb, s, _ in every if int(nb.name[:2]) < int(notebook.name[:2])}
        wanted = {"parameters": json.loads(json.dumps(params)), "notebook_sha256": _sha256(notebook),
                  "upstream": upstream}  # JSON round trip: what the stamp will hold (tuples become lists, …)
        stamp = None if force else _read_stamp(nb_out)
        if stamp and all(stamp.get(k) == v for k, v in wanted.items()) and (nb_out / "metrics.json").is_file():
            records.append({"notebook": name, "status": "skipped", "seconds": 0,
                            "parameters": stamp["parameters"], "executed": str(executed)})
            _write_summary(out, header, records)
            print(f"[pipeline {i}/{len(runs)}] {name} up to date, skipped", flush=True)
            continue
        print(f"[pipeline {i}/{len(runs)}] {name}  ({', '.join(f'{k}={v}' for k, v in params.items())})", flush=True)
        nb_out.mkdir(parents=True, exist_ok=True)
        (nb_out / STAMP).unlink(missing_ok=True)  # until it succeeds again, this run is not complete
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(notebook), str(executed), parameters=params, cwd=str(notebook.parent),
                                kernel_name="python3", progress_bar=False, log_output=False,
                                stdout_file=sys.stdout, stderr_file=sys.stderr, execution_timeout=timeout)
        except (nbx.CellTimeoutError, nbx.DeadKernelError, pm.PapermillExecutionError) as err:
            records.append({"notebook": name, "status": "failed", "seconds": round(time.perf_counter() - t0, 1),
                            "parameters": params, "executed": str(executed)})
            _write_summary(out, header, records)
            if isinstance(err, pm.PapermillExecutionError):
                cell = err.cell_index + 1 - (1 if params and err.cell_index > _parameters_cell(notebook) else 0)
                lines = (err.source or "").strip().splitlines()
                why = f"failed in cell {cell} (`{lines[0] if lines else ''}`) with {err.ename}: {err.evalue.strip()}"
            else:
                why = "stopped: " + ("a cell ran past --timeout" if isinstance(err, nbx.CellTimeoutError)
                                     else "its kernel died (out of memory?)")
            raise KitError(f"Notebook {name} {why}; the executed notebook is {executed}.") from None
        seconds = time.perf_counter() - t0
        io.write_json({**wanted, "id": uuid.uuid4().hex,
                       "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}, nb_out / STAMP)
        records.append({"notebook": name, "status": "ok", "seconds": round(seconds, 1),
                        "parameters": params, "executed": str(executed)})
        _write_summary(out, header, records)
        print(f"[pipeline {i}/{len(runs)}] {name} done in {seconds:.0f} s -> {nb_out}", flush=True)
    return records


def _name(notebook: Path, sub: str) -> str:
    """A run's name and its folder relative to the run folder: NN_name or NN_name/<variant>."""
    return f"{notebook.stem}/{sub}" if sub else notebook.stem


def _read_stamp(folder: Path) -> dict | None:
    """The stamp a successful run left in `folder`; None when there is none or it cannot be read (rerun it)."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and "id" in stamp else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parameters_cell(notebook: Path) -> int:
    """Index of the cell tagged 'parameters' (papermill injects its overrides right after it)."""
    import nbformat
    cells = nbformat.read(notebook, as_version=4).cells
    return next((i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])), -1)


def _write_summary(out: Path, header: dict, records: list[dict]) -> None:
    io.write_json({**header, "notebooks": records, "provenance": provenance()}, out / "pipeline.json")
