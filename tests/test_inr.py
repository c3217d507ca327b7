"""The INR: coordinates, Fourier features, the batched MLP bank and its backward, decoding, noise, averaging."""
import math

import pytest
import torch

from kit import inr
from kit.errors import KitError


def test_coordinates_layout_and_normalisation():
    x = inr.coordinates(layer=2, num_layers=4, out_size=3, in_size=5, ref_out=6, ref_in=10)
    assert x.shape == (15, 6)
    # row o·in + c holds (o/3, c/5); the other columns are constant
    assert torch.allclose(x[12, 1:3], torch.tensor([2 / 3, 2 / 5]))  # row 12 = 2·5 + 2
    assert torch.allclose(x[:, 0], torch.full((15,), 0.5))
    assert torch.allclose(x[0, 3:], torch.tensor([1.0, 0.5, 0.5]))
    assert x[:, 1].max() < 1 and x[:, 2].max() < 1
    wide = inr.coordinates(0, 4, 12, 20, ref_out=6, ref_in=10)  # wider than the prior (negative γ)
    assert torch.allclose(wide[0, 4:], torch.tensor([2.0, 2.0]))
    bias = inr.coordinates(1, 4, 7, 1, ref_out=7, ref_in=1)
    assert bias.shape == (7, 6) and torch.all(bias[:, 2] == 0)


def test_coordinates_reject_zero_width():
    with pytest.raises(KitError, match="widths must be at least 1"):
        inr.coordinates(0, 1, 0, 4, 4, 4)


def test_fourier_features_match_the_formula():
    x = torch.rand(9, 6)
    f = inr.fourier_features(x, 3)
    assert f.shape == (9, 6 * 7)
    assert torch.equal(f[:, :6], x)
    k, d = 2, 4  # frequency 2^2·π of input column 4
    assert torch.allclose(f[:, 6 + d * 3 + k], torch.sin(4 * math.pi * x[:, d]), atol=1e-6)
    assert torch.allclose(f[:, 6 + 18 + d * 3 + k], torch.cos(4 * math.pi * x[:, d]), atol=1e-6)
    with pytest.raises(KitError, match="num_freqs must be between 0 and 16"):
        inr.fourier_features(x, 32)


