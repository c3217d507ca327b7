"""A pipeline run's folder: when it is complete (its stamp and the outputs the stamp vouches for), how a new attempt
replaces it without ever destroying it, and the run folder's identity.

A run that succeeds leaves `.pipeline-stamp.json` in its folder: its parameters (paths relative to the run
folder, so a moved or copied run folder stays up to date), the sha256 of its notebook, the ids of its upstream
runs' stamps, a fresh id, and the sha256 of every file it wrote. A run is complete only when its stamp matches
what is asked now *and* every output the stamp records is still there with the same digest: a deleted or
changed checkpoint makes the run (and so everything downstream) run again. The device a run computed on is not
part of its stamp (it is in the run's provenance, like the machine): `--device cpu` and `auto` on a CPU machine
mean the same runs. Stamps guard against accidents, not attacks: a digest is a plain sha256 that anyone can
recompute, so a swapped file with a recomputed stamp is trusted here; what makes opening it harmless is that
loading (kit.io) runs no code.

A notebook never executes in the folder of the run it may replace: it writes into `<run>/.staging/<name>/`
(`prepare`), which an interrupted attempt with the same parameters resumes. Only success moves the attempt into
place (`promote`); a failure leaves the old folder as it was, with the failed executed notebook beside it as
`NN_name.failed.ipynb` (`keep_failure`), until a later success of that run tidies both away (`tidy`).
A promote is journalled (`<run>/.promote.json`, written before its first step): it stamps the attempt, carries
over the files a user added to the old folder, moves the old folder aside and the attempt into place, then
deletes the old one. Every step can be redone, so a promote killed at any point is finished by the next pipeline
(`recover`): the run folder then holds the new run with the user's files; killed before the journal, the old run.
Files a run leaves in its `run-level/` sub-folder (notebook 05's `report.md`) are copied into the run folder
itself once the run is in place (`publish`), so nothing outside staging changes before a promote.

The run folder's identity (profile, dataset, seed) is recorded in `pipeline.json`; a command asking for
another identity is refused before anything is touched (`check_identity`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from kit import io
from kit.errors import KitError
from kit.lock import LOCK

STAMP = ".pipeline-stamp.json"  # hidden: results.morph_runs and friends glob for metrics.json, not for this
FAILED = ".failed.ipynb"  # suffix of a failed run's executed notebook, written beside the good one
STAGING = ".staging"  # <run>/.staging/<name>/: where an attempt executes until it succeeds
ATTEMPT = ".attempt.json"  # what an attempt in the staging folder was started with (resumed only if unchanged)
JOURNAL = ".promote.json"  # in the run folder: the promote under way, finished by `recover` if it was killed
REPLACED = ".replaced"  # suffix of the staging path the old folder is moved to while a promote swaps them
RUN_LEVEL = "run-level"  # a run's sub-folder of files for the run folder itself (`publish`)
IDENTITY = ("profile", "dataset", "seed")  # what a run folder is a run of; anything else may change between runs
UNSTAMPED = ("DEVICE",)  # parameters a stamp leaves out: where a run computes, not what it computes


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable(params: dict, run_dir: Path) -> dict:
    """Parameters as a stamp holds them: without UNSTAMPED, JSON round trip (tuples become lists) and paths
    inside the run folder written relative to it ('.' is the run folder itself)."""
    out = {}
    for key, value in json.loads(json.dumps(params)).items():
        if key in UNSTAMPED:
            continue
        if isinstance(value, str) and Path(value).is_absolute():
            try:
                value = Path(value).relative_to(run_dir).as_posix() or "."
            except ValueError:
                pass  # a path outside the run folder (e.g. a prior.pt given with -p) stays absolute
        out[key] = value
    return out


def outputs(folder: Path, executed: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of the files a run wrote, without its stamp, its executed notebook,
    failed attempts and hidden temporary files."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (not path.is_file() or any(part.startswith(".") for part in rel.parts) or path == executed
                or path.name.endswith(FAILED)):
            continue
        found[rel.as_posix()] = sha256(path)
    return found


def read(folder: Path) -> dict | None:
    """The stamp a successful run left in `folder`; None when there is none or it cannot be read (rerun it)."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and "id" in stamp else None


