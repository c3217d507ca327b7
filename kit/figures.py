"""Paper 000's figures rebuilt from a run folder (notebook 05), numbered as in the paper.

- Fig. 2/4 left, `blocks_sweep`: accuracy against the number of metamorphic blocks, NeuMeta against HTTY.
- Fig. 2/4 right, `compression`: accuracy against γ and against parameter count for HTTY, NeuMeta, the five
  pruning criteria (fine-tuned dashed, where run), the universally slimmable network and the individually trained
  networks (mean over seeds, ± one std as a bar where notebook 04 ran several).
- Fig. 6, `dense_gamma`: accuracy over the whole evaluated γ range with the training pool shaded, seen and unseen
  widths marked, normal against extended (×3 epochs) training where both were run, the universally slimmable
  network beside the metamorphic recipes (γ ≥ 0 only: it cannot grow).

Each takes a `kit.report.RunRecords` and a setting and returns a matplotlib Figure; a missing input draws the
figure's frame with a note saying what is missing and which notebook or profile would supply it. Notes about a
drawn figure are footnotes under its axes, where no legend can cover them. `captions` writes each figure's
paragraph for report.md from what the run measured.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from kit import diagnostics, plots, results
from kit.metamorph import gamma_key
from kit.report import RunRecords, block_reports


def note_figure(title: str, message: str) -> plt.Figure:
    """An empty figure saying what is missing (so a partial run still yields every file)."""
    plots.style()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    ax.set_title(title)
    return fig


def _footnotes(fig: plt.Figure, notes: list[str]) -> None:
    """`notes` under the axes, left-aligned, one line each, with the layout redone to make room for them."""
    if not notes:
        fig.tight_layout()
        return
    fig.text(0.01, 0.01, "\n".join(notes), fontsize=8, va="bottom", ha="left", color="0.25")
    fig.tight_layout(rect=(0, 0.045 * len(notes) + 0.01, 1, 1))


def captions(run: RunRecords, setting: str | None) -> dict[str, str]:
    """report.md's paragraph for each figure, worded on what the block reports measured: a curve is said to
    interpolate or extrapolate only when its generated blocks carry function (`kit.diagnostics.curve_reading`)."""
    blocks = block_reports(run, setting)
    htty = blocks.get("htty", {})
    off = diagnostics.block_state(htty) == diagnostics.OFF
    caveat = (f" HTTY's generated blocks are switched off in this run ({diagnostics.block_numbers(htty)}): its points are "
              "the rest of the network at every γ, not generated weights." if off else "")
    readings = " ".join(diagnostics.curve_reading(name, blocks[key], _mean_curve(run, setting, key)) for key, name in
                        (("htty", "HTTY"), ("prefit", "The pre-fit recipe"), ("blockwise", "The block-wise recipe"))
                        if key in blocks)
    return {
        "fig4_blocks": "HTTY's accuracy after each of its stages (stage k generates the first k blocks) against NeuMeta "
                       "on the same numbers of blocks, mean over the selection γ." + caveat,
        "fig4_compression": "HTTY's generated networks against pruning the prior's channels to the same widths (five "
                            "criteria), against one universally slimmable network trained on HTTY's budget (sandwich rule, in-place "
                            "distillation, BN recalibrated per width) and against networks trained individually at "
                            "those widths." + caveat,
        "fig6_gamma": "Accuracy at every evaluated γ, the training pool shaded: circles are widths trained on, diamonds "
                      "widths between them, triangles widths beyond the pool. " +
                      (readings or "No block report was recorded, so the curve cannot be tied to the generated blocks."),
    }


def _runs(run: RunRecords, setting: str, label: str) -> list[dict]:
    return [r for r in run.morph.values() if r.get("setting") == setting and results.label(r) == label]


def _mean_curve(run: RunRecords, setting: str, label: str) -> dict[str, float]:
    """{γ: accuracy} of a row averaged over its seeds (`kit.results.summarise`)."""
    row = results.summarise(run.morph, setting)[label]
    return {g: mean for g, (mean, _) in row["accuracy"].items()}


def blocks_sweep(run: RunRecords, setting: str | None) -> plt.Figure:
    """Mean test accuracy over the selection γ against the number of metamorphic blocks. HTTY's points are its
    own stages (stage k generates the first k blocks; K = k_select); NeuMeta's are its runs on the first k blocks
    (`<setting>:k`: one block in every profile, the whole sweep in full) and on the whole setting (K = k_samples)."""
    title = "Fig. 4 (left): accuracy against the number of metamorphic blocks"
    if setting is None or not run.morph:
        return note_figure(title, "No metamorphic runs in this run folder: run notebook 03.")
    curves: dict[str, dict[int, list[float]]] = {"htty": {}, "neumeta": {}}
    for r in run.morph.values():
        name = results.label(r)
        if name not in curves or not (r["setting"] == setting or r["setting"].startswith(setting + ":")):
            continue
        select = [gamma_key(g) for g in r["config"]["select_gammas"]]
        if name == "htty" and r["setting"] == setting:
            for s in r["stages"]:
                curves[name].setdefault(len(s["blocks"]), []).append(sum(s["test_accuracy"].values()) / len(s["test_accuracy"]))
        elif name == "neumeta":
            accs = [r["accuracy"][g] for g in select if g in r["accuracy"]]
            if accs:
                curves[name].setdefault(len(r["blocks"]), []).append(sum(accs) / len(accs))
    if not any(curves.values()):
        return note_figure(title, f"No HTTY or NeuMeta run on {setting} in this run folder.")
    plots.style()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, points), color in zip(curves.items(), ("tab:blue", "tab:red")):
        if points:
            ks = sorted(points)
            ax.plot(ks, [100 * sum(points[k]) / len(points[k]) for k in ks], marker="o", color=color,
                    label={"htty": "HTTY (its stages)", "neumeta": "NeuMeta"}[name])
    if run.prior:
        ax.axhline(100 * run.prior["test_accuracy"], color="k", ls="--", lw=1, label="prior")
    null = {len(r["blocks"]): next(iter(r["accuracy"].values())) for r in run.morph.values()
            if results.is_null(r) and (r["setting"] == setting or r["setting"].startswith(setting + ":"))}
    if null:
        ks = sorted(null)
        ax.plot(ks, [100 * null[k] for k in ks], ls=":", marker="x", color="tab:gray",
                label="null control (those blocks removed, tail retrained)")
    ax.set(xlabel="number of metamorphic blocks", ylabel="test accuracy (%)", title=title + "\n(mean over the selection γ)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    plots.legend_outside(ax)
    _footnotes(fig, ["NeuMeta on fewer blocks: not run here (the full profile runs the sweep)"]
               if len(curves["neumeta"]) < 2 else [])
    return fig


def compression(run: RunRecords, setting: str | None) -> plt.Figure:
    """Accuracy against γ (left) and against parameter count relative to the prior (right)."""
    title = "Fig. 4 (right): HTTY against pruning and individually trained networks"
    base = run.baselines if run.baselines and run.baselines.get("setting") == setting else None
    htty = _runs(run, setting, "htty") if setting else []
    if not htty and base is None:
        return note_figure(title, "Neither HTTY runs nor baselines for this setting: run notebooks 03 and 04.")
    plots.style()
    fig, (ax_g, ax_p) = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    prior_params = run.prior["parameters"] if run.prior else None
    rel = (lambda p: 100 * p / prior_params) if prior_params else (lambda p: p / 1e3)

    def draw(xs_g, xs_p, ys, yerr=None, **style):
        """The same curve against γ and against parameters; with `yerr`, a bar of ± that much at every point."""
        if yerr is None:
            ax_g.plot(xs_g, ys, **style)
            ax_p.plot(xs_p, ys, **{**style, "label": None})
        else:
            ax_g.errorbar(xs_g, ys, yerr=yerr, capsize=3, **style)
            ax_p.errorbar(xs_p, ys, yerr=yerr, capsize=3, **{**style, "label": None})

    names = {"htty": "HTTY (paper 000)", "neumeta": "NeuMeta", "prefit": "pre-fit recipe (kit)",
             "blockwise": "block-wise recipe (kit)"}
    for name, color in (("htty", "tab:blue"), ("neumeta", "tab:red"), ("prefit", "tab:purple"),
                        ("blockwise", "tab:green")):
        rs = _runs(run, setting, name) if setting else []
        if rs:
            curve = results.summarise(run.morph, setting)[name]["accuracy"]
            gs = [g for g in sorted(curve, key=float) if float(g) >= 0]
            draw([float(g) for g in gs], [rel(rs[0]["cost"][g]["parameters"]) for g in gs],
                 [100 * curve[g][0] for g in gs], yerr=[100 * curve[g][1] for g in gs] if len(rs) > 1 else None,
                 marker="o", lw=2.5 if name != "neumeta" else 1.5, color=color,
                 label=names[name] + (f" ({len(rs)} seeds)" if len(rs) > 1 else ""))
    null = results.null_accuracy(run.morph, setting) if setting else None
    if null is not None:
        for ax in (ax_g, ax_p):
            ax.axhline(100 * null, color="tab:gray", ls=":", lw=1.5,
                       label="null control (blocks removed, tail retrained)" if ax is ax_g else None)
    if base is not None:  # notebook 04's rows, mean over seeds with a bar of ± one std where there are several
        palette = dict(zip(("random", "l1", "l2", "taylor", "hessian"), sns.color_palette("Set2", 5)))
        rows = results.baseline_rows(base)
        for method in dict.fromkeys(r["method"] for r in rows if r["family"] == "pruning"):
            rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["gamma"])
            seeds = max(r["seeds"] for r in rs)
            draw([r["gamma"] for r in rs], [rel(r["parameters"]) for r in rs], [100 * r["accuracy"][0] for r in rs],
                 yerr=[100 * r["accuracy"][1] for r in rs] if seeds > 1 else None, marker=".",
                 ls="--" if rs[0]["finetuned"] else "-", color=palette[rs[0]["criterion"]],
                 label=f"pruning: {rs[0]['criterion']}" + (" + fine-tune" if rs[0]["finetuned"] else "") +
                       (f" ({seeds} seeds)" if seeds > 1 else ""))
        slim = sorted((r for r in rows if r["family"] == "slimmable"), key=lambda r: r["gamma"])
        if slim:
            seeds = max(r["seeds"] for r in slim)
            draw([r["gamma"] for r in slim], [rel(r["parameters"]) for r in slim], [100 * r["accuracy"][0] for r in slim],
                 yerr=[100 * r["accuracy"][1] for r in slim] if seeds > 1 else None, marker="s", lw=2,
                 color="tab:orange", label="universally slimmable (US-Nets, HTTY's budget)" +
                                           (f" ({seeds} seeds)" if seeds > 1 else ""))
        ind = sorted((r for r in rows if r["family"] == "individual"), key=lambda r: r["gamma"])
        if ind:
            seeds = max(r["seeds"] for r in ind)
            draw([r["gamma"] for r in ind], [rel(r["parameters"]) for r in ind], [100 * r["accuracy"][0] for r in ind],
                 yerr=[100 * r["accuracy"][1] for r in ind] if seeds > 1 else None, marker="*", ms=14, ls="none",
                 color="k", label="individually trained (γ = 0: the prior" +
                                  (f", trained once; others {seeds} seeds)" if seeds > 1 else ")"))
    ax_g.set(xlabel="compression ratio γ of the metamorphic blocks", ylabel="test accuracy (%)")
    ax_p.set(xlabel="parameters (% of the prior)" if prior_params else "parameters (thousands)")
    plots.legend_outside(ax_p, handles=ax_g.get_legend_handles_labels()[0])  # right of both panels
    fig.suptitle(title)
    _footnotes(fig, [] if base is not None else ["no baselines for this setting: run notebook 04"])
    return fig


def dense_gamma(run: RunRecords, setting: str | None) -> plt.Figure:
    """HTTY's accuracy over every evaluated γ, pool shaded, seen/between/beyond marked; extended training (×3
    epochs) and NeuMeta dashed where present."""
    title = "Fig. 6: accuracy over γ, seen and unseen widths"
    htty = _runs(run, setting, "htty") if setting else []
    if not htty:
        return note_figure(title, "No HTTY run for this setting: run notebook 03 with METHOD='htty'.")
    others = {}
    for name, shown in (("htty ×3 epochs", "HTTY, ×3 epochs (extended training)"), ("neumeta", "NeuMeta"),
                        ("prefit", "pre-fit recipe (kit)"), ("blockwise", "block-wise recipe (kit)")):
        if _runs(run, setting, name):
            others[shown] = _mean_curve(run, setting, name)
    base = run.baselines if run.baselines and run.baselines.get("setting") == setting else None
    slim = {r["key"]: r["accuracy"][0] for r in results.baseline_rows(base) if r["family"] == "slimmable"}
    if slim:
        others["universally slimmable (US-Nets; γ ≥ 0)"] = slim
    fig = plots.accuracy_vs_gamma(_mean_curve(run, setting, "htty"), htty[0]["kind"], htty[0]["config"]["gamma_max"],
                                  run.prior["test_accuracy"] if run.prior else None, title, others=others,
                                  label="HTTY" + (f" (mean of {len(htty)} seeds)" if len(htty) > 1 else ""),
                                  null=results.null_accuracy(run.morph, setting))
    _footnotes(fig, [] if "HTTY, ×3 epochs (extended training)" in others else
               ["extended training (×3 epochs): not run here (the full profile runs it)"])
    return fig
