"""The null control and the kit's pre-fit recipe: oracle and invariance tests of each new part."""
import copy

import pytest
import torch
import torch.nn as nn

from kit import config as C
from kit import metamorph, metatrain, morphtask, permute, results, study
from kit.inr import WeightINR, TensorSpec, coordinates, fourier_features

BLOCKS = ["layer1.0", "layer2.0"]


class _Shortcut(nn.Module):
    """What a removed block leaves: relu(shortcut(x)), the identity for a block without projection."""

    def __init__(self, block):
        super().__init__()
        self.shortcut = block.shortcut

    def forward(self, x):
        return x if self.shortcut is None else torch.relu(self.shortcut(x))


def _without_blocks(prior, blocks):
    """The prior with `blocks` removed: the null control's network before any tail training."""
    net = copy.deepcopy(prior).eval()
    modules = dict(net.named_modules())
    for b in blocks:
        parent, _, index = b.rpartition(".")
        modules[parent][int(index)] = _Shortcut(modules[b])
    return net


def test_the_null_control_is_the_prior_with_its_blocks_replaced_by_the_identity(smoothed_smoke):
    _, prior = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "null"})
    blocks = metamorph.blocks_for(prior, cfg.setting)
    assert dict(prior.named_modules())[blocks[0]].shortcut is None  # layer1.0: truly the identity once removed
    net = metamorph.MetamorphicNet(prior, blocks, cfg.inr, alpha_scaling=True, train_tail=True,
                                   alpha_init=cfg.alpha_init).eval()
    x = torch.rand(6, 1, 28, 28)
    expected = _without_blocks(prior, blocks)(x)
    assert not torch.allclose(prior(x), expected, atol=1e-3)
    for gamma in (0.0, 0.5, -0.25):  # whatever width and whatever the untrained INR generates
        assert torch.allclose(net(x, gamma), expected, atol=1e-5), gamma
        assert torch.allclose(net.export(gamma, 2).eval()(x), expected, atol=1e-5), gamma


def test_training_the_null_control_moves_only_the_tail_and_keeps_alpha_at_zero(smoothed_smoke, tmp_path):
    from kit.runtime import seed_everything
    path, _ = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "null", "gammas_eval": [0.0, 0.5]})
    prior = permute.load_smoothed(path)[0]
    result = metatrain.train_morph(cfg, path, tmp_path)
    assert set(result.metrics["alpha"].values()) == {0.0}
    assert result.metrics["accuracy"]["0"] == result.metrics["accuracy"]["0.5"]  # no γ in a network without blocks
    state, before = result.net.trainable_state(), prior.state_dict()
    assert any(not torch.equal(state[f"tail.{i}"], before[n]) for i, n in enumerate(result.net.tail_names))
    seed_everything(cfg.seed)  # the INR as train_morph initialised it: never trained
    fresh = metamorph.MetamorphicNet(prior, result.net.blocks, cfg.inr, cfg.coordinate_noise, True, True, 0.0)
    assert all(torch.equal(v, fresh.inr.state_dict()[k]) for k, v in result.net.inr.state_dict().items())


def test_alpha_one_with_the_priors_tensors_is_the_prior_and_zero_removes_the_blocks(smoothed_smoke):
    _, prior = smoothed_smoke
    x = torch.rand(4, 1, 28, 28)
    for alpha, expected in ((1.0, prior(x)), (0.0, _without_blocks(prior, ["layer1.0"])(x))):
        net = metamorph.MetamorphicNet(prior, ["layer1.0"], C.INRConfig(hidden=8, depth=2), alpha_scaling=True,
                                       alpha_init=alpha).eval()
        assert torch.allclose(net(x, 0.0, net.prior_tensors()), expected, atol=1e-5), alpha


