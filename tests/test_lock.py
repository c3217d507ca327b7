"""One writer per folder (kit.lock): a live holder is named and its folder left alone; a killed holder's lock is
taken over; a pipeline's own kernels are let in, a kernel run by hand is not. Holders are real processes (a lock
this process holds is its own), killed for real."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kit import cli, lock, pipeline
from kit.errors import KitError

HOLDER = """import sys
from kit import lock
held = lock.{call}(sys.argv[1]{what})
print(getattr(held, "body", {{}}).get("token", "claimed"), flush=True)
sys.stdin.read()  # holds until the test closes stdin (or kills it)
"""


def _holder(folder: Path, call: str = "acquire") -> tuple[subprocess.Popen, str]:
    """A process holding `folder` (lock.acquire as a 'pipeline', or lock.claim as a notebook kernel does); its
    token once it holds."""
    what = ', "pipeline"' if call == "acquire" else ""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(call=call, what=what), str(folder)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    token = proc.stdout.readline().strip()
    assert token, "the holder did not start"
    return proc, token


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_live_holder_is_named_and_a_killed_ones_lock_is_taken_over(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "01_a").mkdir(parents=True)
    (run / "01_a" / "model.pt").write_bytes(b"weights")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "OUT_DIR = ''", metadata={"tags": ["parameters"]})], metadata={"kernelspec": kernel}), notebooks / "01_a.ipynb")
    holder, token = _holder(run)
    try:
        before = _files(run)
        refusal = rf"{run} is being written by pipeline \(pid {holder.pid} on .*since .*\); wait for it to finish"
        with pytest.raises(KitError, match=refusal):
            lock.acquire(run, "pipeline")
        with pytest.raises(KitError, match=refusal):  # the pipeline: refused before it touches anything
            pipeline.run(profile="smoke", out=run, folder=notebooks)
        assert cli.main(["train-prior", "--profile", "smoke", "--out", str(run / "01_a")]) == 2
        assert f"{run / '01_a'} is inside {run}, which is being written by pipeline (pid {holder.pid} on" in \
            capsys.readouterr().err
        with pytest.raises(KitError, match=rf"inside {run}, which is being written by pipeline \(pid {holder.pid} "):
            lock.claim(run / "01_a")  # a notebook whose OUT_DIR is inside it: refused too
        assert _files(run) == before

        monkeypatch.setenv(lock.ENV, token)  # a kernel the holding pipeline started: let in, and locks nothing
        assert lock.claim(run / "03_b" / "htty") == (run / "03_b" / "htty").resolve()
        assert not (run / "03_b" / "htty" / lock.LOCK).exists()
        monkeypatch.setenv(lock.ENV, "another pipeline's token")
        with pytest.raises(KitError, match=rf"pid {holder.pid} on"):
            lock.claim(run / "03_b" / "htty")
        monkeypatch.delenv(lock.ENV)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / lock.LOCK).is_file()  # the killed holder could not remove it: a free lock, taken over
    with lock.hold(run, "pipeline") as held:
        assert held.left["pid"] == holder.pid and held.left["token"] == token
        assert f"locked by pipeline (pid {holder.pid} on" in capsys.readouterr().err  # said so, in one line
        assert os.environ[lock.ENV] == held.body["token"]  # what the notebooks' kernels inherit
    assert not (run / lock.LOCK).exists() and lock.ENV not in os.environ  # let go: nothing left behind
    with lock.hold(run, "pipeline") as held:
        assert held.left is None  # a lock let go is not mistaken for a dead one


def test_a_notebook_run_by_hand_holds_its_out_dir_until_its_kernel_exits(tmp_path):
    out = tmp_path / "run" / "03_b" / "htty"
    kernel, _ = _holder(out, call="claim")
    try:
        with pytest.raises(KitError, match=rf"{out} is being written by a notebook kernel \(pid {kernel.pid} on"):
            lock.check_free(out)  # what the pipeline asks of every run's folder before any work
        with pytest.raises(KitError, match=rf"pid {kernel.pid}"):
            lock.claim(out)  # a second kernel on the same OUT_DIR
        lock.check_free(out.parent)  # the folders around it are not held
    finally:
        kernel.stdin.close()  # the kernel shuts down normally: its lock is let go and removed
        assert kernel.wait() == 0
    lock.check_free(out)
    assert not (out / lock.LOCK).exists()
