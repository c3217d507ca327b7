"""The benchmark runs and reports consistent figures (its speed targets are read from its output, not asserted)."""
from kit import bench


def test_bench_prior_reports_both_loops(capsys):
    r = bench.bench_prior(device="cpu", batch_size=16, steps=2, rounds=1, depth=8, width=4)
    assert r["kit_images_per_second"] > 0 and r["bare_images_per_second"] > 0
    assert r["throughput_ratio"] == r["kit_images_per_second"] / r["bare_images_per_second"]
    assert 0.0 < r["data_share"] < 1.0
    bench.print_prior(r)
    out = capsys.readouterr().out
    assert "throughput ratio kit / bare" in out and "data loading + augmentation share" in out


def test_bench_inr_times_three_implementations_of_the_same_function(capsys):
    import torch

    from kit import bench_inr, inr
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
