"""The shared training loop: exact resume after a kill, checkpoint guards, schedule, the prior trainer."""
import dataclasses

import pytest
import torch

from kit import config as C
from kit import io, models, train
from kit.errors import KitError


class Killed(Exception):
    pass


def _cfg(smoke_cfg, epochs=3):
    return dataclasses.replace(smoke_cfg, optim=dataclasses.replace(smoke_cfg.optim, epochs=epochs))


def test_resume_after_kill_gives_the_same_weights(smoke_cfg, tmp_path):
    cfg = _cfg(smoke_cfg, epochs=3)
    straight = train.train_prior(cfg, tmp_path / "straight")

    def kill_after_first(epoch, history):
        if epoch == 1:
            raise Killed()

    with pytest.raises(Killed):
        train.train_prior(cfg, tmp_path / "killed", on_epoch_end=kill_after_first)
    assert len(io.load_torch(tmp_path / "killed" / "checkpoint.pt")["history"]) == 1
    assert not (tmp_path / "killed" / "prior.pt").exists()
    resumed = train.train_prior(cfg, tmp_path / "killed", resume=True)

    final = lambda d: io.load_torch(d / "checkpoint.pt")["module"]
    a, b = final(tmp_path / "straight"), final(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    strip = lambda h: [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")} for row in h]
    assert strip(straight.history) == strip(resumed.history)
    assert straight.metrics["test_accuracy"] == resumed.metrics["test_accuracy"]


def test_finished_run_is_not_retrained(smoke_cfg, tmp_path):
    cfg = _cfg(smoke_cfg, epochs=1)
    first = train.train_prior(cfg, tmp_path)
    calls = []
    again = train.train_prior(cfg, tmp_path, on_epoch_end=lambda e, h: calls.append(e))
    assert calls == [] and again.metrics["test_accuracy"] == first.metrics["test_accuracy"]


def test_checkpoint_from_other_settings_is_refused(smoke_cfg, tmp_path):
    train.train_prior(_cfg(smoke_cfg, epochs=1), tmp_path)
    other = dataclasses.replace(smoke_cfg, model=dataclasses.replace(smoke_cfg.model, width=4))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(KitError, match=r"written by a run with other settings \(model\.width: 8 there, 4 here\)"):
        train.train_prior(other, tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # nothing already written is lost


def test_prior_record_round_trip(smoke_cfg, tmp_path):
    result = train.train_prior(_cfg(smoke_cfg, epochs=1), tmp_path)
    model, record = train.load_prior(tmp_path / "prior.pt")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))
    assert record["arch"]["depth"] == 8 and 0.0 <= record["metrics"]["test_accuracy"] <= 1.0
    assert record["metrics"]["parameters"] == models.count_parameters(model)
    assert record["provenance"]["versions"]["torch"].startswith("2.13")


def test_load_prior_rejects_other_files(tmp_path):
    io.save_torch({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(KitError, match="not a prior checkpoint"):
        train.load_prior(tmp_path / "x.pt")
    io.save_torch({"arch": {"depth": 8}, "inr": {}}, tmp_path / "metamorph.pt")  # an arch but no plain weights
    with pytest.raises(KitError, match="not a prior checkpoint"):
        train.load_prior(tmp_path / "metamorph.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    with pytest.raises(KitError, match="cannot be read"):
        train.load_prior(tmp_path / "broken.pt")
    with pytest.raises(KitError, match="No prior checkpoint"):
        train.load_prior(tmp_path / "absent.pt")


def test_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = models.resnet(8, 8, in_channels=1)
    task = train.ClassifierTask(model)
    opt, _ = train.make_optimizer(task, C.OptimConfig(epochs=1, lr=0.05, warmup_epochs=0), 10)
    x, y = torch.randn(32, 1, 12, 12), torch.randint(0, 10, (32,))
    first = train.train_step(task, opt, [(x, y)], torch.device("cpu"), True, 0.0)[0].item()
    for _ in range(15):
        last = train.train_step(task, opt, [(x, y)], torch.device("cpu"), True, 1.0)[0].item()
    assert last < 0.5 * first


def test_schedule_warms_up_then_decays_to_the_floor():
    f = train.lr_lambda(total_steps=100, warmup_steps=10, final_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert f(100) == pytest.approx(0.1) and f(55) == pytest.approx(0.55)


def test_weight_decay_only_on_kernels():
    groups = train.ClassifierTask(models.resnet(8, 4)).parameter_groups(5e-4)
    assert all(p.ndim > 1 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 5e-4
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
