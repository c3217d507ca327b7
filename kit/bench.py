"""Benchmarks: speed targets are measured here, side by side in one run, never by timed tests.

    python -m kit bench prior     training throughput of the kit's loop against a bare PyTorch loop
    python -m kit bench permute   weight smoothing of ResNet-56 (widths 16 and 64): time and TV reduction of
                                  the kit's default solver budget against 2 s per group

`prior` runs, on one device and one process, (a) the kit's own epoch loop (`kit.train.run_epoch`)
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
from kit.runtime import pick_device, seed_everything


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
            _sync(self.device)
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
        _sync(dev)
        t0 = time.perf_counter()
        train.run_epoch(kit_task, kit_opt, kit_sched, timed, dev, runtime)
        _sync(dev)
        return time.perf_counter() - t0, timed.seconds

    def bare_round():
        bare_model.train()
        _sync(dev)
        t0 = time.perf_counter()
        for x, y in premade:
            bare_opt.zero_grad(set_to_none=True)
            with train.autocast(dev, runtime.amp):
                loss = F.cross_entropy(bare_model(x), y)
            loss.backward()
            bare_opt.step()
        _sync(dev)
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


def bench_permute(widths=(16, 64), depth: int = 56, seconds: float = 0.1, reference_seconds: float = 2.0,
                  checkpoint: str | None = None) -> list[dict]:
    """Smoothing time and TV reduction with `seconds` per group against `reference_seconds` per group, in one
    run. Without a checkpoint the networks are freshly initialised (BN folded), which have less structure
    to exploit than trained ones; pass a prior.pt to measure a trained network."""
    from kit import permute
    rows = []
    if checkpoint:  # a trained prior; `widths` and `depth` describe the fresh networks only
        net, record = train.load_prior(checkpoint)
        nets, shape = [net], tuple(record["input_shape"])
    else:
        seed_everything(0)
        nets, shape = [models.resnet(depth, w).eval() for w in widths], (3, 32, 32)
    permute.smooth(models.fold_bn(models.resnet(8, 4)), torch.randn(1, 3, 8, 8), "tsp", 0, 0.01)  # warm-up
    for net in nets:
        folded = models.fold_bn(net)
        x = torch.randn(8, *shape)
        groups = permute.channel_groups(folded)
        with torch.no_grad():
            logit_scale = folded(x).abs().max().item()  # untrained deep nets have huge logits: float32 rounding grows
        row = {"model": f"ResNet-{net.arch['depth']} width {net.arch['width']}", "groups": len(groups),
               "largest_group": max(g.channels(folded.state_dict()) for g in groups), "logit_scale": logit_scale,
               "kit_budget": seconds, "reference_budget": reference_seconds}
        for key, budget in (("kit", seconds), ("reference", reference_seconds)):
            t0 = time.perf_counter()
            _, report = permute.smooth(folded, x, "tsp", 0, budget)
            row[f"{key}_seconds"] = time.perf_counter() - t0
            row[f"{key}_tv_reduction"] = report["tv_reduction"]
            row[f"{key}_max_logit_diff"] = report["max_logit_diff"]
        row["tv_after_ratio"] = (1 - row["kit_tv_reduction"]) / (1 - row["reference_tv_reduction"])
        row["time_ratio"] = row["kit_seconds"] / row["reference_seconds"]
        rows.append(row)
    return rows


def print_permute(rows: list[dict]) -> None:
    for r in rows:
        print(f"bench permute: fast-tsp with {r['kit_budget']} s per group (kit) against {r['reference_budget']} s per group")
        print(f"  {r['model']}: {r['groups']} groups (largest {r['largest_group']} channels)")
        print(f"    kit:       {r['kit_seconds']:7.2f} s total, TV reduction {100 * r['kit_tv_reduction']:6.2f}%, "
              f"max logit diff {r['kit_max_logit_diff']:.1e} (largest |logit| {r['logit_scale']:.1e})")
        print(f"    reference: {r['reference_seconds']:7.2f} s total, TV reduction {100 * r['reference_tv_reduction']:6.2f}%")
        print(f"    TV after, kit / reference: {r['tv_after_ratio']:.4f}   time, kit / reference: {r['time_ratio']:.3f}")
