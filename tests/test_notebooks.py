"""Notebooks: committed stripped with a parameters cell; each runs through the pipeline on `smoke`."""
import json
import os

import nbformat
import pytest

from kit import config as C
from kit import io, pipeline
from kit.errors import KitError
from kit.runtime import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks stripped"
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert nb["cells"][0]["cell_type"] == "markdown" and "contract" in "".join(nb["cells"][0]["source"]).lower()
    params = "".join(nb["cells"][tagged[0]]["source"])
    for line in params.splitlines():  # literals only: NAME = literal  # comment
        stripped = line.split("#")[0].strip()
        if stripped:
            name, _, value = stripped.partition("=")
            assert name.strip().isupper(), line
            compile(value.strip(), "<parameter>", "eval")
            assert "(" not in value, f"calls are not literals: {line}"
    import papermill as pm  # papermill must parse every line too, or the pipeline cannot pass that parameter
    declared = [l.split("=")[0].strip() for l in params.splitlines() if l.split("#")[0].strip()]
    assert list(pm.inspect_notebook(str(path))) == declared


def test_a_hand_run_writes_to_a_scratch_folder_and_the_pipeline_passes_the_run_folder():
    """Run by hand, every notebook writes under results/notebooks/ (never into a run folder `make run` made); the
    pipeline overrides OUT_DIR (and RUN_DIR where declared) with the run's own folders."""
    import papermill as pm
    for path in NOTEBOOKS:
        declared = pm.inspect_notebook(str(path))
        assert declared["OUT_DIR"]["default"].strip("\"'") == f"results/notebooks/{path.stem}" + (
            "/htty" if path.stem == "03_incremental_metamorphosis" else ""), path.stem


def test_discover_orders_by_number():
    assert [p.name[:2] for p in pipeline.discover()] == sorted(p.name[:2] for p in NOTEBOOKS)


def _runs():
    """(run name, notebook) of every run the pipeline makes: one per notebook, or one per variant."""
    return [(f"{p.stem}/{sub}" if sub else p.stem, p) for p in NOTEBOOKS
            for sub, _ in pipeline.variants(p.stem, "smoke")]


