"""`python -m kit bench prefit`: what the kit's pre-fit recipe costs, measured on a real smoothed prior.

  pre-fit per block   seconds of `prefit.prefit` (the profile's steps) for each metamorphic block in turn, and the
                      relative error ‖W − W*‖/‖W*‖ it reaches per kernel
  recipe step         one optimiser step of the pre-fit recipe (`accumulate` = 2 configurations, tail frozen,
                      distillation from the prior) against one HTTY step (4 configurations) with every block
                      generated, alternating rounds in one process (`kit.bench.timing.median_times`)
  time to acceptance  read from a finished run folder: the recipe run's training + evaluation seconds when the
                      quick targets hold there, else the criteria that fail and their measured figures
"""
from __future__ import annotations

from pathlib import Path

import torch

from kit import config as C
from kit import data as D
from kit import io, metamorph, morphtask, permute, results, train
from kit.bench.timing import median_times
from kit.errors import KitError
from kit.prefit import prefit
from kit.runtime import pick_device, project_path

# the pre-fit recipe's quick targets, in points (what the bench reports against; the kit itself holds no thresholds)
TARGETS = {"prior_gap_at_0": ("≤", 1.0), "worst_seen_gap": ("≤", 2.0), "seen_to_between_drop": ("<", 0.5),
           "min_over_null": ("≥", 3.0), "min_over_pruning": (">", 0.0), "max_kernel_error": ("≤", 0.3),
           "min_branch_scale": ("≥", 0.5)}


def holds(figures: dict) -> dict[str, bool | None]:
    """{criterion: whether the measured figure meets its quick target} (None where it was not measured)."""
    ops = {"≤": lambda a, b: a <= b, "<": lambda a, b: a < b, "≥": lambda a, b: a >= b, ">": lambda a, b: a > b}
    return {k: None if figures.get(k) is None else ops[op](figures[k], v) for k, (op, v) in TARGETS.items()}


def bench_prefit(run_dir: str | Path = "results/quick-fashion-mnist", profile: str = "quick", device: str = "auto",
                 rounds: int = 3) -> dict:
    run_dir = project_path(run_dir)
    smoothed = run_dir / "02_permutation" / "smoothed.pt"
    if not smoothed.is_file():
        raise KitError(f"No smoothed prior at {smoothed}; run `make run` (or the pipeline up to notebook 02) first, "
                       "or pass --run another run folder.")
    dev = pick_device(device)
    prior, record = permute.load_smoothed(smoothed)
    cfg = C.build(C.MorphConfig, profile, {"method": "prefit"})
    htty_cfg = C.build(C.MorphConfig, profile, {"method": "htty"})
    blocks = metamorph.blocks_for(prior, cfg.setting)
    torch.manual_seed(0)
    net = metamorph.MetamorphicNet(prior, blocks, cfg.inr, cfg.coordinate_noise, True, False, 1.0).to(dev)
    fits = {}
    for i, block in enumerate(blocks):
        net.set_active(i + 1)
        rec = prefit(net, metamorph.block_slots(i), cfg.prefit_steps, cfg.prefit_lr, cfg.prefit_noise, i)
        fits[block] = {"seconds": rec["seconds"], "error": rec["error"]}
    data = D.for_prior(record["config"], dev, cfg.batch_size, 4 * cfg.batch_size, 0, 0)
    batches = list(data.train_batches(torch.Generator().manual_seed(0)))[:4]
    tasks = {}
    for name, c in (("recipe step", cfg), ("htty step", htty_cfg)):
        n = metamorph.MetamorphicNet(prior, blocks, c.inr, c.coordinate_noise, True, c.train_tail, 0.5).to(dev)
        task = morphtask.MorphTask(n, c)
        opt, _ = task.configure_optimizer(c.optim, 100)
        tasks[name] = (task, opt, batches[:c.accumulate], c)
    runs = {name: (lambda t=t: train.train_step(t[0], t[1], t[2], dev, t[3].runtime.amp, t[3].optim.grad_clip))
            for name, t in tasks.items()}
    med = median_times(runs, dev, rounds)
    out = {"device": str(dev), "profile": profile, "run_dir": str(run_dir), "blocks": blocks,
           "prefit_steps": cfg.prefit_steps, "prefit": fits, "seconds": med,
           "configurations": {n: t[3].accumulate for n, t in tasks.items()},
           "step_over_htty": med["recipe step"] / med["htty step"], "rounds": rounds}
    runs_done = results.runs_of(run_dir)
    base = run_dir / "04_baselines" / "metrics.json"
    figures = results.recipe_figures(runs_done, io.read_json(base) if base.is_file() else None)
    if figures is not None:
        ok = holds(figures)
        recipe = next(r for r in runs_done.values() if r.get("method") == "prefit" and r["setting"] == figures["setting"])
        out.update(figures=figures, holds=ok, time_to_acceptance=(recipe["train_seconds"] + recipe["eval_seconds"])
                   if all(v is not False for v in ok.values()) else None)
    return out


def print_prefit(r: dict) -> None:
    print(f"bench prefit: profile {r['profile']}, blocks {', '.join(r['blocks'])}, device {r['device']}, smoothed "
          f"prior of {r['run_dir']}")
    for block, f in r["prefit"].items():
        errors = ", ".join(f"{k.removeprefix(block + '.')} {v:.3f}" for k, v in f["error"].items())
        print(f"  pre-fit {block}: {f['seconds']:.1f} s for {r['prefit_steps']} steps; relative error {errors}")
    s = r["seconds"]
    print(f"  one recipe step ({r['configurations']['recipe step']} configurations): {s['recipe step']:.3f} s; one HTTY "
          f"step ({r['configurations']['htty step']} configurations): {s['htty step']:.3f} s "
          f"(recipe / HTTY: {r['step_over_htty']:.2f}×, medians of {r['rounds']})")
    if "figures" not in r:
        print("  time to acceptance: no finished prefit run in this run folder (run `make run`).")
        return
    f = r["figures"]
    for k, (op, v) in TARGETS.items():
        value = f.get(k)
        shown = "not measured" if value is None else f"{value:.3f}"
        print(f"  {k:>22}: {shown:>12}  (target {op} {v}) {'' if r['holds'][k] is None else 'ok' if r['holds'][k] else 'NOT MET'}")
    t = r["time_to_acceptance"]
    print(f"  time to acceptance: {t:.0f} s (the recipe run's training + evaluation)" if t is not None else
          "  time to acceptance: not reached in this run (the criteria marked NOT MET fail)")
