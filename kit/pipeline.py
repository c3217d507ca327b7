"""Runs the numbered notebooks headlessly with papermill, in order of their number, resuming where it stopped.

    python -m kit pipeline --profile quick --dataset fashion-mnist --out results/<run> [--seeds N] [--force]

Each notebook `notebooks/NN_name.ipynb` is executed into `results/<run>/NN_name/NN_name.ipynb`
(the executed notebook is the lab record) and writes its artifacts beside it. A notebook gets,
among PROFILE, DATASET, SEED, DEVICE, OUT_DIR (its own folder) and RUN_DIR (the run's folder),
those it declares in its `parameters` cell. A notebook with `variants` runs once per variant, each into its own
sub-folder (notebook 03: the null control, HTTY, NeuMeta and the pre-fit recipe, and in `ablations`/`paper` the
ablation rows, the block-count sweep and 3× epochs, into `03_incremental_metamorphosis/<variant>/`). `--seeds N`
runs those four and notebook 04's baselines over seeds SEED … SEED+N−1 (notebook 03 into `htty-s<seed>/` etc. when
N > 1); by default 3 in `full`/`paper` and 1 elsewhere; the prior, its smoothing and the other rows run once.

    python -m kit pipeline … --set morph.inr.hidden=256 prior.optim.lr=0.05 -p 04:CRITERIA '["l1"]'

`--set section.field=value` reaches the notebook that builds that config (prior: 01, permute: 02, morph: 03,
baseline: 04, explorer: 06) as its `SET` parameter, checked like `train-prior --set` before any work; `-p NAME
VALUE` (or `-p NN:NAME VALUE`) sets a notebook parameter of every notebook declaring it (of notebook NN only);
see kit.overrides for what each may not set.
Relative paths (`--out`) are taken from the project root, as everywhere in the kit.

Skip-if-complete (kit.stamps): a run that succeeds leaves `.pipeline-stamp.json` in its folder; a later invocation
skips it while its parameters, its notebook's source and its upstream runs' stamp ids are unchanged *and* every
file it wrote is there with the digest recorded. So an interrupted or re-invoked pipeline resumes where it stopped,
rerunning notebook 01 reruns everything after it, and a deleted checkpoint is rebuilt; with `--only`, the upstream
stamps are those on disk (and their runs must be complete). `--force` reruns everything.

Nothing good is lost (kit.stamps): a folder holding a run of another profile, dataset or seed, or runs of another
number of seeds that this plan would leave beside its own, is refused before anything is touched; a notebook
executes in `<run>/.staging/<name>/` and only success moves it into place, in a journalled promote that a killed
pipeline's successor finishes (files a user added to the old folder are carried over), so a failure leaves the
previous run exactly as it was, with the failed executed notebook beside it as `NN_name.failed.ipynb`; rerunning
the same command resumes the attempt, and a later success of that run (or finding it up to date) tidies both away.
`--device` is not part of a run's stamp: where a run computes is in its provenance, not in what it is.

One writer per folder (kit.lock): the pipeline holds its run folder while it runs, so a second pipeline,
`train-prior` or a notebook run by hand into it is refused with one sentence naming this process, and a lock left
by a killed pipeline is taken over; its own notebooks' kernels are told apart by the token they inherit.

Cell output streams to the terminal (until its reader goes away, as with `| head`: the pipeline then goes on
silently); the first failing run stops the pipeline with its name, cell and the line that failed.
`pipeline.json` in the run folder records each run (status ok, skipped or failed), merged across invocations.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kit import config as C
from kit import io, lock, overrides as O, stamps, terminal
from kit.errors import KitError
from kit.runtime import PROJECT_ROOT, project_path, provenance

NOTEBOOKS = PROJECT_ROOT / "notebooks"
_NUMBERED = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
SEEDS = {"full": 3, "paper": 3}  # default number of seeds of the prior-dependent rows per profile (1 elsewhere)
ABLATION_PROFILES = ("ablations", "paper")  # profiles that add the ablation rows, the block sweep and HTTY ×3
EVERY_RECIPE_PROFILES = ("smoke", *ABLATION_PROFILES)  # profiles that also run the pre-fit recipe; quick and full run
# only its successor, the block-wise recipe, to stay within their time budgets


def variants(stem: str, profile: str, seed: int = 0, seeds: int | None = None,
             sets: dict[str, dict] | None = None) -> list[tuple[str, dict]]:
    """[(sub-folder, extra parameters)]: the runs the pipeline makes of a notebook ([('', {})]: one, in its folder).

    The prior (notebook 01) and its smoothing (02) are made once. Over `seeds` seeds (None: SEEDS's default for
    the profile): notebook 03's null control (blocks removed, tail retrained; evaluated once: it has no γ), HTTY,
    NeuMeta and the kit's 'blockwise' recipe (and in EVERY_RECIPE_PROFILES its predecessor 'prefit'), one run each
    per seed, and notebook 04's individually trained networks
    and pruning (one run holding every seed's rows). Once: the null control, HTTY and NeuMeta on the setting's
    first block alone (paper 000 Table 2). In ABLATION_PROFILES also: NeuMeta on the first k metamorphic blocks
    for every smaller k (the Fig. 4 sweep; HTTY's own stages give its curve), one run per ablation row of
    paper 000 Table 1 and of the kit's two recipes, and HTTY with 3× the epochs (Fig. 6)."""
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise KitError(f"The number of seeds must be an integer ≥ 1; got {seeds!r}.")
    seeds = SEEDS.get(profile, 1) if seeds is None else seeds
    tag = (lambda s: f"-s{s}") if seeds > 1 else (lambda s: "")
    if stem == "07_why_blocks_switch_off":  # the study reads the first seed's runs of notebook 03
        return [("", {"PAPER": f"htty{tag(seed)}", "OURS": f"blockwise{tag(seed)}", "WIDTHS": f"blockwise{tag(seed)}",
                      "NULL": f"null{tag(seed)}", "BASELINE": f"neumeta{tag(seed)}"})]
    if stem == "04_baselines":
        return [("", {"SEEDS": seeds})]
    if stem != "03_incremental_metamorphosis":
        return [("", {})]
    from kit import metamorph, models
    sets = sets or {}  # --set overrides per config section (the blocks may be chosen by morph.setting)
    prior, morph = C.build(C.PriorConfig, profile, sets.get("prior")), C.build(C.MorphConfig, profile, sets.get("morph"))
    # the null control first (its γ-independent accuracy is one evaluation), so every later run's plot can draw it
    runs = [(f"null{tag(seed + i)}", {"METHOD": "null", "SEED": seed + i, "GAMMAS_EVAL": [0.0]}) for i in range(seeds)]
    runs.append(("null-blocks1", {"METHOD": "null", "SETTING": f"{morph.setting}:1", "GAMMAS_EVAL": [0.0], "SEED": seed}))
    methods = ("htty", "neumeta", "blockwise") + (("prefit",) if profile in EVERY_RECIPE_PROFILES else ())
    runs += [(f"{m}{tag(seed + i)}", {"METHOD": m, "SEED": seed + i}) for m in methods for i in range(seeds)]
    with_blocks = metamorph.blocks_for(models.resnet(prior.model.depth, prior.model.width), morph.setting)
    ablations = profile in ABLATION_PROFILES
    sweep = range(1, len(with_blocks)) if ablations else [1][:len(with_blocks) - 1]  # k < all blocks
    # one block (paper 000 Table 2) in every profile; HTTY's stages give its Fig. 4 curve, NeuMeta sweeps k
    # runs on fewer blocks feed Table 2 and Fig. 4, which read only the table's γ (each evaluated γ costs a pass
    # over the test split: ~1 min of the quick profile's 25 per run)
    table = sorted({*C.TABLE_GAMMAS, *morph.select_gammas})
    runs.append(("htty-blocks1", {"METHOD": "htty", "SETTING": f"{morph.setting}:1", "GAMMAS_EVAL": table, "SEED": seed}))
    runs += [(f"neumeta-blocks{k}", {"METHOD": "neumeta", "SETTING": f"{morph.setting}:{k}", "GAMMAS_EVAL": table,
                                     "SEED": seed}) for k in sweep]
    if ablations:  # every recipe's ablation rows
        runs += [(f"{m}-no-{a}", {"METHOD": m, "ABLATION": a, "SEED": seed}) for m in ("htty", "prefit", "blockwise")
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
    Everything is checked before anything in `out` is touched, and `out` is locked (kit.lock) while it runs: a
    folder another process is writing is refused."""
    import papermill as pm  # imported here: `import kit` stays light

    from kit.runtime import pick_device
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise KitError(f"--timeout is the seconds allowed per cell and must be a positive integer; got {timeout!r}.")
    sets = O.split(overrides or {})
    prior = C.build(C.PriorConfig, profile, {**sets.get("prior", {}), "data.name": dataset, "runtime.device": device})
    for section, values in sets.items():  # every --set key checked before any work
        C.build(O.SECTIONS[section], profile, values)
    pick_device(device)
    out = io.writable_dir(project_path(out), "run folder")
    notebooks = discover(folder)
    if only and not any(p.name[:2] in only for p in notebooks):
        raise KitError(f"No notebook numbered {', '.join(only)} in {folder}.")
    every = [(nb, sub, extra) for nb in notebooks
             for sub, extra in variants(nb.stem, profile, seed, seeds, sets)]
    runs = [r for r in every if not only or r[0].name[:2] in only]  # `every` still names the upstream runs
    declared = {nb: pm.inspect_notebook(str(nb)) for nb in notebooks}
    extra_params = O.check_params(params or [], every, declared, profile, sets)
    for section in sets:
        O.check_set(section, sets[section], notebooks, declared, every)
    identity = {"profile": profile, "dataset": prior.data.name, "seed": seed}
    header = {**identity, "seeds": SEEDS.get(profile, 1) if seeds is None else seeds, "device": device,
              "force": force, "set": overrides or {}, "params": [list(p) for p in params or []]}
    offered = {"PROFILE": profile, "DATASET": dataset, "SEED": seed, "DEVICE": device, "RUN_DIR": str(out)}
    plan = []
    for notebook, sub, extra in runs:
        name = _name(notebook, sub)
        section = next((s for s in sets if notebook.name[:2] == O.SECTION_NOTEBOOK[s]), None)
        mine = {**offered, **extra_params.get(notebook, {}), **extra, "OUT_DIR": str(out / name),
                **({"SET": sets[section]} if section else {})}
        plan.append((notebook, name, {k: v for k, v in mine.items() if k in declared[notebook]}))
    # a run folder of another profile / dataset / seed / number of seeds: refused, untouched
    _check_folder(out, identity, header["seeds"], every, notebooks, sets)
    try:
        with lock.hold(out, "pipeline"):
            _check_folder(out, identity, header["seeds"], every, notebooks, sets)  # again: no one else writes now
            return _run(out, plan, every, only, force, timeout, header)
    except OSError as err:  # a full disk, a folder made read-only meanwhile: whatever was written is whole
        where = f" ({err.filename})" if err.filename else ""
        raise KitError(f"Writing in {out} failed: {err.strerror or err}{where}; free space or fix the folder's "
                       "permissions, then rerun the same command (the runs completed so far are kept and "
                       "skipped).") from None


def _check_folder(out: Path, identity: dict, seeds: int, every: list, notebooks: list[Path], sets: dict) -> None:
    """Refuse a run folder of another identity (kit.stamps), or one holding notebook runs of another number of
    seeds that this plan would not make (e.g. htty/ where --seeds 2 makes htty-s0/ and htty-s1/): left beside
    this plan's, tables would count seed 0 twice."""
    stamps.check_identity(out, identity)
    held = _held(out).get("seeds")
    if isinstance(held, bool) or not isinstance(held, int) or held < 1 or held == seeds:
        return
    planned = {_name(nb, s) for nb, s, _ in every}
    theirs = [_name(nb, s) for nb in notebooks
              for s, _ in variants(nb.stem, identity["profile"], identity["seed"], held, sets)]
    left = [n for n in theirs if n not in planned and stamps.read(out / n) is not None]
    if left:
        raise KitError(f"{out} holds runs of {held} seed(s) ({', '.join(left[:3])}{', …' if len(left) > 3 else ''}) "
                       f"that --seeds {seeds} would leave beside its own, mixing them in every table; resume with "
                       f"--seeds {held}, or give this run another --out.")


def _run(out: Path, plan: list, every: list, only: list[str] | None, force: bool, timeout: int | None,
         header: dict) -> list[dict]:
    """The planned runs, in order, in the run folder this process holds; first, what a killed pipeline left."""
    finished = stamps.recover(out)
    if finished:
        _say(f"[pipeline] {finished}: finished moving its completed attempt into place (a pipeline was killed "
             "while doing it)")
    for _, name, _ in plan:  # e.g. a notebook run by hand into a run's folder: refused before any work
        lock.check_free(out / name)
    if only:  # the runs not chosen are not rerun: those the chosen ones read must be complete already
        for nb, s, _ in every:
            if nb.name[:2] not in only and int(nb.name[:2]) < max(int(n) for n in only) and \
                    stamps.intact(out / _name(nb, s)) is None:
                raise KitError(f"--only {' '.join(only)} reads {_name(nb, s)}, which is not complete in {out} (not run, "
                               f"or an output of it is missing or changed); run it first, e.g. --only {nb.name[:2]}.")
    before = _held(out).get("device", header["device"])
    if before != header["device"]:
        _say(f"[pipeline] note: runs in {out} were made with --device {before}; those this invocation makes use "
             f"{header['device']} (a run's device is in its provenance, not its stamp, so none reruns for it)")
    records: list[dict] = []
    for i, (notebook, name, params_nb) in enumerate(plan, 1):
        nb_out = out / name
        upstream = {_name(nb, s): (stamps.read(out / _name(nb, s)) or {}).get("id")
                    for nb, s, _ in every if int(nb.name[:2]) < int(notebook.name[:2])}
        wanted = {"parameters": stamps.portable(params_nb, out), "notebook_sha256": stamps.sha256(notebook),
                  "upstream": upstream}
        stamp, why = (None, "--force") if force else stamps.complete(nb_out, wanted)
        if stamp is not None:
            stamps.tidy(out, name, notebook.name)  # a failed attempt at other settings is superseded
            records.append(_record(name, "skipped", 0, wanted["parameters"], nb_out / notebook.name, out))
            _write_summary(out, header, records, every)
            _say(f"[pipeline {i}/{len(plan)}] {name} up to date, skipped")
            continue
        stage = stamps.staging(out, name)
        resumed = stamps.prepare(stage, wanted)
        _say(f"[pipeline {i}/{len(plan)}] {name} ({why}{'; resuming its interrupted attempt' if resumed else ''})  "
             f"({', '.join(f'{k}={v}' for k, v in params_nb.items())})")
        try:
            seconds = _execute(notebook, stage / notebook.name, {**params_nb, "OUT_DIR": str(stage)}, timeout)
        except KitError as err:
            failed = stamps.keep_failure(stage, nb_out, notebook.name)
            records.append({**_record(name, "failed", 0, wanted["parameters"], failed or stage / notebook.name, out),
                            "previous": _earlier(out).get(name)})
            _write_summary(out, header, records, every)
            where = f"the executed notebook is {failed}" if failed else "it never started"
            raise KitError(f"Notebook {name} {err}; {where}; the previous run's folder is untouched, and rerunning "
                           "the same command resumes this attempt.") from None
        stamps.promote(out, name, wanted, notebook.name, uuid.uuid4().hex,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))
        records.append(_record(name, "ok", seconds, wanted["parameters"], nb_out / notebook.name, out))
        _write_summary(out, header, records, every)
        _say(f"[pipeline {i}/{len(plan)}] {name} done in {seconds:.0f} s -> {nb_out}")
    if not only:  # every run of the plan is in place: what is left in staging is of no run it makes
        shutil.rmtree(out / stamps.STAGING, ignore_errors=True)
    return records


def _execute(notebook: Path, executed: Path, params: dict, timeout: int | None) -> float:
    """Run one notebook into `executed` (in its staging folder) and return the seconds it took; a KitError says
    where it failed. Kernels talk over IPC sockets where the OS has them: no TCP port is opened (and ipykernel has
    no reason to warn, once per notebook, that its TCP traffic is unencrypted)."""
    import nbclient.exceptions as nbx
    import papermill as pm
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params, cwd=str(notebook.parent),
                            kernel_name="python3", progress_bar=False, log_output=False,
                            stdout_file=terminal.STDOUT, stderr_file=terminal.STDERR, execution_timeout=timeout,
                            **_kernel_transport())
    except pm.PapermillExecutionError as err:
        cell = err.cell_index + 1 - (1 if params and err.cell_index > _parameters_cell(notebook) else 0)
        raise KitError(f"failed in cell {cell}{_failing_line(err)} with {err.ename}: {err.evalue.strip()}") from None
    except nbx.CellTimeoutError:
        raise KitError("stopped: a cell ran past --timeout") from None
    except nbx.DeadKernelError:
        raise KitError("stopped: its kernel died (out of memory?)") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # the kernel did not start, a notebook that cannot be read, …
        raise KitError(f"could not run ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
    return time.perf_counter() - t0


def _failing_line(err) -> str:
    """', line N (`that line`)' of the failing cell, N from the cell's frame in the traceback (the statement that
    raised, not the cell's first line); the cell's first line when the traceback does not say."""
    lines = (err.source or "").splitlines()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(err.traceback or []))  # IPython colours its tracebacks
    found = re.search(r"Cell In\[\d+\], line (\d+)", plain)
    n = int(found.group(1)) if found else 0
    if 1 <= n <= len(lines) and lines[n - 1].strip():
        return f", line {n} (`{lines[n - 1].strip()}`)"
    first = next((line.strip() for line in lines if line.strip()), "")
    return f" (`{first}`)" if first else ""


def _say(line: str) -> None:
    """A progress line on stdout (nothing once its reader has gone)."""
    terminal.STDOUT.write(line + "\n")


def _kernel_transport() -> dict:
    """papermill keyword arguments that start the kernel on IPC sockets (POSIX); {} (TCP on localhost) elsewhere."""
    if os.name != "posix":
        return {}
    from jupyter_client import AsyncKernelManager

    from jupyter_core.paths import jupyter_runtime_dir

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            # the sockets' path prefix: absolute, in Jupyter's runtime folder (private to this user) and unique per
            # kernel, or they would be made in the notebook's folder (papermill's cwd) as kernel-ipc-N
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True)
            self.ip = str(runtime / f"kit-{uuid.uuid4().hex[:12]}-ipc")
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
    earlier, now = _earlier(out), {r["notebook"]: r for r in records}
    order = [_name(nb, sub) for nb, sub, _ in every]
    order += [n for n in earlier if n not in order]  # runs of an earlier plan (e.g. other --seeds) stay recorded
    merged = [now.get(n) or earlier[n] for n in order if n in now or n in earlier]
    io.write_json({**header, "notebooks": merged, "provenance": provenance()}, out / "pipeline.json")


def _held(out: Path) -> dict:
    """The run folder's pipeline.json ({} when there is none or it cannot be read)."""
    try:
        record = json.loads((out / "pipeline.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _earlier(out: Path) -> dict:
    """{run name: its record} from the run folder's pipeline.json ({} when there is none or it cannot be read)."""
    try:
        return {r["notebook"]: r for r in _held(out).get("notebooks", [])}
    except (KeyError, TypeError):
        return {}


