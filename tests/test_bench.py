"""The benchmark runs and reports consistent figures (its speed targets are read from its output, not asserted)."""
import pytest

from kit import config as C
from kit.bench import prior
from kit.errors import KitError


def test_bench_prior_reports_both_loops(capsys):
    r = prior.bench_prior(device="cpu", batch_size=16, steps=2, rounds=1, depth=8, width=4)
    assert r["kit_images_per_second"] > 0 and r["bare_images_per_second"] > 0
    assert r["throughput_ratio"] == r["kit_images_per_second"] / r["bare_images_per_second"]
    assert 0.0 < r["data_share"] < 1.0
    prior.print_prior(r)
    out = capsys.readouterr().out
    assert "throughput ratio kit / bare" in out and "data loading + augmentation share" in out


def test_bench_inr_times_three_implementations_of_the_same_function(capsys):
    import torch

    from kit import inr
    from kit.bench import inr as bench_inr
    r = bench_inr.bench_inr(device="cpu", width=2, blocks=2, hidden=16, depth=3, num_freqs=2, rounds=1)
    assert r["tensors"] == 8 and r["kernels"] == 4 * 8 * 8
    assert set(r["seconds"]) == {"kit forward", "kit forward+backward", "loop forward", "neumeta forward",
                                 "neumeta forward+backward"}
    assert r["speedup_forward_backward"] == r["seconds"]["neumeta forward+backward"] / r["seconds"]["kit forward+backward"]
    bench_inr.print_inr(r)
    assert "NeuMeta-style / kit" in capsys.readouterr().out
    # the comparator computes the same kind of tensors: same shapes, kernels divided by the fan-in
    specs = bench_inr.stage_specs(8, 1)
    ref = bench_inr.NeuMetaStyle(specs, 16, 3, 2)
    kit = inr.WeightINR(specs, 16, 3, "elu", 2)
    with torch.no_grad():
        assert [t.shape for t in ref(0.0)] == [t.shape for t in kit([(s.ref_out, s.ref_in) for s in specs])]


def test_bench_htty_times_one_step_against_plain_training_and_the_inr_share(capsys):
    from kit.bench import htty as bench_htty
    r = bench_htty.bench_htty("smoke", device="cpu", rounds=1)
    assert r["configurations"] == 4 and r["blocks"] == ["layer1.0", "layer2.0"]
    assert set(r["seconds"]) == {"htty step", "prior ×4", "INR part"} and all(v > 0 for v in r["seconds"].values())
    assert r["inr_share"] == r["seconds"]["INR part"] / r["seconds"]["htty step"]
    assert r["step_over_prior"] == r["seconds"]["htty step"] / r["seconds"]["prior ×4"]
    bench_htty.print_htty(r)
    assert "of the step (target < 25%)" in capsys.readouterr().out


