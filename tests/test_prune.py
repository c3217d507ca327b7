"""Structured-pruning baselines: exact hidden widths, nothing else touched, and the Hessian accumulation fix."""
import pytest
import torch
import torch.nn as nn

from kit import metamorph, models, prune
from kit.errors import KitError


@pytest.mark.parametrize("criterion", prune.CRITERIA)
def test_each_criterion_prunes_exactly_the_hidden_channels_to_h_gamma(criterion):
    torch.manual_seed(0)
    model = models.resnet(8, 8, 1, 10).eval()
    images, labels = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    blocks = ["layer1.0", "layer3.0"]
    pruned = prune.prune_blocks(model, blocks, 0.25, criterion, images, labels)
    hidden = dict(zip([n for n, _ in model.blocks()], model.arch["hidden"]))
    expected = {n: metamorph.width(0.25, h) if n in blocks else h for n, h in hidden.items()}
    assert dict(zip([n for n, _ in pruned.blocks()], pruned.arch["hidden"])) == expected
    assert pruned(images).shape == (6, 10)
    rebuilt = models.load_weights(models.from_arch(pruned.arch), pruned.state_dict(), "pruned")  # arch matches
    assert torch.equal(rebuilt.eval()(images), pruned(images))
    assert model.arch["hidden"] == list(hidden.values())  # the prior itself is untouched


def test_magnitude_keeps_the_largest_filters():
    model = models.resnet(8, 8, 1, 10).eval()
    conv1 = model.get_submodule("layer1.0.conv1")
    with torch.no_grad():
        for o in range(conv1.out_channels):
            conv1.weight[o] = float(o + 1)  # filter o has L1 norm ∝ o + 1
    pruned = prune.prune_blocks(model, ["layer1.0"], 0.5, "l1", torch.randn(2, 1, 28, 28))
    kept = pruned.get_submodule("layer1.0.conv1").weight[:, 0, 0, 0]
    assert kept.tolist() == [5.0, 6.0, 7.0, 8.0]


def test_hessian_importance_averages_every_sample_not_only_the_last():
    layer = nn.Linear(2, 1, bias=False)
    imp = prune.HessianImportance()
    for g in (1.0, 3.0):  # squared gradients 1 and 9: the mean is 5 (1.6.1's own code keeps 9 with count 1)
        layer.weight.grad = torch.full_like(layer.weight, g)
        imp.accumulate_grad(layer)
    assert torch.equal(imp._accu_grad[layer.weight], torch.full((1, 2), 10.0)) and imp._counter[layer.weight] == 2


def test_bad_requests_are_one_sentence():
    model = models.resnet(8, 8, 1, 10).eval()
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(KitError, match="Unknown pruning criterion 'l3'"):
        prune.prune_blocks(model, ["layer1.0"], 0.5, "l3", x)
    with pytest.raises(KitError, match="needs labelled images"):
        prune.prune_blocks(model, ["layer1.0"], 0.5, "taylor", x)
    with pytest.raises(KitError, match="pruning only removes channels"):
        prune.prune_blocks(model, ["layer1.0"], -0.25, "l1", x)
