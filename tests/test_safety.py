"""Nothing already written is destroyed, and a bad path is one sentence: the oracle is that every file a refused
command could have touched is byte-identical afterwards (and a device or pipe is still one)."""
import os
import stat

import pytest

from kit import cli, io, results, runtime
from kit.errors import KitError


def _fails(capsys, argv, words):
    """The command exits 2 with one line on stderr containing `words`, and no traceback."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "metamorph.pt"
    path.write_bytes(b"a trained metamorphic network")  # refused before it is read: any bytes do
    return path


def test_morph_and_evaluate_refuse_to_overwrite_their_input(capsys, checkpoint):
    before = checkpoint.read_bytes()
    _fails(capsys, ["morph", "--checkpoint", str(checkpoint), "--gamma", "0.5", "--out", str(checkpoint)],
           "is also this command's input")
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0", "--csv", str(checkpoint)],
           "is also this command's input")
    link = checkpoint.with_name("link.pt")  # the same file by another name
    link.symlink_to(checkpoint)
    _fails(capsys, ["morph", "--checkpoint", str(checkpoint), "--gamma", "0.5", "--out", str(link)],
           "is also this command's input")
    assert checkpoint.read_bytes() == before and link.is_symlink()


def test_a_target_that_is_not_a_regular_file_is_refused_before_any_work(capsys, checkpoint, tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # like /dev/full or /dev/null: a rename over it would turn it into a plain file
    for argv in (["morph", "--checkpoint", str(checkpoint), "--gamma", "0.5", "--out", str(pipe)],
                 ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0", "--csv", str(pipe)]):
        _fails(capsys, argv, "is not a regular file")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    with pytest.raises(KitError, match="is not a regular file"):
        io.write_json({"a": 1}, pipe)  # the writers refuse too, whoever calls them
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


def test_folders_and_files_in_the_way_are_one_sentence(capsys, checkpoint, tmp_path):
    folder, afile = tmp_path / "folder", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("not a folder")
    base = ["morph", "--checkpoint", str(checkpoint), "--gamma", "0.5", "--out"]
    _fails(capsys, base + [str(folder)], "is a folder; name the file to write")
    _fails(capsys, base + [str(afile / "x.pt")], "is a file, not a folder")
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0", "--csv", str(folder)],
           "is a folder")
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0", "--csv", str(afile / "e.csv")],
           "is a file, not a folder")
    for command in (["train-prior", "--profile", "smoke"], ["pipeline", "--profile", "smoke"]):
        _fails(capsys, command + ["--out", str(afile)], "is a file, not a folder")
        _fails(capsys, command + ["--out", str(afile / "run")], "cannot be created")
    _fails(capsys, ["pipeline", "--profile", "smoke", "--out", str(tmp_path / "run"), "--timeout", "0"],
           "--timeout is the seconds allowed per cell and must be a positive integer")
    assert afile.read_text() == "not a folder" and list(folder.iterdir()) == []
    assert not (tmp_path / "run").exists()


def test_a_symlinked_target_is_written_through_and_stays_a_link(tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("{}")
    link.symlink_to(real)
    io.write_json({"a": 1}, link)
    assert link.is_symlink() and io.read_json(real) == {"a": 1}


def _morph_record(folder, name, setting="all", seed=0, accuracy=0.9):
    io.write_json({"method": "htty", "ablation": "none", "setting": setting, "seed": seed, "prior_accuracy": 0.93,
                   "accuracy": {"0": accuracy}, "train_seconds": 1.0},
                  folder / results.MORPH_FOLDER / name / "metrics.json")


def test_summary_names_a_corrupt_record_and_the_valid_settings(capsys, tmp_path):
    _morph_record(tmp_path, "htty")
    _fails(capsys, ["summary", str(tmp_path), "--setting", "layer9.9"],
           "No run of setting 'layer9.9' here; the settings run are: all.")
    (tmp_path / results.MORPH_FOLDER / "htty" / "metrics.json").write_text('{"method": "ht')  # truncated
    _fails(capsys, ["summary", str(tmp_path)], "htty/metrics.json is not valid JSON")
    _fails(capsys, ["summary", str(tmp_path / "nothing")], "is not a folder")


def test_summary_says_one_seed_has_no_spread(capsys, tmp_path):
    _morph_record(tmp_path, "htty")
    io.write_json({"method": "neumeta", "ablation": "none", "setting": "all", "prior_accuracy": 0.93,
                   "accuracy": {"0": 0.8}, "train_seconds": 1.0},
                  tmp_path / results.MORPH_FOLDER / "neumeta" / "metrics.json")
    assert cli.main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 seed, no spread" in out and "spread 0.00" not in out and "± 0 s" not in out


def test_relative_paths_are_taken_from_the_project_root_whatever_the_current_folder(capsys, tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _morph_record(root / "results" / "r", "htty")
    elsewhere.mkdir()
    monkeypatch.setattr(runtime, "PROJECT_ROOT", root)
    monkeypatch.chdir(elsewhere)
    assert cli.main(["summary", "results/r"]) == 0 and "| htty | 1 | 90.00 |" in capsys.readouterr().out
    assert runtime.project_path("results/r") == root / "results" / "r"


def test_every_command_resolves_relative_paths_from_the_project_root(capsys, tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "m.pt").write_bytes(b"weights")
    elsewhere.mkdir()
    (elsewhere / "runs").mkdir()  # the same relative name from the current folder: must not be the one meant
    monkeypatch.setattr(runtime, "PROJECT_ROOT", root)
    monkeypatch.chdir(elsewhere)
    _fails(capsys, ["morph", "--checkpoint", "runs/m.pt", "--gamma", "0.5", "--out", "runs/m.pt"],
           "is also this command's input")  # both resolved from the root: the same file
    _fails(capsys, ["evaluate", "--checkpoint", "runs/m.pt", "--gammas", "0", "--csv", "runs/m.pt"],
           "is also this command's input")
    assert (root / "runs" / "m.pt").read_bytes() == b"weights" and list((elsewhere / "runs").iterdir()) == []


def test_records_hold_their_own_files_relative_so_a_moved_folder_stays_true(tmp_path):
    out = tmp_path / "run" / "01"
    io.write_metrics(out, {"checkpoint": str(out / "prior.pt"), "prior": "/elsewhere/prior.pt",
                           "files": [out / "a.png", str(tmp_path / "run" / "report.md")], "accuracy": 0.9})
    record = io.read_json(out / "metrics.json")
    assert record["checkpoint"] == "prior.pt" and record["prior"] == "/elsewhere/prior.pt"
    assert record["files"] == ["a.png", str(tmp_path / "run" / "report.md")] and record["accuracy"] == 0.9
