"""`python -m kit bench inr`: the INR generating a ResNet-56 last stage, three implementations side by side.

The HTTY paper's INR (paper 000 sec. 4.1: 8 layers × 512 units, ELU) generates the 14 conv kernels and 14
biases of the 7 non-projection blocks of a ResNet-56's last stage (width 16: 64 channels, 57,344 kernels):

  kit        `kit.inr.WeightINR`: stacked MLPs, one batched matmul per layer, hand-written residual backward
  loop       the same MLPs applied one tensor at a time (`kit.inr.per_tensor_loop`, forward only)
  neumeta    the reference code's structure (../shared/notes/neumeta-reference.md sec. 1.2–1.6): all rows in
             one coordinate table, Fourier features built one frequency and one dimension at a time, one
             `nn.Linear` MLP per tensor applied through boolean masks that write into a shared output, then
             each tensor assembled by fancy-index writes

Each is timed forward and forward+backward (a sum-of-squares loss on the generated tensors) in alternating
rounds; medians are reported, with the forward's GFLOP/s against one plain matmul of the same total shape.
On a GPU the width-64 variant (256 channels, 917,504 kernels) also runs in bf16 mixed precision and reports
the peak memory of one training step. Targets: kit forward+backward ≥ 3× faster than neumeta; kit forward ≥
50% of the matmul's GFLOP/s.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F

from kit import inr
from kit.bench.timing import median_times, timed
from kit.runtime import autocast, pick_device


def stage_specs(channels: int, blocks: int) -> list[inr.TensorSpec]:
    """conv1/conv2 kernels and biases of `blocks` residual blocks of `channels` channels."""
    specs = []
    for b in range(blocks):
        for conv in ("conv1", "conv2"):
            specs.append(inr.TensorSpec(f"block{b}.{conv}.weight", "kernel", channels, channels, 3))
            specs.append(inr.TensorSpec(f"block{b}.{conv}.bias", "bias", channels, 1))
    return specs


class NeuMetaStyle(nn.Module):
    """The reference implementation's structure, for timing only (rows routed by their clean slot)."""

    def __init__(self, specs: list[inr.TensorSpec], hidden: int, depth: int, num_freqs: int, out_dim: int = 9):
        super().__init__()
        self.specs, self.num_freqs, self.out_dim = specs, num_freqs, out_dim
        rows = [inr.coordinates(i, len(specs), s.ref_out, s.ref_in, s.ref_out, s.ref_in) for i, s in enumerate(specs)]
        self.register_buffer("coords", torch.cat(rows))  # (N, 6)
        self.register_buffer("slot", torch.cat([torch.full((len(r),), i) for i, r in enumerate(rows)]))
        self.mlps = nn.ModuleList(_ReferenceMLP(6 * (1 + 2 * num_freqs), hidden, out_dim, depth) for _ in specs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # one sin and one cos call per frequency and dimension
        parts = [x]
        for k in range(self.num_freqs):
            for j in range(x.shape[1]):
                parts += [torch.sin(2.0 ** k * torch.pi * x[:, j:j + 1]), torch.cos(2.0 ** k * torch.pi * x[:, j:j + 1])]
        return torch.cat(parts, 1)

    def forward(self, noise: float = 1.0) -> list[torch.Tensor]:
        x = self.coords + (torch.rand_like(self.coords) - 0.5) * noise / 64  # noise on every coordinate, as there
        feats = self.encode(x)
        out = torch.zeros(len(x), self.out_dim, device=x.device)
        for k in torch.unique(self.slot).tolist():
            mask = self.slot == k
            out[mask] = self.mlps[k](feats[mask])
        tensors, start = [], 0
        for s in self.specs:
            n = s.ref_out * s.ref_in
            rows = out[start:start + n] / s.ref_in
            o = torch.arange(s.ref_out, device=x.device).repeat_interleave(s.ref_in)
            c = torch.arange(s.ref_in, device=x.device).repeat(s.ref_out)
            if s.kind == "kernel":
                w = torch.zeros(s.ref_out, s.ref_in, 3, 3, device=x.device)
                w[o, c] = rows.reshape(-1, 3, 3)
            else:
                w = torch.zeros(s.ref_out, device=x.device)
                w[o] = rows[:, 0]
            tensors.append(w)
            start += n
        return tensors


class _ReferenceMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.gates = nn.Parameter(torch.full((depth - 1,), 0.1))
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x):
        x = F.elu(self.inp(x))
        for g, layer in zip(self.gates, self.hidden):
            x = g * F.elu(layer(x)) + x
        return self.out(x)


