"""Notebook 05's tables and figures: oracle values from a hand-made run folder, tables that parse, missing inputs;
the data-driven sentences and kernel heatmaps notebooks 03, 05 and 06 share (`kit.study`, `kit.plots`)."""
import csv
import re

import matplotlib.pyplot as plt
import pytest
import torch

from kit import diagnostics, figures, io, plots, report, study

SETTING = "layer2.1,layer2.2,layer3.1"
KINDS = {"0": "seen", "0.25": "seen", "0.265625": "between", "0.5": "seen", "0.75": "smaller"}


def _morph(folder, name, method, seed, acc, setting=SETTING, blocks=3, ablation="none", seconds=60.0):
    """A notebook-03 metrics.json with accuracy `acc` (a number, or {γ: value}) at every γ of KINDS."""
    accuracy = acc if isinstance(acc, dict) else {g: acc for g in KINDS}
    io.write_json({"method": method, "ablation": ablation, "setting": setting, "seed": seed, "accuracy": accuracy,
                   "kind": KINDS, "train_seconds": seconds, "blocks": [f"b{i}" for i in range(blocks)],
                   "cost": {g: {"parameters": 1000 - 100 * float(g), "macs": 1} for g in KINDS},
                   "stages": [{"blocks": [f"b{i}" for i in range(k + 1)], "test_accuracy": {"0": acc if
                               isinstance(acc, float) else 0.5}} for k in range(blocks)],
                   "config": {"select_gammas": [0.0, 0.5], "gamma_max": 0.5, "epoch_scale": 1},
                   "provenance": {"device": "cpu"}},
                  folder / "03_incremental_metamorphosis" / name / "metrics.json")


@pytest.fixture
def run_folder(tmp_path):
    io.write_json({"test_accuracy": 0.9, "parameters": 1000, "config": {"data": {"name": "fashion-mnist"}},
                   "provenance": {"device": "cpu"}}, tmp_path / "01_prior_training" / "metrics.json")
    _morph(tmp_path, "htty-s0", "htty", 0, 0.80, seconds=120)
    _morph(tmp_path, "htty-s1", "htty", 1, 0.84, seconds=180)
    _morph(tmp_path, "neumeta", "neumeta", 0, {g: 0.7 + 0.1 * float(g) for g in KINDS})
    _morph(tmp_path, "htty-no-alpha", "htty", 0, 0.78, ablation="alpha")
    _morph(tmp_path, "neumeta-blocks1", "neumeta", 0, 0.88, setting=SETTING + ":1", blocks=1)
    _morph(tmp_path, "null", "null", 0, {"0": 0.79})  # the null control: one network, evaluated once
    rows = [{"method": "individual", "family": "individual", "criterion": "", "finetuned": False, "gamma": g,
             "seed": 0, "accuracy": a, "parameters": 1000, "macs": 1, "train_seconds": 600.0, "widths": {}}
            for g, a in ((0.0, 0.9), (0.5, 0.88))]
    rows += [{"method": f"prune-{c}", "family": "pruning", "criterion": c, "finetuned": False, "gamma": g, "seed": 0,
              "accuracy": 0.5, "parameters": 900, "macs": 1, "train_seconds": 0.0, "widths": {}}
             for c in ("random", "l1", "l2", "taylor", "hessian") for g in (0.25, 0.5)]
    io.write_json({"rows": rows, "setting": SETTING}, tmp_path / "04_baselines" / "metrics.json")
    return tmp_path


