import pytest
import torch

from kit import config as C


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)  # the CI machine has 2 cores; keeps timings of the suite predictable


@pytest.fixture
def smoke_cfg():
    """The smoke prior config: a ResNet-8 of width 8 on 1,200 Fashion-MNIST images."""
    return C.build(C.PriorConfig, "smoke")


@pytest.fixture(scope="session")
def smoothed_smoke(tmp_path_factory):
    """(path of smoothed.pt, its folded prior) for the smoke prior: trained once per test session."""
    from kit import data as D
    from kit import permute, train
    folder = tmp_path_factory.mktemp("smoothed-smoke")
    cfg = C.build(C.PriorConfig, "smoke")
    train.train_prior(cfg, folder)
    x, _ = next(D.load(cfg.data, "cpu", cfg.seed).eval_batches("test"))
    smoothed, _ = permute.smooth_checkpoint(folder / "prior.pt", folder / "smoothed.pt", x[:8], "tsp", 0,
                                            progress=False)
    return folder / "smoothed.pt", smoothed


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(run folder, records): every numbered notebook, in order, through the pipeline on the smoke profile; run once
    per test session and shared by the notebook, explorer and browser tests. KIT_SMOKE_RUN=<folder> keeps the run
    in that folder, so a rerun skips what is up to date (for iterating on one test; CI leaves it unset)."""
    import os
    from pathlib import Path

    from kit import pipeline
    out = Path(os.environ["KIT_SMOKE_RUN"]) if os.environ.get("KIT_SMOKE_RUN") else tmp_path_factory.mktemp("smoke-run")
    records = pipeline.run(profile="smoke", dataset="fashion-mnist", out=out)
    return out, records
