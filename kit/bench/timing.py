"""Timing shared by the benchmarks: wall-clock seconds of a call, and medians over alternating rounds."""
from __future__ import annotations

import statistics
import time

import torch


def sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without this the clock stops before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds one call of `fn` takes on `device`, its queued work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_times(runs: dict, device: torch.device, rounds: int) -> dict:
    """{name: median seconds} of each callable in `runs`, after one warm-up call each, in alternating rounds (so
    drift of the machine hits every contender alike)."""
    for fn in runs.values():  # warm-up
        fn()
    times = {key: [] for key in runs}
    for _ in range(rounds):
        for key, fn in runs.items():
            times[key].append(timed(fn, device))
    return {key: statistics.median(t) for key, t in times.items()}
