"""The universally slimmable network (kit.slimmable): oracles against plain networks, the sandwich step's gradient,
BN calibration, exact resume, notebook 04's rows, the budget against HTTY's, and one sentence for bad input."""
import copy

import pytest
import torch
import torch.nn.functional as F

from kit import baselines, io, metamorph, metatrain, models, prune, slimmable, train
from kit import config as C
from kit import data as D
from kit.errors import KitError

BLOCKS = ["layer1.0", "layer2.0"]


def _prior(seed: int = 0) -> models.ResNet:
    """A ResNet-8 with random BN parameters and statistics, so that slicing and folding both matter."""
    torch.manual_seed(seed)
    model = models.resnet(8, 8, 1, 10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


def _images(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))  # (N, 1, 28, 28)


def test_ordering_the_channels_keeps_the_function_and_width_h_starts_as_the_pruned_prior():
    prior, x = _prior(), _images()
    scores = prune.block_scores(prior, BLOCKS, "l2", x)
    start = slimmable.ordered(prior, scores)
    torch.testing.assert_close(start(x), prior(x), rtol=0, atol=1e-5)
    net = slimmable.SlimmableNet(start, BLOCKS).eval()
    for gamma in (0.0, 0.25, 0.5, 0.75):
        pruned = prune.prune_to(prior, scores, gamma, x)
        with torch.no_grad(), net.at(gamma):
            torch.testing.assert_close(net(x), pruned(x), rtol=0, atol=1e-5)


def test_width_h_is_the_plain_network_of_its_first_h_channels():
    net, x = slimmable.SlimmableNet(_prior(), BLOCKS).eval(), _images()
    for gamma in (0.0, 0.3, {"layer1.0": 0.75, "layer2.0": 0.0}):
        widths = net.widths(gamma)
        plain = net.plain(gamma)
        assert [b.hidden for n, b in plain.blocks() if n in BLOCKS] == list(widths.values())
        state, full = plain.state_dict(), net.net.state_dict()
        for b, h in widths.items():  # built from the first h channels, by hand
            assert torch.equal(state[f"{b}.conv1.weight"], full[f"{b}.conv1.weight"][:h])
            assert torch.equal(state[f"{b}.bn1.running_var"], full[f"{b}.bn1.running_var"][:h])
            assert torch.equal(state[f"{b}.conv2.weight"], full[f"{b}.conv2.weight"][:, :h])
        with torch.no_grad(), net.at(gamma):
            torch.testing.assert_close(net(x), plain(x), rtol=0, atol=1e-6)
            net.train()  # batch statistics: the slimmable BN is BN on the first h channels
            plain.train()
            torch.testing.assert_close(net(x), plain(x), rtol=0, atol=1e-5)
            net.eval()