@pytest.mark.notebook
def test_pipeline_runs_every_notebook_on_smoke(smoke_run):
    out, records = smoke_run
    assert [r["notebook"] for r in records] == [name for name, _ in _runs()]
    assert {"03_incremental_metamorphosis/htty", "03_incremental_metamorphosis/neumeta"} <= {r["notebook"] for r in records}
    reused = os.environ.get("KIT_SMOKE_RUN")  # a kept smoke folder (conftest): up-to-date runs are skipped
    assert all(r["status"] in ({"ok", "skipped"} if reused else {"ok"}) for r in records)
    summary = io.read_json(out / "pipeline.json")
    assert [n["notebook"] for n in summary["notebooks"]] == [name for name, _ in _runs()]
    for name, p in _runs():
        executed = nbformat.read(out / name / p.name, as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


@pytest.mark.notebook
def test_notebook_01_records_the_prior(smoke_run):
    folder = smoke_run[0] / "01_prior_training"
    metrics = io.read_json(folder / "metrics.json")
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_accuracy"] > 0.3  # well above chance (0.1)
    assert metrics["parameters"] > 0 and metrics["seconds"] > 0
    assert metrics["config"]["profile"] == "smoke" and metrics["seed"] == 0
    assert metrics["provenance"]["git_revision"] and metrics["max_logit_diff_after_folding"] < 1e-4
    for name in ("prior.pt", "checkpoint.pt", "training_curves.png"):
        assert (folder / name).is_file(), name


@pytest.mark.notebook
def test_notebook_02_smooths_without_changing_the_function(smoke_run):
    folder = smoke_run[0] / "02_permutation"
    m = io.read_json(folder / "metrics.json")
    assert m["max_logit_diff"] <= 1e-4
    assert m["accuracy_after"] == m["accuracy_folded"]
    assert abs(m["accuracy_after"] - m["accuracy_before"]) <= 0.002  # folding BN may flip a borderline image
    assert m["tv_after"] < m["tv_before"] and m["tv_reduction"] > 0
    assert m["tv_by_method"]["tsp"] < m["tv_by_method"]["random"]
    assert m["prior"].endswith("01_prior_training/prior.pt")
    for name in ("smoothed.pt", "weights_heatmap.png", "tv_per_tensor.png", "tv_by_method.png"):
        assert (folder / name).is_file(), name
    from kit import permute
    smoothed = permute.load_smoothed(folder / "smoothed.pt")[1]["report"]  # the heatmap's claim is measured
    h = m["heatmap"]
    assert (h["tv_before"], h["tv_after"]) == (smoothed["tv_per_tensor_before"][h["tensor"]],
                                               smoothed["tv_per_tensor_after"][h["tensor"]])
    assert h["tv_reduction"] == 1 - h["tv_after"] / h["tv_before"] and h["tensor"].endswith(".conv1.weight")


@pytest.mark.notebook
@pytest.mark.parametrize("method", ["htty", "neumeta", "prefit", "blockwise"])
def test_notebook_03_records_accuracy_per_gamma(smoke_run, method):
    folder = smoke_run[0] / "03_incremental_metamorphosis" / method
    m = io.read_json(folder / "metrics.json")
    assert m["method"] == method and m["ablation"] == "none" and m["config"]["profile"] == "smoke"
    gammas = m["config"]["gammas_eval"]
    assert sorted(m["accuracy"], key=float) == [format(float(g), ".10g") for g in sorted(gammas)]
    assert all(0.0 <= a <= 1.0 for a in m["accuracy"].values())
    assert {"seen", "between", "smaller", "larger"} <= set(m["kind"].values())  # seen and unseen γ both evaluated
    assert m["train_seconds"] > 0 and m["inr_parameters"] > 0
    assert m["smoothed"].endswith("02_permutation/smoothed.pt")
    joint = method in ("neumeta", "blockwise")  # one stage of every block; smoke: two blocks, else a stage each
    stages = 1 if joint else 2
    assert len(m["stages"]) == stages and m["switches"]["incremental"] == (not joint)
    assert bool(m["alpha"]) == (method != "neumeta")
    assert len(m["history"]) == m["epochs"] and all(f"branch scale@{b}" in m["history"][-1] for b in m["blocks"])
    fitted = [b for s in m["stages"] for b in s["prefit"]]
    assert fitted == (m["blocks"] if method in ("prefit", "blockwise") else [])  # each block pre-fitted once
    assert set(m["accuracy_k1"]) == set(m["accuracy"]) and m["eval_noise"] == m["config"]["coordinate_noise"]
    assert [set(mix["gammas"]) for mix in m["mixed"]] == [set(m["blocks"])] * len(m["blocks"])
    phases = m["stages"][-1]["widths"]
    assert list(phases) == {"prefit": ["after pre-fit", "after end-to-end"], "blockwise": [
        "after pre-fit", "after distillation", "after end-to-end"]}.get(method, ["after end-to-end"])
    widths = ["widths.png"] + (["distillation.png"] if method == "blockwise" else [])
    for name in ("metamorph.pt", "accuracy_vs_gamma.png", "cost_vs_gamma.png", "kernels.png", "stages.png",
                 "alpha.png", "training_curves.png", *widths, *[f"checkpoint_stage{k}.pt" for k in range(1, stages + 1)]):
        assert (folder / name).is_file(), name
    from kit import diagnostics
    # what the block report measured, in words: the sentences the notebook wrote, from the report it recorded
    assert m["readings"] == {"blocks": diagnostics.block_sentence(f"{method} (none)", m["block_report"]),
                             "curve": diagnostics.curve_reading(method, m["block_report"], m["accuracy"])}


def test_pipeline_variants_cover_seeds_ablations_and_the_block_sweep():
    assert [n for n, _ in pipeline.variants("03_incremental_metamorphosis", "quick")] == [
        "null", "null-blocks1", "htty", "neumeta", "blockwise", "htty-blocks1", "neumeta-blocks1"]  # one block: Table 2
    assert [n for n, _ in pipeline.variants("03_incremental_metamorphosis", "smoke")][4:6] == ["blockwise", "prefit"]
    assert pipeline.variants("01_prior_training", "full") == [("", {})]
    full = dict(pipeline.variants("03_incremental_metamorphosis", "full"))
    assert [full[f"htty-s{s}"]["SEED"] for s in range(3)] == [0, 1, 2] and "neumeta-s2" in full and "blockwise-s2" in full
    assert [full[f"null-s{s}"]["GAMMAS_EVAL"] for s in range(3)] == [[0.0]] * 3  # one network: evaluated once
    assert len(full) == 15 and not any("-no-" in k or k == "htty-x3" for k in full)  # ablations: their own profile
    ablations = dict(pipeline.variants("03_incremental_metamorphosis", "ablations"))
    assert ablations["prefit"] == {"METHOD": "prefit", "SEED": 0}  # the block-wise recipe's predecessor
    for method in ("htty", "prefit", "blockwise"):
        assert {v["ABLATION"] for k, v in ablations.items() if k.startswith(f"{method}-no-")} == \
            set(C.ABLATIONS[method]) - {"none"}
    blocks = C.build(C.MorphConfig, "ablations").setting
    assert ablations["neumeta-blocks1"]["SETTING"] == f"{blocks}:1" and "neumeta-blocks3" not in ablations  # the main run
    assert ablations["htty-x3"]["EPOCH_SCALE"] == 3 and ablations["htty-blocks1"]["SETTING"] == f"{blocks}:1"
    assert full["neumeta-blocks1"] == ablations["neumeta-blocks1"] and len(ablations) == 28
    assert pipeline.variants("07_why_blocks_switch_off", "full") == [("", {
        "PAPER": "htty-s0", "OURS": "blockwise-s0", "WIDTHS": "blockwise-s0", "NULL": "null-s0",
        "BASELINE": "neumeta-s0"})]


@pytest.mark.notebook
def test_pipeline_names_the_failing_notebook_and_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("OUT_DIR = 'x'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("value = 1"),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nb, folder / "07_broken.ipynb")
    with pytest.raises(KitError, match=r"07_broken failed in cell 3, line 1 \(`raise ValueError\('broken on purpose'\)`\) with ValueError: broken on purpose"):
        pipeline.run(profile="smoke", out=tmp_path / "run", folder=folder)
    assert io.read_json(tmp_path / "run" / "pipeline.json")["notebooks"][0]["status"] == "failed"


def test_pipeline_rejects_bad_names(tmp_path):
    with pytest.raises(KitError, match="Unknown profile"):
        pipeline.run(profile="fastest", out=tmp_path)
    with pytest.raises(KitError, match="Unknown dataset"):
        pipeline.run(dataset="imagenet", out=tmp_path)
    with pytest.raises(KitError, match="No notebook numbered 99"):
        pipeline.run(profile="smoke", out=tmp_path, only=["99"])


@pytest.mark.notebook
def test_notebook_04_records_every_baseline_at_h_gamma(smoke_run):
    import pandas as pd
    folder = smoke_run[0] / "04_baselines"
    m = io.read_json(folder / "metrics.json")
    cfg = C.build(C.BaselineConfig, "smoke")
    table = pd.read_csv(folder / "baselines.csv")
    assert set(table["method"]) == {"individual", "slimmable"} | {f"prune-{c}{ft}" for c in cfg.criteria
                                                                 for ft in ("", "+ft")}
    assert sorted(table.loc[table.family == "slimmable", "gamma"]) == cfg.slimmable.gammas
    (slim,) = m["slimmable"]  # one seed: its budget, time and accuracy, beside its rows
    assert slim["steps"] >= 1 and slim["train_seconds"] > 0 and slim["order"] == cfg.slimmable.order
    assert slim["accuracy"] == {format(g, ".10g"): a for g, a in
                                zip(table.loc[table.family == "slimmable", "gamma"],
                                    table.loc[table.family == "slimmable", "accuracy"])}
    assert sorted(table.loc[table.family == "individual", "gamma"]) == [0.0, *cfg.individual_gammas]
    assert table.groupby(["method", "gamma", "seed"]).size().max() == 1 and table["accuracy"].between(0, 1).all()
    assert m["setting"] == cfg.setting and m["individual_train_seconds"] > 0 and m["config"]["profile"] == "smoke"
    for name in ("baselines.png", "rows.json", "scores-s0.pt", "individual-0.5/prior.pt", "slimmable/slimmable.pt"):
        assert (folder / name).is_file(), name
    # the budget table sets the slimmable network beside every trained notebook-03 run, from what each recorded
    from kit import baselines
    budgets = {row["run"]: row for row in baselines.budgets(folder, smoke_run[0])}
    for key in ("htty", "neumeta", "blockwise"):
        recorded = io.read_json(smoke_run[0] / "03_incremental_metamorphosis" / key / "metrics.json")
        row = budgets[f"{key} (notebook 03)"]
        assert (row["steps"], row["images"]) == (recorded["budget"]["steps"], recorded["budget"]["images"])
        assert row["steps"] > 0 and row["train seconds"] == round(recorded["train_seconds"], 1)
    assert "slimmable (seed 0)" in budgets and not any(key.startswith("null") for key in budgets)


@pytest.mark.notebook
def test_notebook_05_writes_the_tables_figures_and_report(smoke_run):
    out = smoke_run[0]
    folder = out / "05_figures"
    for stem in ("table1", "table2", "published"):
        for suffix in ("csv", "md", "tex"):
            assert (folder / f"{stem}.{suffix}").is_file(), f"{stem}.{suffix}"
    for stem in ("fig4_blocks", "fig4_compression", "fig6_gamma"):
        assert (folder / f"{stem}.png").stat().st_size > 10_000 and (folder / f"{stem}.pdf").is_file()
    table1 = (folder / "table1.md").read_text()
    for row in ("| Individual | 1 |", "| NeuMeta | 1 |", "| HTTY (paper 000) | 1 |",
                "| Universally slimmable network (US-Nets) | 1 |"):
        assert row in table1, row
    assert "| NeuMeta | 1 |" in (folder / "table2.md").read_text()  # the one-block runs fill Table 2
    report = (out / "report.md").read_text()
    assert "![fig6_gamma](05_figures/fig6_gamma.png)" in report and "Table 1" in report
    assert "![fig6_gamma](fig6_gamma.png)" in (folder / "report.md").read_text()
    from kit import figures
    from kit import report as R
    run = R.collect(out)
    m = io.read_json(folder / "metrics.json")
    assert m["captions"] == figures.captions(run, m["settings"]["table1"])  # worded on the measured block reports
    assert all(text in report for text in m["captions"].values())
    assert "What the block reports measured" in report and "HTTY (paper 000): " in report
    assert "Against the universally slimmable network trained on HTTY's budget, Block-wise recipe (kit)" in report
    fig = figures.dense_gamma(run, m["settings"]["table1"])  # Fig. 6 draws its curve beside the metamorphic recipes
    assert any(label.startswith("universally slimmable") for label in fig.axes[0].get_legend_handles_labels()[1])


@pytest.mark.notebook
def test_notebook_05_on_a_run_folder_missing_inputs(smoke_run, tmp_path):
    """Only the prior and one HTTY run: 05 still writes every file, with notes where inputs are missing."""
    import shutil

    import papermill as pm
    src, run = smoke_run[0], tmp_path / "partial"
    shutil.copytree(src / "01_prior_training", run / "01_prior_training")
    shutil.copytree(src / "03_incremental_metamorphosis" / "htty", run / "03_incremental_metamorphosis" / "htty")
    notebook = PROJECT_ROOT / "notebooks" / "05_figures.ipynb"
    pm.execute_notebook(str(notebook), str(tmp_path / "05.ipynb"), parameters={
        "RUN_DIR": str(run), "OUT_DIR": str(run / "05_figures")}, kernel_name="python3", progress_bar=False)
    m = io.read_json(run / "05_figures" / "metrics.json")
    assert any("run notebook 04" in n for n in m["notes"])
    table1 = (run / "05_figures" / "table1.md").read_text()
    assert "| Individual | – |" in table1 and "| NeuMeta | – |" in table1 and "| HTTY (paper 000) | 1 |" in table1
    assert (run / "05_figures" / "fig4_compression.png").is_file()
    assert (run / "05_figures" / "run-level" / "report.md").is_file()  # the pipeline, not a notebook, publishes it


@pytest.mark.notebook
def test_notebook_06_records_the_explorer_and_draws_its_default_view(smoke_run):
    folder = smoke_run[0] / "06_gamma_explorer"
    m = io.read_json(folder / "metrics.json")
    cfg = C.build(C.ExplorerConfig, "smoke")
    assert m["config"]["profile"] == "smoke" and m["eval_images"] == cfg.eval_images
    assert set(m["explorer"]) == {"blockwise", "prefit", "htty", "neumeta"} and "prune-l1" in m["methods"]  # the null control: a line
    assert "slimmable" in m["methods"]
    for method in m["explorer"].values():
        assert list(method["accuracy"]) == [format(float(g), ".10g") for g in cfg.record_gammas]
        assert all(0 <= a <= 1 for a in method["accuracy"].values())
        assert method["parameters_ratio"]["0"] == 1.0 and method["parameters_ratio"]["0.5"] < 1
    assert 0 <= m["default_view"]["accuracy"] <= 1 and m["default_view_seconds"] > 0
    for name in ("explorer_default.png", "explorer_default.pdf", "kernel_morph.png"):
        assert (folder / name).is_file(), name
    assert set(m["block_readings"]) == set(m["explorer"])  # what each method's generated blocks measured
    assert all("generated block(s), branch scale" in text for text in m["block_readings"].values())
    executed = nbformat.read(folder / "06_gamma_explorer.ipynb", as_version=4)
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(w["model_name"] == "FloatSliderModel" for w in state.values())  # the live panel, saved


@pytest.mark.notebook
def test_notebook_07_reads_the_runs_against_the_null_control(smoke_run):
    folder = smoke_run[0] / "07_why_blocks_switch_off"
    m = io.read_json(folder / "metrics.json")
    assert m["runs"] == {"htty": "htty", "blockwise": "blockwise", "null": "null", "neumeta": "neumeta"}
    assert m["alpha_zero_gradient"]["0.0"] == 0.0 and m["alpha_zero_gradient"]["1.0"] > 0  # measured, not asserted
    null = io.read_json(smoke_run[0] / "03_incremental_metamorphosis" / "null" / "metrics.json")["accuracy"]["0"]
    ours = io.read_json(smoke_run[0] / "03_incremental_metamorphosis" / "blockwise" / "metrics.json")
    assert m["null_accuracy"] == null
    assert m["over_null"]["blockwise"] == {g: round(100 * (a - null), 2) for g, a in ours["accuracy"].items()}
    assert [r["block"] for r in m["prefit"]] == [b for b in ours["blocks"] for _ in range(4)]  # 4 tensors a block
    assert set(m["sentences"]) == {"htty", "blockwise"} and all("branch scale" in s for s in m["sentences"].values())
    assert m["widths"]["blockwise"] == ours["stages"][-1]["widths"]  # the width study, read from the record
    trials = m["fine_tuning"]
    assert len(trials) == 3 and all(t["first_step_max"] > 0 and t["widths"][0]["step"] == 0 for t in trials.values())
    no_warmup = next(t for name, t in trials.items() if name.startswith("Adam 3e-4, no"))
    warmed = next(t for name, t in trials.items() if "warm-up" in name and "no warm-up" not in name)
    assert no_warmup["first_step_max"] > warmed["first_step_max"]  # the warm-up's first step is a fraction of the rate
    limits = m["limits"]  # free blocks at each γ, started from the INR's output and trained on the same signal
    assert [r["gamma"] for r in limits] == [0.25, 0.5] and all(
        r["error_free"][b] < r["error_inr"][b] for r in limits for b in ours["blocks"])
    assert all(r["accuracy_inr"] == ours["accuracy_k1"][str(r["gamma"])] for r in limits)  # the same network, K = 1
    for name in ("evidence.png", "prefit.png", "final_gamma.png", "widths-blockwise.png", "first_steps.png", "limits.png"):
        assert (folder / name).is_file(), name
