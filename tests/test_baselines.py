"""Notebook 04's baselines: individually trained shapes, pruning rows at exactly h(γ), chunked gradient scores equal
whole-batch ones, and rows that resume."""
import json

import pytest
import torch

from kit import baselines, metamorph, models, prune, train
from kit import config as C
from kit.errors import KitError
from kit.profiles import PROFILES


def test_model_hidden_builds_the_individual_architecture():
    cfg = C.build(C.PriorConfig, "quick", {"model.hidden": {"layer3.1": 20, "layer2.2": 7}})
    net = models.resnet(cfg.model.depth, cfg.model.width, 1, 10, cfg.model.hidden)
    widths = {name: block.hidden for name, block in net.blocks()}
    assert widths["layer3.1"] == 20 and widths["layer2.2"] == 7
    assert widths["layer3.0"] == 64 and widths["layer1.0"] == 16  # every other block at its stage's width
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(KitError, match=r"model.hidden\['layer3.1'\] must be a positive"):
        C.build(C.PriorConfig, "quick", {"model.hidden": {"layer3.1": 0}})
    with pytest.raises(KitError, match="must be int"):
        C.build(C.PriorConfig, "quick", {"model.hidden": {"layer3.1": "wide"}})
    with pytest.raises(KitError, match="Unknown block 'layer9.0'"):
        models.resnet(20, 16, 1, 10, C.build(C.PriorConfig, "quick", {"model.hidden": {"layer9.0": 4}}).model.hidden)


def test_individual_config_narrows_exactly_the_metamorphic_blocks(smoke_cfg):
    prior = models.resnet(smoke_cfg.model.depth, smoke_cfg.model.width, 1, 10)
    blocks = ["layer1.0", "layer2.0"]
    cfg = baselines.individual_config(smoke_cfg, prior, blocks, 0.5, seed=3)
    assert cfg.model.hidden == {"layer1.0": metamorph.width(0.5, 8), "layer2.0": metamorph.width(0.5, 16)} == {
        "layer1.0": 4, "layer2.0": 8}
    assert cfg.seed == 3 and cfg.optim == smoke_cfg.optim and cfg.data == smoke_cfg.data  # the prior's recipe


def test_an_individual_network_trains_with_the_prior_recipe_and_records_its_widths(smoke_cfg, tmp_path):
    prior = models.resnet(smoke_cfg.model.depth, smoke_cfg.model.width, 1, 10)
    cfg = C.build(C.PriorConfig, "smoke", {"optim.epochs": 1})
    row = baselines.train_individual(cfg, prior, ["layer2.0"], 0.25, 0, tmp_path)
    saved, record = train.load_prior(tmp_path / "individual-0.25" / "prior.pt")
    assert dict(saved.blocks())["layer2.0"].hidden == 12 == row["widths"]["layer2.0"]
    assert record["config"]["model"]["hidden"] == {"layer2.0": 12}
    assert row["parameters"] == models.count_parameters(saved) < models.count_parameters(prior)
    assert row["family"] == "individual" and row["gamma"] == 0.25 and row["train_seconds"] > 0
    assert 0 <= row["accuracy"] <= 1


def test_chunked_gradient_scores_equal_the_whole_batch():
    torch.manual_seed(0)
    model = models.resnet(8, 8, 1, 10).eval()
    x, y = torch.randn(12, 1, 28, 28), torch.randint(0, 10, (12,))
    for criterion in ("taylor", "hessian"):
        whole = prune.block_scores(model, ["layer1.0"], criterion, x, y, batch_size=12)["layer1.0"]
        chunked = prune.block_scores(model, ["layer1.0"], criterion, x, y, batch_size=5)["layer1.0"]
        torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-9)


def test_prune_to_equals_prune_blocks():
    torch.manual_seed(0)
    model = models.resnet(8, 8, 1, 10).eval()
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    scores = prune.block_scores(model, ["layer1.0", "layer2.0"], "l2", x, y)
    once = prune.prune_to(model, scores, 0.5, x)
    direct = prune.prune_blocks(model, ["layer1.0", "layer2.0"], 0.5, "l2", x, y)
    assert torch.equal(once(x), direct(x))


@pytest.fixture(scope="module")
def smoke_prior(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prior")
    train.train_prior(C.build(C.PriorConfig, "smoke"), folder)
    return folder / "prior.pt"


def test_baseline_rows_cover_every_method_and_gamma_at_h_gamma_and_resume(smoke_prior, tmp_path):
    cfg = C.build(C.BaselineConfig, "smoke", {"individual_gammas": [], "finetune_epochs": 1, "slimmable.train": False})
    rows = baselines.run(cfg, smoke_prior, tmp_path)
    prior, _ = train.load_prior(smoke_prior)
    assert [r["method"] for r in rows if r["family"] == "individual"] == ["individual"]  # γ = 0: the prior itself
    methods = {r["method"] for r in rows if r["family"] == "pruning"}
    assert methods == {f"prune-{c}{ft}" for c in C.PRUNE_CRITERIA for ft in ("", "+ft")}
    for r in rows:
        assert set(r) == set(baselines.FIELDS) and 0 <= r["accuracy"] <= 1
        assert r["widths"] == {b: metamorph.width(r["gamma"], dict(prior.blocks())[b].hidden) for b in
                               ("layer1.0", "layer2.0")}
    assert {r["gamma"] for r in rows if r["family"] == "pruning"} == set(cfg.prune_gammas)
    assert all((r["train_seconds"] > 0) == r["finetuned"] for r in rows if r["family"] == "pruning")

    saved = json.loads((tmp_path / "rows.json").read_text())
    assert len(saved["rows"]) == len(rows) - 1  # every pruning row, saved as it finished
    added = []
    again = baselines.prune_rows(prior, C.build(C.PriorConfig, "smoke"), cfg, ["layer1.0", "layer2.0"],
                                 None, tmp_path, saved["rows"], lambda k, r: added.append(k))
    assert added == [] and again == rows[1:]  # all reused: nothing recomputed (data=None would fail otherwise)

    path = baselines.write_csv(rows, tmp_path / "baselines.csv")
    import pandas as pd
    table = pd.read_csv(path)
    assert list(table.columns) == list(baselines.FIELDS) and len(table) == len(rows)
    assert table.groupby(["method", "gamma", "seed"]).size().max() == 1  # tidy: one row per method × γ × seed


def test_bad_baseline_settings_are_one_sentence():
    with pytest.raises(KitError, match="Unknown pruning criterion 'l3'"):
        C.build(C.BaselineConfig, "quick", {"criteria": ["l1", "l3"]})
    with pytest.raises(KitError, match="individual_gammas must lie in"):
        C.build(C.BaselineConfig, "quick", {"individual_gammas": [0.0]})
    with pytest.raises(KitError, match="pruning only removes channels"):
        C.build(C.BaselineConfig, "quick", {"prune_gammas": [-0.25]})


def test_every_profile_prunes_the_blocks_notebook_03_generates():
    for profile in PROFILES:
        assert C.build(C.BaselineConfig, profile).setting == C.build(C.MorphConfig, profile).setting, profile
