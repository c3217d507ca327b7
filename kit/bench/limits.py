"""`python -m kit bench limits`: what limits the block-wise recipe away from the prior's width, measured side by side
on a finished run folder (README, "What limits the block-wise recipe").

  free blocks   test accuracy (K = 1) of the recipe's network at each γ against the same network with its generated
                blocks replaced by free blocks of that width (`kit.widthstudy.free_blocks`: started from the INR's
                output, trained on the same cached prior inputs with the same loss) for each count of `free_steps`
  more steps    the recipe's INR distilled further (`kit.blockwise.run` with the recipe's own settings, from a copy),
                for each count of `more_steps`: accuracy and block errors
  regression    a copy of the INR regressed in weight space (relative squared error, at the training noise) onto free
                blocks at every second pool width at once: can it absorb what the free blocks found?
  precision     a fresh INR pre-fitted to the smoothed prior's tensors at γ = 0 (`kit.prefit.prefit`) at each
                (hidden units, steps, coordinate noise): the relative kernel error it reaches per block, and seconds

Free blocks near the prior while the INR stays far mean the signal and the width suffice and the INR's generation is
the limit; the precision rows say what its fit costs in steps, capacity and noise.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import torch

from kit import blockwise, diagnostics, io, metamorph, permute, prefit, results, train, widthstudy
from kit import config as C
from kit import data as D
from kit.errors import KitError
from kit.runtime import project_path

# the README's study (≈ 35 minutes on 2 CPU cores for the quick run); a test passes smaller ones
DEFAULTS = {"gammas": [0.0, 0.125, 0.25, 0.5], "free_steps": [150, 1000], "more_steps": [600, 1500],
            "regress_steps": 300, "regress_lr": 3e-4,
            "precision": [(128, 1000, 0.5), (128, 4000, 0.5), (256, 2000, 0.5), (128, 1000, 0.25), (128, 1000, 0.0)]}


def _mean(errors: dict[str, float]) -> float:
    return sum(errors.values()) / len(errors)


def regress(net: metamorph.MetamorphicNet, targets: dict[float, dict[str, torch.Tensor]], steps: int, lr: float,
            noise: float, seed: int) -> list[list[float]]:
    """Train `net`'s INR (in place) on the mean relative squared error of its generation at every γ of `targets`
    against those tensors (Adam, warm-up over a sixth of the steps, cosine to a tenth); returns the loss curve."""
    params = [p for p in net.inr.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    warmup = max(1, steps // 6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * s / max(1, steps)))))
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        loss = 0.0
        for gamma, want in targets.items():
            got = net.generate({b: gamma for b in net.active_blocks}, noise=noise, generator=generator)
            errors = [diagnostics.relative_squared_error(got[k], want[k]) for k in got]
            loss = loss + torch.stack(errors).mean() / len(targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            curve.append([step + 1, float(loss.detach())])
    return curve


def bench_limits(run_dir: str | Path = "results/quick-fashion-mnist", variant: str = "blockwise", seed: int = 0,
                 settings: dict | None = None) -> dict:
    run_dir = project_path(run_dir)
    s = {**DEFAULTS, **(settings or {})}
    checkpoint = results.morph_folder(run_dir) / variant / "metamorph.pt"
    smoothed = run_dir / "02_permutation" / "smoothed.pt"
    if not checkpoint.is_file() or not smoothed.is_file():
        raise KitError(f"No {checkpoint} (or no {smoothed}); run `make run` (or the pipeline) first, or pass --run "
                       "another run folder.")
    net, record = metamorph.load(checkpoint)
    cfg = C.from_dict(C.MorphConfig, record["config"])
    if not cfg.width_distillation:
        raise KitError(f"{checkpoint} was trained without width distillation; bench limits reads a block-wise recipe run.")
    data = D.for_prior(record["prior_config"], "cpu", cfg.batch_size, cfg.train_images, cfg.val_images, seed)
    cache, probe = blockwise.caches_for(net, data, cfg.blockwise, seed)
    pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
    gammas = [float(g) for g in s["gammas"]]
    accuracy = lambda n, g, w=None: 100 * train.evaluate(n.export(g, weights=w), data)["accuracy"]
    errors = lambda n: {metamorph.gamma_key(g): _mean({b: e[metamorph.gamma_key(g)] for b, e in
                                                       blockwise.width_errors(n, probe, [g]).items()}) for g in gammas}
    rows = {"recipe": {"accuracy": {metamorph.gamma_key(g): accuracy(net, g) for g in gammas}, "block_error": errors(net),
                       "seconds": io.read_json(checkpoint.parent / "metrics.json").get("train_seconds")}}
    for steps in s["more_steps"]:
        trial = copy.deepcopy(net)
        more = dataclasses.replace(cfg.blockwise, steps=steps, probe_every=0, checkpoint_every=steps)
        start = time.perf_counter()
        blockwise.run(trial, cache, probe, more, pool, cfg.coordinate_noise, seed + 7, run_dir / ".bench-limits.pt",
                      gammas, resume=False)
        (run_dir / ".bench-limits.pt").unlink(missing_ok=True)
        rows[f"+{steps} distillation steps"] = {"accuracy": {metamorph.gamma_key(g): accuracy(trial, g) for g in gammas},
                                                "block_error": errors(trial), "seconds": time.perf_counter() - start}
    moved, found = {}, {}  # found: (steps, γ) → free tensors, reused as regression targets
    for steps in s["free_steps"]:
        row = {"accuracy": {}, "block_error": {}, "seconds": 0.0}
        for g in gammas:
            free, rec = widthstudy.free_blocks(net, cache, probe, g, steps, seed=seed)
            found[(steps, g)] = free
            row["accuracy"][metamorph.gamma_key(g)] = accuracy(net, g, free)
            row["block_error"][metamorph.gamma_key(g)] = _mean(rec["error_free"])
            row["seconds"] += rec["seconds"]
            moved.setdefault(str(steps), {})[metamorph.gamma_key(g)] = rec["moved"]
        rows[f"free blocks, {steps} steps"] = row
    regression = None
    if s["regress_steps"]:
        first = s["free_steps"][0]
        start = time.perf_counter()
        targets = {g: found.get((first, g)) or widthstudy.free_blocks(net, cache, probe, g, first, seed=seed)[0]
                   for g in pool[::2]}
        trial = copy.deepcopy(net)
        curve = regress(trial, targets, s["regress_steps"], s["regress_lr"], cfg.coordinate_noise, seed)
        with torch.no_grad():
            distance = {metamorph.gamma_key(g): {k: float(diagnostics.relative_squared_error(v, targets[g][k]).sqrt())
                                                 for k, v in trial.generate({b: g for b in trial.active_blocks}).items()
                                                 if k.endswith("weight")} for g in targets}
        rows[f"INR regressed onto free blocks ({len(targets)} widths)"] = {
            "accuracy": {metamorph.gamma_key(g): accuracy(trial, g) for g in gammas}, "block_error": errors(trial),
            "seconds": time.perf_counter() - start}
        regression = {"curve": curve, "distance": distance, "widths": [float(g) for g in targets],
                      "steps": s["regress_steps"], "lr": s["regress_lr"]}
    prior, _ = permute.load_smoothed(smoothed)
    precision = []
    for hidden, steps, noise in s["precision"]:
        torch.manual_seed(seed)
        fresh = metamorph.MetamorphicNet(prior, net.blocks, dataclasses.replace(cfg.inr, hidden=int(hidden)),
                                         cfg.coordinate_noise, cfg.alpha_scaling, False, 1.0)
        fit = prefit.prefit(fresh, list(range(len(fresh.specs))), int(steps), cfg.prefit_lr, float(noise), seed)
        per_block = {b: max(e for k, e in fit["error"].items() if k.startswith(b + ".") and k.endswith("weight"))
                     for b in net.blocks}
        precision.append({"hidden": int(hidden), "depth": cfg.inr.depth, "steps": int(steps), "noise": float(noise),
                          "kernel_error": per_block, "seconds": fit["seconds"]})
    prior_accuracy = 100 * train.evaluate(prior, data)["accuracy"]
    return {"run_dir": str(run_dir), "variant": variant, "prior_accuracy": prior_accuracy, "rows": rows,
            "moved": moved, "regression": regression, "precision": precision, "settings": s}


def print_limits(r: dict) -> None:
    gammas = list(next(iter(r["rows"].values()))["accuracy"])
    print(f"bench limits: run {r['variant']} of {r['run_dir']}; prior {r['prior_accuracy']:.2f}% (test split, K = 1)")
    print(f"  {'':<44}" + "".join(f"{'γ = ' + g:>16}" for g in gammas) + f"{'seconds':>10}")
    for name, row in r["rows"].items():
        cells = "".join(f"{row['accuracy'][g]:>8.2f}% ({row['block_error'][g]:.3f})" for g in gammas)
        sec = "" if row["seconds"] is None else f"{row['seconds']:>10.0f}"
        print(f"  {name:<44}{cells}{sec}")
    print("  (accuracy, and in brackets the mean block output error on the probe inputs in branch-energy units)")
    for steps, per_gamma in r["moved"].items():
        print(f"  free blocks after {steps} steps moved ‖ΔW‖/‖W‖ = " + ", ".join(
            f"γ {g}: {min(v for k, v in m.items() if k.endswith('weight')):.2f}–"
            f"{max(v for k, v in m.items() if k.endswith('weight')):.2f}" for g, m in per_gamma.items()) + " (kernels)")
    if r["regression"]:
        g = r["regression"]
        d = [v for m in g["distance"].values() for v in m.values()]
        print(f"  regression ({g['steps']} steps, lr {g['lr']:g}): loss {g['curve'][0][1]:.4f} → {g['curve'][-1][1]:.4f}; "
              f"kernels then {min(d):.2f}–{max(d):.2f} (relative) from the free blocks")
    for p in r["precision"]:
        print(f"  pre-fit precision, INR {p['depth']}×{p['hidden']}, {p['steps']} steps, noise {p['noise']:g}: kernel "
              "error " + ", ".join(f"{b} {e:.3f}" for b, e in p["kernel_error"].items()) + f" ({p['seconds']:.0f} s)")