def _same(held: dict, wanted: dict, key: str) -> bool:
    """Whether a stamp's (or attempt's) `key` is `wanted`'s; parameters compared without UNSTAMPED, which stamps
    of an older kit still hold."""
    value = held.get(key)
    if key == "parameters" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in UNSTAMPED}
    return value == wanted[key]


def complete(folder: Path, wanted: dict) -> tuple[dict | None, str]:
    """(the stamp, '') when the run in `folder` is up to date with `wanted`; else (None, why it must run)."""
    stamp = read(folder)
    if stamp is None:
        return None, "not run yet"
    for key in wanted:
        if not _same(stamp, wanted, key):
            return None, {"parameters": "its parameters changed", "notebook_sha256": "its notebook changed",
                          "upstream": "an upstream run changed"}.get(key, f"{key} changed")
    why = _outputs_changed(folder, stamp)
    return (None, why) if why else (stamp, "")


def _outputs_changed(folder: Path, stamp: dict) -> str:
    """Why the outputs `stamp` records are not all in `folder` unchanged; '' when they are."""
    recorded = stamp.get("outputs")
    if not isinstance(recorded, dict) or not recorded:
        return "its stamp records no outputs (written by an older kit)"
    for rel, digest in recorded.items():
        path = folder / rel
        if not path.is_file():
            return f"its output {rel} is missing"
        if sha256(path) != digest:
            return f"its output {rel} changed since the run"
    return ""


def write(folder: Path, wanted: dict, executed: Path, run_id: str, finished: str) -> dict:
    stamp = {**wanted, "id": run_id, "finished": finished, "outputs": outputs(folder, executed)}
    io.write_json(stamp, folder / STAMP)
    return stamp


def intact(folder: Path) -> dict | None:
    """The stamp in `folder` if every output it records is there unchanged (whatever the parameters); else None."""
    stamp = read(folder)
    return stamp if stamp is not None and not _outputs_changed(folder, stamp) else None


def staging(run_dir: Path, name: str) -> Path:
    return run_dir / STAGING / name


def prepare(stage: Path, wanted: dict) -> bool:
    """Make `stage` ready for an attempt at `wanted`; True when it holds an interrupted attempt at the same
    parameters and upstream runs, which the notebook then resumes (e.g. from its checkpoint.pt)."""
    try:
        before = json.loads((stage / ATTEMPT).read_text())
    except (OSError, ValueError):
        before = None
    same = isinstance(before, dict) and all(_same(before, wanted, k) for k in ("parameters", "upstream"))
    if not same:
        shutil.rmtree(stage, ignore_errors=True)  # an unfinished attempt at other settings: nothing good in it
        stage.mkdir(parents=True)
        io.write_json(wanted, stage / ATTEMPT)
    return same


def promote(run_dir: Path, name: str, wanted: dict, executed: str, run_id: str, finished: str) -> None:
    """Move the successful attempt at run `name` from its staging folder into place, stamped, replacing the
    previous run there (files a user added to the old folder are carried over), then publish its run-level files.
    Journalled first: killed at any later point, the next pipeline's `recover` finishes it."""
    journal = {"name": name, "executed": executed, "wanted": wanted, "id": run_id, "finished": finished}
    io.write_json(journal, run_dir / JOURNAL)
    _finish(run_dir, journal)


def recover(run_dir: Path) -> str | None:
    """Finish the promote a killed pipeline left half done in `run_dir` (call it holding the folder's lock, before
    anything else); the run's name, or None when there was none."""
    path = run_dir / JOURNAL
    try:
        journal = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        journal = None
    name = Path(str(journal.get("name", ""))) if isinstance(journal, dict) else Path()
    if (not name.parts or name.is_absolute() or ".." in name.parts
            or not {"executed", "wanted", "id", "finished"} <= set(journal)):
        raise KitError(f"{path} (a promote under way) cannot be read; delete it and rerun: the run it named then "
                       "runs again.")
    _finish(run_dir, journal)
    return journal["name"]


