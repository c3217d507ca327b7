"""The γ explorer (notebook 06): its numbers against the networks' own evaluation, and the panel driven from code.

Oracles: the explorer's network at γ, evaluated on the whole test split, reproduces the accuracy notebook 03
(metamorphic) or notebook 04 (pruning) recorded; on the subset, its cached-prefix evaluation equals
`train.evaluate`/`morphtask.evaluate_gammas`; its cost equals `MetamorphicNet.cost`; an exported file loads and
computes the same logits.
"""
import dataclasses
import io as io_bytes

import matplotlib.pyplot as plt
import pytest
import torch

from kit import config as C, data as D, explorer as E, io, metamorph, morphtask, plots, prune, train, widgets
from kit.errors import KitError

pytestmark = pytest.mark.notebook  # they read the smoke pipeline's run folder


@pytest.fixture(scope="module")
def ex(smoke_run):
    run = smoke_run[0]
    return E.Explorer(run / "03_incremental_metamorphosis" / "htty" / "metamorph.pt", C.build(C.ExplorerConfig, "smoke"))


def test_the_default_checkpoint_is_the_blockwise_recipe_else_the_main_htty_run(smoke_run, tmp_path):
    run = smoke_run[0]
    assert E.default_checkpoint(run) == run / "03_incremental_metamorphosis" / "blockwise" / "metamorph.pt"
    seeds = tmp_path / "03_incremental_metamorphosis"  # the layout of a run with --seeds 2, without prefit runs
    for variant, seed in (("htty-s1", 1), ("htty-s0", 0), ("htty-blocks1", 0)):
        (seeds / variant).mkdir(parents=True)
        source = run / "03_incremental_metamorphosis" / ("htty-blocks1" if variant == "htty-blocks1" else "htty")
        (seeds / variant / "metamorph.pt").write_bytes(b"")
        io.write_json({**io.read_json(source / "metrics.json"), "seed": seed}, seeds / variant / "metrics.json")
    assert E.default_checkpoint(tmp_path) == seeds / "htty-s0" / "metamorph.pt"  # most blocks, lowest seed
    with pytest.raises(KitError, match="No finished block-wise, pre-fit or HTTY run"):
        E.default_checkpoint(tmp_path / "empty")


def test_it_offers_what_the_run_folder_holds_on_the_same_blocks(ex, smoke_run):
    criteria = C.build(C.BaselineConfig, "smoke").criteria
    # the one-block runs are not offered (other controls), nor the null control (a line: ex.null)
    assert list(ex.methods) == ["htty", "blockwise", "neumeta", "prefit", *[f"prune-{c}" for c in criteria],
                                "slimmable"]
    null = io.read_json(smoke_run[0] / "03_incremental_metamorphosis" / "null" / "metrics.json")
    assert ex.null == null["accuracy"]["0"] and null["blocks"] == ex.blocks
    assert ex.methods["htty"].label == "HTTY (paper 000)" and ex.methods["htty"].k == C.build(C.MorphConfig, "smoke").k_samples
    assert ex.individual and set(ex.individual) == {"0", "0.5"}
    assert len(ex.data.splits["test"]) == C.build(C.ExplorerConfig, "smoke").eval_images
    lo, hi = ex.gamma_range()
    assert lo == metamorph.GAMMA_MIN and all(h >= 1 for h in ex.widths(hi).values())
    with pytest.raises(KitError):
        ex.widths(hi + ex.step)  # one step further leaves the narrowest block without a channel


@pytest.mark.parametrize("method", ["htty", "neumeta"])
def test_metamorphic_networks_reproduce_notebook_03s_recorded_accuracy(ex, smoke_run, method):
    """The explorer's network at γ on the whole test split is the network notebook 03 evaluated."""
    data = D.for_prior(ex.record["prior_config"])
    m = ex.methods[method]
    evaluated = C.build(C.MorphConfig, "smoke").gammas_eval  # every γ notebook 03 evaluated, none skipped
    assert sorted(map(float, m.recorded)) == sorted(evaluated) and len(evaluated) >= 5
    for g, recorded in m.recorded.items():
        assert train.evaluate(ex.network(method, float(g), m.k), data)["accuracy"] == recorded, g