def test_calibration_changes_only_running_statistics_and_equals_calibrating_the_plain_network():
    net, calib, x = slimmable.SlimmableNet(_prior(), BLOCKS), _images(40, 2), _images()
    before = copy.deepcopy(net.state_dict())
    plain = net.plain(0.5)  # calibrated by hand below: reset, cumulative average over the same batches
    net.calibrate(0.5, calib, batch_size=16)
    after = net.state_dict()
    changed = {k.rsplit(".", 1)[1] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"running_mean", "running_var", "num_batches_tracked"}
    norms = [m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    plain.train()
    with torch.no_grad():
        for start in range(0, len(calib), 16):
            plain(calib[start:start + 16])
    plain.eval()
    ref, mine = plain.state_dict(), net.plain(0.5).state_dict()
    for k in ref:
        torch.testing.assert_close(mine[k], ref[k], rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # the export folds the calibrated BN: the same function without BatchNorm
        exported = net.export(0.5)
        assert not exported.arch["batchnorm"]
        torch.testing.assert_close(exported(x), net(x), rtol=0, atol=1e-4)


def test_bad_widths_and_uncalibrated_exports_are_one_sentence():
    net = slimmable.SlimmableNet(_prior(), BLOCKS)
    with pytest.raises(KitError, match="cannot grow beyond its 8; use γ ≥ 0"):
        net.widths(-0.25)
    with pytest.raises(KitError, match="cannot grow"):
        net.export({"layer1.0": -0.5}, _images())
    with pytest.raises(KitError, match="leaves a block of width 8 with no channel"):
        net.widths(0.97)
    with pytest.raises(KitError, match="'layer3.0' is not a slimmable block"):
        net.widths({"layer3.0": 0.5})
    net.calibrate(0.25, _images())
    net.export(0.25)  # calibrated for exactly these widths
    with pytest.raises(KitError, match="not calibrated for the widths of γ = 0.5"):
        net.export(0.5)
    with pytest.raises(KitError, match="needs the prior with its BatchNorm"):
        slimmable.SlimmableNet(models.fold_bn(_prior()), BLOCKS)


def _task(shared: bool, distill: bool = True) -> slimmable.SlimmableTask:
    cfg = C.from_dict(C.SlimmableConfig, {"shared_batch": shared, "distill": distill, "widths_per_step": 4})
    return slimmable.SlimmableTask(slimmable.SlimmableNet(_prior(), BLOCKS).train(), cfg, 3, _images(8))


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


@pytest.mark.parametrize("shared", [True, False])
def test_the_sandwich_step_gradient_is_the_sum_of_its_widths_gradients(shared):
    task = _task(shared)
    batches = [(_images(8, 10 + i), torch.arange(8) % 10) for i in range(task.accumulate)]
    draws = task.draws.get_state()
    opt = torch.optim.SGD(task.module.parameters(), lr=0.0)  # the step leaves the weights where they are
    train.train_step(task, opt, batches, torch.device("cpu"), False, 0.0)
    step = _grads(task.module)
    gammas = task.sandwich
    assert gammas[:2] == [0.0, task.cfg.gamma_max] and len(gammas) == 4
    assert all(0 <= g <= task.cfg.gamma_max for g in gammas)
    task.draws.set_state(draws)
    assert task.draw_sandwich() == gammas  # the draws come from the task's own generator (checkpointed)
    net, expected = task.module, None
    for i, g in enumerate(gammas):  # each width alone: CE for the widest, KL to the widest's predictions for the rest
        x, y = batches[0] if shared else batches[i]
        net.zero_grad(set_to_none=True)
        with torch.no_grad(), net.at(0.0):
            teacher = net(x)
        with net.at(g):
            logits = net(x)
        loss = F.cross_entropy(logits, y) if i == 0 else F.kl_div(F.log_softmax(logits, 1), F.softmax(teacher, 1),
                                                                   reduction="batchmean")
        loss.backward()
        expected = _grads(net) if expected is None else {n: expected[n] + v for n, v in _grads(net).items()}
    for n in step:
        torch.testing.assert_close(step[n], expected[n], rtol=1e-4, atol=1e-6)


def test_without_distillation_every_width_learns_the_labels():
    task = _task(True, distill=False)
    x, y = _images(8), torch.arange(8) % 10
    task.sandwich = [0.0, 0.75, 0.25, 0.5]
    loss, _ = task.loss(x, y, micro=1)  # not micro 0: keeps the set sandwich
    with torch.no_grad():
        want = sum(F.cross_entropy(task.module.set_gamma(g)(x), y) for g in task.sandwich)
    torch.testing.assert_close(loss.detach(), want)


# ---------------------------------------------------------------- on the smoke prior

@pytest.fixture(scope="module")
def smoke_prior(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prior")
    train.train_prior(C.build(C.PriorConfig, "smoke"), folder)
    return folder / "prior.pt"


def _setup(prior_path, overrides=None):
    cfg = C.build(C.BaselineConfig, "smoke", overrides or {})
    prior, record = train.load_prior(prior_path)
    prior_cfg = C.from_dict(C.PriorConfig, record["config"])
    return cfg, prior, record, prior_cfg, D.load(prior_cfg.data, "cpu", prior_cfg.seed)


class Killed(Exception):
    pass


def test_a_killed_slimmable_run_resumes_exactly(smoke_prior, tmp_path, monkeypatch):
    cfg, prior, record, prior_cfg, data = _setup(smoke_prior, {"slimmable.optim.epochs": 2})
    straight, _ = baselines.slimmable_rows(prior, record, prior_cfg, cfg, BLOCKS, data, tmp_path / "a")

    real_fit = train.fit

    def stop(epoch, history):
        raise Killed()

    with monkeypatch.context() as patch:  # killed after its first epoch's checkpoint
        patch.setattr(train, "fit", lambda *args, **kwargs: real_fit(*args, **{**kwargs, "on_epoch_end": stop}))
        with pytest.raises(Killed):
            baselines.slimmable_rows(prior, record, prior_cfg, cfg, BLOCKS, data, tmp_path / "b")
    assert len(io.load_torch(tmp_path / "b" / "slimmable" / "checkpoint.pt")["history"]) == 1
    resumed, metrics = baselines.slimmable_rows(prior, record, prior_cfg, cfg, BLOCKS, data, tmp_path / "b")
    a = io.load_torch(tmp_path / "a" / "slimmable" / "checkpoint.pt")
    b = io.load_torch(tmp_path / "b" / "slimmable" / "checkpoint.pt")
    assert all(torch.equal(a["module"]["module"][k], b["module"]["module"][k]) for k in a["module"]["module"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    assert strip(straight) == strip(resumed)
    assert [r["gamma"] for r in resumed] == cfg.slimmable.gammas and len(metrics["history"]) == 2

    # finished: its rows are reloaded and nothing trains again (a new fit would write a new checkpoint.pt)
    (tmp_path / "b" / "slimmable" / "checkpoint.pt").rename(tmp_path / "b" / "kept.pt")
    again, _ = baselines.slimmable_rows(prior, record, prior_cfg, cfg, BLOCKS, data, tmp_path / "b")
    assert again == resumed and not (tmp_path / "b" / "slimmable" / "checkpoint.pt").exists()


def test_slimmable_rows_are_its_recorded_networks_at_every_gamma(smoke_prior, tmp_path):
    cfg, prior, record, prior_cfg, data = _setup(smoke_prior)
    rows, metrics = baselines.slimmable_rows(prior, record, prior_cfg, cfg, BLOCKS, data, tmp_path)
    assert {r["family"] for r in rows} == {"slimmable"} and len({r["train_seconds"] for r in rows}) == 1
    assert metrics["steps"] == slimmable.budget(cfg.slimmable, cfg.slimmable.train_images)["steps"]
    net, rec = slimmable.load(tmp_path / "slimmable" / "slimmable.pt")
    calib = D.calibration(data, rec["calibration"]["images"], rec["calibration"]["seed"])[0]
    for r in rows:  # the saved network, recalibrated at γ as the row was, gives the row's accuracy, cost and widths
        model = net.export(r["gamma"], calib, rec["calibration"]["batch_size"])
        assert train.evaluate(model, data, "test")["accuracy"] == pytest.approx(r["accuracy"], abs=1e-9)
        assert models.cost(model, data.input_shape)["parameters"] == r["parameters"]
        assert r["widths"] == net.widths(r["gamma"])
    with pytest.raises(KitError, match="is not a slimmable checkpoint"):
        slimmable.load(smoke_prior)


@pytest.mark.parametrize("profile", ["quick", "full", "paper"])
def test_the_slimmable_budget_is_httys_steps_and_images(profile):
    morph = C.build(C.MorphConfig, profile, {"method": "htty"})
    slim = C.build(C.BaselineConfig, profile).slimmable
    images = morph.train_images or 45000  # paper: CIFAR-100's 50,000 less the 5,000 validation images
    assert slim.train_images == morph.train_images and slim.batch_size == morph.batch_size
    prior = models.resnet(C.build(C.PriorConfig, profile).model.depth)
    htty = metatrain.budget(morph, len(metamorph.blocks_for(prior, morph.setting)), images)
    mine = slimmable.budget(slim, images)
    assert (mine["steps"], mine["images"]) == (htty["steps"], htty["images"])


def test_bad_slimmable_settings_are_one_sentence():
    with pytest.raises(KitError, match="a slimmable network cannot grow"):
        C.build(C.BaselineConfig, "quick", {"slimmable.gammas": [-0.25, 0.0]})
    with pytest.raises(KitError, match="widths_per_step must be ≥ 2"):
        C.build(C.BaselineConfig, "quick", {"slimmable.widths_per_step": 1})
    with pytest.raises(KitError, match="slimmable.order must be one of"):
        C.build(C.BaselineConfig, "quick", {"slimmable.order": "l3"})
    with pytest.raises(KitError, match="Unknown config key 'slimmable.epochs'"):
        C.build(C.BaselineConfig, "quick", {"slimmable.epochs": 3})
