"""HTTY and NeuMeta training on the shared loop: loss terms, stages, α, INR initialisation, accumulation,
ablation switches, resume (also mid-stage), selection on validation, refusals."""
import pytest
import torch

from kit import config as C
from kit import io, metamorph, metatrain, morphtask, permute
from kit.errors import KitError
from kit.profiles import PROFILES


class Killed(Exception):
    pass


def _killed_and_resumed(cfg, path, folder, after_epoch: int):
    """Train, kill the run after `after_epoch` (counted over the whole run), then rerun it to the end."""
    def kill(epoch, history):
        if epoch == after_epoch:
            raise Killed()

    with pytest.raises(Killed):
        metatrain.train_morph(cfg, path, folder, on_epoch_end=kill)
    return metatrain.train_morph(cfg, path, folder)


def _same_result(a, b) -> None:
    sa, sb = a.net.trainable_state(), b.net.trainable_state()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.metrics["accuracy"] == b.metrics["accuracy"]


def _cfg(**overrides):
    return C.build(C.MorphConfig, "smoke", overrides)


def test_only_a_smoothed_prior_is_accepted(smoothed_smoke):
    prior_pt = smoothed_smoke[0].parent / "prior.pt"  # the unsmoothed prior with BatchNorm, next to smoothed.pt
    with pytest.raises(KitError, match="is not a smoothed prior"):
        permute.load_smoothed(prior_pt)


def test_bad_gammas_stop_before_training(smoothed_smoke, tmp_path):
    with pytest.raises(KitError, match="no channel"):
        metatrain.train_morph(_cfg(gammas_eval=[0.0, 1.0]), smoothed_smoke[0], tmp_path)
    assert not list(tmp_path.glob("checkpoint*.pt"))


def test_reconstruction_loss_weights_errors_by_the_prior_magnitude():
    target = {"w": torch.tensor([1.0, 0.5, 0.0])}
    assert morphtask.reconstruction_loss({"w": target["w"].clone()}, target) == 0
    big = morphtask.reconstruction_loss({"w": torch.tensor([1.1, 0.5, 0.0])}, target)
    small = morphtask.reconstruction_loss({"w": torch.tensor([1.0, 0.5, 0.1])}, target)
    assert big > 1000 * small > 0  # an error on the largest weight counts fully, on a zero weight barely


def test_reconstruction_acts_only_at_the_priors_width(smoothed_smoke):
    path, prior = smoothed_smoke
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    for method in ("neumeta", "htty"):
        cfg = _cfg(method=method, **{"loss.task": 0.0, "loss.regularization": 0.0})
        net = metamorph.MetamorphicNet(prior, ["layer3.0"], cfg.inr, cfg.coordinate_noise)
        task = morphtask.MorphTask(net, cfg)
        task.pool = [0.5]
        assert task.loss(x, y, micro=1)[0] == 0
        task.pool = [0.0]
        assert task.loss(x, y, micro=1)[0] > 0
    task.pool = [0.5]  # HTTY (accumulate 4): the first configuration of every step is γ = 0 (paper 000 sec. 3.4)
    assert task.loss(x, y, micro=0)[0] > 0


def test_config_sections_keep_their_own_defaults():
    cfg = C.build(C.MorphConfig, "quick", {"optim.epochs": 3})
    assert cfg.optim.optimizer == "adamw" and cfg.optim.weight_decay == 1e-2 and cfg.optim.grad_clip == 10.0
    assert C.build(C.PriorConfig, "quick").optim.optimizer == "sgd"
    for profile in PROFILES:
        C.build(C.MorphConfig, profile)
    with pytest.raises(KitError, match="k_samples and k_select"):
        _cfg(k_samples=0)
    with pytest.raises(KitError, match="Unknown method 'htty2'"):
        _cfg(method="htty2")
    with pytest.raises(KitError, match="use it with method 'htty'"):
        _cfg(method="neumeta", ablation="alpha")
    with pytest.raises(KitError, match="use it with method 'prefit'"):
        _cfg(method="htty", ablation="sizes")
    with pytest.raises(KitError, match="train_inr=False is the null control"):
        _cfg(method="htty", train_inr=False)
    with pytest.raises(KitError, match="size_features must be one of paper, neutral"):
        _cfg(size_features="off")
    with pytest.raises(KitError, match="reconstruction_kind must be one of weighted, relative"):
        _cfg(**{"loss.reconstruction_kind": "l1"})
    with pytest.raises(KitError, match="Unknown ablation 'bn'"):
        _cfg(ablation="bn")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_ablation_switch_changes_only_what_it_names(profile):
    named = {"incremental": {"incremental"}, "alpha": {"alpha_scaling"}, "accumulation": {"accumulate"},
             "init": {"inr_init"}, "disentangle": {"inr.disentangled"}}
    assert set(named) == set(C.ABLATIONS["htty"]) - {"none"}
    ours = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "htty"})))
    for ablation, fields in named.items():
        row = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "htty", "ablation": ablation})))
        assert {k for k in ours if ours[k] != row[k]} == fields | {"ablation"}, ablation
    neumeta = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "neumeta"})))
    assert {k for k in ours if ours[k] != neumeta[k]} == set().union(*named.values()) | {"method", "train_tail"}
    assert neumeta["accumulate"] == 1 and not neumeta["incremental"] and not neumeta["alpha_scaling"]
    # an explicit override wins over the method's switch (e.g. NeuMeta + tail fine-tuning, paper 000 Fig. 6)
    assert C.build(C.MorphConfig, profile, {"method": "neumeta", "train_tail": True}).train_tail