def bench_inr(device: str = "auto", width: int = 16, blocks: int = 7, hidden: int = 512, depth: int = 8,
              num_freqs: int = 10, rounds: int = 3, activation: str = "elu") -> dict:
    dev = pick_device(device)
    torch.manual_seed(0)
    specs = stage_specs(4 * width, blocks)
    sizes = [(s.ref_out, s.ref_in) for s in specs]
    kit = inr.WeightINR(specs, hidden, depth, activation, num_freqs).to(dev)
    ref = NeuMetaStyle(specs, hidden, depth, num_freqs).to(dev)
    loss = lambda ts: sum(t.float().square().sum() for t in ts)

    def backward(ts, module):
        loss(ts).backward()
        module.zero_grad(set_to_none=True)

    runs = {
        ("kit", "forward"): lambda: _no_grad(lambda: kit(sizes, noise=1.0)),
        ("kit", "forward+backward"): lambda: backward(kit(sizes, noise=1.0), kit),
        ("loop", "forward"): lambda: _no_grad(lambda: inr.per_tensor_loop(kit, sizes)),
        ("neumeta", "forward"): lambda: _no_grad(lambda: ref(1.0)),
        ("neumeta", "forward+backward"): lambda: backward(ref(1.0), ref),
    }
    med = {f"{impl} {what}": t for (impl, what), t in median_times(runs, dev, rounds).items()}
    rows = sum(o * i for o, i in sizes)
    in_dim = 6 * (1 + 2 * num_freqs)
    flops = 2 * rows * (in_dim * hidden + (depth - 1) * hidden * hidden + hidden * 9)  # forward, kernels + biases
    a, b = torch.randn(rows, hidden, device=dev), torch.randn(hidden, hidden, device=dev)
    (a @ b)
    matmul = statistics.median(timed(lambda: a @ b, dev) for _ in range(rounds))
    result = {"device": str(dev), "tensors": len(specs), "kernels": sum(o * i for (o, i), s in zip(sizes, specs) if s.kind == "kernel"),
              "rows": rows, "inr": f"{depth} layers × {hidden}, {activation}, {num_freqs} frequencies",
              "seconds": med, "forward_gflops": flops / med["kit forward"] / 1e9,
              "matmul_gflops": 2 * rows * hidden * hidden / matmul / 1e9,
              "speedup_forward_backward": med["neumeta forward+backward"] / med["kit forward+backward"]}
    result["forward_efficiency"] = result["forward_gflops"] / result["matmul_gflops"]
    if dev.type == "cuda":
        result["wide"] = _wide_step(dev, hidden, depth, num_freqs, blocks, activation, width=64)
    return result


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def _wide_step(dev, hidden, depth, num_freqs, blocks, activation, width) -> dict:
    """Peak GPU memory and time of one bf16 training step of the INR for the width-64 ResNet-56 last stage."""
    specs = stage_specs(4 * width, blocks)
    sizes = [(s.ref_out, s.ref_in) for s in specs]
    kit = inr.WeightINR(specs, hidden, depth, activation, num_freqs).to(dev)
    opt = torch.optim.AdamW(kit.parameters(), 1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(dev, True):
            ts = kit(sizes, noise=1.0)
        sum(t.float().square().sum() for t in ts).backward()
        opt.step()

    step()
    torch.cuda.reset_peak_memory_stats(dev)
    seconds = timed(step, dev)
    return {"kernels": sum(o * i for (o, i), s in zip(sizes, specs) if s.kind == "kernel"), "step_seconds": seconds,
            "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30}


def print_inr(r: dict) -> None:
    s = r["seconds"]
    print(f"bench inr: {r['tensors']} tensors ({r['kernels']:,} kernels, {r['rows']:,} rows), INR {r['inr']}, "
          f"device {r['device']} (medians)")
    print(f"  kit (batched bank):   forward {s['kit forward']:7.2f} s   forward+backward {s['kit forward+backward']:7.2f} s")
    print(f"  per-tensor loop:      forward {s['loop forward']:7.2f} s")
    print(f"  NeuMeta-style masks:  forward {s['neumeta forward']:7.2f} s   forward+backward {s['neumeta forward+backward']:7.2f} s")
    print(f"  forward+backward, NeuMeta-style / kit: {r['speedup_forward_backward']:.2f}×   (target ≥ 3)")
    print(f"  kit forward {r['forward_gflops']:.1f} GFLOP/s = {100 * r['forward_efficiency']:.0f}% of a plain matmul's "
          f"{r['matmul_gflops']:.1f}   (target ≥ 50%)")
    if "wide" in r:
        w = r["wide"]
        print(f"  width 64 ({w['kernels']:,} kernels), bf16 training step: {w['step_seconds']:.2f} s, "
              f"peak GPU memory {w['peak_memory_gib']:.1f} GiB   (target < 24 GiB)")
