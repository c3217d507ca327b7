"""Atomic files: checkpoints, JSON records and figures are never left half-written.

Every write goes to a temporary file in the same folder and is then renamed over the
target (`os.replace` is atomic on POSIX and Windows), so a run killed at any moment leaves
either the old file or the new one. Because a rename replaces whatever has the target's name,
a target that is not a regular file (a folder, /dev/null, a pipe) is refused (`check_target`),
and commands check their outputs, and that no output is one of their inputs, before any work.

Checkpoints hold plain data only: tensors, dicts, lists, tuples, strings, numbers, booleans and None, which
`torch.load(weights_only=True)` rebuilds without running anything the file says. A `.pt` is a pickle, and a
pickle may name any Python callable to run while it is read; a file shared by someone else (a metamorph.pt, an
exported network) must not be able to do that, so `save_torch` refuses to write anything else and `load_torch`
refuses, in one sentence, a file that needs anything else.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from collections import OrderedDict
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


# What a checkpoint may hold: the types torch's weights-only unpickler rebuilds by itself. Exact types: a subclass
# (numpy.float64 is a float, an Enum may be a str) pickles as its own class, which the loader refuses.
_PLAIN = (str, int, float, bool, type(None), torch.Size, torch.dtype)
_CONTAINERS = (dict, OrderedDict, list, tuple)  # OrderedDict: what state_dict() returns

# What to do about a kit file that is refused (written by an older version of the kit, which stored Python objects).
REGENERATE = ("if an older version of this kit wrote it, delete it and rerun the step that wrote it "
              "(`python -m kit pipeline` on its run folder reruns exactly the steps whose files are missing)")


def unplain(obj: Any, where: str = "") -> str | None:
    """Where in `obj` something other than plain data sits (e.g. "['report']['prior'] (PosixPath)"); None if nowhere."""
    kind = type(obj)
    if kind in _PLAIN or isinstance(obj, torch.Tensor) and kind in (torch.Tensor, torch.nn.Parameter):
        return None
    if kind in _CONTAINERS:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            if type(key) not in (str, int):
                return f"{where}[{key!r}] (a {type(key).__name__} key)"
            found = unplain(value, f"{where}[{key!r}]")
            if found:
                return found
        return None
    return f"{where or 'the object'} ({kind.__name__})"


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically, of plain data only (see the module docstring): anything else is a bug of the caller,
    who must convert it (a Path to str, a numpy number to int or float) so that `load_torch` can read the file."""
    found = unplain(obj)
    if found:
        raise TypeError(f"Cannot save {found} to {path}: checkpoints hold tensors and plain data only; convert it.")
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | Path, what: str = "checkpoint", regenerate: str = REGENERATE) -> Any:
    """torch.load on the CPU of plain data only (`weights_only=True`: nothing in the file runs), with one clear sentence
    when the file is missing, unreadable, or needs more than plain data (`regenerate` says how to write it again)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"No {what} at {path}; run the step that writes it first (or fix the path).")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: the sentence says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met something it does not rebuild by itself
        names = _python_objects(path)
        if names is None:  # no Python object named in it: bytes that are not a checkpoint at all
            raise KitError(f"The {what} at {path} cannot be read (not a checkpoint); delete it and rerun.") from None
        raise KitError(f"The {what} {path} holds Python objects ({', '.join(names[:3])}{', …' if len(names) > 3 else ''}) "
                       f"beyond tensors and plain data, which opening it would have to run as code, so it is refused; "
                       f"{regenerate}.") from None
    except Exception as err:  # a truncated or foreign file
        raise KitError(f"The {what} at {path} cannot be read ({type(err).__name__}); delete it and rerun.") from None


def _python_objects(path: Path) -> list[str] | None:
    """The Python objects (module.name) a pickle or torch.save file names beyond plain data, found by scanning its
    pickle's instructions without running them; None when it names none (or is no pickle)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or None
    except Exception:  # not a torch.save zip file: a bare pickle, or bytes of anything
        pass
    import pickletools
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":  # module and name are the two strings pushed before it
                names.append(".".join(strings[-2:]) or "a global")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not (or no longer) a pickle: what was found so far is all it names
        pass
    return sorted(set(names)) or None


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
