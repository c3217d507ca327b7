"""A checkpoint from someone else cannot run code, and a bad one is one sentence: the oracle for code is a marker
file that a crafted pickle creates when it is unpickled (it must never exist); for bad weights and sizes, that the
command says so in one sentence naming the file instead of computing on NaN or allocating without end.

The payload is given, shaped like the file each entry point expects, to every command and function that opens a
checkpoint (evaluate, morph, summary, train-prior's resume, the explorer and its panel, train.load_prior, the
loaders of smoothed.pt and metamorph.pt) and to a notebook through the pipeline, after its stamp was recomputed."""
import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch

from kit import cli, config as C, io, metamorph, models, permute, results, train
from kit.errors import KitError

KIT = Path(__file__).resolve().parents[1] / "kit"


class Payload:
    """Unpickling this calls open(marker, 'w'): it creates the marker file. Only an unpickler that runs what a file
    names can do that."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _plant(path: Path, record: dict, marker: Path, bare: bool = False) -> Path:
    """`record` with its 'arch' replaced by the payload, written as torch.save does (or as a bare pickle)."""
    evil = {**record, "arch": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if bare:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:
        torch.save(evil, path)  # torch.save, not io.save_torch: the kit refuses to write such a file at all
    return path


def _one_sentence(text: str, *words: str) -> None:
    text = text.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.endswith("."), text
    assert all(w in text for w in words), (words, text)


def _fails(capsys, argv, *words) -> None:
    """The command exits 2 with one line on stderr holding `words`."""
    assert cli.main(argv) == 2
    _one_sentence(capsys.readouterr().err, *words)


def _raises(call, *words) -> None:
    with pytest.raises(KitError) as err:
        call()
    _one_sentence(str(err.value), *words)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Valid kit files of a small untrained network (no training: refusals need files of the right layout, and the
    positive controls only need them to load): prior.pt, smoothed.pt, metamorph.pt, and their records."""
    folder = tmp_path_factory.mktemp("kit-files")
    prior_cfg = C.build(C.PriorConfig, "smoke")
    torch.manual_seed(0)
    prior = models.resnet(8, 8, 1, 10).eval()
    base = {"dataset": "fashion-mnist", "input_shape": (1, 28, 28), "config": C.to_dict(prior_cfg)}
    train_record = {"arch": prior.arch, "state_dict": prior.state_dict(), **base, "metrics": {"test_accuracy": 0.1}}
    io.save_torch(train_record, folder / "prior.pt")
    folded = models.fold_bn(prior)
    smoothed_record = {"arch": folded.arch, "state_dict": folded.state_dict(), "report": {"method": "identity"}, **base}
    io.save_torch(smoothed_record, folder / "smoothed.pt")
    morph_cfg = C.build(C.MorphConfig, "smoke", {"inr.hidden": 16, "inr.depth": 2, "k_samples": 2})
    net = metamorph.MetamorphicNet(folded, ["layer3.0"], morph_cfg.inr)
    net.save(folder / "metamorph.pt", config=C.to_dict(morph_cfg), prior_config=C.to_dict(prior_cfg),
             dataset="fashion-mnist", input_shape=(1, 28, 28), skeleton_digest="", metrics={})
    return folder, {"prior.pt": train_record, "smoothed.pt": smoothed_record,
                    "metamorph.pt": torch.load(folder / "metamorph.pt", weights_only=True)}


@pytest.fixture(params=["torch.save", "bare pickle"])
def bare(request):
    return request.param == "bare pickle"


# ---------------------------------------------------------------- a crafted pickle runs nowhere

