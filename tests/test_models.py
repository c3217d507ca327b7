"""Oracle and invariance tests of the CIFAR ResNets: BN folding, shapes, widths, cost counts."""
import pytest
import torch
import torch.nn as nn

from kit import models
from kit.errors import KitError


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so folding has something to fold."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.3)


@pytest.mark.parametrize("depth,width,in_ch,size", [(8, 4, 1, 28), (20, 16, 3, 32), (32, 8, 3, 32), (56, 16, 1, 28)])
def test_fold_bn_preserves_logits(depth, width, in_ch, size):
    gen = torch.Generator().manual_seed(depth * 100 + width)
    torch.manual_seed(depth)
    model = models.resnet(depth, width, in_channels=in_ch, num_classes=10)
    _randomise_bn(model, gen)
    model.eval()
    folded = models.fold_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(8, in_ch, size, size, generator=gen)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, scale)
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_fold_bn_with_custom_hidden_widths():
    torch.manual_seed(0)
    model = models.resnet(20, 16, hidden={"layer2.1": 5, "layer3.2": 40})
    _randomise_bn(model, torch.Generator().manual_seed(1))
    folded = models.fold_bn(model.eval())
    assert folded.arch["hidden"] == model.arch["hidden"]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-5)


def test_resnet20_parameter_count_and_output_shape():
    model = models.resnet(20, 16, in_channels=3, num_classes=10)
    # 0.27 M as published for ResNet-20 (He et al. 2016); 272,474 with 1×1-conv projection shortcuts.
    assert models.count_parameters(model) == 272_474
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_block_structure_and_hidden_widths():
    model = models.resnet(56, 16)
    names = [n for n, _ in model.blocks()]
    assert names == models.block_names(56) and len(names) == 27
    assert [b.hidden for _, b in model.blocks()] == [16] * 9 + [32] * 9 + [64] * 9
    projections = [n for n, b in model.blocks() if b.shortcut is not None]
    assert projections == ["layer2.0", "layer3.0"]
    small = models.resnet(20, 16, hidden=[4] * 9)
    conv1 = dict(small.named_modules())["layer3.2.conv1"]
    assert conv1.weight.shape == (4, 64, 3, 3)
    assert small(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_macs_match_hand_count():
    # ResNet-8 width 4 on 1×8×8: stem 8·8·4·(1·9), stage 1 two convs 8·8·4·(4·9) each, stage 2 (4×4) conv1 8·(4·9),
    # conv2 8·(8·9), shortcut 8·4 per pixel, stage 3 (2×2) conv1 16·(8·9), conv2 16·(16·9), shortcut 16·8, fc 16·10.
    model = models.resnet(8, 4, in_channels=1, num_classes=10)
    expected = (64 * 4 * 9 + 2 * 64 * 4 * 36 + 16 * (8 * 36 + 8 * 72 + 8 * 4) + 4 * (16 * 72 + 16 * 144 + 16 * 8) + 160)
    assert models.count_macs(model, (1, 8, 8)) == expected
    assert models.cost(model, (1, 8, 8))["parameters"] == models.count_parameters(model)


@pytest.mark.parametrize("depth", [7, 9, 21, 2, "20"])
def test_bad_depth_is_one_clear_error(depth):
    with pytest.raises(KitError, match="6n\\+2"):
        models.resnet(depth)


def test_load_weights_refuses_another_architecture():
    src = models.resnet(20, 16).state_dict()
    with pytest.raises(KitError, match="does not fit this architecture.*shape"):
        models.load_weights(models.resnet(20, 8), src, "prior checkpoint x.pt")
    with pytest.raises(KitError, match="missing|not in this model"):
        models.load_weights(models.resnet(32, 16), src)
    models.load_weights(models.resnet(20, 16), src)  # the same architecture loads


def test_from_arch_round_trip():
    model = models.resnet(8, 4, in_channels=1, hidden=[2, 3, 4])
    clone = models.from_arch(model.arch)
    clone.load_state_dict(model.state_dict())
    assert clone.arch == model.arch


def test_strided_shortcut_equals_a_strided_conv():
    block = models.ConvBN(6, 12, kernel=1, stride=2, batchnorm=False)
    x = torch.randn(3, 6, 9, 9)
    ref = torch.nn.functional.conv2d(x, block.conv.weight, block.conv.bias, stride=2)
    assert torch.allclose(block(x), ref, atol=1e-6)


def test_narrow_resnets_train_on_channels_last():
    """Regression: torch 2.13's oneDNN crashed (segfault/hang) in the weight gradient of stride-2 1×1 convs on
    channels-last input with 2, 4 or 6 channels. Run in a subprocess so that a crash fails this test only."""
    import os
    import subprocess
    import sys
    code = ("import torch, torch.nn.functional as F\nfrom kit import models\n"
            "for w in (2, 4, 6):\n"
            "    m = models.resnet(8, w, 1, 10).to(memory_format=torch.channels_last)\n"
            "    x = torch.randn(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)\n"
            "    for _ in range(3):\n"
            "        F.cross_entropy(m(x), torch.randint(0, 10, (16,))).backward()\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("split", ["layer1.0", "layer2.1", "layer3.2"])
def test_running_a_prefix_then_the_rest_equals_the_forward(split):
    torch.manual_seed(0)
    model = models.resnet(20, 8, 1, 10).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.run(model.run(x, stop=split), start=split), model(x))
        assert torch.equal(model.run(x), model(x))
    with pytest.raises(KitError, match="Unknown block 'layer4.0'"):
        model.run(x, stop="layer4.0")