@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_prefit_ablation_switch_changes_only_what_it_names(profile):
    named = {"prefit": {"prefit"}, "sizes": {"size_features", "inr.size_encoding"}, "width-updates": {"width_updates"},
             "alpha-init": {"alpha_init"}, "relative": {"loss.reconstruction_kind"}, "distill": {"loss.distill"},
             "frozen-tail": {"train_tail"}}
    assert set(named) == set(C.ABLATIONS["prefit"]) - {"none"}
    ours = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "prefit"})))
    for ablation, fields in named.items():
        row = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "prefit", "ablation": ablation})))
        assert {k for k in ours if ours[k] != row[k]} == fields | {"ablation"}, ablation
    # the paper-faithful recipes keep every new switch at the papers' value
    for method in ("htty", "neumeta"):
        cfg = C.build(C.MorphConfig, profile, {"method": method})
        assert (cfg.prefit, cfg.size_features, cfg.alpha_init, cfg.train_inr, cfg.loss.reconstruction_kind,
                cfg.loss.distill, cfg.width_updates, cfg.inr.size_encoding) == (
            False, "paper", 0.0, True, "weighted", 0.0, "all", "absolute")
    null = C.build(C.MorphConfig, profile, {"method": "null"})
    htty = C.build(C.MorphConfig, profile, {"method": "htty"})
    assert not null.train_inr and null.alpha_init == 0 == null.alpha_lr and null.train_tail
    # the null control's tail budget is HTTY's: as many batches, grouped alike, at the same tail learning rate
    blocks = len(C.build(C.MorphConfig, profile).setting.split(",")) if "," in htty.setting else None
    assert null.accumulate == htty.accumulate and null.tail_lr == htty.tail_lr and null.optim == htty.optim
    if blocks:
        assert metatrain.stage_plan(null, blocks)[0][1] == sum(e for _, e in metatrain.stage_plan(htty, blocks))


def test_a_new_block_is_the_identity_until_its_alpha_moves(smoothed_smoke):
    _, prior = smoothed_smoke
    net = metamorph.MetamorphicNet(prior, ["layer1.0", "layer2.0"], C.INRConfig(hidden=8, depth=2), alpha_scaling=True)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
             for name, m in net.skeleton.named_modules() if name in ("layer1.0", "layer2.0")]
    x = torch.randn(3, 1, 28, 28)
    net.set_active(1)
    net(x, 0.25)
    inp, out = seen["layer1.0"]
    assert torch.equal(out, inp)  # α = 0: the block's output is its (post-ReLU) input, whatever the INR says
    with torch.no_grad():
        net.alpha[0] = 0.5
    net(x, 0.25)
    assert not torch.allclose(*seen["layer1.0"])
    metatrain.activate(net, 2, True, net.inr.state_dict())
    net(x, 0.25)
    inp, out = seen["layer2.0"]
    shortcut = net.skeleton.layer2[0].shortcut(inp)  # a projection block: identity branch = its shortcut
    assert torch.allclose(out, torch.relu(shortcut), atol=1e-6)
    for h in hooks:
        h.remove()