def test_table_1_holds_mean_and_std_over_seeds_and_the_individual_cost(run_folder):
    run = report.collect(run_folder)
    main, one = report.settings(run)
    assert (main, one) == (SETTING, SETTING + ":1") and run.notes == []
    table = report.paper_table(run, main, "Table 1")
    assert table.columns == ["γ = 0", "γ = 0.25", "γ = 0.5", "γ = 0.265625 (unseen)", "train cost (min, cpu)"]
    pruning = [f"prune-{c}" for c in ("random", "l1", "l2", "taylor", "hessian")]
    assert [r["key"] for r in table.rows] == ["individual", "neumeta", "htty", "htty − alpha", "null", *pruning]
    assert table.rows[-1]["name"] == "Pruning, Hessian (no fine-tuning)" and table.rows[-1]["seeds"] == 1
    assert table.rows[-1]["values"][:3] == [None, (50.0, 0.0), (50.0, 0.0)]  # pruned to γ = 0.25, 0.5 only
    assert table.rows[4]["values"][:4] == [(79.0, 0.0)] * 4  # the null control's one accuracy in every γ column
    assert "HTTY (paper 000) averages +3.00 points against the null control" in report.describe_table(table)
    htty = table.rows[2]
    assert htty["seeds"] == 2 and htty["values"][0] == pytest.approx((82.0, 2 ** 0.5 * 2))  # mean, sample std in %
    assert htty["values"][-1] == pytest.approx((2.5, 2 ** 0.5 / 2))  # 120 s and 180 s in minutes
    assert report.value(table, "neumeta", 2) == pytest.approx(75.0) and report.value(table, "neumeta", 3) == pytest.approx(72.65625)
    individual = table.rows[0]["values"]
    assert individual[0] == (90.0, 0.0) and individual[1] is None and individual[2] == pytest.approx((88.0, 0.0))
    assert individual[-1] == (20.0, 0.0)  # the Individual cost sums every network trained (2 × 600 s)
    assert "4 HTTY ablation row(s), 7 pre-fit recipe ablation row(s)" in " ".join(table.notes)
    assert "+" in report.describe_table(table) and "NeuMeta's" in report.describe_table(table)


def test_a_runs_siblings_are_the_other_curves_on_its_blocks(run_folder):
    from kit import results
    siblings = results.sibling_curves(run_folder / results.MORPH_FOLDER / "htty-s0", SETTING)
    assert set(siblings) == {"htty", "neumeta", "htty − alpha"}  # itself, the null control and Table 2's run left out
    assert siblings["htty"] == io.read_json(run_folder / results.MORPH_FOLDER / "htty-s1" / "metrics.json")["accuracy"]


def test_table_2_uses_the_one_block_runs_and_says_what_it_lacks(run_folder):
    run = report.collect(run_folder)
    table = report.paper_table(run, report.settings(run)[1], "Table 2")
    assert [r["key"] for r in table.rows] == ["individual", "neumeta", "htty", "null"]  # no null on one block here
    assert report.value(table, "neumeta", 0) == pytest.approx(88.0) and report.value(table, "htty", 0) is None
    assert any("Not in this run folder: Individual, HTTY (paper 000), Null control" in n for n in table.notes)


def test_markdown_latex_and_csv_parse(run_folder, tmp_path):
    run = report.collect(run_folder)
    table = report.paper_table(run, report.settings(run)[0], "Table 1: 50% of γ_max & more")
    md_path, tex_path = [p for p in report.write_table(table, tmp_path / "out", "t1") if p.suffix in (".md", ".tex")]
    csv_path = tmp_path / "out" / "t1.csv"
    rows = [l for l in md_path.read_text().splitlines() if l.startswith("|")]
    assert len({l.count("|") for l in rows}) == 1 and len(rows) == 2 + len(table.rows)  # header, rule, body
    assert re.fullmatch(r"\|(---\|)+", rows[1])

    tex = tex_path.read_text()
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    for line in [header, *body]:
        assert line.endswith(r"\\") and line.count("&") == len(spec) - 1
        unescaped = re.sub(r"\$[^$]*\$|\\[%_&#]|\\\\", "", line)
        assert not re.search(r"[%_&#γ±α×−–]", unescaped.replace("&", "")), line  # every special char escaped
    assert tex.count(r"\begin{") == tex.count(r"\end{") == 2
    assert tex.count("{") == tex.count("}")

    with open(csv_path, newline="") as f:
        parsed = list(csv.DictReader(f))
    assert [r["row"] for r in parsed] == [r["name"] for r in table.rows]
    assert float(parsed[2]["γ = 0 mean"]) == pytest.approx(82.0)


def test_the_published_reference_pairs_each_printed_row_with_this_runs(run_folder):
    published = report.published()
    assert {r["table"] for r in published} == {"1", "2"} and len(published) == 22
    ours = next(r for r in published if r["row"] == "Ours (HTTY)" and r["table"] == "1" and
                "higher" not in r["network"])
    assert float(ours["acc_0"]) == 66.13 and float(ours["train_cost_gpuh"]) == 16.2  # paper 000 Table 1
    run = report.collect(run_folder)
    main, one = report.settings(run)
    ref = report.reference_table(run, {1: report.paper_table(run, main, "1"), 2: report.paper_table(run, one, "2")})
    names = [r["name"] for r in ref.rows]
    assert len(names) == 2 * 14 and all("published" in a and "this run" in b for a, b in zip(names[::2], names[1::2]))
    htty_here = next(r for r in ref.rows if r["name"].startswith("Table 1 · Ours (HTTY) — this run"))
    assert htty_here["values"][0][0] == pytest.approx(82.0)