@pytest.mark.parametrize("activation,depth", [("relu", 4), ("elu", 3), ("elu", 1)])
def test_batched_bank_equals_a_loop_over_mlps(activation, depth):
    torch.manual_seed(0)
    bank = inr.MLPBank(count=5, in_dim=18, hidden=32, out_dim=9, depth=depth, activation=activation, gate_init=0.3)
    inputs = [torch.randn(n, 18) for n in (7, 40, 1, 33, 40)]  # ragged, as tensors of different sizes are
    batched = bank.run(inputs, chunk=16)
    for i, x in enumerate(inputs):
        assert batched[i].shape == (len(x), 9)
        assert torch.allclose(batched[i], bank.forward_one(i, x), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_mlp():
    torch.manual_seed(1)
    bank = inr.MLPBank(count=3, in_dim=6, hidden=8, out_dim=2, depth=3)
    outs = bank.run([torch.randn(n, 6) for n in (4, 9, 2)])
    sum(o.square().sum() for o in outs).backward()
    for name, p in bank.named_parameters():
        per_mlp = p.grad.reshape(p.shape[0], -1).abs().sum(1)
        assert torch.all(per_mlp > 0), f"{name}: some MLP got no gradient"


def test_bank_rejects_bad_settings():
    with pytest.raises(KitError, match="activation"):
        inr.MLPBank(2, 4, 4, 1, activation="gelu")
    bank = inr.MLPBank(2, 4, 4, 1)
    with pytest.raises(KitError, match="holds 2 MLPs but got inputs for 3"):
        bank.run([torch.zeros(1, 4)] * 3)


# ---------------------------------------------------------------- the bank's own backward, the WeightINR

from kit import mlpbank  # noqa: E402


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_residual_block_backward_passes_gradcheck(activation):
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda h, w, b, g: mlpbank._ResidualBlock.apply(h, w, b, g, activation)
    assert torch.autograd.gradcheck(fn, (h, w, b, g))


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_bank_gradients_equal_autograd_of_the_loop(activation):
    torch.manual_seed(2)
    bank = inr.MLPBank(count=4, in_dim=10, hidden=16, out_dim=3, depth=4, activation=activation, gate_init=0.5).double()
    x = torch.randn(4, 12, 10, dtype=torch.float64)
    params = list(bank.parameters())
    batched = torch.autograd.grad(bank(x).sin().sum(), params)
    looped = torch.autograd.grad(torch.stack([bank.forward_one(i, x[i]) for i in range(4)]).sin().sum(), params)
    for a, b in zip(batched, looped):
        assert torch.allclose(a, b, atol=1e-12)


def _specs():
    return [inr.TensorSpec("a.weight", "kernel", 6, 4, 3), inr.TensorSpec("a.bias", "bias", 6, 1),
            inr.TensorSpec("b.weight", "kernel", 4, 6, 3), inr.TensorSpec("b.bias", "bias", 4, 1),
            inr.TensorSpec("s.weight", "kernel", 5, 3, 1)]  # a 1×1 conv: the spatial centre of 3×3 outputs


@pytest.mark.parametrize("disentangled", [False, True])
def test_weight_inr_equals_a_per_tensor_loop(disentangled):
    torch.manual_seed(3)
    net = inr.WeightINR(_specs(), hidden=24, depth=3, activation="elu", num_freqs=3, disentangled=disentangled)
    assert net.bias_bank.w_out.shape[-1] == (1 if disentangled else 9)  # outputs sized to the target, or NeuMeta's 9
    for sizes in ([(6, 4), (6, 1), (4, 6), (4, 1), (5, 3)], [(9, 4), (9, 1), (4, 9), (4, 1), (2, 3)]):
        batched, looped = net(sizes, chunk=7), inr.per_tensor_loop(net, sizes)
        for spec, (o, i), a, b in zip(net.specs, sizes, batched, looped):
            assert a.shape == ((o, i, spec.kernel, spec.kernel) if spec.kind == "kernel" else (o,))
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_kernels_are_cropped_at_the_spatial_centre_and_divided_by_fan_in():
    torch.manual_seed(4)
    net = inr.WeightINR(_specs(), hidden=8, depth=2, num_freqs=2)
    sizes = [(6, 4), (6, 1), (4, 6), (4, 1), (5, 3)]
    feats = net._inputs(net.kernels, sizes, 0.0, None, "cpu")
    raw = [net.kernel_bank.forward_one(j, x) for j, x in enumerate(feats)]  # (O·I, 9) each
    full, pointwise = net(sizes)[0], net(sizes)[4]
    assert torch.allclose(full, raw[0].reshape(6, 4, 3, 3) / 4, atol=1e-6)
    assert torch.allclose(pointwise[:, :, 0, 0], raw[2][:, 4].reshape(5, 3) / 3, atol=1e-6)  # flat index 4 = (1, 1)


def test_noise_moves_only_the_index_coordinates():
    net = inr.WeightINR(_specs(), hidden=8, depth=2, num_freqs=0)  # features = the coordinates themselves
    sizes = [(6, 4), (6, 1), (4, 6), (4, 1), (5, 3)]
    clean = net._inputs([0, 1], sizes, 0.0, None, "cpu")
    noisy = net._inputs([0, 1], sizes, 1.0, torch.Generator().manual_seed(0), "cpu")
    for c, n, (o, i) in zip(clean, noisy, [(6, 4), (6, 1)]):
        assert torch.equal(c[:, [0, 3, 4, 5]], n[:, [0, 3, 4, 5]])  # layer slot and sizes stay exact
        assert (n[:, 1] - c[:, 1]).abs().max() <= 0.5 / o and (n[:, 1] != c[:, 1]).all()
        assert (n[:, 2] - c[:, 2]).abs().max() <= 0.5 / i
    assert torch.equal(noisy[1][:, 2], clean[1][:, 2])  # a bias has no input index to move


def test_average_is_the_mean_of_k_generations_first_without_noise():
    torch.manual_seed(5)
    net = inr.WeightINR(_specs(), hidden=8, depth=2, num_freqs=2)
    sizes = [(6, 4), (6, 1), (4, 6), (4, 1), (5, 3)]
    mean = net.average(sizes, k=4, noise=1.0, seed=7)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        samples = [net(sizes)] + [net(sizes, 1.0, g) for _ in range(3)]
    for i, m in enumerate(mean):
        assert torch.allclose(m, torch.stack([s[i] for s in samples]).mean(0), atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(net.average(sizes, 1, 1.0), samples[0]))
    with pytest.raises(KitError, match="K must be an integer ≥ 1"):
        net.average(sizes, k=0, noise=1.0)
