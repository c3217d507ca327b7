"""Figures the notebooks draw: one function per figure, each returning a matplotlib Figure.

Plots take plain records (lists of dicts, as the trainers' histories and metrics.json hold them),
so they work the same on a live run and on results read back from disk.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def style() -> None:
    """The kit's look: seaborn 'whitegrid', readable font sizes."""
    sns.set_theme(style="whitegrid", context="notebook")


def legend_outside(ax: plt.Axes, fontsize: int = 8, **kwargs):
    """The axes' legend to their right, where it cannot cover data (figures are saved with bbox_inches='tight', so
    the saved image grows to hold it). `kwargs` go to `Axes.legend` (e.g. handles and labels from another axes)."""
    return ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     frameon=False, **kwargs)


def training_curves(history: list[dict], title: str = "Prior training", loss_label: str = "cross-entropy",
                    loss_note: str = "") -> plt.Figure:
    """Loss and accuracy (train / val / test) against epoch. `loss_label` names what the recorded loss is (the
    prior's trainer records cross-entropy; notebook 03's records the sum of its objective's terms, which
    `loss_note` spells out under the loss plot, and each weighted term, drawn dashed). A staged run gets dotted
    verticals at its stage boundaries."""
    style()
    df = pd.DataFrame(history)
    if "run_epoch" in df:  # a staged (incremental) run: epochs counted over the whole run
        df["epoch"] = df["run_epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(df["epoch"], df["loss"].astype(float), marker="o",  # None (no training phase) draws nothing
                 label="train (augmented)" if "loss_task" not in df else "train: the whole objective")
    for key, label in LOSS_TERMS.items():  # notebook 03 records its objective's weighted terms (they add up)
        if key in df and df[key].notna().any():
            ax_loss.plot(df["epoch"], df[key], ls="--", marker=".", label=label)
    if df["val_loss"].notna().any():
        ax_loss.plot(df["epoch"], df["val_loss"].astype(float), marker="o", label="validation")
    ax_loss.set(xlabel="\n".join(["epoch", *textwrap.wrap(loss_note, 75)]), ylabel=loss_label, title="Loss")
    for key, label in (("train_accuracy", "train (augmented)"), ("val_accuracy", "validation"), ("test_accuracy", "test")):
        if df[key].notna().any():  # a metamorphic run validates only, and tests once at the end
            ax_acc.plot(df["epoch"], 100 * df[key].astype(float), marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    starts = stage_starts(df)
    for ax in (ax_loss, ax_acc):
        for i, epoch in enumerate(starts):
            ax.axvline(epoch - 0.5, color="grey", ls=":", lw=1, label="stage boundary" if i == 0 else None)
        legend_outside(ax)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


LOSS_TERMS = {"loss_task": "task term (CE or KL to the prior, ×λ_task)",
              "loss_reconstruction": "reconstruction term (γ = 0 batches, ×λ_rec)",
              "loss_regularization": "weight penalty (×λ_reg)"}  # kit.morphtask.MorphTask.epoch_log's keys


def stage_starts(df: pd.DataFrame) -> list[int]:
    """The run epochs at which a stage after the first begins (a history without stages: none)."""
    if "stage" not in df or not df["stage"].notna().any():
        return []
    x = df["run_epoch"] if "run_epoch" in df else df["epoch"]
    return [int(e) for e in x[df["stage"].diff().fillna(0) > 0]]


def sample_grid(images, labels, classes: list[str], n: int = 16) -> plt.Figure:
    """A grid of the first n images (uint8 (N, C, H, W)) with their class names."""
    style()
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows))
    for ax, img, lab in zip(axes.flat, images[:n].cpu(), labels[:n].cpu()):
        img = img.permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(classes[int(lab)], fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


KERNEL_SUMMARY = "mean |w| over each k×k kernel"  # the one kernel summary every heatmap of the kit shows


def kernel_summary(w):
    """(out, in) summary of a conv weight (out, in, k, k) (a linear weight (out, in) as it is): the mean |w| over
    each k×k kernel. Unsigned, so a heatmap reads as magnitude, and a mean, so 1×1 and 3×3 kernels compare."""
    w = w.detach().float().abs()
    return (w.reshape(w.shape[0], w.shape[1], -1).mean(-1)).cpu()


def weight_heatmaps(before, after, name: str, tv: tuple[float, float] | None = None) -> plt.Figure:
    """One conv or linear weight (`kernel_summary`) before and after permutation, same scale; `tv` = (before, after)
    total variation of this tensor, printed in the title as measured (None: no claim in the title)."""
    style()
    mats = [kernel_summary(t).numpy() for t in (before, after)]
    vmax = max(m.max() for m in mats)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, mat, title in zip(axes, mats, ("original order", "after permutation")):
        sns.heatmap(mat, ax=ax, cmap="viridis", vmin=0, vmax=vmax, cbar_kws={"label": KERNEL_SUMMARY})
        ax.set(title=title, xlabel="input channel", ylabel="output channel", xticks=[], yticks=[])
    fig.suptitle(name if tv is None else f"{name}: total variation {tv[0]:.3g} → {tv[1]:.3g} "
                 f"({100 * (1 - tv[1] / tv[0]):.1f}% lower)" if tv[0] else name)
    fig.tight_layout()
    return fig


def tv_per_tensor(before: dict[str, float], after: dict[str, float], top: int = 24) -> plt.Figure:
    """Total variation of the tensors with the most TV, before and after permutation."""
    style()
    names = sorted(before, key=before.get, reverse=True)[:top]
    df = pd.DataFrame({"tensor": names * 2, "TV": [before[n] for n in names] + [after[n] for n in names],
                       "order": ["original"] * len(names) + ["permuted"] * len(names)})
    fig, ax = plt.subplots(figsize=(11, 4.8))
    sns.barplot(df, x="tensor", y="TV", hue="order", ax=ax)
    ax.set(xlabel="", ylabel="total variation", title=f"TV per tensor (the {len(names)} largest)")
    plt.setp(ax.get_xticklabels(), rotation=60, ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def tv_by_method(tv: dict[str, float]) -> plt.Figure:
    """Total TV of the whole network under each channel-ordering method, labelled with the change from the
    original order ('identity')."""
    style()
    base = tv.get("identity", next(iter(tv.values())))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.barplot(x=list(tv), y=list(tv.values()), ax=ax, color="tab:blue")
    ax.bar_label(ax.containers[0], labels=[f"{v:,.0f}\n{100 * (v / base - 1):+.1f}%" for v in tv.values()], fontsize=9)
    ax.margins(y=0.15)
    ax.set(xlabel="channel order", ylabel="total variation of the network", title="TV by permutation method")
    fig.tight_layout()
    return fig


KIND_STYLE = {"seen": ("o", "seen (in the training pool)"), "between": ("D", "unseen, between pool points"),
              "smaller": ("v", "unseen, smaller (γ > pool)"), "larger": ("^", "unseen, larger (γ < 0)")}


def accuracy_vs_gamma(accuracy: dict[str, float], kinds: dict[str, str], pool_max: float,
                      prior_accuracy: float | None = None, title: str = "Metamorphic network",
                      others: dict[str, dict[str, float]] | None = None, label: str = "this run",
                      null: float | None = None) -> plt.Figure:
    """Test accuracy against γ (keys are decimal strings), markers by seen/unseen, the training pool shaded;
    `others` adds curves to compare with (e.g. {'neumeta': its accuracy}), drawn dashed; `null` is the null
    control's accuracy (the prior with these blocks removed, tail retrained), a red dotted line: a curve at or below
    it owes nothing to its generated blocks."""
    style()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axvspan(0, pool_max, color="tab:green", alpha=0.08, label="training pool")
    gammas = sorted(accuracy, key=float)
    ax.plot([float(g) for g in gammas], [100 * accuracy[g] for g in gammas], color="tab:blue", alpha=0.5, label=label)
    for i, (name, acc) in enumerate((others or {}).items()):
        keys = sorted(acc, key=float)
        ax.plot([float(g) for g in keys], [100 * acc[g] for g in keys], ls="--", marker=".",
                color=sns.color_palette()[(i + 3) % 10], label=name)
    for kind, (marker, label) in KIND_STYLE.items():
        pts = [g for g in gammas if kinds.get(g) == kind]
        if pts:
            ax.scatter([float(g) for g in pts], [100 * accuracy[g] for g in pts], marker=marker, s=50, label=label, zorder=3)
    if prior_accuracy is not None:
        ax.axhline(100 * prior_accuracy, color="k", ls="--", lw=1, label="prior (γ = 0, not generated)")
    if null is not None:
        ax.axhline(100 * null, color="tab:red", ls=":", lw=1.5, label="null control (blocks removed, tail retrained)")
    ax.set(xlabel="compression ratio γ  (hidden width = (1 − γ)·H)", ylabel="test accuracy (%)", title=title)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def cost_vs_gamma(cost: dict[str, dict[str, int]]) -> plt.Figure:
    """Parameters and MACs of the whole network against γ, relative to γ = 0 where present."""
    style()
    gammas = sorted(cost, key=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("parameters", "parameters"), ("macs", "MACs per image")):
        ax.plot([float(g) for g in gammas], [cost[g][key] / 1e3 for g in gammas], marker="o", label=label)
    ax.set(xlabel="compression ratio γ", ylabel="thousands", title="Network size against γ")
    ax.set_yscale("log")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def generated_kernels(tensors: dict[str, "object"], title: str, prior=None) -> plt.Figure:
    """Heatmaps of one generated conv tensor (out, in, k, k) at several γ (`kernel_summary`), after the prior's own
    tensor (`prior`, leftmost, when given), all on one colour scale so magnitudes compare across panels."""
    style()
    shown = ({"prior (the INR's target)": prior} if prior is not None else {}) | dict(tensors)
    mats = {label: kernel_summary(w).numpy() for label, w in shown.items()}
    vmax = max(float(m.max()) for m in mats.values()) or 1.0
    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 3.8), squeeze=False)
    for i, (ax, (label, mat)) in enumerate(zip(axes[0], mats.items())):
        sns.heatmap(mat, ax=ax, cmap="viridis", vmin=0, vmax=vmax, cbar=i == len(mats) - 1,
                    cbar_kws={"label": KERNEL_SUMMARY})
        ax.set(title=f"{label}  {tuple(shown[label].shape)}", xlabel="input channel", ylabel="output channel")
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{title} ({KERNEL_SUMMARY}, one colour scale)")
    fig.tight_layout()
    return fig


