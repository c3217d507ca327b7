"""Metamorphic networks: settings, γ ↔ widths, generation through functional_call, export, files."""
import pytest
import torch
import torch.nn.functional as F

from kit import config as C
from kit import data as D
from kit import io, metamorph, models, train
from kit.errors import KitError

INR = C.INRConfig(hidden=16, depth=2, num_freqs=3)


def _prior(depth=20, width=4, seed=0):
    torch.manual_seed(seed)
    return models.fold_bn(models.resnet(depth, width, 1, 10).eval())


def test_settings_select_the_documented_blocks():
    net = _prior(20)
    assert metamorph.blocks_for(net, "last_block") == ["layer3.2"]
    # multi-block settings leave out projection blocks (layer3.0) and the final block (HTTY trains it directly)
    assert metamorph.blocks_for(net, "last_stage") == ["layer3.1"]
    assert metamorph.blocks_for(net, "all") == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1"]
    assert metamorph.blocks_for(_prior(56), "last_stage") == [f"layer3.{i}" for i in range(1, 8)]  # paper 000 Table 1
    assert metamorph.blocks_for(net, "all:3") == ["layer1.0", "layer1.1", "layer1.2"]  # Fig. 4 sweep: the first k
    with pytest.raises(KitError, match="asks for 7 blocks but 'all' has only 6"):
        metamorph.blocks_for(net, "all:7")
    with pytest.raises(KitError, match="positive integer"):
        metamorph.blocks_for(net, "all:x")
    assert metamorph.blocks_for(net, "layer3.2, layer2.1") == ["layer2.1", "layer3.2"]  # forward order
    with pytest.raises(KitError, match="Unknown block 'layer4.0'"):
        metamorph.blocks_for(net, "layer4.0")
    with pytest.raises(KitError, match="selects no block of ResNet-8"):
        metamorph.blocks_for(_prior(8), "last_stage")
    assert metamorph.blocks_for(_prior(8), "last_block") == ["layer3.0"]  # NeuMeta's block may have a projection


def test_width_follows_equation_2_and_rejects_what_the_inr_cannot_build():
    assert [metamorph.width(g, 64) for g in (0, 0.25, 0.5, 0.75, -0.25, -1.0)] == [64, 48, 32, 16, 80, 128]
    assert metamorph.width(0.5, 5) == 3  # halves round up (Python's round would give 2)
    with pytest.raises(KitError, match="no channel"):
        metamorph.width(1.0, 64)
    with pytest.raises(KitError, match="no channel"):
        metamorph.width(0.995, 64)
    with pytest.raises(KitError, match="twice the prior's width"):
        metamorph.width(-1.5, 64)
    assert metamorph.gamma_key(0.25) == "0.25" and metamorph.gamma_key(-0.25) == "-0.25"
    assert metamorph.gamma_key(-0.0) == "0" and metamorph.gamma_key(0.265625) == "0.265625"


@pytest.mark.parametrize("setting", ["last_block", "last_stage", "all", "layer1.1,layer3.2"])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.75, -0.25])
def test_generated_shapes_and_forward_for_every_setting(setting, gamma):
    prior = _prior(20)
    net = metamorph.MetamorphicNet(prior, metamorph.blocks_for(prior, setting), INR)
    widths = net.widths(gamma)
    weights = net.generate(gamma, noise=1.0)
    modules = dict(prior.named_modules())
    assert len(weights) == 4 * len(net.blocks)
    for b, h in widths.items():
        assert h == metamorph.width(gamma, modules[b].hidden)
        c_in, c_out = modules[f"{b}.conv1"].in_channels, modules[f"{b}.conv2"].out_channels
        assert weights[f"{b}.conv1.weight"].shape == (h, c_in, 3, 3) and weights[f"{b}.conv1.bias"].shape == (h,)
        assert weights[f"{b}.conv2.weight"].shape == (c_out, h, 3, 3) and weights[f"{b}.conv2.bias"].shape == (c_out,)
    for spec, (o, i) in zip(net.specs, net.sizes(gamma)):  # the coordinates cover exactly the generated elements
        x = net.inr.coords(net.specs.index(spec), o, i, "cpu")
        assert x.shape == (o * i, 6) and x[:, 1].max() < 1 and x[:, 2].max() < 1
        assert torch.allclose(x[:, 4], torch.full((o * i,), o / spec.ref_out))
    assert net(torch.randn(2, 1, 16, 16), gamma, weights).shape == (2, 10)