def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The oracle itself: an unrestricted unpickler creates the marker (so its absence below means something)."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_commands_refuse_a_crafted_metamorph_pt_without_running_it(capsys, files, tmp_path, bare):
    folder, records = files
    marker = tmp_path / "marker"
    evil = _plant(tmp_path / "metamorph.pt", records["metamorph.pt"], marker, bare)
    words = (str(evil), "Python objects", "beyond tensors and plain data", "is refused")
    _fails(capsys, ["evaluate", "--checkpoint", str(evil), "--gammas", "0"], *words)
    _fails(capsys, ["morph", "--checkpoint", str(evil), "--gamma", "0.5", "--out", str(tmp_path / "out.pt")], *words)
    assert not (tmp_path / "out.pt").exists()
    run = tmp_path / "run"  # summary reads a run's checkpoint when its record has no block report
    io.write_json({"method": "htty", "ablation": "none", "setting": "last_block", "seed": 0, "prior_accuracy": 0.9,
                   "accuracy": {"0": 0.8}, "train_seconds": 1.0}, run / results.MORPH_FOLDER / "htty" / "metrics.json")
    _plant(run / results.MORPH_FOLDER / "htty" / "metamorph.pt", records["metamorph.pt"], marker, bare)
    _fails(capsys, ["summary", str(run)], "htty/metamorph.pt", "Python objects")
    assert not marker.exists()


def test_the_explorer_and_the_loaders_refuse_crafted_files_without_running_them(files, tmp_path, bare):
    from kit import explorer, widgets
    folder, records = files
    marker = tmp_path / "marker"
    evil = {name: _plant(tmp_path / name, record, marker, bare) for name, record in records.items()}
    for call, name in ((lambda: explorer.Explorer(evil["metamorph.pt"]), "metamorph.pt"),
                       (lambda: widgets.GammaExplorer(evil["metamorph.pt"]), "metamorph.pt"),
                       (lambda: metamorph.load(evil["metamorph.pt"]), "metamorph.pt"),
                       (lambda: train.load_prior(evil["prior.pt"]), "prior.pt"),  # also exported networks' loader
                       (lambda: permute.load_smoothed(evil["smoothed.pt"]), "smoothed.pt")):
        _raises(call, str(evil[name]), "Python objects", "if an older version of this kit wrote it")
    assert not marker.exists()


def test_a_crafted_training_checkpoint_is_refused_when_a_run_resumes(capsys, tmp_path):
    marker, out = tmp_path / "marker", tmp_path / "prior"
    _plant(out / "checkpoint.pt", {"fingerprint": {}}, marker)
    _fails(capsys, ["train-prior", "--profile", "smoke", "--out", str(out)], str(out / "checkpoint.pt"),
           "Python objects", "delete it to train afresh")
    assert not marker.exists() and not (out / "prior.pt").exists()


def test_a_crafted_cifar_file_placed_in_data_is_refused_without_running_it(tmp_path):
    from kit import datasets
    marker, folder = tmp_path / "marker", tmp_path / datasets.CIFAR["cifar10"]["folder"]
    folder.mkdir()
    spec = datasets.CIFAR["cifar10"]
    for member in spec["train"] + spec["test"] + [spec["meta"]]:  # the standard files, each a payload
        (folder / member).write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2))
    _raises(lambda: datasets.read_cifar("cifar10", tmp_path, download=False), str(folder / spec["train"][0]),
            "Python object", "is refused")
    assert not marker.exists()


def test_kit_files_hold_plain_data_and_nothing_else_is_written_or_read():
    """Every save site writes what the weights-only loader reads (save_torch refuses anything else), and no module
    but kit.io unpickles checkpoints (kit.data reads CIFAR's pickles through its own arrays-only unpickler)."""
    with pytest.raises(TypeError, match=r"\['where'\] \(PosixPath\)"):
        io.save_torch({"where": Path("/x")}, "/nonexistent/never-written.pt")
    import numpy as np
    with pytest.raises(TypeError, match=r"\['accuracy'\] \(float64\)"):
        io.save_torch({"accuracy": np.float64(0.5)}, "/nonexistent/never-written.pt")
    for path in KIT.rglob("*.py"):
        text = path.read_text()
        if path.name != "io.py":
            for word in ("torch.load(", "pickle.load(", "pickle.loads("):
                assert word not in text, f"{path} unpickles with {word} outside kit.io"
        assert "weights_only=False" not in text, path


