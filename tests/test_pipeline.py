"""The pipeline's --seeds, --set, -p and skip-if-complete, and that nothing good is lost: tiny stand-in notebooks,
so each run takes seconds, not minutes.

The stand-ins append their run's name to a log file when they execute, so a test counts what really ran rather
than trusting the records the pipeline returns."""
import contextlib
import shutil
from pathlib import Path

import nbformat
import pytest

from kit import cli, io, lock, overrides, pipeline, stamps
from kit.errors import KitError

MORPH = "03_incremental_metamorphosis"  # the stem variants() keys on: HTTY and NeuMeta, each also on one block


def _notebook(path: Path, parameters: str, log: Path, extra: str = "", after: str = "") -> None:
    """A notebook whose parameters cell declares `parameters`; it runs `extra`, logs its run, writes
    OUT_DIR/metrics.json and OUT_DIR/model.pt, then runs `after`."""
    body = (f"import json, os\n{extra}\n"
            f"with open({str(log)!r}, 'a') as f:\n    f.write(os.path.relpath(OUT_DIR, RUN_DIR).removeprefix('.staging/') + '\\n')\n"
            "with open(os.path.join(OUT_DIR, 'metrics.json'), 'w') as f:\n"
            "    json.dump({'ok': True, 'set': globals().get('SET')}, f)\n"
            "with open(os.path.join(OUT_DIR, 'model.pt'), 'wb') as f:\n    f.write(b'weights')\n" + after)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)


@pytest.fixture
def kit_folder(tmp_path):
    """(notebook folder, run folder, ran()): 01 declares no X, 02 and 03 do; 03 runs as 7 variants and declares SET
    (--set morph.… reaches it). ran() returns the runs executed since it was last called."""
    folder, log = tmp_path / "notebooks", tmp_path / "executions.log"
    folder.mkdir()
    common = 'OUT_DIR = ""\nRUN_DIR = ""\nPROFILE = "smoke"\n'
    _notebook(folder / "01_a.ipynb", common, log)
    _notebook(folder / "02_b.ipynb", common + "SEED = 0\nX = 0\n", log)
    _notebook(folder / f"{MORPH}.ipynb", common + 'SEED = 0\nX = 0\nMETHOD = "htty"\nEPOCHS = None\nSET = {}\n', log)

    def ran():
        lines = log.read_text().split() if log.exists() else []
        log.unlink(missing_ok=True)
        return sorted(lines)
    return folder, tmp_path / "run", ran


ALL = ["01_a", "02_b", *(f"{MORPH}/{v}" for v in ("blockwise", "htty", "htty-blocks1", "neumeta", "neumeta-blocks1",
                                                    "null", "null-blocks1", "prefit"))]  # sorted


def _statuses(records):
    return {r["notebook"]: r["status"] for r in records}


