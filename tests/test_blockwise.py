"""Block-wise width distillation (kit.blockwise) and the recipe built on it: oracle and invariance tests."""
import pytest
import torch

from kit import blockwise, metamorph, metatrain, morphtask, permute
from kit import config as C
from kit import data as D
from kit.errors import KitError

BLOCKS = ["layer1.0", "layer2.0"]


def _net(smoothed_smoke, **switches):
    _, prior = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "blockwise", **switches})
    net = metamorph.MetamorphicNet(prior, BLOCKS, cfg.inr, cfg.coordinate_noise, cfg.alpha_scaling, cfg.train_tail,
                                   cfg.alpha_init)
    return net, cfg


def _data(smoothed_smoke):
    path, _ = smoothed_smoke
    _, record = permute.load_smoothed(path)
    return D.for_prior(record["config"], "cpu", 32, 256, 64, 0)


def test_cached_block_inputs_and_outputs_are_the_priors_activations(smoothed_smoke):
    _, prior = smoothed_smoke
    net, _ = _net(smoothed_smoke)
    x = torch.randn(10, 1, 28, 28)
    cache = blockwise.cache_blocks(net, [(x[:6], None), (x[6:], None)], 10)
    # the prior's own forward pass, observed at each block
    modules = dict(prior.named_modules())
    seen = {}

    def keep(block):
        def hook(module, inputs, output):
            seen[block] = (inputs[0], output)  # returns None: the output is left as it is
        return hook

    hooks = [modules[b].register_forward_hook(keep(b)) for b in BLOCKS]
    try:
        with torch.no_grad():
            prior(x)
    finally:
        for h in hooks:
            h.remove()
    for b in BLOCKS:
        assert torch.allclose(cache.inputs[b], seen[b][0], atol=1e-6) and torch.allclose(cache.outputs[b], seen[b][1], atol=1e-6)
        assert torch.allclose(modules[b](cache.inputs[b]), cache.outputs[b], atol=1e-6)  # the block maps one to the other
    assert len(cache) == 10 and all(e > 0 for e in cache.energy.values())
    with pytest.raises(KitError, match="Only 10 training images were available to cache"):
        blockwise.cache_blocks(net, [(x, None)], 11)


def test_the_priors_tensors_at_full_width_have_zero_distillation_loss(smoothed_smoke):
    """The loss is zero exactly when the generated block is the prior's: with the prior's tensors (width H, α = 1)
    every block reproduces the cached outputs, and any other tensor does not."""
    net, cfg = _net(smoothed_smoke)
    x = torch.randn(8, 1, 28, 28)
    cache = blockwise.cache_blocks(net, [(x, None)], 8)
    prior = net.prior_tensors()
    for b in BLOCKS:
        assert torch.allclose(blockwise.block_output(net, b, prior, cache.inputs[b]), cache.outputs[b], atol=1e-6)
    original = net.generate
    net.generate = lambda gamma, noise=0.0, generator=None: dict(prior)
    loss, terms = blockwise.step_loss(net, cache, torch.arange(8), [{b: 0.0 for b in BLOCKS}], cfg.blockwise, 0.0,
                                      prior, None)
    assert float(loss) < 1e-10 and terms["output"] < 1e-10 and terms["reconstruction"] < 1e-10
    net.generate = original
    loss, _ = blockwise.step_loss(net, cache, torch.arange(8), [{b: 0.0 for b in BLOCKS}], cfg.blockwise, 0.0, prior, None)
    assert float(loss) > 1e-3  # an untrained INR's blocks are not the prior's


