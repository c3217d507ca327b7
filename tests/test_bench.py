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