def test_a_second_run_skips_what_is_up_to_date_and_reruns_what_changed_and_its_downstream(kit_folder):
    folder, out, ran = kit_folder

    def go(**kw):
        return pipeline.run(profile="smoke", out=kw.pop("out", out), folder=folder, **kw)

    first = go()
    assert ran() == ALL and all(r["status"] == "ok" for r in first)
    stamp = io.read_json(out / "02_b" / stamps.STAMP)
    assert stamp["parameters"] == first[1]["parameters"] and stamp["upstream"] == {
        "01_a": io.read_json(out / "01_a" / stamps.STAMP)["id"]}
    assert set(io.read_json(out / MORPH / "htty" / stamps.STAMP)["upstream"]) == {"01_a", "02_b"}  # not neumeta

    again = go()
    assert ran() == [] and [r["status"] for r in again] == ["skipped"] * len(ALL)
    assert [r["parameters"] for r in again] == [r["parameters"] for r in first] and {r["seconds"] for r in again} == {0}
    summary = io.read_json(out / "pipeline.json")
    assert [n["status"] for n in summary["notebooks"]] == ["skipped"] * len(ALL) and summary["seeds"] == 1

    nb = nbformat.read(folder / "02_b.ipynb", as_version=4)  # an edited notebook reruns, and so does all after it
    nb.cells.append(nbformat.v4.new_code_cell("edited = True"))
    nbformat.write(nb, folder / "02_b.ipynb")
    assert _statuses(go())["01_a"] == "skipped" and ran() == ALL[1:]

    (out / MORPH / "htty" / "metrics.json").unlink()  # 03's variants do not depend on one another
    assert ran() == [] and _statuses(go())[f"{MORPH}/neumeta"] == "skipped" and ran() == [f"{MORPH}/htty"]
    (out / MORPH / "null" / "model.pt").write_bytes(b"other")  # an output changed since its stamp: rerun
    (out / "01_a" / "model.pt").unlink()  # a deleted output: rerun, and everything after it
    assert _statuses(go())["01_a"] == "ok" and ran() == ALL

    x = [("X", 1)]
    assert _statuses(go(params=x))["01_a"] == "skipped" and ran() == ALL[1:]  # 01 does not declare X
    assert io.read_json(out / "02_b" / stamps.STAMP)["parameters"]["X"] == 1

    # --only: the lower-numbered notebooks' stamps on disk decide, so a rerun of 01 alone reruns 03 later
    assert [r["status"] for r in go(params=x, only=["03"])] == ["skipped"] * (len(ALL) - 2) and ran() == []
    assert [r["status"] for r in go(params=x, only=["01"], force=True)] == ["ok"] and ran() == ["01_a"]
    assert [r["status"] for r in go(params=x, only=["03"])] == ["ok"] * (len(ALL) - 2) and ran() == ALL[2:]
    records = io.read_json(out / "pipeline.json")["notebooks"]  # --only merged its records with the others'
    assert [r["notebook"] for r in records] == [r["notebook"] for r in first] and records[1]["status"] == "ok"  # 02 from the run before

    assert _statuses(go(params=x))["01_a"] == "skipped" and ran() == ALL[1:]  # 02 was behind 01
    # --set morph.… reaches the notebook building the morph config as SET, and reruns only it
    assert _statuses(go(params=x, overrides={"morph.inr.hidden": 64}))["02_b"] == "skipped" and ran() == ALL[2:]
    assert io.read_json(out / MORPH / "htty" / "metrics.json")["set"] == {"inr.hidden": 64}

    moved = out.parent / "moved"  # stamps hold paths relative to the run folder: a moved run is still up to date
    shutil.copytree(out, moved)
    assert [r["status"] for r in go(params=x, overrides={"morph.inr.hidden": 64}, out=moved)] == ["skipped"] * len(ALL)
    assert ran() == []
    assert [r["status"] for r in go(force=True)] == ["ok"] * len(ALL) and ran() == ALL
    assert not (out / ".staging").exists()  # every attempt succeeded: no staging folder is left behind


def _snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes and modification time: the oracle that nothing was touched."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("other", [{"seed": 1}, {"profile": "quick"}, {"dataset": "cifar10"}])
def test_a_run_of_other_settings_is_refused_and_the_folder_is_untouched(kit_folder, other):
    folder, out, ran = kit_folder
    pipeline.run(profile="smoke", out=out, folder=folder)
    ran()
    before = _snapshot(out)
    settings = {"profile": "smoke", **other}
    with pytest.raises(KitError, match=r"holds a run with profile smoke, dataset fashion-mnist, seed 0; resume it"):
        pipeline.run(out=out, folder=folder, **settings)
    assert _snapshot(out) == before and ran() == []


