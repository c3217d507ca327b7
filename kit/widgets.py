"""The interactive γ explorer (notebook 06): pure drawing functions over `kit.explorer` views, and `GammaExplorer`,
a thin ipywidgets panel that calls them.

Drag γ and the network morphs (paper 000 eq. 2, Fig. 6): the panel shows the accuracy on a fixed test subset, the
parameters and MACs relative to the prior, the accuracy-vs-γ curve with the training pool shaded and a marker at
the current γ, and a heatmap of one kernel beside the prior's, on one colour scale (`kit.plots.kernel_summary`). Controls: the γ slider over the whole supported range (from twice the
prior's width to one channel), optional one slider per metamorphic block (non-uniform compression), K (noise
samples averaged, paper 002 sec. 3.3), the method (HTTY / NeuMeta / a pruning criterion at the same widths, where
the run folder holds them) and the kernel shown; a button exports the network on screen to a file.

Everything the panel shows comes from `figure`, `curve_figure`, `kernel_png` and `readout_html`, which take a
`View` and return a figure, PNG bytes or HTML, so tests and the benchmark drive the panel without a browser
(`slider.value = …` runs the same callback a drag does). Figures are drawn to PNG into `ipywidgets.Image`s rather
than through an Output widget: one round trip, no flicker, and the bytes are testable. Sliders update on release.
"""
from __future__ import annotations

import html
import io as _bytes
import time
from pathlib import Path

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps

from kit import config as C
from kit.errors import KitError
from kit.runtime import project_path
from kit.explorer import METAMORPHIC, Explorer, Settings, View, gamma_text
from kit.plots import KERNEL_SUMMARY

KIND_TEXT = {"seen": "seen: a width of the training pool", "between": "unseen: between pool widths",
             "smaller": "unseen: smaller than the pool", "larger": "unseen: larger than the prior",
             "pruned": "the prior pruned to these widths (no fine-tuning)",
             "slimmable": "one universally slimmable network at these widths (BN recalibrated)"}


# ---------------------------------------------------------------- pure drawing: View → figure, PNG, HTML

