"""`python -m kit bench explorer`: how long one update of the γ explorer takes (target: under 1 s on 2 CPU cores for
the quick network).

Drives a `kit.widgets.GammaExplorer` as a user does, by setting its controls' values (which runs the same callback
as releasing a slider in the browser), and times each update end to end: the view (generation, evaluation on the
fixed subset, cost), the curve figure and its PNG, the kernel image and the readout. Kinds of update:
  γ, new width    the γ slider to a width not seen before, across the whole range, at the checkpoint's K
  γ, seen width   back to a width seen before (cached numbers; drawing only)
  K               every K of the K slider at one γ (a fresh average of K generations each)
  kernel          another kernel tensor shown
  one block       one block's slider in non-uniform mode
  method, first   the first switch to each other method (loads its checkpoint; a pruning criterion's scores)
  method, again   switching back and forth once every method has been seen
Reports the median and the largest time per kind and how many updates stayed under 1 s. What the browser adds
(sending the PNGs over the kernel's websocket, painting) is not included: the end-to-end browser test shows it works.
"""
from __future__ import annotations

import statistics

from kit.errors import KitError
from kit.runtime import project_path

DEFAULT = "results/quick-fashion-mnist/03_incremental_metamorphosis/htty/metamorph.pt"


def bench_explorer(checkpoint: str | None = None, profile: str = "quick", device: str = "auto",
                   gamma_points: int = 24) -> dict:
    from kit.widgets import GammaExplorer
    path = project_path(checkpoint or DEFAULT)
    if not path.is_file():
        raise KitError(f"No metamorphic checkpoint at {path}; run `make run` first (it writes the quick run), or pass "
                       "--checkpoint results/<run>/03_incremental_metamorphosis/htty/metamorph.pt.")
    panel = GammaExplorer(path, profile, runtime={"device": device})
    ex, times = panel.explorer, {}
    first = panel.last_seconds

    def timed(kind: str, widget, value) -> None:
        if widget.value == value:  # no change, no update
            return
        panel.last_seconds = None
        widget.value = value
        if panel.last_seconds is None:
            raise KitError(f"The explorer did not update for {kind} = {value}: {panel.readout.value}")
        times.setdefault(kind, []).append(panel.last_seconds)

    lo, hi = ex.gamma_range()
    n = round((hi - lo) / ex.step)
    grid = sorted({lo + round(i * n / (gamma_points - 1)) * ex.step for i in range(gamma_points)})
    seen_widths: set = {tuple(panel.view.widths.values())}
    for g in grid:
        kind = "γ, seen width" if tuple(ex.widths(g).values()) in seen_widths else "γ, new width"
        timed(kind, panel.gamma, g)
        seen_widths.add(tuple(panel.view.widths.values()))
    for g in grid[::4]:
        timed("γ, seen width", panel.gamma, g)
    panel.gamma.value = grid[len(grid) // 2]
    k_default = panel.k.value
    for k in range(1, ex.cfg.k_max + 1):
        timed("K", panel.k, k)
    panel.k.value = k_default  # the other kinds at the checkpoint's K
    for layer in ex.layers[1:]:
        timed("kernel", panel.layer, layer)
    panel.per_block.value = True
    for b, slider in panel.block_gammas.items():
        timed("one block", slider, min(slider.max, slider.value + 0.25) if slider.value < 0.5 else slider.value - 0.5)
    panel.per_block.value = False
    own = panel.method.value
    first_use = {}
    for key in ex.methods:
        if key != own:
            timed("method, first", panel.method, key)
            first_use[key] = panel.last_seconds
    for key in list(ex.methods)[::-1]:
        timed("method, again", panel.method, key)
    if "slimmable" in ex.methods:  # each new width recalibrates its BN on notebook 04's calibration images first
        panel.method.value = "slimmable"
        for g in [g for g in grid if g >= 0][::2]:
            timed("slimmable width", panel.gamma, g)
    every = [t for ts in times.values() for t in ts]
    return {"checkpoint": str(path), "device": str(ex.device), "eval_images": len(ex.data.splits["test"]),
            "k_default": ex.methods[own].k, "k_max": ex.cfg.k_max, "methods": list(ex.methods), "first_update": first,
            "method_first_use": first_use,
            "kinds": {k: {"updates": len(ts), "median": statistics.median(ts), "max": max(ts)} for k, ts in times.items()},
            "under_1s": sum(t < 1.0 for t in every), "updates": len(every),
            "under_1s_excluding_first_method": sum(t < 1.0 for k, ts in times.items() if k != "method, first" for t in ts),
            "updates_excluding_first_method": sum(len(ts) for k, ts in times.items() if k != "method, first")}


def print_explorer(r: dict) -> None:
    print(f"γ explorer on {r['checkpoint']}\n{r['device']}, {r['eval_images']} test images per evaluation, K = "
          f"{r['k_default']} (slider 1 … {r['k_max']}), methods: {', '.join(r['methods'])}\n")
    print(f"{'update':<16}{'n':>4}{'median s':>10}{'max s':>8}")
    for kind, t in r["kinds"].items():
        print(f"{kind:<16}{t['updates']:>4}{t['median']:>10.3f}{t['max']:>8.3f}")
    print("first switch to each method: " + ", ".join(f"{k} {t:.2f} s" for k, t in r["method_first_use"].items()))
    print(f"\nfirst view (building the panel's first picture): {r['first_update']:.2f} s")
    print(f"updates under 1 s: {r['under_1s']} of {r['updates']}; without the first switch to each method: "
          f"{r['under_1s_excluding_first_method']} of {r['updates_excluding_first_method']} (target: all, on 2 CPU "
          "cores for the quick network)")