def test_a_failed_rerun_keeps_the_good_run_until_a_later_success_tidies_the_failure_away(tmp_path):
    folder, log, flag = tmp_path / "notebooks", tmp_path / "executions.log", tmp_path / "fail"
    folder.mkdir()
    params = 'OUT_DIR = ""\nRUN_DIR = ""\n'
    _notebook(folder / "01_a.ipynb", params, log)
    _notebook(folder / "02_b.ipynb", params, log,  # it fails after overwriting its outputs, as a late cell would
              after=f"if os.path.exists({str(flag)!r}):\n    open(os.path.join(OUT_DIR, 'partial'), 'w').write('x')\n"
                    "    raise RuntimeError('broken on purpose')")
    out = tmp_path / "run"
    pipeline.run(profile="smoke", out=out, folder=folder)
    (out / "02_b" / "user-notes.txt").write_text("mine")  # a file the user added: carried over by a rerun
    good = _snapshot(out / "02_b")

    flag.touch()
    failing = (r"02_b failed in cell 2, line 11 \(`raise RuntimeError\('broken on purpose'\)`\) with RuntimeError: "
               r"broken on purpose; the executed notebook is .*/02_b.failed.ipynb; the previous run's folder is "
               r"untouched, and rerunning the same command resumes this attempt")  # the line that raised, named
    with pytest.raises(KitError, match=failing):
        pipeline.run(profile="smoke", out=out, folder=folder, only=["02"], force=True)
    after = _snapshot(out / "02_b")
    assert after.pop("02_b.failed.ipynb") and after == good  # the good notebook, stamp and outputs, byte for byte
    summary = io.read_json(out / "pipeline.json")
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "failed"] and summary["force"] is True

    flag.unlink()
    log.unlink()
    pipeline.run(profile="smoke", out=out, folder=folder, only=["02"], force=True)  # success supersedes the failure
    assert not (out / "02_b" / "02_b.failed.ipynb").exists() and log.read_text().split() == ["02_b"]
    assert (out / "02_b" / "partial").read_text() == "x"  # the attempt was resumed from its staging folder
    assert (out / "02_b" / "user-notes.txt").read_text() == "mine"  # the user's file is carried over
    assert set(io.read_json(out / "02_b" / stamps.STAMP)["outputs"]) == {"metrics.json", "model.pt", "partial"}
    assert not (out / ".staging").exists()

    flag.touch()  # it fails again; a later run that finds 02_b up to date (its good run) tidies the failure away
    with pytest.raises(KitError, match=failing):
        pipeline.run(profile="smoke", out=out, folder=folder, only=["02"], force=True)
    assert (out / ".staging" / "02_b").is_dir() and (out / "02_b" / "02_b.failed.ipynb").is_file()
    flag.unlink()
    log.unlink()
    records = pipeline.run(profile="smoke", out=out, folder=folder, seeds=2)  # no notebook 03: the same runs
    assert [r["status"] for r in records] == ["skipped", "skipped"] and not log.exists()
    assert not (out / ".staging").exists() and not (out / "02_b" / "02_b.failed.ipynb").exists()
    assert (out / "02_b" / "user-notes.txt").read_text() == "mine" and io.read_json(out / "pipeline.json")["seeds"] == 2


def test_an_unreadable_stamp_means_rerun(kit_folder):
    folder, out, ran = kit_folder
    pipeline.run(profile="smoke", out=out, folder=folder, only=["01"])
    (out / "01_a" / stamps.STAMP).write_text("{not json")
    assert [r["status"] for r in pipeline.run(profile="smoke", out=out, folder=folder, only=["01"])] == ["ok"]
    assert ran() == ["01_a", "01_a"]