def _finish(run_dir: Path, journal: dict) -> None:
    """The promote `journal` describes, from wherever it stopped: each step is done only if it is not yet."""
    stage, final, executed = staging(run_dir, journal["name"]), run_dir / journal["name"], journal["executed"]
    trash = stage.with_name(stage.name + REPLACED)
    if stage.is_dir():  # the attempt is not in place yet
        if (read(stage) or {}).get("id") != journal["id"]:  # stamped before any user file joins it
            write(stage, journal["wanted"], stage / executed, journal["id"], journal["finished"])
        for old in (trash, final):  # the old run: in place, or already moved aside (killed between the renames)
            if old.is_dir():
                _carry(old, stage, executed)
        (stage / ATTEMPT).unlink(missing_ok=True)
        if final.is_dir():
            shutil.rmtree(trash, ignore_errors=True)  # emptied of user files above
            os.replace(final, trash)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, final)
    shutil.rmtree(trash, ignore_errors=True)
    _prune(stage.parent)
    publish(final, run_dir)
    (run_dir / JOURNAL).unlink(missing_ok=True)


def _carry(old: Path, stage: Path, executed: str) -> None:
    """Move the files a user added to the run folder `old` (not written by its run, nor by the attempt) into the
    attempt `stage`."""
    written = (read(old) or {}).get("outputs", {})
    for path in sorted(old.rglob("*")):
        rel = path.relative_to(old)
        if (path.is_file() and rel.as_posix() not in written and rel.name not in (STAMP, LOCK, executed)
                and not rel.name.endswith(FAILED) and not (stage / rel).exists()):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, stage / rel)


def publish(final: Path, run_dir: Path) -> list[Path]:
    """Copy the run-level files of the run in `final` (its RUN_LEVEL sub-folder) into the run folder where they
    are missing or differ; the paths written."""
    source, written = final / RUN_LEVEL, []
    if not source.is_dir():
        return written
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = run_dir / path.relative_to(source)
        if not target.is_file() or sha256(target) != sha256(path):
            written.append(io.write_bytes(path.read_bytes(), target))
    return written


def tidy(run_dir: Path, name: str, executed: str) -> None:
    """After run `name` succeeded or was found up to date: drop what failed attempts at it left (its staging
    folder and NN_name.failed.ipynb), which that success supersedes."""
    stage = staging(run_dir, name)
    shutil.rmtree(stage, ignore_errors=True)
    _prune(stage.parent)
    (run_dir / name / (Path(executed).stem + FAILED)).unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    """Remove `folder` and its parents up to <run>/.staging while they are empty (or already gone)."""
    top = next((p for p in (folder, *folder.parents) if p.name == STAGING), None)
    while top is not None and (folder == top or top in folder.parents):
        if folder.is_dir():
            if any(folder.iterdir()):
                return
            folder.rmdir()
        folder = folder.parent


def keep_failure(stage: Path, final: Path, executed: str) -> Path | None:
    """A copy of the failed attempt's executed notebook beside the previous run's, as NN_name.failed.ipynb (the
    attempt stays in `stage`, to be resumed); None when the notebook never started."""
    source = stage / executed
    if not source.is_file():
        return None
    target = final / (Path(executed).stem + FAILED)
    final.mkdir(parents=True, exist_ok=True)
    io.write_bytes(source.read_bytes(), target)
    return target


def check_identity(run_dir: Path, identity: dict) -> None:
    """Refuse, before any work, a run folder that holds a run of another profile, dataset or seed."""
    record = run_dir / "pipeline.json"
    if not record.is_file():
        return
    try:
        held = json.loads(record.read_text())
    except ValueError:
        raise KitError(f"{record} cannot be read (truncated?); restore it, or delete it to let the pipeline "
                       "check every run from its stamp.") from None
    old = {k: held.get(k) for k in IDENTITY}  # an older record's dataset None: its profile's (checked with it)
    if any(old[k] is not None and old[k] != identity[k] for k in IDENTITY):
        said = ", ".join(f"{k} {old[k]}" for k in IDENTITY)
        raise KitError(f"{run_dir} holds a run with {said}; resume it with --profile {old['profile']} "
                       f"--dataset {old['dataset']} --seed {old['seed']}, or give this {identity['profile']} run "
                       "another --out.")
