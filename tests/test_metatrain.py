"""NeuMeta training on the shared loop: loss terms, resume, selection on validation, refusals."""
import dataclasses

import pytest
import torch

from kit import config as C
from kit import io, metamorph, metatrain
from kit.errors import KitError


class Killed(Exception):
    pass


def _cfg(**overrides):
    return C.build(C.MorphConfig, "smoke", overrides)


def test_only_a_smoothed_prior_is_accepted(smoothed_smoke):
    prior_pt = smoothed_smoke[0].parent / "prior.pt"  # the unsmoothed prior with BatchNorm, next to smoothed.pt
    with pytest.raises(KitError, match="is not a smoothed prior"):
        metatrain.load_smoothed(prior_pt)


def test_bad_gammas_stop_before_training(smoothed_smoke, tmp_path):
    with pytest.raises(KitError, match="no channel"):
        metatrain.train_morph(_cfg(gammas_eval=[0.0, 1.0]), smoothed_smoke[0], tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_reconstruction_loss_weights_errors_by_the_prior_magnitude():
    target = {"w": torch.tensor([1.0, 0.5, 0.0])}
    assert metatrain.reconstruction_loss({"w": target["w"].clone()}, target) == 0
    big = metatrain.reconstruction_loss({"w": torch.tensor([1.1, 0.5, 0.0])}, target)
    small = metatrain.reconstruction_loss({"w": torch.tensor([1.0, 0.5, 0.1])}, target)
    assert big > 1000 * small > 0  # an error on the largest weight counts fully, on a zero weight barely


def test_reconstruction_acts_only_at_the_priors_width(smoothed_smoke):
    path, prior = smoothed_smoke
    cfg = _cfg(**{"loss.task": 0.0, "loss.regularization": 0.0})
    net = metamorph.MetamorphicNet(prior, ["layer3.0"], cfg.inr, cfg.coordinate_noise)
    task = metatrain.MorphTask(net, cfg)
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    task.pool = [0.5]
    assert task.loss(x, y)[0] == 0
    task.pool = [0.0]
    assert task.loss(x, y)[0] > 0


def test_config_sections_keep_their_own_defaults():
    cfg = C.build(C.MorphConfig, "quick", {"optim.epochs": 3})
    assert cfg.optim.optimizer == "adamw" and cfg.optim.weight_decay == 1e-2 and cfg.optim.grad_clip == 10.0
    assert C.build(C.PriorConfig, "quick").optim.optimizer == "sgd"
    for profile in C.PROFILES:
        C.build(C.MorphConfig, profile)
    with pytest.raises(KitError, match="k_samples and k_select"):
        _cfg(k_samples=0)
    with pytest.raises(KitError, match="Unknown method 'htty2'"):
        _cfg(method="htty2")


def test_training_resumes_exactly_and_records_accuracy_per_gamma(smoothed_smoke, tmp_path):
    path, _ = smoothed_smoke
    cfg = _cfg()
    straight = metatrain.train_morph(cfg, path, tmp_path / "straight")

    def kill(epoch, history):
        if epoch == 1:
            raise Killed()

    with pytest.raises(Killed):
        metatrain.train_morph(cfg, path, tmp_path / "killed", on_epoch_end=kill)
    resumed = metatrain.train_morph(cfg, path, tmp_path / "killed")
    a, b = straight.net.inr.state_dict(), resumed.net.inr.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.metrics["accuracy"] == resumed.metrics["accuracy"]

    m = straight.metrics
    assert list(m["accuracy"]) == ["-0.25", "0", "0.25", "0.3125", "0.5", "0.75"]
    assert all(0.0 <= v <= 1.0 for v in m["accuracy"].values())
    assert m["kind"] == {"-0.25": "larger", "0": "seen", "0.25": "seen", "0.3125": "between", "0.5": "seen",
                         "0.75": "smaller"}
    assert m["inr_parameters"] == sum(p.numel() for p in straight.net.inr.parameters())
    assert m["train_seconds"] > 0 and all(r["test_accuracy"] is None for r in straight.history)  # test used once
    assert all({"val_accuracy@0", "val_accuracy@0.5"} <= set(r) for r in straight.history)  # per-γ validation
    net, record = metamorph.load(straight.checkpoint)
    assert record["metrics"]["accuracy"] == m["accuracy"]


@pytest.fixture(scope="module")
def trained(smoothed_smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("morph")
    return metatrain.train_morph(_cfg(**{"optim.epochs": 1}), smoothed_smoke[0], out), out


def test_a_checkpoint_from_another_prior_is_refused(smoothed_smoke, trained, tmp_path):
    path, _ = smoothed_smoke
    record = io.load_torch(path)
    record["state_dict"] = {k: v * 1.01 for k, v in record["state_dict"].items()}
    io.save_torch(record, tmp_path / "other.pt")
    with pytest.raises(KitError, match="was trained on another prior than"):
        metatrain.train_morph(_cfg(**{"optim.epochs": 1}), tmp_path / "other.pt", trained[1])


def _cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True, timeout=300)


def test_command_line_exports_and_evaluates(trained, tmp_path):
    from kit import train
    result, folder = trained
    ckpt = str(result.checkpoint)
    out = _cli("morph", "--checkpoint", ckpt, "--gamma", "0.3", "--k", "2", "--out", str(tmp_path / "m.pt"))
    assert out.returncode == 0, out.stderr
    model, record = train.load_prior(tmp_path / "m.pt")  # a plain ResNet, loadable without the INR
    expected = result.net.export(0.3, 2)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), expected(x), atol=1e-6)
    assert record["gamma"] == 0.3 and model.arch["hidden"][-1] == metamorph.width(0.3, 32)

    out = _cli("evaluate", "--checkpoint", ckpt, "--gammas", "0,0.75,-0.25", "--k", "1", "--csv", str(tmp_path / "e.csv"))
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert rows[0] == "gamma,kind,widths,parameters,macs,test_accuracy,k" and len(rows) == 4
    assert rows[1].startswith("0,seen,32,") and rows[2].startswith("0.75,smaller,8,") and rows[3].startswith("-0.25,larger,40,")

    for args, words in [(("morph", "--checkpoint", ckpt, "--gamma", "1", "--out", "x.pt"), "no channel"),
                        (("morph", "--checkpoint", ckpt, "--gamma", "-2", "--out", "x.pt"), "twice the prior's width"),
                        (("morph", "--checkpoint", ckpt, "--gamma", "0.2", "--k", "0", "--out", "x.pt"), "K must be"),
                        (("evaluate", "--checkpoint", str(folder / "checkpoint.pt"), "--gammas", "0"), "not a metamorphic"),
                        (("evaluate", "--checkpoint", ckpt, "--gammas", "0,half"), "comma-separated numbers"),
                        (("evaluate", "--checkpoint", ckpt, "--gammas", ","), "at least one number"),
                        (("evaluate", "--checkpoint", ckpt, "--gammas", "0", "--k", "0"), "K must be")]:
        out = _cli(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr and words in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_weight_decay_reaches_the_inr_matrices_only():
    from kit import models
    net = metamorph.MetamorphicNet(models.fold_bn(models.resnet(8, 4)), ["layer3.0"], C.INRConfig(hidden=8, depth=3))
    decay, rest = metatrain.MorphTask(net, _cfg()).parameter_groups(0.1)
    names = {id(p): n for n, p in net.inr.named_parameters()}
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(".w_" in names[id(p)] for p in decay["params"]) and len(decay["params"]) == 2 * 4  # in, 2 hidden, out
    assert all(".w_" not in names[id(p)] for p in rest["params"])  # biases and gates
    assert not any(p is q for p in net.skeleton.parameters() for q in decay["params"] + rest["params"])
