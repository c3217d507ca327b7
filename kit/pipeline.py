"""Runs the numbered notebooks headlessly with papermill, in order of their number.

    python -m kit pipeline --profile quick --dataset fashion-mnist --out results/<run>

Each notebook `notebooks/NN_name.ipynb` is executed into `results/<run>/NN_name/NN_name.ipynb`
(the executed notebook is the lab record) and writes its artifacts beside it. A notebook gets,
among PROFILE, DATASET, SEED, DEVICE, OUT_DIR (its own folder) and RUN_DIR (the run's folder),
those it declares in its `parameters` cell. A notebook with `variants` runs once per variant, each into its own
sub-folder (notebook 03: HTTY and NeuMeta, and in `full`/`paper` seeds, ablations and the block-count sweep,
into `03_incremental_metamorphosis/<variant>/`). Cell output streams to the terminal; the first failing
notebook stops the run with its name and cell. `pipeline.json` in the run folder records what ran.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from kit import io
from kit.errors import KitError
from kit.runtime import PROJECT_ROOT, provenance

NOTEBOOKS = PROJECT_ROOT / "notebooks"
_NUMBERED = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
SEEDS = {"full": 3, "paper": 3}  # seeds of HTTY and NeuMeta per profile (1 elsewhere); ablation rows run one


def variants(stem: str, profile: str, seed: int = 0) -> list[tuple[str, dict]]:
    """[(sub-folder, extra parameters)]: the runs the pipeline makes of a notebook ([('', {})]: one, in its folder).

    Notebook 03 runs HTTY and NeuMeta; in `full` and `paper` each over SEEDS seeds, plus one run per ablation row
    of paper 000 Table 1, NeuMeta on the first k metamorphic blocks for every smaller k (the Fig. 4 sweep; HTTY's
    own stages give its curve) and HTTY with 3× the epochs (Fig. 6's extended training)."""
    if stem != "03_incremental_metamorphosis":
        return [("", {})]
    from kit import config as C
    from kit import metamorph, models
    seeds = SEEDS.get(profile, 1)
    tag = (lambda s: f"-s{s}") if seeds > 1 else (lambda s: "")
    runs = [(f"{m}{tag(seed + i)}", {"METHOD": m, "SEED": seed + i}) for m in ("htty", "neumeta") for i in range(seeds)]
    if profile in SEEDS:
        runs += [(f"htty-no-{a}", {"METHOD": "htty", "ABLATION": a, "SEED": seed}) for a in C.ABLATIONS if a != "none"]
        prior, morph = C.build(C.PriorConfig, profile), C.build(C.MorphConfig, profile)
        with_blocks = metamorph.blocks_for(models.resnet(prior.model.depth, prior.model.width), morph.setting)
        runs += [(f"neumeta-blocks{k}", {"METHOD": "neumeta", "SETTING": f"{morph.setting}:{k}", "SEED": seed})
                 for k in range(1, len(with_blocks))]
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
        folder: str | Path = NOTEBOOKS, timeout: int | None = None) -> list[dict]:
    """Execute the numbered notebooks (or those whose number is in `only`); returns one record each.
    dataset=None leaves each notebook on its profile's dataset (e.g. CIFAR-100 for `paper`)."""
    import nbclient.exceptions as nbx
    import papermill as pm  # imported here: `import kit` stays light

    from kit import config as C
    from kit.runtime import pick_device
    C.build(C.PriorConfig, profile, {"data.name": dataset, "runtime.device": device})  # names checked before any work
    pick_device(device)
    out = Path(out).resolve()
    notebooks = discover(folder)
    if only:
        notebooks = [p for p in notebooks if p.name[:2] in only]
        if not notebooks:
            raise KitError(f"No notebook numbered {', '.join(only)} in {folder}.")
    offered = {"PROFILE": profile, "DATASET": dataset, "SEED": seed, "DEVICE": device, "RUN_DIR": str(out)}
    records: list[dict] = []
    runs = [(nb, sub, extra) for nb in notebooks for sub, extra in variants(nb.stem, profile, seed)]
    for i, (notebook, sub, extra) in enumerate(runs, 1):
        name = f"{notebook.stem}/{sub}" if sub else notebook.stem
        nb_out = out / name
        declared = pm.inspect_notebook(str(notebook))
        params = {k: v for k, v in {**offered, **extra, "OUT_DIR": str(nb_out)}.items() if k in declared}
        print(f"[pipeline {i}/{len(runs)}] {name}  ({', '.join(f'{k}={v}' for k, v in params.items())})", flush=True)
        executed = nb_out / notebook.name
        nb_out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(notebook), str(executed), parameters=params, cwd=str(notebook.parent),
                                kernel_name="python3", progress_bar=False, log_output=False,
                                stdout_file=sys.stdout, stderr_file=sys.stderr, execution_timeout=timeout)
        except (nbx.CellTimeoutError, nbx.DeadKernelError, pm.PapermillExecutionError) as err:
            records.append({"notebook": name, "status": "failed", "seconds": time.perf_counter() - t0})
            _write_summary(out, profile, dataset, seed, device, records)
            if isinstance(err, pm.PapermillExecutionError):
                cell = err.cell_index + 1 - (1 if params and err.cell_index > _parameters_cell(notebook) else 0)
                lines = (err.source or "").strip().splitlines()
                why = f"failed in cell {cell} (`{lines[0] if lines else ''}`) with {err.ename}: {err.evalue.strip()}"
            else:
                why = "stopped: " + ("a cell ran past --timeout" if isinstance(err, nbx.CellTimeoutError)
                                     else "its kernel died (out of memory?)")
            raise KitError(f"Notebook {name} {why}; the executed notebook is {executed}.") from None
        seconds = time.perf_counter() - t0
        records.append({"notebook": name, "status": "ok", "seconds": round(seconds, 1),
                        "parameters": params, "executed": str(executed)})
        _write_summary(out, profile, dataset, seed, device, records)
        print(f"[pipeline {i}/{len(runs)}] {name} done in {seconds:.0f} s -> {nb_out}", flush=True)
    return records


def _parameters_cell(notebook: Path) -> int:
    """Index of the cell tagged 'parameters' (papermill injects its overrides right after it)."""
    import nbformat
    cells = nbformat.read(notebook, as_version=4).cells
    return next((i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])), -1)


def _write_summary(out: Path, profile, dataset, seed, device, records) -> None:
    io.write_json({"profile": profile, "dataset": dataset, "seed": seed, "device": device,
                   "notebooks": records, "provenance": provenance()}, out / "pipeline.json")