@pytest.mark.parametrize("gamma", [-0.25, 0.0, 0.3125, 0.75, {"layer1.0": 0.5, "layer2.0": -0.25}])
def test_view_equals_the_networks_own_evaluation_on_the_subset(ex, gamma):
    view = ex.view(E.Settings("htty", gamma, 2, "layer2.0.conv2.weight"))
    if isinstance(gamma, dict):  # what morphtask.evaluate_gammas does for one γ, which it keys by a number
        assert view.accuracy == train.evaluate(ex.net.export(gamma, 2, ex.cfg.seed), ex.data)["accuracy"]
    else:
        assert view.accuracy == morphtask.evaluate_gammas(ex.net, ex.data, [gamma], 2, seed=ex.cfg.seed)[
            metamorph.gamma_key(gamma)]
    cost = ex.net.cost(gamma, ex.data.input_shape)
    assert (view.parameters, view.macs) == (cost["parameters"], cost["macs"])
    base = ex.net.cost(0.0, ex.data.input_shape)
    assert view.parameters_ratio == pytest.approx(cost["parameters"] / base["parameters"])
    assert view.widths == ex.net.widths(gamma) and view.kind == ex.net.kind(gamma, ex.pool)
    weight = ex.net.export(gamma, 2, ex.cfg.seed).state_dict()["layer2.0.conv2.weight"]
    assert torch.equal(view.kernel, plots.kernel_summary(weight)) and view.shape == tuple(weight.shape)
    prior = ex.net.prior_tensors()["layer2.0.conv2.weight"]  # shown beside it: the kit's one kernel summary of both
    assert torch.equal(view.prior_kernel, plots.kernel_summary(prior)) and view.prior_shape == tuple(prior.shape)
    assert ex.view(view.settings).accuracy == view.accuracy  # cached


def test_pruning_reproduces_notebook_04(ex, smoke_run):
    run = smoke_run[0]
    b = io.read_json(run / "04_baselines" / "metrics.json")
    prior, _ = train.load_prior(run / "01_prior_training" / "prior.pt")
    data = D.for_prior(ex.record["prior_config"])
    for row in (r for r in b["rows"] if r["family"] == "pruning" and not r["finetuned"]):
        model = ex.network(f"prune-{row['criterion']}", row["gamma"])
        assert train.evaluate(model, data)["accuracy"] == row["accuracy"], row["method"]
    images, labels = D.calibration(ex.data, b["config"]["calibration_images"], b["config"]["seed"])
    scores = prune.block_scores(prior, ex.blocks, "taylor", images, labels, b["config"]["seed"])
    view = ex.view(E.Settings("prune-taylor", 0.375))
    assert view.accuracy == train.evaluate(prune.prune_to(prior, scores, 0.375, images), ex.data)["accuracy"]
    assert view.kind == "pruned" and view.parameters_ratio < 1
    wider = ex.view(E.Settings("prune-l1", -0.25))
    assert wider.accuracy is None and "pruning only removes channels" in wider.note