def test_neutral_size_features_keep_the_priors_size_and_make_other_sizes_resamplings():
    torch.manual_seed(0)
    specs = [TensorSpec("k", "kernel", 8, 6, 3), TensorSpec("b", "bias", 8, 1)]
    inr = WeightINR(specs, hidden=32, depth=3, activation="elu", num_freqs=5, disentangled=True)
    at_prior = [t.detach().clone() for t in inr([(8, 6), (8, 1)])]
    inr.neutralise_sizes([0, 1])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(at_prior, inr([(8, 6), (8, 1)])))
    # at width 5 the MLP now sees the same input as if the size coordinates were the prior's (1, 1)
    x = coordinates(0, 2, 5, 6, 8, 6)  # (30, 6): o/5, c/6, O/O_ref = 5/8, I/I_ref = 1
    as_prior = x.clone()
    as_prior[:, 4:] = 1.0
    bank = inr.kernel_bank
    run = lambda c: bank.run([fourier_features(c, 5)], which=[0])[0]
    assert torch.allclose(run(x), run(as_prior), atol=1e-6)
    assert not torch.allclose(run(x), run(coordinates(0, 2, 5, 6, 8, 6)[:, [0, 2, 1, 3, 4, 5]]))  # indices still matter


def test_the_relative_reconstruction_is_the_squared_relative_error():
    t = {"w": torch.tensor([3.0, 4.0]), "v": torch.tensor([1.0, 0.0])}
    w = {"w": torch.tensor([3.0, 4.5]), "v": torch.tensor([0.0, 0.0])}
    expected = ((0.5 ** 2) / 25 + 1.0) / 2
    assert morphtask.reconstruction_loss(w, t, "relative").item() == pytest.approx(expected)
    assert morphtask.reconstruction_loss(t, t, "relative").item() == 0


def test_a_prefitted_inr_gives_the_priors_logits(smoothed_smoke):
    """Oracle: after the pre-fit at γ = 0 the generated network's logits match the prior's; stated tolerance:
    every tensor's relative error ≤ 0.05 and the logits within 5% of their spread."""
    _, prior = smoothed_smoke
    torch.manual_seed(0)
    net = metamorph.MetamorphicNet(prior, ["layer1.0"], C.INRConfig(hidden=64, depth=3, num_freqs=6), noise=0.0,
                                   alpha_scaling=True, alpha_init=1.0)
    net.set_active(1)
    record = metatrain.prefit(net, metamorph.block_slots(0), steps=600, lr=3e-3, noise=0.0, seed=0)
    assert max(record["error"].values()) <= 0.05, record["error"]
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        expected, got = prior(x), net.eval()(x, 0.0)
    assert (got - expected).abs().max() <= 0.05 * expected.std()
    assert record["curve"][-1][1] < record["curve"][0][1] / 100  # the fit converged, it did not start there


def test_the_prefit_touches_only_the_blocks_it_fits(smoothed_smoke):
    _, prior = smoothed_smoke
    net = metamorph.MetamorphicNet(prior, BLOCKS, C.INRConfig(hidden=16, depth=2, num_freqs=3))
    before = {k: v.clone() for k, v in net.inr.state_dict().items()}
    metatrain.prefit(net, metamorph.block_slots(1), steps=20, lr=3e-3, noise=0.5, seed=0)
    after = net.inr.state_dict()
    # each bank stacks its MLPs: kernels of slots 0, 2 (block 0) and 4, 6 (block 1) are rows 0, 1, 2, 3; biases alike
    for name, value in after.items():
        assert torch.equal(value[:2], before[name][:2]), name  # block 0: untouched
        assert not torch.equal(value[2:], before[name][2:]), name  # block 1: fitted


def test_the_prefit_recipe_resumes_mid_stage_exactly(smoothed_smoke, tmp_path):
    from tests.test_metatrain import _killed_and_resumed, _same_result
    path, _ = smoothed_smoke
    cfg = C.build(C.MorphConfig, "smoke", {"method": "prefit", "prefit_steps": 30, "optim.epochs": 2,
                                           "gammas_eval": [0.0, 0.5]})
    straight = metatrain.train_morph(cfg, path, tmp_path / "straight")
    resumed = _killed_and_resumed(cfg, path, tmp_path / "killed", after_epoch=3)  # stage 2, its first epoch done
    _same_result(straight, resumed)
    errors = lambda r: [{b: f["error"] for b, f in s["prefit"].items()} for s in r.metrics["stages"]]
    assert errors(straight) == errors(resumed) and all(errors(straight))
    assert list(straight.metrics["stages"][1]["after_prefit"]) == ["paper sizes", "neutral sizes"]