def test_seeds_sets_the_seeded_rows_of_notebook_03():
    quick = pipeline.variants(MORPH, "quick", seed=5, seeds=2)
    one = {"SETTING": "layer2.1,layer2.2,layer3.1:1", "GAMMAS_EVAL": [0.0, 0.25, 0.5], "SEED": 5}
    assert quick == [("null-s5", {"METHOD": "null", "SEED": 5, "GAMMAS_EVAL": [0.0]}),
                     ("null-s6", {"METHOD": "null", "SEED": 6, "GAMMAS_EVAL": [0.0]}),
                     ("null-blocks1", {"METHOD": "null", "SETTING": one["SETTING"], "GAMMAS_EVAL": [0.0], "SEED": 5}),
                     *[(f"{m}-s{s}", {"METHOD": m, "SEED": s}) for m in ("htty", "neumeta", "blockwise") for s in (5, 6)],
                     ("htty-blocks1", {"METHOD": "htty", **one}), ("neumeta-blocks1", {"METHOD": "neumeta", **one})]
    assert pipeline.variants(MORPH, "quick", seeds=None) == pipeline.variants(MORPH, "quick", seeds=1)
    assert pipeline.variants(MORPH, "full") == pipeline.variants(MORPH, "full", seeds=3)
    full, single = pipeline.variants(MORPH, "full"), pipeline.variants(MORPH, "full", seeds=1)
    assert [n for n, _ in single[:5]] == ["null", "null-blocks1", "htty", "neumeta", "blockwise"]
    assert single[5:] == full[13:]  # the other rows run once either way
    assert single == pipeline.variants(MORPH, "quick")  # full is quick at three seeds: no ablation rows
    ablations = pipeline.variants(MORPH, "ablations")
    assert len(ablations) == len(single) + 1 + 1 + 18 + 1  # + the pre-fit recipe, block sweep, 18 ablations, HTTY ×3
    assert [n for n, _ in ablations if n != "prefit"][:len(single)] == [n for n, _ in single]
    assert {n for n, _ in ablations[len(single):]} >= {"neumeta-blocks2", "htty-no-alpha", "prefit-no-prefit", "htty-x3",
                                                       "blockwise-no-blockwise"}
    assert len(pipeline.variants(MORPH, "paper", seeds=1)) == 32  # paper: 6-block sweep
    assert pipeline.variants("01_prior_training", "full", seeds=4) == [("", {})]
    assert pipeline.variants("04_baselines", "full") == [("", {"SEEDS": 3})]  # every seed's baselines in one run
    assert pipeline.variants("04_baselines", "quick", seeds=2) == [("", {"SEEDS": 2})]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_seeds_must_be_a_positive_integer(bad, tmp_path):
    with pytest.raises(KitError, match=r"number of seeds must be an integer ≥ 1"):
        pipeline.variants(MORPH, "quick", seeds=bad)
    with pytest.raises(KitError, match=r"number of seeds must be an integer ≥ 1"):
        pipeline.run(profile="smoke", out=tmp_path, seeds=bad)


