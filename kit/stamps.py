"""A pipeline run's folder: when it is complete (its stamp and the outputs the stamp vouches for), how a new attempt
replaces it without ever destroying it, and the run folder's identity.

A run that succeeds leaves `.pipeline-stamp.json` in its folder: its parameters (paths relative to the run
folder, so a moved or copied run folder stays up to date), the sha256 of its notebook, the ids of its upstream
runs' stamps, a fresh id, and the sha256 of every file it wrote. A run is complete only when its stamp matches
what is asked now *and* every output the stamp records is still there with the same digest: a deleted or
changed checkpoint makes the run (and so everything downstream) run again.

A notebook never executes in the folder of the run it may replace: it writes into `<run>/.staging/<name>/`
(`prepare`), which an interrupted attempt with the same parameters resumes. Only success moves the attempt into
place (`promote`, carrying over any file a user added to the old folder); a failure leaves the old folder as it
was, with the failed executed notebook beside it as `NN_name.failed.ipynb` (`keep_failure`).

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

STAMP = ".pipeline-stamp.json"  # hidden: results.morph_runs and friends glob for metrics.json, not for this
FAILED = ".failed.ipynb"  # suffix of a failed run's executed notebook, written beside the good one
STAGING = ".staging"  # <run>/.staging/<name>/: where an attempt executes until it succeeds
ATTEMPT = ".attempt.json"  # what an attempt in the staging folder was started with (resumed only if unchanged)
IDENTITY = ("profile", "dataset", "seed")  # what a run folder is a run of; anything else may change between runs


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable(params: dict, run_dir: Path) -> dict:
    """Parameters as a stamp holds them: JSON round trip (tuples become lists) and paths inside the run folder
    written relative to it ('.' is the run folder itself)."""
    out = {}
    for key, value in json.loads(json.dumps(params)).items():
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


def complete(folder: Path, wanted: dict) -> tuple[dict | None, str]:
    """(the stamp, '') when the run in `folder` is up to date with `wanted`; else (None, why it must run)."""
    stamp = read(folder)
    if stamp is None:
        return None, "not run yet"
    for key, value in wanted.items():
        if stamp.get(key) != value:
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
    same = isinstance(before, dict) and all(before.get(k) == wanted[k] for k in ("parameters", "upstream"))
    if not same:
        shutil.rmtree(stage, ignore_errors=True)  # an unfinished attempt at other settings: nothing good in it
        stage.mkdir(parents=True)
        io.write_json(wanted, stage / ATTEMPT)
    return same


def promote(stage: Path, final: Path, wanted: dict, executed: str, run_id: str, finished: str) -> dict:
    """Stamp the successful attempt in `stage` and move it to `final`, replacing the previous run there; files a
    user added to the old folder (not written by its run, not written by this one) are carried over."""
    (stage / ATTEMPT).unlink(missing_ok=True)
    stamp = write(stage, wanted, stage / executed, run_id, finished)
    if final.is_dir():
        old = (read(final) or {}).get("outputs", {})
        for path in sorted(final.rglob("*")):
            rel = path.relative_to(final)
            if (path.is_file() and rel.as_posix() not in old and rel.name != STAMP and rel.name != executed
                    and not rel.name.endswith(FAILED) and not (stage / rel).exists()):
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, stage / rel)
        trash = stage.with_name(stage.name + ".replaced")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(stage, final)
        shutil.rmtree(trash)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, final)
    folder = stage.parent  # leave no empty <run>/.staging/… behind
    while STAGING in folder.parts and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    return stamp


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