def draw_curve(ax: plt.Axes, ex: Explorer, view: View) -> None:
    """Accuracy against γ: the pool shaded, the recorded curves (the selected method's bold, fine-tuned dashed; each
    other method thin, in its own muted colour, named in the legend beside the axes), Individual stars, the subset
    accuracies viewed so far, and a marker at the current γ."""
    lo, hi = ex.gamma_range()
    ax.axvspan(min(ex.pool), max(ex.pool), color="tab:green", alpha=0.12, label="training pool")
    chosen = ex.methods[view.settings.method]
    xy = lambda curve: ([float(g) for g in sorted(curve, key=float)], [100 * curve[g] for g in sorted(curve, key=float)])
    others = [m for m in ex.methods.values() if m.key != chosen.key and m.recorded]
    for m, colour in zip(others, colormaps["Dark2"].colors * 2):
        ax.plot(*xy(m.recorded), color=colour, alpha=0.55, lw=0.9, label=f"{m.label} (recorded)")
    for curve, style, what in ((chosen.recorded, "-", "recorded"), (chosen.finetuned, "--", "fine-tuned")):
        if curve:
            ax.plot(*xy(curve), style, color="tab:blue", lw=2, marker="o", ms=4, label=f"{chosen.label}: {what}")
    if ex.individual:
        ax.scatter(*xy(ex.individual), marker="*", s=120, color="tab:orange", zorder=4, label="Individual")
    if ex.null is not None:  # below or at this line, a curve owes nothing to its generated blocks
        ax.axhline(100 * ex.null, color="tab:red", ls=":", lw=1.2, label="null control (blocks removed)")
    seen = ex.visited(chosen.key, view.settings.k)
    if seen:
        ax.scatter(list(seen), [100 * a for a in seen.values()], facecolors="none", edgecolors="tab:purple", s=28,
                   zorder=4, label=f"viewed ({view.images} test images)")
    ax.axvline(view.x, color="tab:red", lw=1, ls="--")
    if view.accuracy is not None:
        ax.scatter([view.x], [100 * view.accuracy], color="tab:red", s=110, zorder=5,
                   label=f"now: {100 * view.accuracy:.1f}%")
    ax.set(xlim=(lo - ex.step, hi + ex.step), xlabel="compression ratio γ   (hidden width = (1 − γ)·H)",
           ylabel="test accuracy (%)")
    ax.set_title(f"{view.label} at γ = {gamma_text(view.settings.gamma)}", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside: covers no curve


def curve_figure(ex: Explorer, view: View) -> plt.Figure:
    """The accuracy-vs-γ panel alone (the live panel's left image); the legend takes the right third."""
    fig, ax = plt.subplots(figsize=(8.2, 3.6))
    draw_curve(ax, ex, view)
    fig.subplots_adjust(left=0.08, right=0.7, bottom=0.15, top=0.9)  # tight_layout would cost 0.3 s an update
    return fig


def figure(ex: Explorer, view: View) -> plt.Figure:
    """The whole view as one static figure: the curve, the prior's kernel and the view's, on one colour scale."""
    fig = plt.figure(figsize=(16, 3.9))  # fixed rectangles: the curve's legend sits between it and the kernels
    ax, px, kx, cx = (fig.add_axes(r) for r in ([0.045, 0.14, 0.36, 0.76], [0.585, 0.14, 0.165, 0.76],
                                                  [0.79, 0.14, 0.165, 0.76], [0.965, 0.14, 0.008, 0.76]))
    draw_curve(ax, ex, view)
    if view.kernel is not None:
        v = kernel_scale(view)
        for a, k, what, shape in ((px, view.prior_kernel, "prior", view.prior_shape),
                                  (kx, view.kernel, "this network", view.shape)):
            if k is None:
                continue
            im = a.imshow(k.numpy(), cmap="viridis", vmin=0, vmax=v, aspect="auto", interpolation="nearest")
            a.grid(False)
            a.set(xlabel="input channel", ylabel="output channel")
            a.set_title(f"{what}: {view.layer} {shape}", fontsize=8)
        fig.colorbar(im, cax=cx, label=KERNEL_SUMMARY)
    else:
        kx.text(0.5, 0.5, view.note, ha="center", va="center", wrap=True, fontsize=8, transform=kx.transAxes)
        for a in (px, kx, cx):
            a.set_axis_off()
    return fig


def kernel_scale(view: View) -> float:
    """The top of the colour scale the prior's and the view's kernels share (their largest summary)."""
    tops = [float(k.max()) for k in (view.kernel, view.prior_kernel) if k is not None]
    return max(tops, default=0.0) or 1.0


def kernel_png(view: View, size: tuple[int, int] = (240, 300)) -> bytes:
    """The prior's kernel (left) and the view's (right) as one PNG, each `kit.plots.kernel_summary` (out × in), on one
    colour scale from 0 (viridis), each entry a block of pixels of one size, so widths compare by height; the pair is
    about `size` (height, width): 50× cheaper than matplotlib axes."""
    if view.kernel is None:
        return b""
    mats = [k.numpy() for k in (view.prior_kernel, view.kernel) if k is not None]  # (out, in) each
    v, gap = kernel_scale(view), 6
    rows, cols = max(m.shape[0] for m in mats), sum(m.shape[1] for m in mats)
    cell = (max(1, size[0] // rows), max(1, (size[1] - gap * (len(mats) - 1)) // cols))
    panels = []
    for m in mats:
        rgba = np.kron(colormaps["viridis"](m / v), np.ones((*cell, 1)))  # nearest-neighbour upscale: sharp cells
        pad = np.ones((rows * cell[0] - rgba.shape[0], rgba.shape[1], 4))  # a narrower tensor: white below
        panels += [np.concatenate([rgba, pad]), np.ones((rows * cell[0], gap, 4))]
    buf = _bytes.BytesIO()
    plt.imsave(buf, np.concatenate(panels[:-1], axis=1), format="png")
    return buf.getvalue()


def to_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (what an `ipywidgets.Image` shows), and the figure closed."""
    buf = _bytes.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def readout_html(view: View, seconds: float | None = None) -> str:
    """The numbers of a view as HTML (class names let a browser test find them)."""
    if view.accuracy is None:
        return (f'<div class="kit-readout"><b>{html.escape(view.label)}</b> at γ = {gamma_text(view.settings.gamma)}: '
                f'<span class="kit-note" style="color:#b00">{html.escape(view.note)}</span></div>')
    k = f" · K = {view.settings.k}" if view.kind not in ("pruned", "slimmable") else ""
    recorded = "" if view.recorded is None else f" (recorded on the whole test split: {100 * view.recorded:.2f}%)"
    widths = " · ".join(f"{b} {h}" for b, h in view.widths.items())
    took = "" if seconds is None else f'<br><small>updated in <span class="kit-seconds">{seconds:.2f}</span> s</small>'
    return (f'<div class="kit-readout" style="line-height:1.5"><b>{html.escape(view.label)}</b> at γ = '
            f'{gamma_text(view.settings.gamma)}{k} — {KIND_TEXT.get(view.kind, view.kind)}<br>'
            f'accuracy <b class="kit-accuracy">{100 * view.accuracy:.1f}%</b> on {view.images} test images{recorded}<br>'
            f'parameters <b class="kit-parameters">{view.parameters:,}</b> ({100 * view.parameters_ratio:.1f}% of '
            f'the prior) · MACs <b class="kit-macs">{view.macs / 1e6:.2f} M</b> ({100 * view.macs_ratio:.1f}%)<br>'
            f'hidden widths: {widths}{took}</div>')


# ---------------------------------------------------------------- the panel

class GammaExplorer:
    """The explorer panel. `GammaExplorer(checkpoint)` (a metamorph.pt of notebook 03) shows itself in a notebook;
    `.gamma.value = 0.3` etc. drive it from code, `.view` and `.last_seconds` hold what the last update computed."""

    def __init__(self, checkpoint: str | Path | None = None, profile: str = "quick", run_dir: str | Path | None = None,
                 export_dir: str | Path | None = None, explorer: Explorer | None = None, **overrides):
        if explorer is None:
            if checkpoint is None:
                raise KitError("GammaExplorer needs a checkpoint: a metamorph.pt written by notebook 03.")
            explorer = Explorer(checkpoint, C.build(C.ExplorerConfig, profile, overrides), run_dir)
        self.explorer = ex = explorer
        lo, hi = ex.gamma_range()
        start = ex.default_settings()
        slider = lambda label, g, top: W.FloatSlider(value=ex.on_grid(g), min=lo, max=top, step=ex.step,
                                                     description=label, readout_format=".4f", continuous_update=False,
                                                     style={"description_width": "120px"},
                                                     layout=W.Layout(width="560px"))
        self.method = W.Dropdown(options=[(m.label, m.key) for m in ex.methods.values()], value=start.method,
                                 description="method")
        self.gamma = slider("γ", start.gamma, hi)
        self.gamma.add_class("kit-gamma")  # CSS hooks for the browser test
        pool = f"{min(ex.pool):g} … {max(ex.pool):g}"
        self.gamma_help = W.HTML(f"<small>training pool γ ∈ [{pool}] (seen widths); γ &lt; 0 wider than the prior, "
                                 f"γ &gt; {max(ex.pool):g} narrower than any trained width: both unseen</small>")
        self.per_block = W.Checkbox(value=False, description="one γ per block (non-uniform compression)", indent=False,
                                    layout=W.Layout(width="auto"))
        self.block_gammas = {b: slider(f"γ {b}", self.gamma.value, ex.gamma_range(b)[1]) for b in ex.blocks}
        self.blocks_box = W.VBox(list(self.block_gammas.values()), layout=W.Layout(display="none"))
        self.k = W.IntSlider(value=start.k, min=1, max=ex.cfg.k_max, description="K samples", continuous_update=False)
        self.layer = W.Dropdown(options=ex.layers, value=start.layer, description="kernel")
        self.readout = W.HTML()
        self.curve = W.Image(format="png")
        self.kernel = W.Image(format="png")
        self.kernel_caption = W.HTML()
        self.export_dir = W.Text(value=str(export_dir or ex.checkpoint.parent / "exports"), description="export to",
                                 layout=W.Layout(width="560px"))
        self.export_button = W.Button(description="Export network", icon="download", button_style="primary")
        self.status = W.HTML()
        self.view: View | None = None
        self.last_seconds: float | None = None
        self.exported: Path | None = None
        self._quiet = False
        self._shown: set[str] = set()  # methods viewed at least once
        for w in (self.method, self.gamma, self.k, self.layer, *self.block_gammas.values()):
            w.observe(self.update, names="value")
        self.per_block.observe(self._toggle_blocks, names="value")
        self.export_button.on_click(self.export)
        self.widget = W.VBox([
            W.HBox([self.method, self.layer]), self.gamma, self.gamma_help, self.per_block, self.blocks_box, self.k,
            self.readout, W.HBox([self.curve, W.VBox([self.kernel_caption, self.kernel])]),
            W.HBox([self.export_dir, self.export_button]), self.status])
        self.widget.add_class("kit-explorer")
        self.update()

    def _repr_mimebundle_(self, **kwargs):  # a notebook shows the panel
        return self.widget._repr_mimebundle_(**kwargs)

    def settings(self) -> Settings:
        """What the controls say now."""
        gamma = ({b: s.value for b, s in self.block_gammas.items()} if self.per_block.value else self.gamma.value)
        return Settings(self.method.value, gamma, self.k.value, self.layer.value)

    def _toggle_blocks(self, change) -> None:
        self._quiet = True  # the block sliders start at the shared γ: one update, not one per slider
        for s in self.block_gammas.values():
            s.value = min(self.gamma.value, s.max)
        self._quiet = False
        self.blocks_box.layout.display = "flex" if change["new"] else "none"
        self.gamma.disabled = change["new"]
        self.update()

    def update(self, change=None) -> None:
        """Recompute the view of the current settings and redraw (every control calls this on release)."""
        if self._quiet:
            return
        t0 = time.perf_counter()
        method = self.explorer.methods[self.method.value]
        self.k.disabled = method.family != METAMORPHIC
        if method.key not in self._shown:  # its first use loads a checkpoint or scores channels: say so meanwhile
            self.readout.value = (f'<div class="kit-readout"><i>preparing {html.escape(method.label)} (first use: '
                                  "loading its checkpoint or scoring the prior's channels once)…</i></div>")
            self._shown.add(method.key)
        try:
            view = self.explorer.view(self.settings())
        except KitError as err:  # e.g. a kernel name typed by hand: say it in the panel, keep the old picture
            self.readout.value = f'<div class="kit-readout" style="color:#b00">{html.escape(str(err))}</div>'
            return
        self.curve.value = to_png(curve_figure(self.explorer, view))
        self.kernel.value = kernel_png(view)
        scale = "" if view.kernel is None else f", one colour scale 0–{kernel_scale(view):.3g}"
        self.kernel_caption.value = (f"<small>{view.layer}: prior {view.prior_shape} (left) · this network "
                                     f"{view.shape} (right); {KERNEL_SUMMARY}{scale}</small>")
        self.view, self.last_seconds = view, time.perf_counter() - t0
        self.readout.value = readout_html(view, self.last_seconds)

    def export(self, button=None) -> Path | None:
        """Write the network on screen to the export folder (the button calls this); returns the file."""
        s = self.settings()
        try:
            path = self.explorer.export(s, project_path(self.export_dir.value) / self.explorer.export_name(s))
        except KitError as err:
            self.status.value = f'<span style="color:#b00">{html.escape(str(err))}</span>'
            return None
        except OSError as err:
            self.status.value = (f'<span style="color:#b00">Cannot write to {html.escape(self.export_dir.value)} '
                                 f'({html.escape(err.strerror or str(err))}); choose a folder you can write to.</span>')
            return None
        self.exported = path
        self.status.value = (f'<span class="kit-exported">wrote {html.escape(str(path))}</span> '
                             "<small>(load it with <code>kit.train.load_prior(path)</code>)</small>")
        return path