def test_the_ema_warms_up_over_a_stages_first_steps(smoothed_smoke):
    _, prior = smoothed_smoke
    for warmup, decays in ((True, [1 / 10, 0.15, 0.15]), (False, [0.15] * 3)):  # warm-up: min(0.15, t / (9 + t))
        cfg = _cfg(ema=0.15, ema_warmup=warmup)
        net = metamorph.MetamorphicNet(prior, ["layer1.0"], C.INRConfig(hidden=8, depth=2), alpha_scaling=True)
        net.set_active(1)
        task = morphtask.MorphTask(net, cfg)
        expected = net.alpha.detach().clone()
        for step, decay in enumerate(decays, 1):  # the oracle: average_t = d·average_(t−1) + (1 − d)·value_t
            with torch.no_grad():
                net.alpha.fill_(float(step))
            task.after_step()
            expected = decay * expected + (1 - decay) * step
            assert torch.allclose(task.ema["alpha"], expected)
        assert task.state_dict()["updates"] == 3


def test_inr_initialisation_copies_the_predecessor_or_restores_the_blocks_own(smoothed_smoke):
    _, prior = smoothed_smoke
    net = metamorph.MetamorphicNet(prior, ["layer1.0", "layer2.0"], C.INRConfig(hidden=8, depth=2))
    initial = {k: v.clone() for k, v in net.inr.state_dict().items()}
    net.set_active(1)
    with torch.no_grad():  # pretend stage 1 trained every MLP (block 2's rows drift, e.g. by weight decay)
        for p in net.inr.parameters():
            p.add_(torch.randn_like(p))
    trained = {k: v.clone() for k, v in net.inr.state_dict().items()}
    for inr_init in (True, False):
        net.inr.load_state_dict(trained)
        net.set_active(1)
        metatrain.activate(net, 2, inr_init, initial)
        assert net.active == 2 and len(net.generate(0.0)) == 8
        for bank in (net.inr.kernel_bank, net.inr.bias_bank):
            prefix = "kernel_bank" if bank is net.inr.kernel_bank else "bias_bank"
            for name, p in bank.named_parameters():  # each bank holds 2 rows per block: block 2's are rows 2, 3
                source = trained if inr_init else initial
                old = source[f"{prefix}.{name}"]
                assert torch.equal(p[2:4], old[0:2] if inr_init else old[2:4])
                assert torch.equal(p[0:2], trained[f"{prefix}.{name}"][0:2])  # block 1 untouched


def test_accumulating_configurations_equals_one_batch_holding_them(smoothed_smoke):
    """Three configurations (γ = 0, then pool draws) on three batches, one step: the gradient equals that of the
    size-weighted sum of their losses taken in one backward pass."""
    from kit import train
    _, prior = smoothed_smoke
    cfg = _cfg(accumulate=3, coordinate_noise=0.0)  # no noise: every configuration is deterministic
    net = metamorph.MetamorphicNet(prior, ["layer1.0", "layer2.0"], cfg.inr, 0.0, alpha_scaling=True, train_tail=True)
    with torch.no_grad():
        net.alpha.fill_(0.3)
    task = morphtask.MorphTask(net, cfg)
    batches = [(torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))) for n in (4, 4, 2)]
    trained = [p for n, p in net.named_parameters() if not n.startswith("skeleton.")]
    opt = torch.optim.SGD(trained, lr=0.0)  # a step that moves nothing: the gradients stay to be read
    draws = task.draws.get_state()
    train.train_step(task, opt, batches, torch.device("cpu"), False, 0.0)
    accumulated = [p.grad.clone() for p in trained]
    task.draws.set_state(draws)
    for p in trained:
        p.grad = None
    total = sum(task.loss(x, y, i)[0] * len(y) for i, (x, y) in enumerate(batches)) / 10
    total.backward()
    for a, p in zip(accumulated, trained):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-5)
    assert any(a.abs().sum() > 0 for a in accumulated)


def test_stages_generate_one_more_block_each_and_resume_mid_stage(smoothed_smoke, tmp_path):
    path, _ = smoothed_smoke
    cfg = _cfg(**{"optim.epochs": 2})
    straight = metatrain.train_morph(cfg, path, tmp_path / "straight")
    stages = straight.metrics["stages"]
    assert [s["blocks"] for s in stages] == [["layer1.0"], ["layer1.0", "layer2.0"]]  # after stage k, k blocks
    assert [list(s["alpha"]) for s in stages] == [["layer1.0"], ["layer1.0", "layer2.0"]]
    assert [r["active_blocks"] for r in straight.history] == [1, 1, 2, 2]
    for r in straight.history:  # the objective's recorded terms add up to the epoch's loss
        terms = [r[k] for k in ("loss_task", "loss_reconstruction", "loss_regularization") if k in r]
        assert len(terms) == 3 and abs(sum(terms) - r["loss"]) <= 1e-4 * abs(r["loss"])
    assert all(set(s["test_accuracy"]) == {"0", "0.5"} for s in stages)
    assert straight.metrics["switches"]["incremental"] and straight.metrics["alpha"]["layer2.0"] != 0

    resumed = _killed_and_resumed(cfg, path, tmp_path / "killed", after_epoch=3)  # the first epoch of stage 2
    _same_result(straight, resumed)
    assert [r["val_accuracy"] for r in straight.history] == [r["val_accuracy"] for r in resumed.history]