def test_the_valid_files_load_and_evaluate(capsys, files, tmp_path):
    """Positive control: the same files without the payload are accepted by the same entry points."""
    folder, _ = files
    train.load_prior(folder / "prior.pt")
    permute.load_smoothed(folder / "smoothed.pt")
    assert cli.main(["morph", "--checkpoint", str(folder / "metamorph.pt"), "--gamma", "0.25",
                     "--out", str(tmp_path / "exported.pt")]) == 0
    exported, record = train.load_prior(tmp_path / "exported.pt")  # the exported network, through the same loader
    assert record["k"] == 2 and exported.arch["hidden"][-1] == 24  # layer3.0: 32 channels at γ = 0.25
    assert cli.main(["evaluate", "--checkpoint", str(folder / "metamorph.pt"), "--gammas", "0",
                     "--csv", str(tmp_path / "e.csv")]) == 0 and (tmp_path / "e.csv").is_file()


# ---------------------------------------------------------------- bad weights and sizes: one sentence, no work

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_file_and_the_tensor(capsys, files, tmp_path, bad):
    from kit import explorer
    _, records = files
    paths = {}
    for name, key in (("prior.pt", "state_dict"), ("smoothed.pt", "state_dict"), ("metamorph.pt", "trainable")):
        state = dict(records[name][key])
        tensor = next(k for k, v in state.items() if v.is_floating_point())
        state[tensor] = state[tensor].clone().view(-1).index_fill(0, torch.tensor([0]), bad).view_as(state[tensor])
        paths[name] = io.save_torch({**records[name], key: state}, tmp_path / name)
        paths[name, "tensor"] = tensor
    words = lambda name: (str(paths[name]), paths[name, "tensor"], "non-finite")
    _raises(lambda: train.load_prior(paths["prior.pt"]), *words("prior.pt"))
    _raises(lambda: permute.load_smoothed(paths["smoothed.pt"]), *words("smoothed.pt"))
    _raises(lambda: explorer.Explorer(paths["metamorph.pt"]), *words("metamorph.pt"))
    _fails(capsys, ["evaluate", "--checkpoint", str(paths["metamorph.pt"]), "--gammas", "0"], *words("metamorph.pt"))
    _fails(capsys, ["morph", "--checkpoint", str(paths["metamorph.pt"]), "--gamma", "0.25",
                    "--out", str(tmp_path / "out.pt")], *words("metamorph.pt"))
    assert not (tmp_path / "out.pt").exists()  # no NaN network exported


@pytest.mark.parametrize("change, words", [
    ({"width": 10**6}, "channels in one layer"),
    ({"hidden": [8, 8, 10**6]}, "channels in one layer"),
    ({"num_classes": 10**9}, "classes"),
    ({"depth": 6 * 10**6 + 2}, "depth 6,000,002"),
    ({"width": "8"}, "malformed architecture"),
    ({"hidden": [8, 8]}, "hidden widths for the 3 blocks"),
])
def test_an_architecture_beyond_the_bounds_is_refused_before_allocating(files, tmp_path, change, words):
    _, records = files
    for name, load in (("prior.pt", train.load_prior), ("metamorph.pt", metamorph.load)):
        record = records[name]
        path = io.save_torch({**record, "arch": {**record["arch"], **change}}, tmp_path / name)
        _raises(lambda: load(path), words, str(path))


def test_a_metamorph_pt_asking_for_a_huge_inr_input_or_k_is_refused(capsys, files, tmp_path):
    _, records = files
    record = records["metamorph.pt"]
    cases = {"inr.pt": ({"inr_config": {**record["inr_config"], "hidden": 10**6}}, "hidden width 1,000,000"),
             "input.pt": ({"input_shape": (1, 10**5, 10**5)}, "input shape (1, 100000, 100000)"),
             "k.pt": ({"config": {**record["config"], "k_samples": 10**9}}, "K = 1000000000")}
    for name, (change, words) in cases.items():
        path = io.save_torch({**record, **change}, tmp_path / name)
        _fails(capsys, ["morph", "--checkpoint", str(path), "--gamma", "0.25", "--out", str(tmp_path / "o.pt")],
               str(path), words)
        _fails(capsys, ["evaluate", "--checkpoint", str(path), "--gammas", "0"], str(path), words)
    assert not (tmp_path / "o.pt").exists()