def test_per_block_draws_generate_the_widths_they_name(smoothed_smoke):
    net, cfg = _net(smoothed_smoke)
    pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
    one = C.BlockwiseConfig(configurations=6, sandwich=True, per_block=True)
    draws = blockwise.configurations(net, pool, one, torch.Generator().manual_seed(3))
    assert draws[0] == {b: 0.0 for b in BLOCKS} and draws[1] == {b: max(pool) for b in BLOCKS} and len(draws) == 6
    assert any(len(set(d.values())) > 1 for d in draws[2:])  # blocks get their own γ
    for d in draws:
        weights = net.generate(d)
        for b, gamma in d.items():
            h = metamorph.width(gamma, net.reference[b])
            assert weights[f"{b}.conv1.weight"].shape[0] == h and weights[f"{b}.conv2.weight"].shape[1] == h
    shared = blockwise.configurations(net, pool, C.BlockwiseConfig(configurations=6, per_block=False),
                                      torch.Generator().manual_seed(3))
    assert all(len(set(d.values())) == 1 for d in shared) and len(shared) == 6
    assert all(set(d.values()) <= set(pool) for d in draws + shared)


def test_the_task_phase_draws_per_block_and_sandwich_widths(smoothed_smoke):
    net, cfg = _net(smoothed_smoke)
    task = morphtask.MorphTask(net, cfg)
    assert task.gamma(0) == 0.0 and task.gamma(1) == max(task.pool)  # the widest, then the narrowest
    draws = [task.gamma(2) for _ in range(20)]
    assert all(isinstance(d, dict) and set(d) == set(BLOCKS) for d in draws)
    assert any(len(set(d.values())) > 1 for d in draws)
    plain = morphtask.MorphTask(net, C.build(C.MorphConfig, "smoke", {"method": "blockwise", "ablation": "per-block"}))
    assert all(isinstance(plain.gamma(2), float) for _ in range(5))


def test_distillation_lowers_the_width_errors_and_resumes_exactly(smoothed_smoke, tmp_path):
    net, cfg = _net(smoothed_smoke)
    data = _data(smoothed_smoke)
    train, probe = blockwise.caches_for(net, data, cfg.blockwise, 0)
    pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
    base = {k: v.clone() for k, v in net.inr.state_dict().items()}
    steps = C.BlockwiseConfig(steps=30, images=256, probe_images=64, batch_size=32, lr=3e-3, warmup_steps=5,
                              probe_every=10, checkpoint_every=10)
    straight = blockwise.run(net, train, probe, steps, pool, 0.5, 7, tmp_path / "a.pt", [0.0, 0.5])
    first, last = straight["widths"][0]["error"], straight["widths"][-1]["error"]
    assert [w["step"] for w in straight["widths"]] == [0, 10, 20, 30]
    assert all(last[b]["0"] < first[b]["0"] and last[b]["0.5"] < first[b]["0.5"] for b in BLOCKS)
    done = {k: v.clone() for k, v in net.inr.state_dict().items()}

    net.inr.load_state_dict(base)
    calls = {"n": 0}
    original = blockwise.step_loss

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 16:  # after the checkpoint at step 10, mid-way to the next
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    blockwise.step_loss = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            blockwise.run(net, train, probe, steps, pool, 0.5, 7, tmp_path / "b.pt", [0.0, 0.5])
    finally:
        blockwise.step_loss = original
    net.inr.load_state_dict(base)  # the process died: nothing of it survives but the checkpoint
    resumed = blockwise.run(net, train, probe, steps, pool, 0.5, 7, tmp_path / "b.pt", [0.0, 0.5])
    assert all(torch.equal(done[k], v) for k, v in net.inr.state_dict().items())
    assert resumed["curve"] == straight["curve"] and resumed["widths"] == straight["widths"]
    other = C.BlockwiseConfig(**{**steps.__dict__, "lr": 1e-3})
    with pytest.raises(KitError, match="written with other settings"):
        blockwise.run(net, train, probe, other, pool, 0.5, 7, tmp_path / "b.pt", [0.0, 0.5])


