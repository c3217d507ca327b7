"""The command line as a hostile tester drives it: every bad input is one sentence on stderr (exit 2), never a
traceback; a closed pipe ends the command quietly; a failed write leaves no partial file. The checkpoint used is a
small untrained metamorphic network (the commands' arithmetic is tested on trained ones in test_metatrain)."""
import errno
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from kit import arguments, cli, io, metamorph, models, morphtask, results
from kit import data as D
from kit import config as C
from kit.errors import KitError


def _fails(capsys, argv, *words):
    """The command exits 2 with one line on stderr holding every one of `words` (beside `evaluate`'s progress bar),
    and no traceback."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line and not line.startswith("evaluate: ")]
    assert len(lines) == 1 and all(w in lines[0] for w in words) and "Traceback" not in err, err
    return err


@pytest.fixture
def checkpoint(tmp_path):
    """A metamorph.pt of an untrained ResNet-8 with one generated block, in its own folder."""
    net = metamorph.MetamorphicNet(models.fold_bn(models.resnet(8, 8, 1, 10).eval()), ["layer2.0"],
                                   C.INRConfig(hidden=8, depth=2, num_freqs=2))
    folder = tmp_path / "run"
    return net.save(folder / "metamorph.pt", config={"k_samples": 1, "gamma_max": 0.5, "pool_size": 3},
                    prior_config=C.to_dict(C.build(C.PriorConfig, "smoke")), dataset="fashion-mnist",
                    input_shape=[1, 28, 28])


@pytest.fixture
def no_data(monkeypatch):
    """`evaluate` without a dataset: each γ scores 0.5 (what is tested here is the command around the evaluation)."""
    calls = []
    monkeypatch.setattr(D, "for_prior", lambda *a, **k: SimpleNamespace(device="cpu"))
    monkeypatch.setattr(morphtask, "evaluate_gammas",
                        lambda net, data, gammas, *a, **k: calls.append(list(gammas)) or
                        {metamorph.gamma_key(g): 0.5 for g in gammas})
    return calls


# ---------------------------------------------------------------- summary on records it cannot read

def _record(folder, text):
    path = folder / results.MORPH_FOLDER / "htty" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, words", [
    ('[1, 2]', "holds a JSON list, not an object"),
    ('{"method": "htty", "setting": "all"}', "has no 'accuracy' table"),
    ('{"method": "htty", "accuracy": {"0": "high"}}', "accuracy at γ = 0 is 'high', not a number in [0, 1]"),
    ('{"method": "htty", "accuracy": {"zero": 0.9}}', "keyed by 'zero', not a γ"),
    ('{"method": "htty", "accuracy": {"0": 90}}', "not a number in [0, 1]"),
    ('{"method": "htty", "accuracy": {"0": NaN}}', "'accuracy.0' is NaN or Infinity"),
    ('{"method": "htty", "accuracy": {"0": 0.9}, "train_seconds": Infinity}', "'train_seconds' is NaN or Infinity"),
    ('{"method": "htty", "accuracy": {"0": 0.9}, "history": [{"loss": -Infinity}]}', "'history.0.loss' is NaN"),
    ('{"method": "htty", "accuracy": {"0": 0.9}, "train_seconds": "1 min"}', "'train_seconds' is '1 min'"),
    ('{"method": 3, "accuracy": {"0": 0.9}}', "'method' is 3, not a string"),
])
def test_summary_refuses_a_record_it_cannot_read_in_one_sentence_naming_it(capsys, tmp_path, text, words):
    path = _record(tmp_path, text)
    _fails(capsys, ["summary", str(tmp_path)], str(path), words, "rerun notebook 03")


def test_summary_without_a_recorded_prior_or_training_time_prints_dashes_not_nan(capsys, tmp_path):
    _record(tmp_path, '{"method": "htty", "setting": "all", "accuracy": {"0": 0.9}}')
    assert cli.main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| prior | | – |" in out and "htty: training time not recorded" in out
    assert "nan" not in out.lower() and "inf" not in out.lower()


def test_summary_into_a_closed_pipe_ends_quietly(tmp_path):
    for s in range(40):  # enough lines that the command writes after the reader has gone
        io.write_json({"method": f"htty{s}", "setting": "all", "accuracy": {"0": 0.9}, "train_seconds": 1.0},
                      tmp_path / results.MORPH_FOLDER / f"v{s}" / "metrics.json")
    proc = subprocess.Popen([sys.executable, "-m", "kit", "summary", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


# ---------------------------------------------------------------- lab --port

@pytest.fixture
def no_lab(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    return calls


@pytest.mark.parametrize("port", ["-1", "0", "65536", "99999"])
def test_lab_refuses_a_port_out_of_range(capsys, no_lab, port):
    _fails(capsys, ["lab", "--port", port, "--no-browser"], f"--port must be a port number from 1 to 65535; got {port}")
    assert no_lab == []


def test_lab_refuses_a_busy_port_and_never_moves_to_another(capsys, no_lab):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _fails(capsys, ["lab", "--port", str(port), "--no-browser"], f"Port {port} is in use by another program")
    assert no_lab == []
    assert cli.main(["lab", "--port", str(port), "--no-browser"]) == 0  # free again once the listener closed
    assert f"--ServerApp.port={port}" in no_lab[0] and "--ServerApp.port_retries=0" in no_lab[0]


# ---------------------------------------------------------------- --gammas and --gamma

def test_gammas_are_numbers_each_listed_once_and_finite():
    assert arguments.parse_gammas("0, 0.25,-0.25") == [0.0, 0.25, -0.25]
    for text, words in [("0,,0.5", "an empty element"), ("0,0.5,", "an empty element"), (",", "at least one number"),
                        ("0,half", "comma-separated numbers"), ("0,0,0.0,-0", "0 and 0 are both γ = 0"),
                        ("0.5,0.50", "0.5 and 0.50 are both γ = 0.5"), ("-1e309", "finite number; got -inf (from '-1e309')"),
                        ("0,nan", "finite number"), ("inf", "finite number")]:
        with pytest.raises(KitError, match=None) as err:
            arguments.parse_gammas(text)
        assert words in str(err.value), (text, str(err.value))
    with pytest.raises(KitError, match=f"at most {arguments.MAX_GAMMAS} per call"):
        arguments.parse_gammas(",".join(str(i / 10_000) for i in range(arguments.MAX_GAMMAS + 1)))
    assert len(arguments.parse_gammas(",".join(str(i / 10_000) for i in range(arguments.MAX_GAMMAS)))) == arguments.MAX_GAMMAS


def test_a_gamma_list_starting_with_a_minus_is_a_value_not_an_option(capsys, checkpoint, no_data, tmp_path):
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "-1e309,0"], "finite number")
    _fails(capsys, ["morph", "--checkpoint", str(checkpoint), "--gamma", "-1e309", "--out", str(tmp_path / "m.pt")],
           "finite number")
    assert not (tmp_path / "m.pt").exists()
    csv = tmp_path / "e.csv"
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--gammas", "-1e-1,0", "--csv", str(csv)]) == 0
    assert no_data == [[-0.1], [0.0]] and csv.read_text().splitlines()[1].startswith("-0.1,")
    with pytest.raises(SystemExit):  # a real option after --gammas is still argparse's missing value
        cli.main(["evaluate", "--checkpoint", str(checkpoint), "--gammas", "--k", "2"])


def test_evaluate_shows_its_progress_one_gamma_at_a_time(capsys, checkpoint, no_data, tmp_path):
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0,0.25,0.5",
                     "--csv", str(tmp_path / "e.csv")]) == 0
    assert no_data == [[0.0], [0.25], [0.5]] and "3/3" in capsys.readouterr().err  # tqdm's bar on stderr


# ---------------------------------------------------------------- a full disk

@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write of `kit.io` fails as a full disk does: after writing, before the file is in place."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io.os, "fsync", no_space)


def test_a_full_disk_is_one_sentence_and_leaves_no_partial_file(capsys, checkpoint, no_data, full_disk):
    folder = checkpoint.parent
    before = sorted(p.name for p in folder.iterdir())
    _fails(capsys, ["morph", "--checkpoint", str(checkpoint), "--gamma", "0.25", "--out", str(folder / "m.pt")],
           f"The --out file {folder / 'm.pt'} could not be written (No space left on device)")
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0,0.25"],
           "--csv file", "evaluate.csv could not be written (No space left on device), so it was left as it was")
    assert sorted(p.name for p in folder.iterdir()) == before  # no temporary file, no half-written target
    (folder / "evaluate.csv").write_text("an earlier table\n")
    _fails(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--gammas", "0"], "No space left on device")
    assert (folder / "evaluate.csv").read_text() == "an earlier table\n"  # the earlier file is kept, whole