def test_cli_passes_seeds_and_force(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        return [{"notebook": "01_a", "status": "skipped", "seconds": 0}]
    monkeypatch.setattr(pipeline, "run", fake_run)
    assert cli.main(["pipeline", "--profile", "smoke", "--out", str(tmp_path), "--seeds", "2", "--force"]) == 0
    assert seen["seeds"] == 2 and seen["force"] is True and "1 up to date and skipped" in capsys.readouterr().out
    cli.main(["pipeline", "--profile", "smoke", "--out", str(tmp_path)])
    assert seen["seeds"] is None and seen["force"] is False and seen["overrides"] == {} and seen["params"] == []
    cli.main(["pipeline", "--profile", "smoke", "--out", str(tmp_path), "--set", "morph.inr.hidden=64",
              "prior.data.name=cifar10", "-p", "EPOCH_SCALE", "3", "-p", "04:CRITERIA", '["l1"]', "-p", "X", "abc"])
    assert seen["overrides"] == {"morph.inr.hidden": 64, "prior.data.name": "cifar10"}
    assert seen["params"] == [("EPOCH_SCALE", 3), ("04:CRITERIA", ["l1"]), ("X", "abc")]


def test_bad_pipeline_input_is_one_sentence_before_any_work(kit_folder, tmp_path):
    folder, out, ran = kit_folder
    go = lambda **kw: pipeline.run(profile="smoke", out=kw.pop("out", out), folder=folder, **kw)
    for kw, message in [({"timeout": 0}, r"--timeout .* positive integer; got 0"),
                        ({"timeout": -5}, r"positive integer; got -5"),
                        ({"overrides": {"optim.lr": 1}}, r"starts with the config it sets, one of prior, permute"),
                        ({"overrides": {"morph.nope": 1}}, r"Unknown config key 'nope'"),
                        ({"params": [("NOPE", 1)]}, r"no notebook declares a parameter 'NOPE'"),
                        ({"params": [("01:X", 1)]}, r"no notebook numbered 01 declares a parameter 'X'"),
                        ({"params": [("SEED", 1)]}, r"the pipeline sets SEED itself"),
                        ({"params": [("METHOD", "null")]}, r"the pipeline sets METHOD per run of"),
                        ({"overrides": {"morph.seed": 1}}, r"takes it as its parameter SEED, which the pipeline sets"),
                        ({"overrides": {"morph.method": "null"}}, r"parameter METHOD, which the pipeline sets"),
                        ({"overrides": {"morph.optim.epochs": 2}}, r"parameter EPOCHS, so use -p 03:EPOCHS"),
                        ({"out": tmp_path / "file" / "run"}, r"cannot be created: .*file is a file, not a folder")]:
        (tmp_path / "file").write_text("a file")
        with pytest.raises(KitError, match=message):
            go(**kw)
    assert ran() == [] and not out.exists()

    go()
    ran()
    (out / "02_b" / "model.pt").unlink()
    before = _snapshot(out)
    with pytest.raises(KitError, match=r"--only 03 reads 02_b, which is not complete .* run it first, e.g. --only 02"):
        go(only=["03"])
    assert ran() == [] and _snapshot(out) == before


def test_every_config_section_reaches_the_one_notebook_building_it_which_declares_set():
    import papermill as pm
    for section, cls in overrides.SECTIONS.items():
        builders = [nb for nb in pipeline.discover() if f"C.build(C.{cls.__name__}," in nb.read_text()]
        assert [nb.name[:2] for nb in builders] == [overrides.SECTION_NOTEBOOK[section]]
        declared = pm.inspect_notebook(str(builders[0]))
        assert declared["SET"]["default"] == "{}"
        assert all(p in declared for k, p in overrides.COVERED.items() if k in {"seed", "runtime.device"}
                   and p in declared)  # a parameter the table names is one the notebook has


def test_kernels_talk_over_ipc_without_warnings_or_stray_files(kit_folder, capfd):
    folder, out, ran = kit_folder
    before = sorted(p.name for p in folder.iterdir())
    pipeline.run(profile="smoke", out=out, folder=folder, only=["01"])
    assert "without encryption" not in capfd.readouterr().err and ran() == ["01_a"]
    assert sorted(p.name for p in folder.iterdir()) == before  # no kernel-ipc-N sockets beside the notebooks


RUNNER = """import sys
from kit import pipeline
from kit.errors import KitError
try:
    pipeline.run(profile="smoke", out=sys.argv[1], folder=sys.argv[2])
except KitError as err:  # as the command line prints it
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def test_two_pipelines_started_together_on_one_folder(tmp_path):
    """The one that gets the folder holds it until its notebook is let go, so the other necessarily tries while
    it is held: refused, naming the first, which then finishes undisturbed."""
    import subprocess
    import sys
    import time
    folder, log, go = tmp_path / "notebooks", tmp_path / "executions.log", tmp_path / "go"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", 'OUT_DIR = ""\nRUN_DIR = ""\n', log,
              extra=f"import time\nfor _ in range(1200):\n    if os.path.exists({str(go)!r}):\n        break\n"
                    "    time.sleep(0.1)")
    out = tmp_path / "run"
    both = [subprocess.Popen([sys.executable, "-c", RUNNER, str(out), str(folder)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for _ in range(1200):  # until one has exited: the refused one (the other waits for `go`)
        if any(p.poll() is not None for p in both):
            break
        time.sleep(0.1)
    refused = next(p for p in both if p.poll() is not None)
    first = next(p for p in both if p is not refused)
    error = refused.stderr.read()
    assert refused.returncode == 2 and first.poll() is None, error
    assert error.startswith(f"error: {out.resolve()} is being written by pipeline (pid {first.pid} on ") and \
        error.count("\n") == 1 and "Traceback" not in error  # one sentence, naming the other process
    go.touch()
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert log.read_text().split() == ["01_a"] and stamps.intact(out / "01_a") is not None
    assert not (out / ".staging").exists() and not (out / lock.LOCK).exists()


class _Killed(BaseException):
    """A SIGKILL at one step: nothing after it runs, not even cleanup handlers (see _kill_at)."""


def _kill_at(monkeypatch, step: int | None) -> list:
    """Make the `step`-th file-system change (rename, delete, mkdir; None: none) and every one after it raise
    _Killed, as if the process died there; returns the log of changes made."""
    import os
    done = []

    def wrap(name):
        real = getattr(os, name)

        def changed(*args, **kwargs):
            if step is not None and len(done) >= step:
                raise _Killed(name)
            done.append(name)
            return real(*args, **kwargs)
        monkeypatch.setattr(os, name, changed)
    for name in ("replace", "rename", "unlink", "rmdir", "mkdir"):
        wrap(name)
    return done


def _a_run_and_its_attempt(run: Path, name: str = f"{MORPH}/htty") -> dict:
    """run/<name>: a stamped run, its published report, a user's files and an earlier failure's notebook; its
    successful attempt in staging, ready to promote. Returns the attempt's `wanted`."""
    old, nb, wanted = run / name, "03.ipynb", {"parameters": {"X": 1}, "upstream": {}}
    stamps.prepare(stamps.staging(run, name), wanted)
    for folder, what in ((old, "old"), (stamps.staging(run, name), "new")):
        (folder / stamps.RUN_LEVEL).mkdir(parents=True)
        (folder / "model.pt").write_text(what)
        (folder / nb).write_text(f"{what} notebook")
        (folder / stamps.RUN_LEVEL / "report.md").write_text(f"{what} report")
    stamps.write(old, {"parameters": {"X": 0}}, old / nb, "old-id", "then")
    stamps.publish(old, run)
    (old / "notes.txt").write_text("mine")
    (old / "sub").mkdir()
    (old / "sub" / "more.txt").write_text("mine too")
    (old / ("03" + stamps.FAILED)).write_text("an earlier failure")
    return wanted


def _users_files(run: Path, name: str = f"{MORPH}/htty") -> list[str]:
    """Where the user's two files are, wherever a promote left them (in the run, the attempt or the old run)."""
    places = [run / name, stamps.staging(run, name), run / stamps.STAGING / (name + stamps.REPLACED)]
    return sorted(f"{p.relative_to(run)}:{f}" for p in places for f in ("notes.txt", "sub/more.txt")
                  if (p / f).is_file() and (p / f).read_text().startswith("mine"))


def test_a_promote_killed_at_any_step_leaves_the_old_or_the_new_run_with_the_users_files(tmp_path, monkeypatch):
    name = f"{MORPH}/htty"
    wanted = _a_run_and_its_attempt(tmp_path / "clean")
    steps = _kill_at(monkeypatch, None)
    stamps.promote(tmp_path / "clean", name, wanted, "03.ipynb", "new-id", "now")
    monkeypatch.undo()
    assert len(steps) >= 8, steps  # the journal, the carry-over, the swap, the clean-up, the report
    outcomes = set()
    for step in range(len(steps)):
        run = tmp_path / f"killed-at-{step}"
        wanted = _promote_killed_at(monkeypatch, run, name, step)
        assert len(_users_files(run)) == 2, (step, _users_files(run))  # each file somewhere, never lost
        assert stamps.recover(run) in (None, name)  # what the next pipeline does first
        final = stamps.read(run / name)
        if final["id"] == "old-id":  # killed before the journal: the old run, whole, and the attempt to resume
            outcomes.add("old")
            assert stamps.intact(run / name) and (run / "report.md").read_text() == "old report"
            assert stamps.prepare(stamps.staging(run, name), wanted) is True  # resumed, not thrown away
            stamps.promote(run, name, wanted, "03.ipynb", "new-id", "now")
        else:
            outcomes.add("new")
        assert stamps.intact(run / name)["id"] == "new-id" and (run / name / "model.pt").read_text() == "new"
        assert _users_files(run) == [f"{name}:notes.txt", f"{name}:sub/more.txt"], step
        assert (run / "report.md").read_text() == "new report"  # published once in place, never before
        assert not (run / stamps.STAGING).exists() and not (run / stamps.JOURNAL).exists(), step
        assert not (run / name / ("03" + stamps.FAILED)).exists()  # superseded by the success
    assert outcomes == {"old", "new"}


def _promote_killed_at(monkeypatch, run, name: str, step: int) -> dict:
    """A run folder whose promote of a completed attempt was killed at file-system step `step`; its `wanted`."""
    wanted = _a_run_and_its_attempt(run)
    _kill_at(monkeypatch, step)
    with pytest.raises(_Killed):
        stamps.promote(run, name, wanted, "03.ipynb", "new-id", "now")
    monkeypatch.undo()
    return wanted


def test_recovery_itself_killed_is_finished_by_the_next(tmp_path, monkeypatch):
    name = f"{MORPH}/htty"
    for first in (3, 6, 9):  # a promote killed mid-way, then its recovery killed at each of its steps
        for second in range(12):
            run = tmp_path / f"{first}-{second}"
            wanted = _promote_killed_at(monkeypatch, run, name, first)
            _kill_at(monkeypatch, second)
            with contextlib.suppress(_Killed):
                stamps.recover(run)
            monkeypatch.undo()
            assert len(_users_files(run)) == 2
            stamps.recover(run)
            if stamps.read(run / name)["id"] == "old-id":
                stamps.promote(run, name, wanted, "03.ipynb", "new-id", "now")
            assert stamps.intact(run / name)["id"] == "new-id" and not (run / stamps.STAGING).exists()
            assert _users_files(run) == [f"{name}:notes.txt", f"{name}:sub/more.txt"]


def test_an_unreadable_promote_journal_is_one_sentence(tmp_path):
    for journal in ("{half", '{"name": "../../elsewhere", "executed": "a", "wanted": {}, "id": 1, "finished": 1}'):
        (tmp_path / stamps.JOURNAL).write_text(journal)
        with pytest.raises(KitError, match=r"\.promote\.json \(a promote under way\) cannot be read; delete it"):
            stamps.recover(tmp_path)


def test_p_values_are_checked_against_the_notebooks_before_any_work(kit_folder, tmp_path):
    real = tmp_path / "real"
    for value, message in [("abc", r"-p 04:FINETUNE_EPOCHS \"abc\": config key 'finetune_epochs' must be int"),
                           (-3, r"-p 04:FINETUNE_EPOCHS -3: .*finetune_epochs, finetune_images ≥ 0"),
                           (1.5, r"must be int, got 1.5")]:
        with pytest.raises(KitError, match=message):  # through the config field the parameter sets
            pipeline.run(profile="smoke", out=real, params=[("04:FINETUNE_EPOCHS", value)])
    with pytest.raises(KitError, match=r"-p 04:CRITERIA \[\"nope\"\]: unknown pruning criterion 'nope'"):
        pipeline.run(profile="smoke", out=real, params=[("04:CRITERIA", ["nope"])])
    assert not real.exists()
    folder, out, ran = kit_folder  # a parameter no config holds: the type of its default
    with pytest.raises(KitError, match=r"-p X \"abc\": 02_b declares X = 0, so it takes a int, not a str"):
        pipeline.run(profile="smoke", out=out, folder=folder, params=[("X", "abc")])
    with pytest.raises(KitError, match=r"takes a int, not a bool"):
        pipeline.run(profile="smoke", out=out, folder=folder, params=[("X", True)])
    assert ran() == [] and not out.exists()


def test_a_closed_stdout_silences_the_pipeline_but_does_not_stop_it(tmp_path):
    """`kit pipeline | head -3`: once the reader has gone, every print fails; here it is gone from the start (and
    then, as with `2>&1 | head`, for stderr too)."""
    import os
    import subprocess
    import sys
    folder, log = tmp_path / "notebooks", tmp_path / "executions.log"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", 'OUT_DIR = ""\nRUN_DIR = ""\n', log,
              extra="import sys\nprint('cell output\\n' * 100)\nprint('a warning', file=sys.stderr)")
    for out, both in ((tmp_path / "run", False), (tmp_path / "run-2", True)):
        read, write = os.pipe()
        os.close(read)
        done = subprocess.run([sys.executable, "-c", RUNNER, str(out), str(folder)], stdout=write,
                              stderr=write if both else subprocess.PIPE, text=True, timeout=300)
        os.close(write)
        assert done.returncode == 0 and (both or done.stderr == "a warning\n"), done.stderr  # and no traceback
        assert stamps.intact(out / "01_a") is not None and not (out / ".staging").exists()
    assert log.read_text().split() == ["01_a", "01_a"]


def test_device_is_not_stamped_and_a_full_disk_or_read_only_folder_is_one_sentence(tmp_path, monkeypatch, capsys):
    import errno
    import os
    folder, log, out = tmp_path / "notebooks", tmp_path / "executions.log", tmp_path / "run"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", 'OUT_DIR = ""\nRUN_DIR = ""\nDEVICE = "auto"\n', log)
    assert [r["status"] for r in pipeline.run(profile="smoke", out=out, folder=folder)] == ["ok"]
    assert "DEVICE" not in io.read_json(out / "01_a" / stamps.STAMP)["parameters"]
    capsys.readouterr()
    # --device cpu on a run made with auto: the same runs (on this CPU machine, and on any), said in one line
    assert [r["status"] for r in pipeline.run(profile="smoke", out=out, folder=folder, device="cpu")] == ["skipped"]
    assert "made with --device auto; those this invocation makes use cpu" in capsys.readouterr().out
    assert log.read_text().split() == ["01_a"] and io.read_json(out / "pipeline.json")["device"] == "cpu"

    before = _snapshot(out)
    real_write = Path.write_text

    def full(self, text, *args, **kwargs):  # the disk fills up half-way through pipeline.json
        if self.name.startswith(".pipeline.json."):
            real_write(self, text[:len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, text, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(KitError, match=rf"Writing in {out} failed: No space left on device \(.*\.pipeline\.json\..*"
                                       r"\); free space or fix the folder's permissions, then rerun the same command"):
        pipeline.run(profile="smoke", out=out, folder=folder, device="cpu")
    monkeypatch.undo()
    assert _snapshot(out) == before  # no partial file; the old record whole

    real_access = os.access  # a read-only run folder (as root, permissions would not stop a write)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != out and real_access(p, mode, **kw))
    with pytest.raises(KitError, match=rf"{out} cannot be written by this user \(read-only\?\); make it writable"):
        pipeline.run(profile="smoke", out=out, folder=folder, device="cpu")
    assert _snapshot(out) == before


def test_another_number_of_seeds_is_refused_where_it_would_mix_runs(kit_folder):
    folder, out, ran = kit_folder
    (out / MORPH / "htty").mkdir(parents=True)  # a 1-seed run folder's notebook-03 run, as the pipeline leaves it
    io.write_json({"id": "1", "outputs": {}}, out / MORPH / "htty" / stamps.STAMP)
    io.write_json({"profile": "smoke", "dataset": "fashion-mnist", "seed": 0, "seeds": 1, "notebooks": []},
                  out / "pipeline.json")
    before = _snapshot(out)
    with pytest.raises(KitError, match=rf"{out} holds runs of 1 seed\(s\) \({MORPH}/htty\) that --seeds 2 would "
                                       r"leave beside its own, .*; resume with --seeds 1, or give this run another"):
        pipeline.run(profile="smoke", out=out, folder=folder, seeds=2)
    assert _snapshot(out) == before and ran() == []
    every = lambda k: [(nb, s, e) for nb in pipeline.discover(folder)  # noqa: E731
                       for s, e in pipeline.variants(nb.stem, "smoke", 0, k)]
    identity = {"profile": "smoke", "dataset": "fashion-mnist", "seed": 0}
    for k in (0, 1):  # 2 seeds → 3 adds htty-s2/ …: every run of the folder's plan is in the new one
        io.write_json({"id": "1", "outputs": {}}, out / MORPH / f"htty-s{k}" / stamps.STAMP)
    (out / MORPH / "htty" / stamps.STAMP).unlink()
    io.write_json({**identity, "seeds": 2, "notebooks": []}, out / "pipeline.json")
    pipeline._check_folder(out, identity, 3, every(3), pipeline.discover(folder), {})
    with pytest.raises(KitError, match=r"holds runs of 2 seed\(s\) \(.*htty-s0, .*htty-s1\) that --seeds 1"):
        pipeline._check_folder(out, identity, 1, every(1), pipeline.discover(folder), {})