def test_each_blockwise_ablation_switch_changes_only_what_it_names():
    from tests.test_metatrain import _flat
    named = {"prefit": {"prefit"}, "blockwise": {"width_distillation"}, "end-to-end": {"end_to_end"},
             "per-block": {"per_block_gammas", "blockwise.per_block"}, "sandwich": {"sandwich", "blockwise.sandwich"},
             "warmup": {"blockwise.warmup_steps"}}
    assert set(named) == set(C.ABLATIONS["blockwise"]) - {"none"}
    for profile in ("smoke", "quick", "paper"):
        ours = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "blockwise"})))
        for ablation, fields in named.items():
            row = _flat(C.to_dict(C.build(C.MorphConfig, profile, {"method": "blockwise", "ablation": ablation})))
            assert {k for k in ours if ours[k] != row[k]} == fields | {"ablation"}, ablation
        for method in ("htty", "neumeta", "prefit", "null"):  # the other recipes keep the new switches off
            cfg = C.build(C.MorphConfig, profile, {"method": method})
            assert (cfg.width_distillation, cfg.end_to_end, cfg.per_block_gammas, cfg.sandwich, cfg.joint_epochs) == (
                False, True, False, False, 0)
    with pytest.raises(KitError, match="end_to_end=False leaves only the block-local phases"):
        C.build(C.MorphConfig, "smoke", {"method": "htty", "end_to_end": False})


def test_the_recipe_trains_evaluates_at_its_own_noise_and_records_the_width_study(smoothed_smoke, tmp_path):
    path, _ = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "blockwise", "prefit_steps": 20, "gammas_eval": [0.0, 0.5]})
    seen = []
    from kit import inr as I
    real = I.WeightINR.average

    def spy(self, sizes, k, noise, seed=0, slots=None):
        seen.append((k, noise))
        return real(self, sizes, k, noise, seed, slots)

    I.WeightINR.average = spy
    try:
        result = metatrain.train_morph(cfg, path, tmp_path / "run")
    finally:
        I.WeightINR.average = real
    m = result.metrics
    assert (cfg.k_samples, cfg.coordinate_noise) in seen and all(n == cfg.coordinate_noise for _, n in seen)
    assert m["eval_noise"] == cfg.coordinate_noise == result.net.noise
    assert set(m["accuracy_k1"]) == set(m["accuracy"]) == {"0", "0.5"} and m["k_samples"] == cfg.k_samples
    net, record = metamorph.load(result.checkpoint)
    assert record["noise"] == cfg.coordinate_noise
    stage = m["stages"][0]
    assert list(stage["widths"]) == ["after pre-fit", "after distillation", "after end-to-end"]
    assert set(stage["widths"]["after pre-fit"]) == set(BLOCKS)
    assert stage["blockwise"]["widths"][0]["error"] == stage["widths"]["after pre-fit"]
    assert stage["blockwise_seconds"] > 0 and (tmp_path / "run" / "blockwise_stage1.pt").exists()
    assert m["switches"]["width_distillation"] and m["switches"]["sandwich"]


def test_the_recipe_killed_mid_distillation_resumes_exactly(smoothed_smoke, tmp_path):
    from tests.test_metatrain import _same_result
    path, _ = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "blockwise", "prefit_steps": 20, "gammas_eval": [0.0, 0.5],
                                           "blockwise.steps": 30, "blockwise.checkpoint_every": 10})
    straight = metatrain.train_morph(cfg, path, tmp_path / "straight")
    calls = {"n": 0}
    original = blockwise.step_loss

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:  # after the distillation's checkpoint at step 20
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    blockwise.step_loss = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            metatrain.train_morph(cfg, path, tmp_path / "killed")
    finally:
        blockwise.step_loss = original
    assert (tmp_path / "killed" / "prefit_stage1.json").exists()  # the pre-fit is not redone on the rerun
    resumed = metatrain.train_morph(cfg, path, tmp_path / "killed")
    _same_result(straight, resumed)
    assert resumed.metrics["stages"][0]["widths"] == straight.metrics["stages"][0]["widths"]