def test_a_run_folder_missing_inputs_gives_notes_not_errors(tmp_path):
    run = report.collect(tmp_path)
    assert len(run.notes) == 3 and report.settings(run) == (None, None)
    table = report.paper_table(run, None, "Table 1")
    assert table.rows == [] and table.notes and report.describe_table(table)
    report.write_table(table, tmp_path / "out", "t1")
    for draw in (figures.blocks_sweep, figures.compression, figures.dense_gamma):
        fig = draw(run, None)
        assert any("run notebook" in t.get_text() for t in fig.axes[0].texts)


OFF = {f"b{i}": {"alpha": 0.001, "branch scale": 0.002 * i, "error conv1.weight": 1.0 + 0.02 * i,
                 "error conv2.weight": 1.01} for i in range(3)}  # HTTY on a laptop budget: blocks switched off
ON = {f"b{i}": {"alpha": 1.0, "branch scale": 0.98, "error conv1.weight": 0.2 + 0.04 * i, "error conv2.weight": 0.25}
      for i in range(3)}  # the pre-fit recipe: blocks carry the prior's kernels


def _with_blocks(folder, name, block_report):
    path = folder / "03_incremental_metamorphosis" / name / "metrics.json"
    io.write_json({**io.read_json(path), "block_report": block_report}, path)


def test_the_sentences_switch_wording_on_the_measured_block_report():
    assert diagnostics.block_state(OFF) == diagnostics.OFF and diagnostics.block_state(ON) == diagnostics.ON and diagnostics.block_state({}) is None
    assert diagnostics.block_state({"b": {**ON["b0"], "error conv1.weight": 0.6}}) == diagnostics.DEPARTING
    assert "branch scale 0.000–0.004, kernel error 1.00–1.04: switched off" in diagnostics.block_sentence("htty", OFF)
    off, on = diagnostics.curve_reading("HTTY", OFF), diagnostics.curve_reading("prefit", ON)
    assert "interpolating" not in off and "extrapolating" not in off and "flat" not in off  # no curve: no shape
    flat = diagnostics.curve_reading("HTTY", OFF, {"0": 0.801, "0.5": 0.795, "0.75": 0.80})
    assert "the curve is flat (79.5–80.1%) because of that" in flat
    spread = diagnostics.curve_reading("HTTY", OFF, {"0": 0.8, "1": 0.7})
    assert "still spans 70.0–80.0% over γ" in spread and "flat" not in spread and "no evidence" in spread
    assert "interpolating" in on and "extrapolating" in on and "flat" not in on
    departing = {b: {**r, "error conv1.weight": 0.37} for b, r in ON.items()}  # on, kernels not the prior's
    assert "depart" in diagnostics.curve_reading("prefit", departing) and "interpolating" in diagnostics.curve_reading("prefit", departing)
    merged = {f"{b} · seed {s}": row for s in (0, 1) for b, row in OFF.items()}  # two seeds: still three blocks
    assert diagnostics.block_numbers(merged).startswith("3 generated block(s)")