def test_a_non_incremental_run_trains_every_block_for_the_same_total(smoothed_smoke, tmp_path):
    cfg = _cfg(ablation="incremental", **{"optim.epochs": 1})
    assert metatrain.stage_plan(cfg, 2) == [(2, 2)] and metatrain.stage_plan(_cfg(), 2) == [(1, 1), (2, 1)]
    result = metatrain.train_morph(cfg, smoothed_smoke[0], tmp_path)
    assert [s["blocks"] for s in result.metrics["stages"]] == [["layer1.0", "layer2.0"]]
    assert [r["active_blocks"] for r in result.history] == [2, 2]


def test_training_resumes_exactly_and_records_accuracy_per_gamma(smoothed_smoke, tmp_path):
    path, _ = smoothed_smoke
    cfg = _cfg(method="neumeta", setting="last_block", **{"optim.epochs": 2})
    straight = metatrain.train_morph(cfg, path, tmp_path / "straight")
    resumed = _killed_and_resumed(cfg, path, tmp_path / "killed", after_epoch=1)
    _same_result(straight, resumed)

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
    return metatrain.train_morph(_cfg(setting="last_block"), smoothed_smoke[0], out), out


def test_a_checkpoint_from_another_prior_is_refused(smoothed_smoke, trained, tmp_path):
    path, _ = smoothed_smoke
    record = io.load_torch(path)
    record["state_dict"] = {k: v * 1.01 for k, v in record["state_dict"].items()}
    io.save_torch(record, tmp_path / "other.pt")
    with pytest.raises(KitError, match="was trained on another prior than"):
        metatrain.train_morph(_cfg(setting="last_block"), tmp_path / "other.pt", trained[1])


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
                        (("evaluate", "--checkpoint", str(folder / "checkpoint_stage1.pt"), "--gammas", "0"), "not a metamorphic"),
                        (("evaluate", "--checkpoint", ckpt, "--gammas", "0,half"), "comma-separated numbers"),
                        (("evaluate", "--checkpoint", ckpt, "--gammas", ","), "at least one number"),
                        (("evaluate", "--checkpoint", ckpt, "--gammas", "0", "--k", "0"), "K must be")]:
        out = _cli(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr and words in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_weight_decay_reaches_the_inr_matrices_and_tail_kernels_only():
    from kit import models
    net = metamorph.MetamorphicNet(models.fold_bn(models.resnet(8, 4)), ["layer1.0"], C.INRConfig(hidden=8, depth=3),
                                   alpha_scaling=True, train_tail=True)
    cfg = _cfg()
    groups = morphtask.MorphTask(net, cfg).parameter_groups(0.1)
    names = {id(p): n for n, p in net.named_parameters()}
    named = [[names[id(p)] for p in g["params"]] for g in groups]
    inr, inr_rest, alpha, tail, tail_rest = named
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0, 0.0, 0.1, 0.0]
    assert all(".w_" in n for n in inr) and len(inr) == 2 * 4  # in, 2 hidden, out; kernel and bias banks
    assert all(".w_" not in n for n in inr_rest)  # biases and gates
    assert alpha == ["alpha"] and groups[2]["lr"] == cfg.alpha_lr
    assert net.tail_names == ["layer3.0.conv1.weight", "layer3.0.conv1.bias", "layer3.0.conv2.weight",
                              "layer3.0.conv2.bias", "fc.weight", "fc.bias"]
    assert len(tail) == 3 and len(tail_rest) == 3 and groups[3]["lr"] == groups[4]["lr"] == cfg.tail_lr
    assert not any(p is q for p in net.skeleton.parameters() for g in groups for q in g["params"])