def test_the_block_local_phases_alone_make_a_complete_record(smoothed_smoke, tmp_path):
    """The 'end-to-end' ablation: no task phase, yet a record every reader takes (history row, stage, curves)."""
    from kit import plots
    path, _ = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "blockwise", "ablation": "end-to-end", "prefit_steps": 20,
                                           "gammas_eval": [0.0, 0.5], "blockwise.probe_every": 0})
    result = metatrain.train_morph(cfg, path, tmp_path / "run")
    m = result.metrics
    assert m["epochs"] == 0 and m["stages"][0]["seconds"] == 0.0 and m["stages"][0]["blockwise_seconds"] > 0
    assert list(m["stages"][0]["widths"]) == ["after pre-fit", "after distillation", "final"]
    assert [w["step"] for w in m["stages"][0]["blockwise"]["widths"]] == [0, cfg.blockwise.steps]  # start and end
    row = result.history[0]
    assert row["loss"] is None and 0 <= row["val_accuracy"] <= 1 and f"branch scale@{BLOCKS[0]}" in row
    plots.training_curves(result.history, "block-local phases only")  # draws without a training phase
    assert not (tmp_path / "run" / "checkpoint_stage1.pt").exists()


def test_recipes_that_cannot_work_are_refused():
    for overrides, words in (({"method": "htty", "width_distillation": True}, "needs alpha_init > 0"),
                             ({"method": "blockwise", "accumulate": 1}, "sandwich puts the pool's largest γ second"),
                             ({"method": "blockwise", "width_updates": "sizes"}, "use width_updates='all'")):
        with pytest.raises(KitError, match=words):
            C.build(C.MorphConfig, "smoke", overrides)
    assert metamorph.at_prior({b: 0.0 for b in BLOCKS}) and not metamorph.at_prior({BLOCKS[0]: 0.25, BLOCKS[1]: 0.0})
    assert metatrain.mixed_configurations(BLOCKS, 0.5, 5) == [{BLOCKS[0]: 0.0, BLOCKS[1]: 0.5},
                                                              {BLOCKS[0]: 0.5, BLOCKS[1]: 0.0}]
    assert metatrain.mixed_configurations(BLOCKS[:1], 0.5, 5) == [] and metatrain.mixed_configurations(BLOCKS, 0.0, 1) == []


def test_export_with_given_tensors_is_the_network_those_tensors_make(smoothed_smoke):
    """Oracle: exporting with the prior's own tensors at γ = 0 (α = 1) is the prior; with the generated tensors it is
    the ordinary export; a tensor of another shape is refused in one sentence."""
    _, prior = smoothed_smoke
    net, _ = _net(smoothed_smoke, alpha_init=1.0)
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(net.export(0.0, weights=net.prior_tensors())(x), prior.eval()(x), atol=1e-5)
        generated = net.average(0.25)
        assert torch.equal(net.export(0.25, weights=generated)(x), net.export(0.25)(x))
    with pytest.raises(KitError, match="shape"):
        net.export(0.25, weights=net.prior_tensors())


def test_free_blocks_start_at_the_inrs_output_and_only_lower_its_error(smoothed_smoke):
    """The ceiling's bookkeeping: with no step the free tensors are the INR's output (moved 0, same error as
    `width_errors`); trained, every block's error falls and the INR itself is untouched."""
    from kit import widthstudy
    net, _ = _net(smoothed_smoke)
    data = _data(smoothed_smoke)
    cfg = C.BlockwiseConfig(images=128, probe_images=32)
    cache, probe = blockwise.caches_for(net, data, cfg, 0)
    before = {k: v.clone() for k, v in net.inr.state_dict().items()}
    expected = blockwise.width_errors(net, probe, [0.25])
    free, record = widthstudy.free_blocks(net, cache, probe, 0.25, 0, batch_size=32)
    assert all(m == 0 for m in record["moved"].values())
    for b in BLOCKS:
        assert record["error_free"][b] == pytest.approx(record["error_inr"][b]) == pytest.approx(expected[b]["0.25"])
    free, record = widthstudy.free_blocks(net, cache, probe, 0.25, 60, batch_size=32)
    assert all(record["error_free"][b] < record["error_inr"][b] for b in BLOCKS)
    assert all(m > 0 for m in record["moved"].values()) and free.keys() == net.generate(0.25).keys()
    assert all(torch.equal(v, before[k]) for k, v in net.inr.state_dict().items())