def test_the_slimmable_network_reproduces_notebook_04(ex, smoke_run):
    """Its BN recalibrated on notebook 04's calibration draw: the network notebook 04 tested, at every recorded γ."""
    from kit import slimmable
    run = smoke_run[0]
    data = D.for_prior(ex.record["prior_config"])
    m = ex.methods["slimmable"]
    assert m.family == E.SLIMMABLE and m.path == run / "04_baselines" / "slimmable" / "slimmable.pt"
    b = io.read_json(run / "04_baselines" / "metrics.json")
    rows = [r for r in b["rows"] if r["family"] == "slimmable"]
    assert m.recorded == {metamorph.gamma_key(r["gamma"]): r["accuracy"] for r in rows} and rows
    for row in rows:
        assert train.evaluate(ex.network("slimmable", row["gamma"]), data)["accuracy"] == row["accuracy"], row["gamma"]
    view = ex.view(E.Settings("slimmable", {"layer1.0": 0.5, "layer2.0": 0.0}, 3, "layer1.0.conv1.weight"))
    net, record = slimmable.load(m.path)
    images = D.calibration(ex.data, record["calibration"]["images"], record["calibration"]["seed"])[0]
    model = net.export({"layer1.0": 0.5, "layer2.0": 0.0}, images, record["calibration"]["batch_size"])
    assert view.accuracy == train.evaluate(model, ex.data)["accuracy"] and view.kind == "slimmable"
    assert view.widths == net.widths({"layer1.0": 0.5, "layer2.0": 0.0})
    assert view.prior_shape == tuple(record["prior_tensors"]["layer1.0.conv1.weight"].shape)
    wider = ex.view(E.Settings("slimmable", -0.25))
    assert wider.accuracy is None and "a slimmable network cannot grow" in wider.note
    assert "K =" not in widgets.readout_html(view)  # one network per width: K does not apply


def test_pruning_scores_come_from_notebook_04s_file(ex, smoke_run):
    folder = smoke_run[0] / "04_baselines"
    b = io.read_json(folder / "metrics.json")["config"]
    prior, _ = train.load_prior(smoke_run[0] / "01_prior_training" / "prior.pt")
    fingerprint = prune.score_fingerprint(prior, ex.blocks, b["calibration_images"], b["seed"])
    saved = prune.saved_scores(folder, fingerprint)
    assert set(saved) == set(b["criteria"])
    images, labels = D.calibration(ex.data, b["calibration_images"], b["seed"])
    for criterion in ("l1", "hessian"):
        fresh = prune.block_scores(prior, ex.blocks, criterion, images, labels, b["seed"])
        assert all(torch.allclose(saved[criterion][blk], fresh[blk]) for blk in ex.blocks)
    assert prune.saved_scores(folder, {**fingerprint, "seed": b["seed"] + 1}) == {}  # another draw: recompute


def test_pruning_takes_one_gamma_per_block():
    model = train.models.resnet(8, 8, 1, 10).eval()
    x = torch.randn(2, 1, 28, 28)
    scores = prune.block_scores(model, ["layer1.0", "layer2.0"], "l2", x)
    both = prune.prune_to(model, scores, {"layer1.0": 0.5, "layer2.0": 0.25}, x)
    assert dict(both.blocks())["layer1.0"].hidden == 4 and dict(both.blocks())["layer2.0"].hidden == 12
    same = prune.prune_to(model, scores, {"layer1.0": 0.25, "layer2.0": 0.25}, x)
    assert torch.equal(same(x), prune.prune_to(model, scores, 0.25, x)(x))
    with pytest.raises(KitError, match="'layer3.0' is not a pruned block"):
        prune.prune_to(model, scores, {"layer3.0": 0.5}, x)


def test_bad_settings_are_one_sentence(ex):
    with pytest.raises(KitError, match="Unknown method 'pruned'"):
        ex.view(E.Settings("pruned", 0.0))
    with pytest.raises(KitError, match="Unknown kernel"):
        ex.view(E.Settings("htty", 0.0, 1, "fc.weight"))
    assert "no channel" in ex.view(E.Settings("htty", 0.999)).note
    with pytest.raises(KitError, match="No metamorphic checkpoint"):
        E.Explorer("missing/metamorph.pt")


