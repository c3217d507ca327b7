"""The width study's tables and figures (notebooks 03 and 07): how far each generated block's output is from the prior
block's at every width, after each phase of a recipe (pre-fit, block-wise distillation, end-to-end), over the
distillation's steps, over the first steps of fine-tuning a fitted INR, and against free blocks (what limits a recipe:
the block-local signal and the width, or the INR that generates them).

The error of a block at γ is mean‖B_γ(x) − B*(x)‖² over held-out inputs x of the prior, divided by the energy of the
prior block's residual branch (`kit.blockwise.width_errors`): 0 is the prior's block, 1 is as wrong as leaving the
branch out. It reads the block on the prior's own inputs, so it measures each block alone; the network's accuracy
at γ also pays for the errors of the blocks before it.
"""
from __future__ import annotations

import dataclasses
import math
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from kit import blockwise, metamorph, plots, train
from kit import config as C
from kit import data as D


def table(widths: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """Rows (phase, block), columns γ: the width errors of one stage's phases (`metrics['stages'][k]['widths']`)."""
    rows = {(phase, block): errors for phase, blocks in widths.items() for block, errors in blocks.items()}
    df = pd.DataFrame(rows).T
    df.index.names = ["phase", "block"]
    df.columns.name = "γ"
    return df


def phases_figure(widths: dict[str, dict[str, dict[str, float]]], pool_max: float, title: str) -> plt.Figure:
    """One panel per block: output error against γ, one line per phase; the training pool shaded."""
    plots.style()
    blocks = list(next(iter(widths.values())))
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 3.4), sharey=True, squeeze=False)
    colours = sns.color_palette("viridis", len(widths))
    for ax, block in zip(axes[0], blocks):
        ax.axvspan(0, pool_max, color="0.92", zorder=0)
        for colour, (phase, errors) in zip(colours, widths.items()):
            g = [float(k) for k in errors[block]]
            ax.plot(g, list(errors[block].values()), "o-", color=colour, label=phase, ms=4)
        ax.set(title=block, xlabel="γ (shaded: training pool)")
        ax.axhline(1.0, color="0.5", ls=":", lw=1)
    axes[0][0].set_ylabel("output error / branch energy")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def over_steps_figure(record: dict, title: str) -> plt.Figure:
    """The distillation's record: each block's output error on the probe inputs at each γ over its steps (one panel
    per block), and the loss terms."""
    plots.style()
    probes = record["widths"]
    blocks = list(probes[0]["error"])
    fig, axes = plt.subplots(1, len(blocks) + 1, figsize=(3.8 * (len(blocks) + 1), 3.3), squeeze=False)
    gammas = list(probes[0]["error"][blocks[0]])
    colours = dict(zip(gammas, sns.color_palette("rocket", len(gammas))))
    for ax, block in zip(axes[0], blocks):
        for g in gammas:
            ax.plot([p["step"] for p in probes], [p["error"][block][g] for p in probes], color=colours[g], label=f"γ = {g}")
        ax.set(title=block, xlabel="distillation step", yscale="log")
    axes[0][0].set_ylabel("output error / branch energy")
    axes[0][len(blocks) - 1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax = axes[0][-1]
    curve = pd.DataFrame(record["curve"]).set_index("step")
    for column in curve:
        ax.plot(curve.index, curve[column], label=column)
    ax.set(title="loss terms", xlabel="distillation step", yscale="log")
    ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def first_steps_figure(trials: dict[str, dict]) -> plt.Figure:
    """`kit.blockwise.first_steps`: per setting, the mean block error at γ = 0 and at the pool's largest γ over the
    first steps of fine-tuning a fitted INR."""
    plots.style()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4), sharey=True)
    for name, trial in trials.items():
        probes = trial["widths"]
        steps = [p["step"] for p in probes]
        for ax, g in zip(axes, list(probes[0]["error"][next(iter(probes[0]["error"]))])):
            mean = [sum(p["error"][b][g] for b in p["error"]) / len(p["error"]) for p in probes]
            ax.plot(steps, mean, "o-", ms=3, label=name)
            ax.set(title=f"γ = {g}", xlabel="fine-tuning step", yscale="log")
    axes[0].set_ylabel("mean block output error / branch energy")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def fine_tuning_trials(checkpoint, settings: dict[str, dict], steps: int, seed: int, folder,
                       batches: int = 32) -> dict[str, dict]:
    """`kit.blockwise.first_steps` on a trained recipe's metamorph.pt, on its own distillation objective: `batches`
    batches of cached training inputs (drawn with `seed`) and its probe inputs; each setting overrides its
    `BlockwiseConfig` (e.g. {'lr': 3e-4, 'warmup_steps': 0})."""
    net, record = metamorph.load(checkpoint)
    cfg = C.from_dict(C.MorphConfig, record["config"])
    data = D.for_prior(record["prior_config"], "cpu", cfg.batch_size, cfg.train_images, cfg.val_images, seed)
    small = dataclasses.replace(cfg.blockwise, images=min(cfg.blockwise.images, batches * cfg.blockwise.batch_size))
    train_cache, probe_cache = blockwise.caches_for(net, data, small, seed)
    pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
    return blockwise.first_steps(net, train_cache, probe_cache, small, pool, cfg.coordinate_noise, seed, folder,
                                 settings, steps)


