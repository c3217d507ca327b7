"""The width study's tables and figures (notebooks 03 and 07): how far each generated block's output is from the prior
block's at every width, after each phase of a recipe (pre-fit, block-wise distillation, end-to-end), over the
distillation's steps, and over the first steps of fine-tuning a fitted INR.

The error of a block at γ is mean‖B_γ(x) − B*(x)‖² over held-out inputs x of the prior, divided by the energy of the
prior block's residual branch (`kit.blockwise.width_errors`): 0 is the prior's block, 1 is as wrong as leaving the
branch out. It reads the block on the prior's own inputs, so it measures each block alone; the network's accuracy
at γ also pays for the errors of the blocks before it.
"""
from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from kit import blockwise, metamorph, metatrain, plots
from kit import config as C


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
    data = metatrain.load_data_for(record["prior_config"], "cpu", cfg.batch_size, cfg.train_images, cfg.val_images, seed)
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
