"""`python -m kit bench htty`: the cost of one HTTY optimiser step against plain training, and the INR's share.

Paper 000 sec. 3.4 makes every step sum `accumulate` (4) configurations. Measured side by side, alternating
rounds in one process, on one batch size:
  htty step   one optimiser step of `MorphTask` with every metamorphic block generated (the last, costliest
              stage of the profile): 4 configurations, each generating its blocks and running the network
  prior ×4    4 optimiser steps of plain training of the prior (the same ResNet with BatchNorm, SGD)
  INR part    the INR's own forward and backward for the same 4 configurations (generation and its gradient only)
The INR's share is INR part / htty step (issue target for `quick` on the CPU: under 25%). Weights are random:
timing does not depend on them.
"""
from __future__ import annotations

import torch

from kit import config as C
from kit import metamorph, metatrain, models, train
from kit.bench_inr import median_times
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
    task = metatrain.MorphTask(net, cfg)
    opt, _ = task.configure_optimizer(cfg.optim, 100)
    prior_task = train.ClassifierTask(plain.train())
    prior_opt, _ = prior_task.configure_optimizer(prior_cfg.optim, 100)
    batches = [(torch.randn(cfg.batch_size, *input_shape, device=dev),
                torch.randint(0, classes, (cfg.batch_size,), device=dev)) for _ in range(cfg.accumulate)]
    amp = cfg.runtime.amp

    def inr_part():
        for micro in range(cfg.accumulate):
            gamma = 0.0 if micro == 0 else task.pool[micro % len(task.pool)]
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
    return {"device": str(dev), "profile": profile, "blocks": net.blocks, "batch_size": cfg.batch_size,
            "configurations": cfg.accumulate, "inr": f"{cfg.inr.depth} layers × {cfg.inr.hidden}, {cfg.inr.activation}",
            "seconds": med, "step_over_prior": med["htty step"] / med["prior ×4"],
            "inr_share": med["INR part"] / med["htty step"], "rounds": rounds}


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