def trial_table(trials: dict[str, dict]) -> pd.DataFrame:
    """Per setting: the largest first-step change ‖Δθ‖/‖θ‖ over the INR's tensors, and the mean block output error
    at each probed γ before the trial and after it."""
    rows = {}
    for name, t in trials.items():
        before, after = t["widths"][0]["error"], t["widths"][-1]["error"]
        mean = lambda e, g: sum(e[b][g] for b in e) / len(e)
        gammas = list(before[next(iter(before))])
        rows[name] = {"first step max ‖Δθ‖/‖θ‖": max(t["first_step"].values()),
                      **{f"error γ = {g} before": mean(before, g) for g in gammas},
                      **{f"error γ = {g} after {t['widths'][-1]['step']} steps": mean(after, g) for g in gammas}}
    return pd.DataFrame(rows).T


def free_blocks(net: metamorph.MetamorphicNet, cache: blockwise.BlockCache, probe: blockwise.BlockCache, gamma: float,
                steps: int, lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> tuple[dict, dict]:
    """The block-local ceiling at γ: every generated block's tensors at γ, started from the INR's noise-free output and
    then trained as free parameters on the same cached prior inputs with the distillation's loss (the output error
    over the branch energy, summed over blocks; Adam, a linear warm-up over a tenth of the steps, cosine decay).

    What the free blocks reach is what the block-local signal can teach blocks of that width in `steps` steps; the
    gap between them and the INR's own output is what generating the width from the one INR costs. Returns (the
    free tensors, record: each block's output error on `probe` for the INR and for the free tensors, the distance
    ‖W_free − W_INR‖ / ‖W_INR‖ per tensor, the seconds)."""
    start = time.perf_counter()
    blocks = net.active_blocks
    at = {b: gamma for b in blocks}
    with torch.no_grad():
        generated = net.generate(at)
    free = {k: v.detach().clone().requires_grad_(True) for k, v in generated.items()}
    opt = torch.optim.Adam(free.values(), lr=lr)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    draws = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(len(cache), (batch_size,), generator=draws)
        loss = sum(blockwise.output_errors(net, cache, free, index).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    free = {k: v.detach() for k, v in free.items()}
    with torch.no_grad():
        error = lambda w: {b: float(e) for b, e in blockwise.output_errors(net, probe, w).items()}
        record = {"gamma": gamma, "steps": steps, "error_inr": error(generated), "error_free": error(free),
                  "moved": {k: float((free[k] - generated[k]).norm() / generated[k].norm().clamp_min(1e-12)) for k in free}}
    record["seconds"] = time.perf_counter() - start
    return free, record


def limits(checkpoint, gammas, steps: int, seed: int, test_images: int = 0) -> list[dict]:
    """What limits a trained recipe at each γ (notebook 07): test accuracy (K = 1, no noise) of the network the INR
    generates, against the same network with its generated blocks replaced by `free_blocks` at γ (trained `steps`
    steps on the recipe's own cached inputs), with both block errors and how far the free tensors moved. Free blocks
    near the prior while the INR is far: the signal and the width suffice, the INR's generation is the limit."""
    net, record = metamorph.load(checkpoint)
    cfg = C.from_dict(C.MorphConfig, record["config"])
    data = D.for_prior(record["prior_config"], "cpu", cfg.batch_size, cfg.train_images, cfg.val_images,
                                   seed, test_images)
    cache, probe = blockwise.caches_for(net, data, cfg.blockwise, seed)
    rows = []
    for gamma in gammas:
        free, rec = free_blocks(net, cache, probe, gamma, steps, seed=seed)
        inr = train.evaluate(net.export(gamma), data)["accuracy"]
        ceiling = train.evaluate(net.export(gamma, weights=free), data)["accuracy"]
        rows.append({**rec, "accuracy_inr": inr, "accuracy_free": ceiling})
    return rows


def limits_table(rows: list[dict]) -> pd.DataFrame:
    """One row per γ: both accuracies (%), both mean block errors and the largest relative move of a tensor."""
    mean = lambda errors: sum(errors.values()) / len(errors)
    return pd.DataFrame([{"γ": r["gamma"], "INR accuracy": 100 * r["accuracy_inr"], "free-block accuracy": 100 * r["accuracy_free"],
                          "INR block error": mean(r["error_inr"]), "free block error": mean(r["error_free"]),
                          "largest ‖ΔW‖/‖W‖": max(r["moved"].values())} for r in rows]).set_index("γ")


def limits_figure(rows: list[dict], prior_accuracy: float) -> plt.Figure:
    """`limits`: accuracy of the INR's network and of the free blocks' against γ (the prior dashed), and each block's
    output error for both."""
    plots.style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    g = [r["gamma"] for r in rows]
    left.plot(g, [100 * r["accuracy_inr"] for r in rows], "o-", label="generated by the INR")
    left.plot(g, [100 * r["accuracy_free"] for r in rows], "s-", label=f"free blocks ({rows[0]['steps']} steps)")
    left.axhline(100 * prior_accuracy, color="0.3", ls="--", lw=1, label="prior")
    left.set(xlabel="γ", ylabel="test accuracy (%), K = 1", title="same signal, same width")
    left.legend(fontsize=8, frameon=False)
    for block in rows[0]["error_inr"]:
        line, = right.plot(g, [r["error_inr"][block] for r in rows], "o-", label=f"{block}: INR")
        right.plot(g, [r["error_free"][block] for r in rows], "s--", color=line.get_color(), label=f"{block}: free")
    right.set(xlabel="γ", ylabel="output error / branch energy", yscale="log", title="block output error (probe)")
    right.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig
