"""INR building blocks (issue 4, first part): coordinates, Fourier features, the batched MLP bank."""
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