def test_export_writes_a_loadable_network(ex, tmp_path):
    s = E.Settings("htty", {"layer1.0": 0.5, "layer2.0": -0.25}, 2)
    path = ex.export(s, tmp_path / ex.export_name(s))
    assert path.name == "htty-gamma0.5_-0.25-k2.pt" and path.is_file()
    model, record = train.load_prior(path)
    x = ex.data.normalise(ex.data.splits["test"].images[:8])
    assert torch.allclose(model(x), ex.network("htty", s.gamma, 2).to("cpu")(x), atol=1e-6)
    assert record["gamma"] == s.gamma and record["k"] == 2 and record["widths"] == ex.widths(s.gamma)
    pruned = ex.export(E.Settings("prune-l1", 0.5), tmp_path / "pruned.pt")
    assert train.load_prior(pruned)[1]["criterion"] == "l1"


def test_the_panel_updates_when_its_controls_move(ex, tmp_path):
    panel = widgets.GammaExplorer(explorer=ex, export_dir=tmp_path / "exports")
    assert panel.settings() == ex.default_settings() == panel.view.settings  # it opens on the explorer's default
    before = (panel.readout.value, panel.curve.value, panel.view.parameters)
    panel.gamma.value = ex.gamma_range()[1]  # the narrowest network
    assert panel.view.settings.gamma == ex.gamma_range()[1] and panel.view.parameters < before[2]
    assert panel.readout.value != before[0] and panel.curve.value != before[1]
    assert f"{panel.view.parameters:,}" in panel.readout.value and f"{100 * panel.view.accuracy:.1f}%" in panel.readout.value
    kernel = panel.kernel.value
    panel.layer.value = ex.layers[-1]
    assert panel.kernel.value != kernel and panel.view.layer == ex.layers[-1]
    panel.k.value = 1
    assert panel.view.settings.k == 1
    panel.per_block.value = True
    assert panel.gamma.disabled and panel.blocks_box.layout.display == "flex"
    first = next(iter(panel.block_gammas))
    panel.block_gammas[first].value = 0.0
    assert panel.view.widths[first] == ex.reference[first] and isinstance(panel.view.settings.gamma, dict)
    panel.method.value = "prune-l2"
    assert panel.k.disabled and panel.view.kind == "pruned"
    panel.export_button.click()
    assert panel.exported is not None and panel.exported.is_file() and "wrote" in panel.status.value
    model, record = train.load_prior(panel.exported)
    assert record["widths"] == panel.view.widths and record["criterion"] == "l2"
    panel.per_block.value = False
    panel.gamma.value = -0.5  # pruning cannot widen: the panel says so instead of failing
    assert panel.view.accuracy is None and "pruning only removes channels" in panel.readout.value
    panel.export_button.click()
    assert "pruning only removes channels" in panel.status.value  # nor export it
    panel.gamma.value = 0.25
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    panel.export_dir.value = str(blocked / "sub")  # a folder inside a file cannot be made
    assert panel.export() is None and "a-file is a file, not a folder" in panel.status.value


def test_static_figure_and_png_helpers(ex):
    view = ex.view(E.Settings("htty", 0.25, 2))
    fig = widgets.figure(ex, view)
    assert len(fig.axes) == 4  # curve, the prior's kernel, this network's, their one colour bar
    images = [ax.images[0] for ax in fig.axes[1:3]]
    assert len({im.get_clim() for im in images}) == 1 and images[0].get_clim()[0] == 0
    assert fig.axes[1].get_title().startswith("prior") and plots.KERNEL_SUMMARY in fig.axes[3].get_ylabel()
    shown = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    others = [m.label for m in ex.methods.values() if m.key != "htty" and m.recorded]
    assert others and all(f"{label} (recorded)" in shown for label in others)  # every other curve is named
    png = widgets.to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    pair = plt.imread(io_bytes.BytesIO(widgets.kernel_png(view)))  # the prior's kernel, a gap, this network's
    rows, cols = view.prior_kernel.shape[0], view.prior_kernel.shape[1] + view.kernel.shape[1]
    assert pair.shape[0] % rows == 0 and pair.shape[1] >= cols and view.prior_kernel.shape[0] > view.kernel.shape[0]
    assert widgets.kernel_png(dataclasses.replace(view, kernel=None)) == b""
