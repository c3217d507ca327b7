"""Who is writing a folder: the lock a pipeline, `train-prior` or a notebook's kernel holds on the folder it writes,
so that a second writer is refused, before it touches anything, with one sentence naming the first.

The lock is an exclusive `flock` on `<folder>/.kit-lock`, a small JSON file naming its holder (pid, host, what it
is, its command line, since when). The operating system drops a flock when its process dies, however it dies, so a
lock left by a killed process is simply free: the next writer takes it over, race-free, and says whose it was. A
holder removes the file when it lets go, so a `.kit-lock` that is there but free was left by a process that died.

A folder is busy when it, or a folder above it, is locked by another process: a notebook whose OUT_DIR lies in a
run folder that a pipeline holds is refused (`claim`), and so is `train-prior` into it. The pipeline's own notebooks
are not: it passes its lock's token to their kernels in the environment (KIT_LOCK), and a lock holding that token
is theirs. Where there is no flock (Windows) folders are not locked.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kit.errors import KitError

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None

LOCK = ".kit-lock"  # hidden: a run's outputs (kit.stamps) and the kit's globs skip it
ENV = "KIT_LOCK"  # the token of the lock whose holder started this process (a pipeline's notebook kernel)
_HELD: dict[Path, "Lock"] = {}  # the folders this process holds, by absolute path
_RETRIES = 10  # a free lock is busy for microseconds while another process looks at it (`_probe`): try again


class Lock:
    """A held lock; `release()` (or leaving `hold`) lets go. `left` is the body of a dead holder's lock that this
    one took over (None when the folder was free)."""

    def __init__(self, folder: Path, fd: int | None, body: dict, left: dict | None):
        self.folder, self.fd, self.body, self.left = folder, fd, body, left

    def release(self) -> None:
        if self.fd is None:
            return
        _HELD.pop(self.folder, None)
        with contextlib.suppress(OSError):
            os.unlink(self.folder / LOCK)  # while still held: a waiter that opened this file sees it gone, retries
        os.close(self.fd)
        self.fd = None

    def took_over(self) -> str:
        """One sentence on the dead holder's lock this one took over; '' when there was none."""
        if not self.left:
            return ""
        return (f"note: {self.folder} was locked by {_who(self.left)}, which is no longer running (killed?); "
                "its lock is taken over.")


def acquire(folder: str | Path, what: str) -> Lock:
    """Lock `folder` (made if missing) for this process, `what` naming the writer ('pipeline', 'train-prior', …);
    one sentence when it, or a folder above it, is locked by another live process, or cannot be written."""
    folder = Path(folder).expanduser().resolve()
    other, _ = _scan(folder)
    if other is not None:
        raise KitError(_refusal(folder, other))
    body = {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": uuid.uuid4().hex}
    if folder in _HELD:  # this process holds it already (a notebook rerun in its kernel): nothing more to hold
        return Lock(folder, None, _HELD[folder].body, None)
    if fcntl is None:
        return Lock(folder, None, body, None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError
        fd, left = _take(folder / LOCK)
    except PermissionError:
        raise KitError(f"{folder} cannot be written by this user (read-only?); make it writable "
                       f"(chmod -R u+w {folder}) or choose another folder.") from None
    except OSError as err:
        raise KitError(f"{folder} cannot be locked for writing ({err.strerror}); free space or choose another "
                       "folder.") from None
    if fd is None:
        raise KitError(_refusal(folder, left or {}))
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(body).encode(), 0)
        os.fsync(fd)
    except OSError as err:
        Lock(folder, fd, body, None).release()
        raise KitError(f"{folder} cannot be locked for writing ({err.strerror}); free space or choose another "
                       "folder.") from None
    lock = _HELD[folder] = Lock(folder, fd, body, left)
    return lock


@contextlib.contextmanager
def hold(folder: str | Path, what: str):
    """`acquire` for the duration of a `with` block, which starts with a note on stderr when a dead holder's lock
    was taken over; processes started inside (notebook kernels) get the lock's token in KIT_LOCK."""
    lock = acquire(folder, what)
    if lock.took_over():
        print(lock.took_over(), file=sys.stderr, flush=True)
    before = os.environ.get(ENV)
    os.environ[ENV] = lock.body["token"]
    try:
        yield lock
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        lock.release()


def claim(out_dir: str | Path) -> Path:
    """A notebook's OUT_DIR (absolute; relative: from the project root), made sure no other process writes it:
    refused in one sentence when it or a folder above it is locked by another process (a pipeline, `train-prior`,
    another kernel); otherwise locked by this kernel until it exits, unless the pipeline running this notebook
    already holds the run folder around it."""
    from kit.runtime import project_path
    out = Path(project_path(out_dir)).resolve()
    other, ours = _scan(out)
    if other is not None:
        raise KitError(_refusal(out, other))
    if not ours:
        lock = acquire(out, "a notebook kernel")
        if lock.took_over():
            print(lock.took_over(), file=sys.stderr, flush=True)
        atexit.register(lock.release)
    return out


def check_free(folder: str | Path) -> None:
    """One sentence when another process holds `folder` itself (e.g. a notebook kernel writing a run's folder)."""
    folder = Path(folder).expanduser().resolve()
    body = None if folder in _HELD else _probe(folder / LOCK)
    if body is not None and not _mine(body):
        raise KitError(_refusal(folder, body))


def _take(path: Path) -> tuple[int | None, dict | None]:
    """(fd holding the lock at `path`, the body a dead holder left there or None); (None, the holder's body) when a
    live process holds it."""
    body: dict = {}
    for attempt in range(_RETRIES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the processes this one starts
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            body = _body(fd)
            os.close(fd)
            time.sleep(0.02)
            continue
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, _body(fd) or None
        os.close(fd)  # its holder let go and removed it while this one waited: lock the new file
    return None, body


def _probe(path: Path) -> dict | None:
    """The body of the lock at `path` ({} when unreadable) while a live process holds it; None when it is free."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or none this user may read): nobody to name
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _body(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _scan(folder: Path) -> tuple[dict | None, bool]:
    """(the body of another process's lock on `folder` or a folder above it, or None; whether one is this
    process's or its pipeline's)."""
    ours = False
    for f in (folder, *folder.parents):
        if f in _HELD:
            ours = True
            continue
        body = _probe(f / LOCK)
        if body is not None:
            if _mine(body):
                ours = True
            else:
                return {**body, "folder": str(f)}, ours
    return None, ours


def _mine(body: dict) -> bool:
    token = os.environ.get(ENV)
    return bool(token) and body.get("token") == token


def _body(fd: int) -> dict:
    try:
        body = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _who(body: dict) -> str:
    if not body.get("pid"):
        return "another process (it has not yet said which)"
    command = str(body.get("command", ""))
    command = command if len(command) <= 120 else command[:117] + "…"
    return (f"{body.get('what', 'a process')} (pid {body['pid']} on {body.get('host', '?')}, since "
            f"{body.get('since', '?')}{': `' + command + '`' if command else ''})")


def _refusal(folder: Path, body: dict) -> str:
    where = body.get("folder")
    place = f"{folder} is inside {where}, which" if where and Path(where) != folder else str(folder)
    return (f"{place} is being written by {_who(body)}; wait for it to finish or stop it, then rerun (a lock whose "
            "process has died is taken over).")


def _command() -> str:
    """This process's command line as its user typed it (`python -m kit …` for the kit's command line)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "kit":
        return " ".join(["python -m kit", *argv[1:]])
    return " ".join(argv)
