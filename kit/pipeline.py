"""Runs the numbered notebooks headlessly with papermill, in order of their number, resuming where it stopped.

    python -m kit pipeline --profile quick --dataset fashion-mnist --out results/<run> [--seeds N] [--force]

Each notebook `notebooks/NN_name.ipynb` is executed into `results/<run>/NN_name/NN_name.ipynb`
(the executed notebook is the lab record) and writes its artifacts beside it. A notebook gets,
among PROFILE, DATASET, SEED, DEVICE, OUT_DIR (its own folder) and RUN_DIR (the run's folder),
those it declares in its `parameters` cell. A notebook with `variants` runs once per variant, each into its own
sub-folder (notebook 03: HTTY and NeuMeta, and in `full`/`paper` ablations, the block-count sweep and 3× epochs,
into `03_incremental_metamorphosis/<variant>/`). `--seeds N` runs HTTY and NeuMeta over seeds SEED … SEED+N−1
(into `htty-s<seed>/` etc. when N > 1); by default 3 in `full`/`paper` and 1 elsewhere; the other rows run once.

    python -m kit pipeline … --set morph.inr.hidden=256 prior.optim.lr=0.05 -p EPOCH_SCALE 3 -p 04:CRITERIA '["l1"]'

`--set section.field=value` reaches the notebook that builds that config (prior: 01, permute: 02, morph: 03,
baseline: 04, explorer: 06) as its `SET` parameter, checked like `train-prior --set` before any work; `-p NAME
VALUE` (or `-p NN:NAME VALUE`) sets a notebook parameter of every notebook declaring it (of notebook NN only).
Relative paths (`--out`) are taken from the project root, as everywhere in the kit.

Skip-if-complete (kit.stamps): a run that succeeds leaves `.pipeline-stamp.json` in its folder; a later invocation
skips it while its parameters, its notebook's source and its upstream runs' stamp ids are unchanged *and* every
file it wrote is there with the digest recorded. So an interrupted or re-invoked pipeline resumes where it stopped,
rerunning notebook 01 reruns everything after it, and a deleted checkpoint is rebuilt; with `--only`, the upstream
stamps are those on disk. `--force` reruns everything.

Nothing good is lost: a folder holding a run of another profile, dataset or seed is refused before anything is
touched; a notebook executes into a hidden file, and only success replaces the previous executed notebook and stamp
(a failure is kept as `NN_name.failed.ipynb`, the previous run's files stay as they were).

Cell output streams to the terminal; the first failing run stops the pipeline with its name and cell.
`pipeline.json` in the run folder records each run (status ok, skipped or failed), merged across invocations.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kit import config as C
from kit import io, stamps
from kit.errors import KitError
from kit.runtime import PROJECT_ROOT, project_path, provenance

NOTEBOOKS = PROJECT_ROOT / "notebooks"
STAMP = stamps.STAMP
_NUMBERED = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
SECTIONS = {cls.SECTION: cls for cls in (C.PriorConfig, C.PermuteConfig, C.MorphConfig, C.BaselineConfig,
                                         C.ExplorerConfig)}  # --set's first key: the config it reaches
SEEDS = {"full": 3, "paper": 3}  # default seeds of HTTY and NeuMeta per profile (1 elsewhere); ablation rows run one


def variants(stem: str, profile: str, seed: int = 0, seeds: int | None = None,
             sets: dict[str, dict] | None = None) -> list[tuple[str, dict]]:
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
    from kit import metamorph, models
    sets = sets or {}  # --set overrides per config section (the blocks may be chosen by morph.setting)
    prior, morph = C.build(C.PriorConfig, profile, sets.get("prior")), C.build(C.MorphConfig, profile, sets.get("morph"))
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
        force: bool = False, overrides: dict[str, str] | None = None,
        params: list[tuple[str, object]] | None = None) -> list[dict]:
    """Execute the numbered notebooks (or those whose number is in `only`), skipping the runs that are complete
    (kit.stamps) unless `force`; returns one record per run.
    dataset=None leaves each notebook on its profile's dataset (e.g. CIFAR-100 for `paper`);
    seeds=None runs HTTY and NeuMeta over the profile's default number of seeds (SEEDS);
    overrides {'section.field…': value} (section: prior | permute | morph | baseline | explorer) reach the notebook
    that builds that config as its SET parameter; params [('NAME' or 'NN:NAME', value)] set a notebook parameter
    of every notebook that declares it (NN: of that notebook only). Both are part of each run's stamp.
    Everything is checked before anything in `out` is touched."""
    import papermill as pm  # imported here: `import kit` stays light

    from kit.runtime import pick_device
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise KitError(f"--timeout is the seconds allowed per cell and must be a positive integer; got {timeout!r}.")
    sets = split_overrides(overrides or {})
    prior = C.build(C.PriorConfig, profile, {**sets.get("prior", {}), "data.name": dataset, "runtime.device": device})
    for section, values in sets.items():  # every --set key checked before any work
        C.build(SECTIONS[section], profile, values)
    pick_device(device)
    out = io.writable_dir(project_path(out), "run folder")
    notebooks = discover(folder)
    if only and not any(p.name[:2] in only for p in notebooks):
        raise KitError(f"No notebook numbered {', '.join(only)} in {folder}.")
    every = [(nb, sub, extra) for nb in notebooks
             for sub, extra in variants(nb.stem, profile, seed, seeds, sets)]
    runs = [r for r in every if not only or r[0].name[:2] in only]  # `every` still names the upstream runs
    declared = {nb: pm.inspect_notebook(str(nb)) for nb in notebooks}
    extra_params = _check_params(params or [], every, declared)
    for section in sets:
        lacking = [nb.name for nb in notebooks if _builds(nb, SECTIONS[section]) and "SET" not in declared[nb]]
        if lacking:
            raise KitError(f"--set {section}.…: {', '.join(lacking)} builds the {section} config but declares no SET "
                           "parameter, so the override could not reach it; add `SET = {}` to its parameters cell.")
    identity = {"profile": profile, "dataset": prior.data.name, "seed": seed}
    stamps.check_identity(out, identity)  # a run folder of another profile / dataset / seed: refused, untouched
    header = {**identity, "seeds": SEEDS.get(profile, 1) if seeds is None else seeds, "device": device,
              "force": force, "set": overrides or {}, "params": [list(p) for p in params or []]}
    offered = {"PROFILE": profile, "DATASET": dataset, "SEED": seed, "DEVICE": device, "RUN_DIR": str(out)}
    records: list[dict] = []
    for i, (notebook, sub, extra) in enumerate(runs, 1):
        name = _name(notebook, sub)
        nb_out = out / name
        executed = nb_out / notebook.name
        section = next((s for s, cls in SECTIONS.items() if s in sets and _builds(notebook, cls)), None)
        mine = {**offered, **extra_params.get(notebook, {}), **extra, "OUT_DIR": str(nb_out),
                **({"SET": sets[section]} if section else {})}
        params_nb = {k: v for k, v in mine.items() if k in declared[notebook]}
        upstream = {_name(nb, s): (stamps.read(out / _name(nb, s)) or {}).get("id")
                    for nb, s, _ in every if int(nb.name[:2]) < int(notebook.name[:2])}
        wanted = {"parameters": stamps.portable(params_nb, out), "notebook_sha256": stamps.sha256(notebook),
                  "upstream": upstream}
        stamp, why = (None, "--force") if force else stamps.complete(nb_out, wanted)
        if stamp is not None:
            records.append(_record(name, "skipped", 0, stamp["parameters"], executed, out))
            _write_summary(out, header, records, every)
            print(f"[pipeline {i}/{len(runs)}] {name} up to date, skipped", flush=True)
            continue
        print(f"[pipeline {i}/{len(runs)}] {name} ({why})  ({', '.join(f'{k}={v}' for k, v in params_nb.items())})",
              flush=True)
        try:
            seconds = _execute(notebook, executed, params_nb, timeout, name)
        except KitError:
            failed = executed.with_name(executed.stem + stamps.FAILED)
            records.append(_record(name, "failed", 0, wanted["parameters"], failed, out))
            _write_summary(out, header, records, every)
            raise
        stamps.write(nb_out, wanted, executed, uuid.uuid4().hex, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        records.append(_record(name, "ok", seconds, wanted["parameters"], executed, out))
        _write_summary(out, header, records, every)
        print(f"[pipeline {i}/{len(runs)}] {name} done in {seconds:.0f} s -> {nb_out}", flush=True)
    return records


def _execute(notebook: Path, executed: Path, params: dict, timeout: int | None, name: str) -> float:
    """Run one notebook into `executed` and return the seconds it took; a KitError says where it failed.

    It executes into a hidden file beside `executed`: success replaces the previous executed notebook, failure
    leaves it (and the previous run's stamp and outputs) as they were and keeps the failed one as NN_name.failed.ipynb.
    Kernels talk over IPC sockets where the OS has them: no TCP port is opened (and ipykernel has no reason to
    warn, once per notebook, that its TCP traffic is unencrypted)."""
    import nbclient.exceptions as nbx
    import papermill as pm
    executed.parent.mkdir(parents=True, exist_ok=True)
    running = executed.with_name("." + executed.stem + stamps.RUNNING)
    failed = executed.with_name(executed.stem + stamps.FAILED)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), str(running), parameters=params, cwd=str(notebook.parent),
                            kernel_name="python3", progress_bar=False, log_output=False,
                            stdout_file=sys.stdout, stderr_file=sys.stderr, execution_timeout=timeout,
                            **_kernel_transport())
    except (nbx.CellTimeoutError, nbx.DeadKernelError, pm.PapermillExecutionError) as err:
        if running.exists():
            os.replace(running, failed)
        if isinstance(err, pm.PapermillExecutionError):
            cell = err.cell_index + 1 - (1 if params and err.cell_index > _parameters_cell(notebook) else 0)
            lines = (err.source or "").strip().splitlines()
            why = f"failed in cell {cell} (`{lines[0] if lines else ''}`) with {err.ename}: {err.evalue.strip()}"
        else:
            why = "stopped: " + ("a cell ran past --timeout" if isinstance(err, nbx.CellTimeoutError)
                                 else "its kernel died (out of memory?)")
        raise KitError(f"Notebook {name} {why}; the executed notebook is {failed} (the previous run's "
                        "files are untouched).") from None
    except BaseException:
        running.unlink(missing_ok=True)
        raise
    os.replace(running, executed)
    failed.unlink(missing_ok=True)  # an older failure of this run is superseded
    return time.perf_counter() - t0


def _kernel_transport() -> dict:
    """papermill keyword arguments that start the kernel on IPC sockets (POSIX); {} (TCP on localhost) elsewhere."""
    if os.name != "posix":
        return {}
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"  # sockets are files in Jupyter's runtime folder, readable by this user only
    return {"kernel_manager_class": IPCKernelManager}


def _name(notebook: Path, sub: str) -> str:
    """A run's name and its folder relative to the run folder: NN_name or NN_name/<variant>."""
    return f"{notebook.stem}/{sub}" if sub else notebook.stem


def _parameters_cell(notebook: Path) -> int:
    """Index of the cell tagged 'parameters' (papermill injects its overrides right after it)."""
    import nbformat
    cells = nbformat.read(notebook, as_version=4).cells
    return next((i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])), -1)