def test_no_task_gradient_reaches_the_inr_while_alpha_is_zero(smoothed_smoke):
    _, prior = smoothed_smoke
    net = metamorph.MetamorphicNet(prior, BLOCKS, C.INRConfig(hidden=8, depth=2), alpha_scaling=True)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    grads = study.alpha_zero_gradient(net, x, y)
    assert grads[0.0] == 0.0 and grads[1.0] > 0
    assert set(net.alphas().values()) == {0.0}  # α restored


def test_the_summary_reads_every_row_against_the_null_control():
    def row(method, acc):
        return {"method": method, "ablation": "none", "setting": "s", "accuracy": acc, "train_seconds": 1.0,
                "kind": {g: "seen" for g in acc}, "config": {}}
    runs = {"null": row("null", {"0": 0.80}), "htty": row("htty", {"0": 0.805, "0.5": 0.80}),
            "prefit": row("prefit", {"0": 0.90, "0.5": 0.88}), "neumeta": row("neumeta", {"0": 0.85, "0.5": 0.79})}
    summary = results.summarise(runs, "s")
    assert summary["null"]["any_gamma"] and results.at(summary["null"], "0.5") == (0.80, 0.0)
    words = results.versus_null(summary)
    assert "carry no function" in words["htty"] and "above it at every γ" in words["prefit"]
    assert "only at some γ" in words["neumeta"] and "null" not in words
    table = results.table(summary, 0.9)
    assert "| null | 1 | 80.00 | 80.00 |" in table  # one network: its accuracy in every column
    assert results.null_accuracy(runs, "s") == 0.80 and results.null_accuracy(runs, "other") is None


def test_offset_size_encoding_keeps_the_priors_size_out_of_the_size_weights():
    torch.manual_seed(0)
    specs = [TensorSpec("k", "kernel", 8, 6, 3), TensorSpec("b", "bias", 8, 1)]
    inr = WeightINR(specs, hidden=16, depth=3, activation="elu", num_freqs=4, size_encoding="offset")
    at_prior, narrower = [t.detach().clone() for t in inr([(8, 6), (8, 1)])], inr([(5, 6), (5, 1)])[0].detach().clone()
    from kit.inr import size_columns
    with torch.no_grad():
        for bank in (inr.kernel_bank, inr.bias_bank):
            bank.w_in[:, size_columns(4)] += 1.0  # any change of the size weights …
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(at_prior, inr([(8, 6), (8, 1)])))  # … not at the prior's
    assert not torch.allclose(narrower, inr([(5, 6), (5, 1)])[0])  # … but at other sizes


def test_sizes_only_generation_has_the_same_values_and_trains_only_the_size_weights():
    from kit.inr import size_columns
    torch.manual_seed(0)
    inr = WeightINR([TensorSpec("k", "kernel", 8, 6, 3)], hidden=16, depth=3, activation="elu", num_freqs=4,
                    size_encoding="offset")
    full, restricted = inr([(5, 6)])[0], inr([(5, 6)], sizes_only=True)[0]
    assert torch.equal(full, restricted)
    restricted.square().sum().backward()
    grads = {n: p.grad for n, p in inr.named_parameters()}
    assert all(g is None for n, g in grads.items() if n != "kernel_bank.w_in")
    others = [c for c in range(grads["kernel_bank.w_in"].shape[1]) if c not in size_columns(4)]
    assert grads["kernel_bank.w_in"][:, others].abs().max() == 0
    assert grads["kernel_bank.w_in"][:, size_columns(4)].abs().max() > 0