def test_bench_htty_counts_the_inr_flops_of_the_elements_it_generates():
    from kit import metamorph, models
    from kit.bench import htty as bench_htty
    net = metamorph.MetamorphicNet(models.fold_bn(models.resnet(8, 8, 1, 10).eval()), ["layer1.0", "layer2.0"],
                                   C.INRConfig(hidden=16, depth=3, num_freqs=4, disentangled=True))
    net.set_active(2)
    per_row = lambda out: 2 * (6 * 9 * 16 + 2 * 16 * 16 + 16 * out)  # in 6·(1 + 2·4) → 16 → 16 → 16 → out
    for gamma in (0.0, 0.25):
        weights = net.generate(gamma)  # the oracle: rows are the elements actually generated (a kernel is 9 values)
        expected = sum(t.numel() // 9 * per_row(9) if t.ndim == 4 else t.numel() * per_row(1) for t in weights.values())
        assert bench_htty._inr_forward_flops(net, gamma) == expected


def test_bench_explorer_times_every_kind_of_update(smoke_run, capsys):
    from kit.bench import explorer as bench_explorer
    checkpoint = smoke_run[0] / "03_incremental_metamorphosis" / "htty" / "metamorph.pt"
    r = bench_explorer.bench_explorer(str(checkpoint), "smoke", "cpu", gamma_points=6)
    assert set(r["kinds"]) == {"γ, new width", "γ, seen width", "K", "kernel", "one block", "method, first",
                               "method, again", "slimmable width"}
    assert r["updates"] == sum(k["updates"] for k in r["kinds"].values()) and 0 <= r["under_1s"] <= r["updates"]
    assert all(0 < k["median"] <= k["max"] for k in r["kinds"].values())
    # K = 1 … k_max from smoke's K = 2: 1, then 2 again, 3, 4 (every value is a change)
    assert r["kinds"]["K"]["updates"] == C.build(C.ExplorerConfig, "smoke").k_max
    bench_explorer.print_explorer(r)
    assert "updates under 1 s" in capsys.readouterr().out


def test_bench_prefit_fits_each_block_times_a_step_and_judges_the_run(smoke_run, capsys, tmp_path):
    from kit.bench import prefit as bench_prefit
    r = bench_prefit.bench_prefit(smoke_run[0], "smoke", "cpu", rounds=1)
    assert list(r["prefit"]) == r["blocks"] and all(f["seconds"] > 0 for f in r["prefit"].values())
    assert all(0 <= e for f in r["prefit"].values() for e in f["error"].values())
    assert r["configurations"] == {"recipe step": 2, "htty step": 4} and r["step_over_htty"] > 0
    # the figures come from the run folder's records; the verdicts are the quick targets applied to them
    f = r["figures"]
    assert f["method"] == "prefit" and f["null_accuracy"] is not None and f["min_over_pruning"] is not None
    assert r["holds"] == bench_prefit.holds(f)
    assert (r["time_to_acceptance"] is None) == (False in r["holds"].values())
    bench_prefit.print_prefit(r)
    assert "time to acceptance" in capsys.readouterr().out
    with pytest.raises(KitError, match="No smoothed prior"):
        bench_prefit.bench_prefit(tmp_path, "smoke", "cpu")


def test_bench_blockwise_reads_the_phases_times_a_step_and_judges_the_run(smoke_run, capsys, tmp_path):
    from kit.bench import blockwise as bench_blockwise
    r = bench_blockwise.bench_blockwise(smoke_run[0], "blockwise", "cpu", rounds=1)
    f = r["figures"]
    assert f["method"] == "blockwise" and f["null_accuracy"] is not None and f["min_over_pruning"] is not None
    assert f["phases"]["pre-fit"] > 0 and f["phases"]["width distillation"] > 0 and f["phases"]["end-to-end"] > 0
    assert f["worst_mixed_gap"] is not None and f["worst_between_gap"] is not None  # smoke evaluates γ = 0.3125
    assert set(f["over_slimmable"]) == {"0", "0.25", "0.3125", "0.5", "0.75"}  # notebook 04's slimmable rows
    assert all(t > 0 for t in r["seconds"].values()) and r["configurations"]["distillation step"] == 3
    assert r["holds"] == bench_blockwise.holds(f)
    assert (r["time_to_acceptance"] is None) == (not all(v is True for v in r["holds"].values()))
    bench_blockwise.print_blockwise(r)
    out = capsys.readouterr().out
    assert "time to acceptance" in out and "width distillation" in out
    with pytest.raises(KitError, match="run `make run`"):
        bench_blockwise.bench_blockwise(tmp_path, "blockwise", "cpu")


def test_bench_permute_compares_the_kit_search_with_fast_tsp_side_by_side(capsys):
    from kit.bench import permute as bench_permute
    rows = bench_permute.bench_permute(widths=(4,), depth=8)
    r = rows[0]
    assert r["model"] == "ResNet-8 width 4" and r["groups"] == 6 and r["largest_group"] == 16
    assert r["kit_repeatable"] is True  # deterministic: two runs, one order
    assert 0 < r["kit_tv_reduction"] < 1 and 0 < r["reference_tv_reduction"] < 1
    assert r["tv_reduction_difference"] == r["kit_tv_reduction"] - r["reference_tv_reduction"]
    assert r["time_ratio"] == r["kit_seconds"] / r["reference_seconds"]
    bench_permute.print_permute(rows)
    assert "kit − fast-tsp TV reduction" in capsys.readouterr().out


def test_bench_limits_sets_the_recipe_against_free_blocks_of_the_same_width(smoke_run, capsys, tmp_path):
    """Free blocks of 0 steps are the INR's own output (the same accuracy and error as the recipe's row, moved 0);
    every row covers every γ; the run folder's checkpoint is not changed by the copies the bench trains."""
    from kit.bench import limits as bench_limits
    checkpoint = smoke_run[0] / "03_incremental_metamorphosis" / "blockwise" / "metamorph.pt"
    before = checkpoint.read_bytes()
    settings = {"gammas": [0.0, 0.25], "free_steps": [0, 5], "more_steps": [3], "regress_steps": 2,
                "precision": [(16, 5, 0.5)]}
    r = bench_limits.bench_limits(smoke_run[0], settings=settings)
    recipe, still = r["rows"]["recipe"], r["rows"]["free blocks, 0 steps"]
    assert still["accuracy"] == recipe["accuracy"] and still["block_error"] == pytest.approx(recipe["block_error"])
    assert all(v == 0 for m in r["moved"]["0"].values() for v in m.values())
    assert all(v > 0 for m in r["moved"]["5"].values() for k, v in m.items() if k.endswith("weight"))
    assert all(set(row["accuracy"]) == {"0", "0.25"} for row in r["rows"].values()) and len(r["rows"]) == 5
    assert r["precision"][0]["hidden"] == 16 and set(r["precision"][0]["kernel_error"]) == {"layer1.0", "layer2.0"}
    assert checkpoint.read_bytes() == before
    bench_limits.print_limits(r)
    assert "free blocks, 5 steps" in capsys.readouterr().out
    with pytest.raises(KitError, match="run `make run`"):
        bench_limits.bench_limits(tmp_path)


def test_bench_blockwise_reads_a_run_folder_of_several_seeds(smoke_run, tmp_path):
    """A `full` folder names its runs blockwise-s0, -s1 …: the bench reads the first seed's checkpoint and the
    figures of every seed (here the smoke run's, renamed)."""
    import shutil
    from kit.bench import blockwise as bench_blockwise
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run, ignore=shutil.ignore_patterns("*.ipynb", "checkpoint_stage*.pt", "blockwise_stage*.pt"))
    morph = run / "03_incremental_metamorphosis"
    (morph / "blockwise").rename(morph / "blockwise-s0")
    r = bench_blockwise.bench_blockwise(run, "blockwise", "cpu", rounds=1)
    same = bench_blockwise.bench_blockwise(smoke_run[0], "blockwise", "cpu", rounds=1)
    assert r["figures"]["prior_gap_at_0"] == same["figures"]["prior_gap_at_0"] and r["variant"] == "blockwise"