def test_the_report_caveats_htty_gaps_when_its_blocks_are_switched_off(run_folder):
    _with_blocks(run_folder, "htty-s0", OFF)
    _with_blocks(run_folder, "htty-s1", {b: {**r, "branch scale": 0.009} for b, r in OFF.items()})
    _with_blocks(run_folder, "neumeta", ON)
    run = report.collect(run_folder)
    main = report.settings(run)[0]
    blocks = report.block_reports(run, main)
    assert set(blocks) == {"htty", "neumeta"} and len(blocks["htty"]) == 6  # both seeds' blocks, keyed by seed
    table = report.paper_table(run, main, "Table 1")
    text = report.describe_table(table, blocks)
    gap = re.search(r"HTTY averages [\d.]+% against NeuMeta's [\d.]+% \(([+-][\d.]+) points; one seed: no spread\)",
                    text)  # NeuMeta ran one seed
    assert gap and "Caveat: HTTY's generated blocks are switched off in this run (3 generated block(s), branch " \
                   "scale 0.000–0.009, kernel error 1.00–1.04)" in text
    assert text.index("Caveat") > gap.end()  # the caveat follows the comparison it qualifies
    assert "NeuMeta: 3 generated block(s)" in text and "on, carrying the prior's kernels" in text
    assert "Caveat" not in report.describe_table(table) and "Caveat" not in report.describe_table(
        table, {"htty": ON, "neumeta": ON})
    captions = figures.captions(run, main)
    assert "switched off" in captions["fig6_gamma"] and "interpolating" not in captions["fig6_gamma"]
    assert "switched off" in captions["fig4_compression"]
    _with_blocks(run_folder, "htty-s0", ON)
    _with_blocks(run_folder, "htty-s1", ON)
    on = figures.captions(report.collect(run_folder), main)
    assert "interpolating" in on["fig6_gamma"] and "switched off" not in on["fig4_compression"]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_figure_notes_are_clear_of_every_legend(run_folder):
    run = report.collect(run_folder)
    for draw, note in ((figures.dense_gamma, "extended training"), (figures.compression, "no baselines")):
        if draw is figures.compression:
            run.baselines = None  # the note this figure writes without notebook 04
        fig = draw(run, report.settings(run)[0])
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        notes = [t for t in fig.texts + [t for ax in fig.axes for t in ax.texts] if note in t.get_text()]
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert notes and legends, draw.__name__
        for t in notes:
            for legend in legends:
                assert not _overlap(t.get_window_extent(renderer), legend.get_window_extent(renderer)), draw.__name__
        plt.close(fig)


def test_no_legend_covers_any_axes(run_folder):
    run = report.collect(run_folder)
    history = [{"run_epoch": e, "epoch": e, "stage": 1 + (e > 2), "loss": 1.0 / e, "val_loss": 1.1 / e,
                "train_accuracy": 0.5, "val_accuracy": 0.6, "test_accuracy": None} for e in (1, 2, 3, 4)]
    drawn = [figures.dense_gamma(run, report.settings(run)[0]), figures.compression(run, report.settings(run)[0]),
             figures.blocks_sweep(run, report.settings(run)[0]), plots.training_curves(history)]
    for fig in drawn:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert legends, fig.texts
        for legend in legends:
            for ax in fig.axes:  # the data area of every panel, the one the legend belongs to included
                assert not _overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer)), \
                    (fig.axes[0].get_title(), [t.get_text() for t in legend.get_texts()][:2])
        plt.close(fig)


def test_one_kernel_summary_for_every_heatmap_with_the_prior_on_the_same_scale():
    w = torch.randn(6, 4, 3, 3)
    assert torch.allclose(plots.kernel_summary(w), w.abs().mean((2, 3)))
    assert torch.allclose(plots.kernel_summary(w[:, :, :1, :1]), w[:, :, 0, 0].abs())  # 1×1: |w| itself
    fig = plots.generated_kernels({"γ = 0": 2 * w, "γ = 0.5": w[:3]}, "layer.conv1.weight", prior=w)
    meshes = [ax.collections[0] for ax in fig.axes[:3]]  # the fourth axes is the colour bar
    assert len(meshes) == 3 and len({m.get_clim() for m in meshes}) == 1  # prior + two widths, one colour scale
    assert meshes[0].get_clim() == (0, pytest.approx(float(plots.kernel_summary(2 * w).max())))
    assert fig.axes[0].get_title().startswith("prior") and plots.KERNEL_SUMMARY in fig._suptitle.get_text()
    assert plots.KERNEL_SUMMARY in fig.axes[-1].get_ylabel()  # the colour bar names the summary
    heat = plots.weight_heatmaps(w, w.flip(0), "conv", tv=(10.0, 7.5))
    assert "10 → 7.5 (25.0% lower)" in heat._suptitle.get_text()
    plt.close("all")