def _record(name: str, status: str, seconds: float, params: dict, executed: Path, out: Path) -> dict:
    return {"notebook": name, "status": status, "seconds": round(seconds, 1), "parameters": params,
            "executed": executed.relative_to(out).as_posix(),
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _write_summary(out: Path, header: dict, records: list[dict], every: list) -> None:
    """pipeline.json: this invocation's settings and a record per run, merged with the records an earlier
    invocation left for runs this one did not reach (e.g. with --only), in pipeline order."""
    try:
        earlier = {r["notebook"]: r for r in json.loads((out / "pipeline.json").read_text())["notebooks"]}
    except (OSError, ValueError, KeyError, TypeError):
        earlier = {}
    now = {r["notebook"]: r for r in records}
    order = [_name(nb, sub) for nb, sub, _ in every]
    merged = [now.get(n) or earlier[n] for n in order if n in now or n in earlier]
    io.write_json({**header, "notebooks": merged, "provenance": provenance()}, out / "pipeline.json")


def split_overrides(overrides: dict[str, object]) -> dict[str, dict]:
    """{'morph.inr.hidden': 256, …} → {'morph': {'inr.hidden': 256}, …}; an unknown section is an error."""
    sets: dict[str, dict] = {}
    for key, value in overrides.items():
        section, _, rest = key.partition(".")
        if section not in SECTIONS or not rest:
            raise KitError(f"--set {key}=…: a pipeline override starts with the config it sets, one of "
                           f"{', '.join(SECTIONS)} (e.g. morph.inr.hidden=256, prior.optim.lr=0.05).")
        sets.setdefault(section, {})[rest] = value
    return sets


def _builds(notebook: Path, cls) -> bool:
    """Whether `notebook` builds config `cls` (it calls C.build(C.<cls>, …)): the notebook its --set reaches."""
    return f"C.build(C.{cls.__name__}," in notebook.read_text()


_OWNED = {"PROFILE", "DATASET", "SEED", "DEVICE", "RUN_DIR", "OUT_DIR", "SET"}  # set by the pipeline itself


def _check_params(params: list[tuple[str, object]], every: list, declared: dict) -> dict[Path, dict]:
    """{notebook: {NAME: value}} for -p NAME VALUE (every notebook declaring NAME) or -p NN:NAME VALUE."""
    chosen: dict[Path, dict] = {}
    for target, value in params:
        number, _, name = target.rpartition(":")
        if name in _OWNED:
            raise KitError(f"-p {name}: the pipeline sets {name} itself; use its own option "
                           "(--profile, --dataset, --seed, --device, --out, --set).")
        hits = [nb for nb in declared if name in declared[nb] and (not number or nb.name[:2] == number)]
        if not hits:
            raise KitError(f"-p {target}: no notebook{' numbered ' + number if number else ''} declares a parameter "
                           f"{name!r}; the notebooks' parameters are listed in their parameters cells.")
        for nb in hits:
            owned = sorted({k for n, _, extra in every if n == nb for k in extra})
            if name in owned:
                raise KitError(f"-p {name}: the pipeline sets {name} per run of {nb.stem} ({', '.join(owned)}); "
                               "run that notebook with papermill yourself to choose it.")
            chosen.setdefault(nb, {})[name] = value
    return chosen