def test_configs_and_calls_beyond_the_bounds_are_one_sentence():
    _raises(lambda: C.build(C.MorphConfig, "smoke", {"k_samples": 10**9}), "k_samples", "≤ 1000")
    _raises(lambda: C.build(C.MorphConfig, "smoke", {"inr.hidden": 10**6}), "morph.inr", "hidden width 1,000,000")
    _raises(lambda: C.build(C.ExplorerConfig, "smoke", {"k_max": 10**9}), "k_max", "≤ 1000")
    _raises(lambda: models.resnet(8, 10**6), "channels in one layer")
    _raises(lambda: models.cost(models.resnet(8, 8, 1), (1, 10**5, 10**5)), "input shape (1, 100000, 100000)")
    net = metamorph.MetamorphicNet(models.fold_bn(models.resnet(8, 8, 1)), ["layer3.0"], C.INRConfig(hidden=8, depth=2))
    _raises(lambda: net.export(0.0, k=10**9), "K = 1000000000")


def test_the_bounds_leave_real_use_alone():
    """The paper's profile, a wide ResNet-56 on ImageNet-sized images and K = 100 are all within the bounds."""
    from kit import inr
    C.build(C.MorphConfig, "paper", {"inr.hidden": 512, "inr.depth": 8, "k_samples": 100})
    models.check_size(56, 64, 3, 1000, [64] * 9 + [128] * 9 + [256] * 9)  # ResNet-56 ×4 width, 1000 classes
    models.check_input_shape((3, 224, 224), widest=256)
    assert inr.check_k(100) == 100


# ---------------------------------------------------------------- notebooks, and the pipeline with a recomputed stamp

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.notebook
@pytest.mark.parametrize("notebook, parameter, name", [
    ("03_incremental_metamorphosis", "SMOOTHED", "smoothed.pt"),
    ("04_baselines", "PRIOR", "prior.pt"),
    ("06_gamma_explorer", "CHECKPOINT", "metamorph.pt"),
])
def test_each_notebook_refuses_a_crafted_input_without_running_it(files, tmp_path, notebook, parameter, name):
    """Each notebook that opens a checkpoint, given a crafted one (notebooks 02 and 07 read theirs through the same
    loaders as 04 and the explorer: train.load_prior and metamorph.load)."""
    import papermill as pm
    _, records = files
    marker = tmp_path / "marker"
    evil = _plant(tmp_path / "in" / name, records[name], marker)
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOKS / f"{notebook}.ipynb"), str(tmp_path / f"{notebook}.ipynb"),
                            parameters={"PROFILE": "smoke", "RUN_DIR": str(tmp_path), "OUT_DIR": str(tmp_path / "out"),
                                        parameter: str(evil)},
                            cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)
    assert err.value.ename == "KitError"
    _one_sentence(err.value.evalue, str(evil), "Python objects")
    assert not marker.exists()


@pytest.fixture(scope="module")
def smoke_01(tmp_path_factory):
    """A smoke run folder holding notebook 01's run, made once for this module."""
    from kit import pipeline
    out = tmp_path_factory.mktemp("untrusted-run")
    pipeline.run(profile="smoke", dataset="fashion-mnist", out=out, only=["01"])
    return out


@pytest.mark.notebook
def test_a_swapped_prior_with_a_recomputed_stamp_never_runs_in_the_pipeline(smoke_01, tmp_path):
    from kit import pipeline, stamps
    out, marker = smoke_01, tmp_path / "marker"
    prior_dir = out / "01_prior_training"
    record = torch.load(prior_dir / "prior.pt", weights_only=True)
    _plant(prior_dir / "prior.pt", record, marker)
    stamp = json.loads((prior_dir / stamps.STAMP).read_text())  # a plain sha256: anyone can recompute it
    stamp["outputs"]["prior.pt"] = stamps.sha256(prior_dir / "prior.pt")
    (prior_dir / stamps.STAMP).write_text(json.dumps(stamp))
    assert stamps.intact(prior_dir) is not None  # the stamp vouches for the swapped file: it guards accidents only
    with pytest.raises(KitError) as err:  # notebook 02 reads the prior
        pipeline.run(profile="smoke", dataset="fashion-mnist", out=out, only=["02"])
    _one_sentence(str(err.value), "02_permutation", str(prior_dir / "prior.pt"), "Python objects")
    assert not marker.exists()
