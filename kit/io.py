"""Atomic files: checkpoints, JSON records and figures are never left half-written.

Every write goes to a temporary file in the same folder and is then renamed over the
target (`os.replace` is atomic on POSIX and Windows), so a run killed at any moment leaves
either the old file or the new one. Because a rename replaces whatever has the target's name,
a target that is not a regular file (a folder, /dev/null, a pipe) is refused (`check_target`),
and commands check their outputs, and that no output is one of their inputs, before any work.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from kit.errors import KitError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def check_target(path: str | Path, what: str = "output", inputs: tuple = ()) -> Path:
    """`path` if a file may be written there: a regular file (replaced) or a new path whose folders are, or can
    be, folders; and not one of `inputs` (the files the command reads). Otherwise one sentence saying why."""
    path = Path(path).expanduser()
    if path.is_symlink() and path.resolve().is_file():
        path = path.resolve()  # write the file the link points to, as a plain open() would; the link stays
    if path.is_dir():
        raise KitError(f"The {what} {path} is a folder; name the file to write (e.g. {path / 'out'}…).")
    if path.exists() and not path.is_file():
        raise KitError(f"The {what} {path} is not a regular file (a device, pipe or socket) and would be replaced; "
                       "name a regular file or a new path.")
    _check_folders(path.parent, what, path)
    for source in inputs:
        if source is not None and path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise KitError(f"The {what} {path} is also this command's input; writing it would destroy the input, "
                           "so name another file.")
    return path


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """`path` (absolute) if it is a folder or can be made one; one sentence when a file is in the way."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise KitError(f"The {what} {path} is a file, not a folder; name a folder (new or existing).")
    _check_folders(path.parent, what, path)
    return path


def _check_folders(folder: Path, what: str, path: Path) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise KitError(f"The {what} {path} cannot be created: {parent} is a file, not a folder.")
            if not os.access(parent, os.W_OK | os.X_OK) and parent == folder:
                raise KitError(f"The {what} {path} cannot be written: {parent} is not writable by this user.")
            return


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before it takes the target's name
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | Path, what: str = "checkpoint") -> Any:
    """torch.load on the CPU, with one clear sentence when the file is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"No {what} at {path}; run the step that writes it first (or fix the path).")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise KitError(f"The {what} at {path} cannot be read ({type(err).__name__}); delete it and rerun.") from None


def write_json(obj: Any, path: str | Path) -> Path:
    """Pretty JSON, atomically; numbers that JSON cannot hold are an error, not NaN text."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_jsonable)
    return _atomic(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def read_json(path: str | Path, what: str = "record") -> Any:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"No {what} at {path}; run the notebook that writes it first.")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise KitError(f"The {what} {path} is not valid JSON (truncated or edited?); rerun the notebook that "
                       "wrote it (`python -m kit pipeline` with the same settings reruns exactly that run).") from None


def write_text(text: str, path: str | Path) -> Path:
    """A UTF-8 text file (Markdown, LaTeX), written atomically."""
    return _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Raw bytes (a copy of a file), written atomically."""
    return _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """A CSV with one row per dict (columns from the first row), written atomically."""
    import csv

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return _atomic(path, write)


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """fig.savefig, atomically; the format comes from the target's suffix."""
    path = Path(path)
    return _atomic(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip("."), bbox_inches="tight", **kwargs))


def _inside(value: Any, folder: Path) -> Any:
    """`value` with any absolute path inside `folder` made relative to it (in lists too)."""
    if isinstance(value, list):
        return [_inside(v, folder) for v in value]
    if isinstance(value, (str, Path)) and Path(value).is_absolute():
        try:
            return Path(value).resolve().relative_to(folder).as_posix()
        except ValueError:
            return value  # outside the folder (an input, another run's file): kept as written
    return value


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def write_metrics(out_dir: str | Path, metrics: dict, config=None, **extra) -> Path:
    """out_dir/metrics.json: the run's metrics, plus its config, seed and provenance (versions, git revision).
    A path (str or Path) inside `out_dir` among the values is recorded relative to it, so the record stays true when
    its folder moves (the pipeline runs a notebook in a staging folder and then moves it into place)."""
    import dataclasses

    from kit.runtime import provenance

    here = Path(out_dir).resolve()
    record, device = {k: _inside(v, here) for k, v in metrics.items()}, None
    if config is not None:
        record["config"] = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        record["seed"] = record["config"].get("seed")
        if "device" in record["config"].get("runtime", {}):  # the device the run used, e.g. for cost columns
            from kit.runtime import pick_device
            device = pick_device(record["config"]["runtime"]["device"])
    record.update(extra)
    record["provenance"] = provenance(device)
    return write_json(record, Path(out_dir) / "metrics.json")
