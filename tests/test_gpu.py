"""CUDA tests (`make test-gpu`); skipped where no CUDA device is present, as on CI."""
import dataclasses

import pytest
import torch

from kit import data as D
from kit import models, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_data_and_augmentation_live_on_the_gpu(smoke_cfg):
    d = D.load(smoke_cfg.data, "cuda", seed=0)
    x, y = next(d.train_batches(torch.Generator().manual_seed(0)))
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32


def test_augmentation_matches_the_cpu(smoke_cfg):
    x = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    cpu = D.augment_batch(x, 2, True, torch.Generator().manual_seed(0))
    gpu = D.augment_batch(x.cuda(), 2, True, torch.Generator().manual_seed(0))
    assert torch.equal(cpu, gpu.cpu())


def test_fold_bn_on_gpu():
    model = models.resnet(20, 16).cuda().eval()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad():
        assert torch.allclose(models.fold_bn(model)(x), model(x), atol=1e-4, rtol=1e-4)


def test_prior_trains_on_gpu_with_bf16_and_resumes(smoke_cfg, tmp_path):
    cfg = dataclasses.replace(smoke_cfg, runtime=dataclasses.replace(smoke_cfg.runtime, device="cuda"))
    result = train.train_prior(cfg, tmp_path)
    assert result.metrics["test_accuracy"] > 0.3
    again = train.train_prior(cfg, tmp_path)  # finished: read back, not retrained
    assert again.metrics["test_accuracy"] == result.metrics["test_accuracy"]


def test_inr_bank_under_autocast_matches_float32():
    from kit import inr
    from kit.runtime import autocast
    torch.manual_seed(0)
    bank = inr.MLPBank(3, 30, 64, 9, depth=4, activation="elu").cuda()
    x = torch.randn(3, 500, 30, device="cuda")
    full = bank(x)
    with autocast(torch.device("cuda"), True):
        mixed = bank(x)
    mixed.float().square().sum().backward()
    assert mixed.dtype == torch.bfloat16
    assert torch.allclose(mixed.float(), full, atol=5e-2, rtol=5e-2)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in bank.parameters())


def test_metamorphic_training_on_the_gpu(smoothed_smoke, tmp_path):
    from kit import config as C
    from kit import metatrain
    cfg = C.build(C.MorphConfig, "smoke", {"runtime.device": "cuda", "optim.epochs": 1})
    result = metatrain.train_morph(cfg, smoothed_smoke[0], tmp_path)
    assert all(0 <= a <= 1 for a in result.metrics["accuracy"].values())


def test_the_slimmable_network_trains_on_the_gpu_under_autocast_and_exports(smoke_cfg, tmp_path):
    from kit import baselines
    from kit import config as C
    cfg = dataclasses.replace(smoke_cfg, runtime=dataclasses.replace(smoke_cfg.runtime, device="cuda"))
    train.train_prior(cfg, tmp_path / "prior")
    prior, record = train.load_prior(tmp_path / "prior" / "prior.pt")
    base = C.build(C.BaselineConfig, "smoke", {"runtime.device": "cuda"})
    data = D.load(cfg.data, "cuda", cfg.seed)
    rows, metrics = baselines.slimmable_rows(prior, record, cfg, base, ["layer1.0", "layer2.0"], data, tmp_path)
    assert [r["gamma"] for r in rows] == base.slimmable.gammas and all(0 <= r["accuracy"] <= 1 for r in rows)
    from kit import slimmable
    net, rec = slimmable.load(tmp_path / "slimmable" / "slimmable.pt")
    assert rec["provenance"]["device"].startswith("cuda") and rec["provenance"]["gpu"]
    calib = D.calibration(data, rec["calibration"]["images"], rec["calibration"]["seed"])[0]
    half = next(r for r in rows if r["gamma"] == 0.5)
    model = net.cuda().export(0.5, calib, rec["calibration"]["batch_size"])  # bf16 evaluation of the BN-folded export
    assert train.evaluate(model, data, "test")["accuracy"] == pytest.approx(half["accuracy"], abs=0.01)