def test_gradients_reach_every_inr_through_functional_call():
    prior = _prior(20)
    net = metamorph.MetamorphicNet(prior, metamorph.blocks_for(prior, "last_stage"), INR)
    F.cross_entropy(net(torch.randn(4, 1, 16, 16), 0.3, net.generate(0.3, 1.0)), torch.arange(4)).backward()
    for name, p in net.inr.named_parameters():
        assert torch.all(p.grad.reshape(p.shape[0], -1).abs().sum(1) > 0), f"{name}: an MLP got no gradient"
    assert all(p.grad is None for p in net.skeleton.parameters())  # the prior stays frozen


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.75, -0.25, {"layer3.1": 0.5}])
def test_export_has_the_metamorphic_networks_logits(gamma, tmp_path):
    prior = _prior(20)
    net = metamorph.MetamorphicNet(prior, metamorph.blocks_for(prior, "last_stage"), INR).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = net(x, gamma, net.average(gamma, k=3, seed=11))
    exported = net.export(gamma, k=3, seed=11)
    assert isinstance(exported, models.ResNet)
    assert torch.allclose(exported(x), expected, atol=1e-5, rtol=1e-5)
    io.save_torch({"arch": exported.arch, "state_dict": exported.state_dict()}, tmp_path / "m.pt")
    reloaded, _ = train.load_prior(tmp_path / "m.pt")  # a plain ResNet: no INR needed
    assert torch.allclose(reloaded(x), expected, atol=1e-5, rtol=1e-5)


def test_blocks_outside_the_setting_keep_the_prior_and_gamma_zero_costs_the_prior():
    prior = _prior(20)
    net = metamorph.MetamorphicNet(prior, ["layer3.2"], INR)
    exported = net.export(0.5).state_dict()
    for name, t in prior.state_dict().items():
        if not name.startswith("layer3.2.conv"):
            assert torch.equal(exported[name], t), name
    shape = (1, 16, 16)
    assert net.cost(0.0, shape) == models.cost(prior, shape)
    params = [net.cost(g, shape)["parameters"] for g in (-0.25, 0.0, 0.25, 0.5, 0.75)]
    assert params == sorted(params, reverse=True) and len(set(params)) == 5


def test_kinds_of_gamma_against_the_pool():
    prior = _prior(20, width=16)  # last block 64 wide
    net = metamorph.MetamorphicNet(prior, ["layer3.2"], INR)
    pool = metamorph.pool_gammas(0.5, 17)  # widths 64, 62, …, 32
    assert [net.kind(g, pool) for g in (0.0, 0.25, 0.265625, 0.5, 0.625, -0.25)] == \
        ["seen", "seen", "between", "seen", "smaller", "larger"]
    # labels follow the widths built, not the number: these round to the prior's and to the γ = 0.5 network
    assert net.kind(-0.005, pool) == "seen" and net.kind(0.505, pool) == "seen"
    assert net.kind({"layer3.2": 0.7}, pool) == "smaller"


def test_save_and_load_round_trip_and_refuse_another_prior(tmp_path):
    prior = _prior(20)
    net = metamorph.MetamorphicNet(prior, ["layer3.1", "layer3.2"], INR, noise=0.5)
    net.save(tmp_path / "metamorph.pt", skeleton_digest="abc")
    loaded, record = metamorph.load(tmp_path / "metamorph.pt", skeleton_digest="abc")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, 0.25), net(x, 0.25))
    assert loaded.noise == 0.5 and loaded.blocks == net.blocks
    with pytest.raises(KitError, match="trained on another prior"):
        metamorph.load(tmp_path / "metamorph.pt", skeleton_digest="xyz")
    io.save_torch({"arch": prior.arch}, tmp_path / "other.pt")
    with pytest.raises(KitError, match="not a metamorphic checkpoint"):
        metamorph.load(tmp_path / "other.pt")


def test_inr_refuses_kernels_it_cannot_cut_from_the_centre():
    from kit import inr
    with pytest.raises(KitError, match="cannot be cut from the centre"):
        inr.WeightINR([inr.TensorSpec("a", "kernel", 2, 2, 3), inr.TensorSpec("b", "kernel", 2, 2, 2)])


def test_a_prior_with_batchnorm_is_refused():
    with pytest.raises(KitError, match="BN-folded prior"):
        metamorph.MetamorphicNet(models.resnet(8, 4), ["layer3.0"], INR)


def test_inr_fitted_to_reconstruction_reproduces_the_prior(smoothed_smoke):
    """γ = 0 of an INR trained on reconstruction alone must be the prior: within 0.5 points of its accuracy."""
    from kit import permute
    path, _ = smoothed_smoke
    prior, record = permute.load_smoothed(path)
    data = D.for_prior(record["config"])
    torch.manual_seed(0)
    net = metamorph.MetamorphicNet(prior, ["layer3.0"], C.INRConfig(hidden=256, depth=3, num_freqs=16))
    targets = net.prior_tensors()
    opt = torch.optim.Adam(net.inr.parameters(), 3e-3)
    steps = 1500  # rel. MSE ≈ 2e-3: 800 steps (≈ 2e-2) left a few borderline test images flipped
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        generated = net.generate(0.0)  # plain MSE relative to each tensor's scale: small weights matter here too
        torch.stack([(generated[k] - t).square().mean() / t.square().mean() for k, t in targets.items()]).mean().backward()
        opt.step()
        sched.step()
    prior_acc = train.evaluate(prior, data, "test")["accuracy"]
    generated_acc = train.evaluate(net.export(0.0), data, "test")["accuracy"]
    assert abs(generated_acc - prior_acc) <= 0.005, (generated_acc, prior_acc)
