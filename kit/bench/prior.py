"""`python -m kit bench prior`: training throughput of the kit's loop against a bare PyTorch loop.

It runs, on one device and one process, (a) the kit's own epoch loop (`kit.train.run_epoch`)
fed by the kit's in-memory loader with on-device augmentation, and (b) a bare PyTorch loop over
pre-made, pre-normalised tensors, the same network and optimiser. Both run in alternating rounds so
that machine noise hits them alike; medians are reported. Target on the 2-core CPU: data loading
and augmentation under 5% of step time and throughput within 10% of the bare loop.
"""
from __future__ import annotations

import itertools
import statistics
import time

import torch
import torch.nn.functional as F

from kit import config as C
from kit import data as D
from kit import models, train
from kit.bench.timing import sync
from kit.runtime import pick_device, seed_everything


class _TimedBatches:
    """Wraps a batch iterator and adds up the time spent producing batches (loading + augmentation)."""

    def __init__(self, batches, device):
        self.batches, self.device, self.seconds = batches, device, 0.0

    def __iter__(self):
        it = iter(self.batches)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            sync(self.device)
            self.seconds += time.perf_counter() - t0
            yield batch


def bench_prior(device: str = "auto", batch_size: int = 128, steps: int = 20, rounds: int = 3,
                depth: int = 20, width: int = 16, dataset: str = "fashion-mnist") -> dict:
    """Images/s of the kit's training loop and of a bare loop, and the data pipeline's share of a step."""
    dev = pick_device(device)
    generator = seed_everything(0)
    runtime = C.RuntimeConfig(device=device, progress=False)
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    data = D.load(C.DataConfig(name=dataset, batch_size=batch_size), dev)
    optim = C.OptimConfig(epochs=1)

    def make():
        model = models.resnet(depth, width, data.input_shape[0], data.num_classes).to(dev, memory_format=fmt)
        task = train.ClassifierTask(model)
        opt, sched = task.configure_optimizer(optim, data.num_batches("train"))
        return model, task, opt, sched

    kit_model, kit_task, kit_opt, kit_sched = make()
    bare_model, _, bare_opt, _ = make()
    # Pre-made batches for the bare loop: already augmented, normalised, laid out and on the device.
    premade = [(x.contiguous(memory_format=fmt), y) for x, y in itertools.islice(data.train_batches(generator), steps)]

    def kit_round():
        timed = _TimedBatches(itertools.islice(data.train_batches(generator), steps), dev)
        sync(dev)
        t0 = time.perf_counter()
        train.run_epoch(kit_task, kit_opt, kit_sched, timed, dev, runtime)
        sync(dev)
        return time.perf_counter() - t0, timed.seconds

    def bare_round():
        bare_model.train()
        sync(dev)
        t0 = time.perf_counter()
        for x, y in premade:
            bare_opt.zero_grad(set_to_none=True)
            with train.autocast(dev, runtime.amp):
                loss = F.cross_entropy(bare_model(x), y)
            loss.backward()
            bare_opt.step()
        sync(dev)
        return time.perf_counter() - t0

    kit_round(), bare_round()  # warm-up: allocator, kernels, first-touch memory
    kit_times, data_times, bare_times = [], [], []
    for _ in range(rounds):
        total, loading = kit_round()
        kit_times.append(total)
        data_times.append(loading)
        bare_times.append(bare_round())
    images = steps * batch_size
    kit_ips = images / statistics.median(kit_times)
    bare_ips = images / statistics.median(bare_times)
    return {"device": str(dev), "model": f"ResNet-{depth} width {width}", "dataset": dataset,
            "batch_size": batch_size, "steps_per_round": steps, "rounds": rounds,
            "kit_images_per_second": kit_ips, "bare_images_per_second": bare_ips,
            "throughput_ratio": kit_ips / bare_ips,
            "data_share": statistics.median(d / t for d, t in zip(data_times, kit_times))}


def print_prior(r: dict) -> None:
    print(f"bench prior: {r['model']} on {r['dataset']}, batch {r['batch_size']}, device {r['device']}, "
          f"{r['rounds']} alternating rounds of {r['steps_per_round']} steps (medians)")
    print(f"  kit loop (in-memory loader + on-device augmentation): {r['kit_images_per_second']:8.1f} images/s")
    print(f"  bare PyTorch loop over pre-made tensors:              {r['bare_images_per_second']:8.1f} images/s")
    print(f"  throughput ratio kit / bare: {r['throughput_ratio']:.3f}   (target ≥ 0.90)")
    print(f"  data loading + augmentation share of step time: {100 * r['data_share']:.2f}%   (target < 5%)")
