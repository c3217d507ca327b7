"""`python -m kit bench htty`: the cost of one HTTY optimiser step against plain training, and the INR's share.

Paper 000 sec. 3.4 makes every step sum `accumulate` (4) configurations. Measured side by side, alternating
rounds in one process, on one batch size:
  htty step   one optimiser step of `MorphTask` with every metamorphic block generated (the last, costliest
              stage of the profile): 4 configurations, each generating its blocks and running the network
  prior ×4    4 optimiser steps of plain training of the prior (the same ResNet with BatchNorm, SGD)
  INR part    the INR's own forward and backward for the same 4 configurations (generation and its gradient only)
The INR's share is INR part / htty step (the target for `quick` on the CPU: under 25%). Weights are random:
timing does not depend on them. To tell overhead from arithmetic, the INR part's matmul FLOPs (forward + backward
≈ 3 × forward) are divided by its time and compared with one plain matmul of the INR's hidden shape: the INR part
can be no faster than its FLOPs at that rate (the "floor").
"""
from __future__ import annotations

import statistics

import torch

from kit import config as C
from kit import metamorph, models, morphtask, train
from kit.bench.timing import median_times, timed
from kit.runtime import pick_device


def bench_htty(profile: str = "quick", device: str = "auto", rounds: int = 5, input_shape=(1, 28, 28),
               classes: int = 10) -> dict:
    dev = pick_device(device)
    torch.manual_seed(0)
    prior_cfg, cfg = C.build(C.PriorConfig, profile), C.build(C.MorphConfig, profile, {"method": "htty"})
    plain = models.resnet(prior_cfg.model.depth, prior_cfg.model.width, input_shape[0], classes).to(dev)
    folded = models.fold_bn(plain.eval())
    net = metamorph.MetamorphicNet(folded, metamorph.blocks_for(folded, cfg.setting), cfg.inr, cfg.coordinate_noise,
                                   cfg.alpha_scaling, cfg.train_tail).to(dev)
    with torch.no_grad():
        net.alpha.fill_(0.5)  # a trained-looking α: the branch's backward is not skipped
    task = morphtask.MorphTask(net, cfg)
    opt, _ = task.configure_optimizer(cfg.optim, 100)
    prior_task = train.ClassifierTask(plain.train())
    prior_opt, _ = prior_task.configure_optimizer(prior_cfg.optim, 100)
    batches = [(torch.randn(cfg.batch_size, *input_shape, device=dev),
                torch.randint(0, classes, (cfg.batch_size,), device=dev)) for _ in range(cfg.accumulate)]
    amp = cfg.runtime.amp

    gammas = [0.0 if micro == 0 else task.pool[micro % len(task.pool)] for micro in range(cfg.accumulate)]

    def inr_part():
        for gamma in gammas:
            weights = net.generate(gamma, noise=cfg.coordinate_noise)
            sum(w.float().square().sum() for w in weights.values()).backward()
        net.zero_grad(set_to_none=True)

    runs = {
        "htty step": lambda: train.train_step(task, opt, batches, dev, amp, cfg.optim.grad_clip),
        "prior ×4": lambda: [train.train_step(prior_task, prior_opt, [b], dev, amp, prior_cfg.optim.grad_clip)
                             for b in batches],
        "INR part": inr_part,
    }
    med = median_times(runs, dev, rounds)
    flops = 3 * sum(_inr_forward_flops(net, g) for g in gammas)  # forward + backward of the 4 generations
    rows, hidden = 4096, cfg.inr.hidden
    a, b = torch.randn(rows, hidden, device=dev), torch.randn(hidden, hidden, device=dev)
    matmul = 2 * rows * hidden * hidden / statistics.median(timed(lambda: a @ b, dev) for _ in range(rounds))
    return {"device": str(dev), "profile": profile, "blocks": net.blocks, "batch_size": cfg.batch_size,
            "configurations": cfg.accumulate, "inr": f"{cfg.inr.depth} layers × {cfg.inr.hidden}, {cfg.inr.activation}",
            "seconds": med, "step_over_prior": med["htty step"] / med["prior ×4"],
            "inr_share": med["INR part"] / med["htty step"], "rounds": rounds, "inr_gflop": flops / 1e9,
            "inr_gflops": flops / med["INR part"] / 1e9, "matmul_gflops": matmul / 1e9,
            "inr_floor_seconds": flops / matmul}


def _inr_forward_flops(net: metamorph.MetamorphicNet, gamma: float) -> int:
    """Matmul FLOPs of one generation at γ: every generated element (row) goes through its MLP's layers."""
    inr = net.inr
    hidden, depth = inr.kernel_bank.w_in.shape[2], len(inr.kernel_bank.w_hidden) + 1
    in_dim = inr.kernel_bank.w_in.shape[1]
    total = 0
    for slot, (o, i) in zip(net.active_slots, net.sizes(gamma)):
        bank = inr.kernel_bank if inr.specs[slot].kind == "kernel" else inr.bias_bank
        total += 2 * o * i * (in_dim * hidden + (depth - 1) * hidden * hidden + hidden * bank.w_out.shape[2])
    return total


def print_htty(r: dict) -> None:
    s = r["seconds"]
    print(f"bench htty: profile {r['profile']}, {len(r['blocks'])} metamorphic blocks ({', '.join(r['blocks'])}), "
          f"INR {r['inr']}, batch {r['batch_size']} × {r['configurations']} configurations, device {r['device']} "
          f"(medians of {r['rounds']})")
    print(f"  one HTTY step ({r['configurations']} configurations): {s['htty step']:.3f} s")
    print(f"  {r['configurations']} steps of plain prior training:   {s['prior ×4']:.3f} s   "
          f"(HTTY / prior: {r['step_over_prior']:.2f}×)")
    print(f"  the INR's forward+backward in that step:  {s['INR part']:.3f} s = {100 * r['inr_share']:.1f}% of the step "
          f"(target < 25%)")
    print(f"  INR arithmetic: {r['inr_gflop']:.1f} GFLOP at {r['inr_gflops']:.1f} GFLOP/s; a plain {r['matmul_gflops']:.1f} "
          f"GFLOP/s matmul would need {r['inr_floor_seconds']:.3f} s "
          f"(= {100 * r['inr_floor_seconds'] / s['htty step']:.1f}% of the step)")