def stage_accuracy(stages: list[dict], prior_accuracy: float | None = None) -> plt.Figure:
    """Test accuracy against γ after each incremental stage (paper 000 sec. 3.1): do earlier blocks hold up as later
    ones become metamorphic? `stages` as `metatrain` records them (test_accuracy {γ: accuracy}, blocks)."""
    style()
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = sns.color_palette("viridis", len(stages))
    for colour, st in zip(colours, stages):
        acc = st["test_accuracy"]
        keys = sorted(acc, key=float)
        ax.plot([float(g) for g in keys], [100 * acc[g] for g in keys], marker="o", color=colour,
                label=f"after stage {st['stage']} ({len(st['blocks'])} block{'s' * (len(st['blocks']) > 1)}: …{st['blocks'][-1]})")
    if prior_accuracy is not None:
        ax.axhline(100 * prior_accuracy, color="k", ls="--", lw=1, label="prior")
    ax.set(xlabel="compression ratio γ", ylabel="test accuracy (%)", title="Accuracy after each stage")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def alpha_curves(history: list[dict]) -> plt.Figure:
    """α of every metamorphic block against the run's epoch (paper 000 sec. 3.2), stage boundaries dotted."""
    style()
    df = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = df["run_epoch"] if "run_epoch" in df else df["epoch"]
    for col in [c for c in df.columns if c.startswith("alpha@")]:
        ax.plot(x, df[col], marker="o", label=col.split("@", 1)[1])
    for epoch in stage_starts(df):
        ax.axvline(epoch - 0.5, color="grey", ls=":", lw=1)
    ax.set(xlabel="epoch (whole run)", ylabel="α", title="Branch scale α per block (starts at 0)")
    if ax.get_legend_handles_labels()[0]:
        legend_outside(ax)
    else:
        ax.text(0.5, 0.5, "no α in this run (α-scaling off)", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def block_evidence(runs: dict[str, list[dict]], null: float | None = None, prior: float | None = None) -> plt.Figure:
    """Notebook 07: for each run (a column; rows from `kit.study.evidence`) over training epochs, the relative error
    of every generated kernel, α and the branch scale ‖α·W2‖/‖W2*‖ per block, and validation accuracy per γ with
    the prior's and the null control's levels. Dotted verticals mark stage boundaries."""
    style()
    fig, axes = plt.subplots(3, len(runs), figsize=(5.2 * len(runs), 10), squeeze=False, sharex="col")
    for col, (name, rows) in enumerate(runs.items()):
        df = pd.DataFrame(rows)
        ax_err, ax_scale, ax_acc = axes[:, col]
        for (block, quantity), g in df[df["quantity"].str.startswith("error") & df["quantity"].str.contains("weight")
                                       ].groupby(["block", "quantity"]):
            ax_err.plot(g["epoch"], g["value"], marker=".", label=f"{block} {quantity.split()[1].split('.')[0]}")
        ax_err.axhline(0.3, color="k", ls=":", lw=1)
        ax_err.set(title=f"{name}: ‖W − W*‖ / ‖W*‖ of each kernel", ylabel="relative error", ylim=(0, None))
        for block, g in df[df["quantity"] == "branch scale"].groupby("block"):
            ax_scale.plot(g["epoch"], g["value"], marker="o", label=f"{block} branch scale")
        for block, g in df[df["quantity"] == "alpha"].groupby("block"):
            ax_scale.plot(g["epoch"], g["value"], ls="--", marker=".", label=f"{block} α")
        ax_scale.set(title="α and branch scale ‖α·W2‖ / ‖W2*‖ (prior's block: 1)", ylabel="scale")
        for gamma, g in df[df["quantity"] == "val accuracy"].groupby("gamma"):
            ax_acc.plot(g["epoch"], 100 * g["value"], marker="o", label=f"γ = {gamma}")
        if prior is not None:
            ax_acc.axhline(100 * prior, color="k", ls="--", lw=1, label="prior")
        if null is not None:
            ax_acc.axhline(100 * null, color="tab:red", ls=":", lw=1.5, label="null control")
        ax_acc.set(title="validation accuracy (K-averaged)", xlabel="epoch (over the whole run)", ylabel="accuracy (%)")
        starts = df.groupby("stage")["epoch"].min().tolist()[1:] if "stage" in df and df["stage"].notna().any() else []
        for ax in (ax_err, ax_scale, ax_acc):
            for e in starts:
                ax.axvline(e - 0.5, color="0.6", ls=":", lw=1)
            legend_outside(ax, fontsize=7)
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def prefit_curves(curves: dict[str, list[list[float]]]) -> plt.Figure:
    """The pre-fit's relative squared error against its steps, one line per block (log scale)."""
    style()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for block, curve in curves.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], label=block)
    ax.set(xlabel="pre-fit step (full batch)", ylabel="mean of ‖W − W*‖² / ‖W*‖²", yscale="log",
           title="Pre-fit of each block's INRs to the prior's tensors (with coordinate noise)")
    legend_outside(ax)
    fig.tight_layout()
    return fig