def test_the_training_loss_is_labelled_as_what_it_is_with_stage_boundaries():
    from kit import config as C
    history = [{"run_epoch": e, "epoch": e, "stage": 1 + (e > 2), "loss": 1.0 / e, "val_loss": None,
                "train_accuracy": 0.5, "val_accuracy": 0.6, "test_accuracy": None} for e in (1, 2, 3, 4)]
    fig = plots.training_curves(history, "htty", "training objective (sum of its terms)", "objective: a + b")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "training objective (sum of its terms)" and "objective: a + b" in ax.get_xlabel()
    assert [l.get_xdata()[0] for l in ax.lines if l.get_linestyle() == ":"] == [2.5]  # stage 2 starts at epoch 3
    assert plots.training_curves(history).axes[0].get_ylabel() == "cross-entropy"  # the prior's trainer: CE alone
    for row in history:  # notebook 03's history: the weighted terms are drawn too, dashed, one per term
        row.update(loss_task=0.6 / row["epoch"], loss_reconstruction=0.4 / row["epoch"])
    terms = [l for l in plots.training_curves(history).axes[0].lines if l.get_linestyle() == "--"]
    assert [l.get_label() for l in terms] == [plots.LOSS_TERMS["loss_task"], plots.LOSS_TERMS["loss_reconstruction"]]
    assert list(terms[0].get_ydata()) == [0.6 / e for e in (1, 2, 3, 4)]
    htty, prefit = C.build(C.MorphConfig, "smoke", {"method": "htty"}), C.build(C.MorphConfig, "smoke", {"method": "prefit"})
    assert "reconstruction" in study.objective_text(htty) and "Σ‖W‖" in study.objective_text(htty)
    assert "KL to the prior" in study.objective_text(prefit) and "relative" in study.objective_text(prefit)
    assert "reconstruction" not in study.objective_text(C.build(C.MorphConfig, "smoke", {"method": "null"}))
    plt.close("all")


# ---------------------------------------------------------------- seeds: spread in every table and sentence

def test_the_seed_spread_rule_is_the_sum_of_the_two_stds_and_needs_two_seeds_a_side():
    from kit import spread
    assert spread.beyond_spread((0.90, 0.01, 3), (0.85, 0.02, 3)) is True  # 5 points > 1 + 2
    assert spread.beyond_spread((0.90, 0.03, 3), (0.85, 0.03, 3)) is False  # 5 points < 3 + 3
    assert spread.beyond_spread((0.86, 0.03, 3), (0.90, 0.02, 2)) is False  # 4 < 3 + 2, whichever side is larger
    assert spread.beyond_spread((0.90, 0.0, 1), (0.50, 0.0, 3)) is None  # one seed: no spread, however large the gap
    assert spread.spread_words((0.90, 0.01, 3), (0.85, 0.02, 3)) == \
        "beyond the seed spread (std 1.00 + 2.00 = 3.00 points)"
    assert spread.spread_words((90.0, 3.0, 2), (85.0, 3.0, 2), scale=1) == \
        "within the seed spread (std 3.00 + 3.00 = 6.00 points)"
    assert spread.spread_words((0.9, 0.0, 1), (0.8, 0.0, 1)) == spread.NO_SPREAD == "one seed: no spread"
    a, b, one = (0.9, 0.01, 3), (0.8, 0.01, 3), (0.8, 0.0, 1)
    assert spread.spread_over({"0": (a, b), "0.5": (a, b)}).startswith("beyond the seed spread at every γ")
    assert spread.spread_over({"0": (a, a), "0.5": (a, a)}).startswith("within the seed spread at every γ")
    mixed = spread.spread_over({"0": (a, one), "0.25": (a, b), "0.5": (a, a)})
    assert mixed.startswith("beyond the seed spread at γ = 0.25; within it at γ = 0.5; γ = 0: one seed: no spread")
    assert spread.spread_over({"0": (a, one)}) == spread.NO_SPREAD
    avg = spread.average([(0.8, 0.02, 3), (0.6, 0.04, 2)])
    assert avg[0] == pytest.approx(0.7) and avg[1] == pytest.approx(0.03) and avg[2] == 2


@pytest.fixture
def seeded_folder(tmp_path):
    """Three seeds of every prior-dependent row, with numbers chosen so that each comparison's verdict is known:
    HTTY 82 ± 2 at every γ; NeuMeta 71 ± 1 at γ = 0, 81 ± 1 elsewhere; the null control 80 ± 1; the Individual
    network at γ = 0.5 88 ± 2 (its γ = 0, the prior, once); L1 pruning 60 ± 10; the slimmable network 86 ± 1 at
    every γ ≥ 0, trained in 100 / 200 / 300 s."""
    io.write_json({"test_accuracy": 0.9, "parameters": 1000, "config": {"data": {"name": "fashion-mnist"}},
                   "provenance": {"device": "cpu"}}, tmp_path / "01_prior_training" / "metrics.json")
    for s in range(3):
        _morph(tmp_path, f"htty-s{s}", "htty", s, 0.80 + 0.02 * s, seconds=60.0 * (s + 1))
        _morph(tmp_path, f"neumeta-s{s}", "neumeta", s, {g: (0.70 if g == "0" else 0.80) + 0.01 * s for g in KINDS})
        _morph(tmp_path, f"null-s{s}", "null", s, {"0": 0.79 + 0.01 * s})
    row = lambda method, family, gamma, seed, acc, seconds: {
        "method": method, "family": family, "criterion": method.removeprefix("prune-") if family == "pruning" else "",
        "finetuned": False, "gamma": gamma, "seed": seed, "accuracy": acc, "parameters": 1000, "macs": 1,
        "train_seconds": seconds, "widths": {}}
    rows = [row("individual", "individual", 0.0, s, 0.9, 600.0) for s in range(3)]  # the prior, even if repeated
    rows += [row("individual", "individual", 0.5, s, 0.86 + 0.02 * s, 500.0 + 100 * s) for s in range(3)]
    rows += [row("prune-l1", "pruning", g, s, 0.5 + 0.1 * s, 0.0) for s in range(3) for g in (0.25, 0.5)]
    rows.append(row("prune-l1", "pruning", 0.5, 0, 0.5, 0.0))  # seed 0's row recorded twice (a resumed run)
    rows += [row("slimmable", "slimmable", g, s, 0.85 + 0.01 * s, 100.0 * (s + 1)) for s in range(3)
             for g in (0.0, 0.25, 0.265625, 0.5, 0.75)]  # one training per seed, its time on each of its rows
    io.write_json({"rows": rows, "setting": SETTING}, tmp_path / "04_baselines" / "metrics.json")
    return tmp_path


def test_baseline_rows_are_aggregated_over_seeds_with_the_prior_counted_once(seeded_folder):
    from kit import results
    rows = {(r["method"], r["key"]): r for r in results.baseline_rows(report.collect(seeded_folder).baselines)}
    assert rows["individual", "0"]["seeds"] == 1 and rows["individual", "0"]["accuracy"] == (0.9, 0.0)
    assert rows["individual", "0.5"]["seeds"] == 3 and rows["individual", "0.5"]["accuracy"] == pytest.approx((0.88, 0.02))
    assert rows["prune-l1", "0.5"]["seeds"] == 3 and rows["prune-l1", "0.5"]["accuracy"] == pytest.approx((0.6, 0.1))


def test_table_1_carries_the_spread_of_individual_and_pruning_rows(seeded_folder, tmp_path):
    run = report.collect(seeded_folder)
    table = report.paper_table(run, report.settings(run)[0], "Table 1")
    rows = {r["key"]: r for r in table.rows}
    individual = rows["individual"]
    assert individual["seeds"] == 3 and individual["values"][0] == (90.0, 0.0) and report.counts(individual)[0] == 1
    assert individual["values"][2] == pytest.approx((88.0, 2.0)) and report.counts(individual)[2] == 3
    assert individual["values"][-1] == pytest.approx((20.0, 100 / 60))  # 600 s (the prior) + 500 / 600 / 700 s
    assert any("γ = 0 is the prior itself, trained once (one seed: no spread), the other γ over 3 seeds" in n
               for n in table.notes)
    assert rows["prune-l1"]["values"][2] == pytest.approx((60.0, 10.0)) and rows["prune-l1"]["seeds"] == 3
    assert rows["htty"]["values"][0] == pytest.approx((82.0, 2.0)) and rows["htty"]["seeds"] == 3
    md = report.to_markdown(table)
    assert "| Individual | 3 | 90.00 (1 seed) | – | 88.00 ± 2.00 | – | 20.00 ± 1.67 |" in md
    assert "| Pruning, L1 (no fine-tuning) | 3 | – | 60.00 ± 10.00 | 60.00 ± 10.00 | – |" in md
    report.write_table(table, tmp_path / "out", "t1")
    with open(tmp_path / "out" / "t1.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert (first["row"], first["γ = 0 seeds"], first["γ = 0.5 seeds"], first["γ = 0.25 seeds"]) == \
        ("Individual", "1", "3", "")


def test_the_slimmable_network_is_one_row_of_table_1_and_of_the_summary(seeded_folder, capsys):
    from kit import cli
    run = report.collect(seeded_folder)
    table = report.paper_table(run, report.settings(run)[0], "Table 1")
    slim = next(r for r in table.rows if r["key"] == "slimmable")
    assert slim["seeds"] == 3 and slim["values"][0] == pytest.approx((86.0, 1.0))
    assert slim["values"][-1] == pytest.approx((200 / 60, 100 / 60))  # its one training per seed, not summed over γ
    assert "| Universally slimmable network (US-Nets) | 3 | 86.00 ± 1.00 | 86.00 ± 1.00 | 86.00 ± 1.00 | " \
           "86.00 ± 1.00 | 3.33 ± 1.67 |" in report.to_markdown(table)
    text = report.describe_table(table)
    assert "Against the universally slimmable network trained on HTTY's budget, HTTY (paper 000) averages -4.00 " \
           "points over 4 γ column(s); beyond the seed spread at every γ" in text
    assert cli.main(["summary", str(seeded_folder)]) == 0
    out = capsys.readouterr().out
    assert "| slimmable (US-Nets, notebook 04) | 3 | 86.00 ± 1.00 |" in out
    assert "  htty: γ = 0 -4.00 (beyond the seed spread (std 2.00 + 1.00 = 3.00 points));" in out
    assert "slimmable (US-Nets, notebook 04): +" not in out  # a baseline, not judged against the null control


def test_every_comparison_of_the_report_says_whether_it_exceeds_the_seed_spread(seeded_folder):
    run = report.collect(seeded_folder)
    text = report.describe_table(report.paper_table(run, report.settings(run)[0], "Table 1"))
    assert "HTTY averages 82.00% against NeuMeta's 78.50% (+3.50 points; beyond the seed spread at γ = 0; within " \
           "it at γ = 0.25, 0.5, 0.265625 (unseen) (spread: the sum of the two rows' std over seeds))" in text
    assert "networks' 89.00% (-7.00 points; beyond the seed spread at γ = 0.5; γ = 0: one seed: no spread" in text
    assert "HTTY (paper 000) averages +2.00 points against the null control (the prior with these blocks removed, " \
           "tail retrained); within the seed spread at every γ" in text
    one = report.describe_table(report.paper_table(report.collect(seeded_folder.parent / "nothing"), None, "x"))
    assert "spread" not in one  # no rows, no comparison


def test_the_summary_and_the_null_verdicts_state_the_spread(seeded_folder, capsys):
    from kit import cli, results
    summary = results.summarise(results.morph_runs(seeded_folder))
    words = results.versus_null(summary)
    assert words["htty"].endswith("; the gap is within the seed spread at every γ (spread: the sum of the two rows' "
                                  "std over seeds).")
    cmp = results.comparison(summary, 0.9)
    assert cmp["margin"]["0"]["beyond"] is True and cmp["margin"]["0.5"]["beyond"] is False
    assert cmp["prior_gap_words"] == "one seed: no spread"  # the prior is one network
    assert cli.main(["summary", str(seeded_folder)]) == 0
    out = capsys.readouterr().out
    assert "γ =         0: +11.00  (beyond the seed spread (std 2.00 + 1.00 = 3.00 points))" in out
    assert "γ =       0.5:  +1.00  (within the seed spread (std 2.00 + 1.00 = 3.00 points))" in out
    assert "prior − HTTY at γ = 0: 8.00 points (the prior is one network; one seed: no spread)" in out
    assert "seen → between drop, neumeta: -3.33 points (beyond the seed spread (std 1.00 + 1.00 = 2.00 points))" in out
    assert "| prior | | 90.00 |" in out  # read from notebook 01's record when the runs do not carry it


def test_notebooks_06_and_07_read_every_seed_against_the_null_control(seeded_folder):
    from kit import results
    over = results.versus_null_in(seeded_folder, SETTING)
    assert set(over) == {"htty", "neumeta"} and "within the seed spread at every γ" in over["htty"]
    assert results.versus_null_in(seeded_folder, "layer9.9") == {} and results.versus_null_in(None, SETTING) == {}
