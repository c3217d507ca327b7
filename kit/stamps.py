"""When a pipeline run is complete: its stamp, the outputs the stamp vouches for, and the run folder's identity.

A run that succeeds leaves `.pipeline-stamp.json` in its folder: its parameters (paths relative to the run
folder, so a moved or copied run folder stays up to date), the sha256 of its notebook, the ids of its upstream
runs' stamps, a fresh id, and the sha256 of every file it wrote. A run is complete only when its stamp matches
what is asked now *and* every output the stamp records is still there with the same digest: a deleted or
changed checkpoint makes the run (and so everything downstream) run again.

The run folder's identity (profile, dataset, seed) is recorded in `pipeline.json`; a command asking for
another identity is refused before anything is touched (`check_identity`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kit import io
from kit.errors import KitError

STAMP = ".pipeline-stamp.json"  # hidden: results.morph_runs and friends glob for metrics.json, not for this
FAILED = ".failed.ipynb"  # suffix of a failed run's executed notebook, written beside the good one
RUNNING = ".running.ipynb"  # suffix of the notebook while it executes (hidden name: a leading dot)
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
    recorded = stamp.get("outputs")
    if not isinstance(recorded, dict) or not recorded:
        return None, "its stamp records no outputs (written by an older kit)"
    for rel, digest in recorded.items():
        path = folder / rel
        if not path.is_file():
            return None, f"its output {rel} is missing"
        if sha256(path) != digest:
            return None, f"its output {rel} changed since the run"
    return stamp, ""


def write(folder: Path, wanted: dict, executed: Path, run_id: str, finished: str) -> dict:
    stamp = {**wanted, "id": run_id, "finished": finished, "outputs": outputs(folder, executed)}
    io.write_json(stamp, folder / STAMP)
    return stamp


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