def test_results_group_seeds_by_recorded_method_and_ablation(tmp_path):
    from kit import results
    folder = tmp_path / results.MORPH_FOLDER
    runs = {"htty-s0": ("htty", "none", 0.90), "htty-s1": ("htty", "none", 0.92), "neumeta": ("neumeta", "none", 0.5),
            "htty-no-alpha": ("htty", "alpha", 0.8), "htty-x3": ("htty", "none", 0.95)}
    for name, (method, ablation, acc) in runs.items():
        io.write_json({"method": method, "ablation": ablation, "setting": "all", "accuracy": {"0": acc, "0.5": acc},
                       "train_seconds": 10.0, "config": {"epoch_scale": 3 if name == "htty-x3" else 1}},
                      folder / name / "metrics.json")
    (folder / "unfinished").mkdir()
    summary = results.summarise(results.morph_runs(tmp_path))
    assert set(summary) == {"htty", "neumeta", "htty − alpha", "htty ×3 epochs"} and summary["htty"]["seeds"] == 2
    mean, std = summary["htty"]["accuracy"]["0"]
    assert abs(mean - 0.91) < 1e-12 and abs(std - 0.0141421356) < 1e-8
    assert summary["neumeta"]["accuracy"]["0.5"] == (0.5, 0.0)


def test_comparison_figures_and_table_from_seeded_runs(tmp_path, capsys):
    from kit import cli, results
    kind = {"0": "seen", "0.25": "seen", "0.265625": "between"}
    runs = {"htty-s0": ("htty", [0.90, 0.90, 0.88]), "htty-s1": ("htty", [0.92, 0.90, 0.88]),
            "neumeta-s0": ("neumeta", [0.80, 0.70, 0.60]), "neumeta-s1": ("neumeta", [0.80, 0.70, 0.60])}
    for name, (method, accs) in runs.items():
        io.write_json({"method": method, "ablation": "none", "setting": "all", "kind": kind, "prior_accuracy": 0.93,
                       "accuracy": dict(zip(kind, accs)), "train_seconds": 1.0},
                      tmp_path / results.MORPH_FOLDER / name / "metrics.json")
    summary = results.summarise(results.morph_runs(tmp_path))
    cmp = results.comparison(summary, 0.93)
    assert abs(cmp["margin"]["0"]["margin"] - 0.11) < 1e-12  # mean 0.91 − 0.80
    assert abs(cmp["margin"]["0"]["spread"] - 0.0141421356) < 1e-8  # std of (0.90, 0.92) + 0
    assert abs(cmp["prior_gap"] - 0.02) < 1e-12
    assert abs(cmp["seen_to_between_drop"]["htty"] - (0.905 - 0.88)) < 1e-12
    assert abs(cmp["seen_to_between_drop"]["neumeta"] - 0.15) < 1e-12
    text = results.table(summary, 0.93)
    assert "| htty | 2 | 91.00 ± 1.41 | 90.00 ± 0.00 | 88.00 ± 0.00 |" in text and "| prior | | 93.00 |" in text
    assert cli.main(["summary", str(tmp_path)]) == 0
    assert "prior − HTTY at γ = 0: 2.00 points" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert cli.main(["summary", str(tmp_path / "empty")]) == 2
    assert "No finished notebook-03 run" in capsys.readouterr().err


def test_block_report_reads_alpha_errors_and_branch_scale(smoothed_smoke):
    from kit import diagnostics
    _, prior = smoothed_smoke
    net = metamorph.MetamorphicNet(prior, ["layer1.0", "layer2.0"], C.INRConfig(hidden=8, depth=2), alpha_scaling=True)
    net.set_active(1)
    target = net.prior_tensors()["layer1.0.conv2.weight"]
    with torch.no_grad():
        net.alpha[0] = -0.5
        net.inr.kernel_bank.w_out.zero_()  # every generated kernel is then its bias b_out …
        net.inr.kernel_bank.b_out.zero_()  # … which is 0: the error is exactly 1 and the branch scale 0
    row = diagnostics.block_report(net)["layer1.0"]
    assert row["alpha"] == -0.5 and row["error conv2.weight"] == 1.0 and row["branch scale"] == 0.0
    with torch.no_grad():
        net.inr.kernel_bank.b_out.fill_(1.0)  # every kernel element 1 / fan-in
    w = torch.full_like(target, 1.0 / target.shape[1])
    row = diagnostics.block_report(net)["layer1.0"]
    assert abs(row["branch scale"] - 0.5 * w.norm() / target.norm()) < 1e-6
    assert abs(row["error conv2.weight"] - (w - target).norm() / target.norm()) < 1e-6
