"""Why generated blocks switch off, and what keeps them on: the evidence of notebook 07 (issue 15).

HTTY (paper 000 sec. 3.2) multiplies each generated block's branch by a learnable α that starts at 0 (SkipInit).
While α = 0 the block is the identity, so the cross-entropy gradient reaching its INR is exactly zero: only the
reconstruction term (γ = 0) and α's own gradient move anything. On a budget of a few hundred steps the INR does
not learn the prior's kernels (relative error ≈ 1), α stays near 0, and the network is the prior with those
blocks removed and its tail retrained: the null control. The kit's 'prefit' recipe fits the INRs to the prior
first, starts α at 1 and the size features neutral, and trains gently (`config.METHOD_SWITCHES`).

This module reads what notebook 03 recorded (the per-epoch block report in each run's history, the pre-fit
records of each stage) into tidy tables, measures the zero-gradient fact on a live network, and writes the
data-driven sentences notebooks quote. Plots are in `kit.plots`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from kit import io, metamorph, records, results
from kit.errors import KitError


def load_runs(run_dir: str | Path, variants: list[str]) -> dict[str, dict]:
    """{variant: metrics.json} of notebook-03 runs in `run_dir`; one sentence naming what is missing."""
    folder = Path(run_dir) / results.MORPH_FOLDER
    out = {}
    for v in variants:
        path = folder / v / "metrics.json"
        if not path.is_file():
            raise KitError(f"No finished notebook-03 run {v!r} in {folder} (no metrics.json); run the pipeline "
                           f"(`make run`) or notebook 03 with METHOD={v.split('-')[0]!r} into that folder.")
        out[v] = records.check_record(io.read_json(path, "metrics"), path)
        if "history" not in out[v]:
            raise KitError(f"{path} has no per-epoch history (written before notebook 03 recorded it); rerun notebook 03 "
                           f"for {v!r}.")
    return out


_ERROR = re.compile(r"^error@(?P<block>.+)\.(?P<tensor>conv[12]\.(weight|bias))$")


def evidence(history: list[dict]) -> list[dict]:
    """Long-format rows from a notebook-03 history: one per (epoch, block, quantity) with quantity one of 'alpha',
    'branch scale' or 'error <tensor>', plus the validation accuracy per (epoch, γ) as quantity 'val accuracy'."""
    rows = []
    for h in history:
        base = {"epoch": h["run_epoch"], "stage": h.get("stage"), "updates": h.get("updates")}
        for key, value in h.items():
            if value is None:
                continue
            if (m := _ERROR.match(key)) is not None:
                rows.append({**base, "block": m["block"], "quantity": f"error {m['tensor']}", "value": value})
            elif key.startswith("alpha@") or key.startswith("branch scale@"):
                what, block = key.split("@", 1)
                rows.append({**base, "block": block, "quantity": what, "value": value})
            elif key.startswith("val_accuracy@"):
                rows.append({**base, "block": None, "quantity": "val accuracy", "gamma": key.split("@", 1)[1],
                             "value": value})
    return rows


def prefit_rows(metrics: dict) -> list[dict]:
    """One row per pre-fitted tensor: stage, block, tensor, steps, seconds, the relative error reached."""
    out = []
    for s in metrics.get("stages", []):
        for block, rec in (s.get("prefit") or {}).items():
            for tensor, err in rec["error"].items():
                out.append({"stage": s["stage"], "block": block, "tensor": tensor.removeprefix(block + "."),
                            "steps": rec["steps"], "seconds": rec["seconds"], "error": err})
    return out


def alpha_zero_gradient(net: metamorph.MetamorphicNet, x: torch.Tensor, y: torch.Tensor,
                        alphas: tuple[float, ...] = (0.0, 1.0)) -> dict[float, float]:
    """{α: ‖∂CE/∂θ_INR‖} on one batch (x, y) at γ = 0 with every α set to that value: at α = 0 the generated block
    is the identity and no cross-entropy gradient reaches its INR (exactly 0), whatever the INR's weights."""
    if not net.alpha_scaling:
        raise KitError("The network has no α (alpha_scaling=False); build it with α-scaling to measure this.")
    saved = net.alpha.detach().clone()
    out = {}
    try:
        for a in alphas:
            with torch.no_grad():
                net.alpha.fill_(a)
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x, 0.0, net.generate(0.0)), y).backward()
            grads = [p.grad for p in net.inr.parameters() if p.grad is not None]
            out[a] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads))) if grads else 0.0
    finally:
        with torch.no_grad():
            net.alpha.copy_(saved)
        net.zero_grad(set_to_none=True)
    return out


OFF, ON, DEPARTING, PARTLY = "switched off", "carrying the prior's function", "on, departing", "partly on"


def block_state(report: dict[str, dict]) -> str | None:
    """What a block report (`kit.results.block_report`, γ = 0) says about the generated blocks: OFF when every branch
    scale is below 0.1 (each block all but the identity), ON when every branch scale is ≥ 0.5 and every kernel error
    ≤ 0.3, DEPARTING when on with larger errors, PARTLY otherwise; None without a report."""
    if not report:
        return None
    scales, errors = _ranges(report)
    if max(scales) < 0.1:
        return OFF
    if min(scales) >= 0.5:
        return ON if max(errors) <= 0.3 else DEPARTING
    return PARTLY


def _ranges(report: dict[str, dict]) -> tuple[list[float], list[float]]:
    scales = [r["branch scale"] for r in report.values()]
    errors = [v for r in report.values() for k, v in r.items() if k in ("error conv1.weight", "error conv2.weight")]
    return scales, errors


def block_sentence(name: str, report: dict[str, dict]) -> str:
    """What a run's final block report measured, in one data-driven sentence (notebooks quote it)."""
    state = block_state(report)
    if state is None:
        return f"{name}: no generated block recorded."
    errors = _ranges(report)[1]
    words = {OFF: "switched off (all but the identity map)", ON: "on, carrying the prior's kernels",
             DEPARTING: f"on, with kernels that depart from the prior's (largest error {max(errors):.2f})",
             PARTLY: "partly on"}[state]
    return f"{name}: {block_numbers(report)}: {words}."


def block_numbers(report: dict[str, dict]) -> str:
    """'3 generated block(s), branch scale 0.000–0.009, kernel error 1.00–1.04': the measured ranges."""
    scales, errors = _ranges(report)
    blocks = len({k.split(" · ")[0] for k in report})  # keys may carry ' · seed s' (`kit.report.block_reports`)
    span = lambda v, f: f"{min(v):{f}}" if f"{min(v):{f}}" == f"{max(v):{f}}" else f"{min(v):{f}}–{max(v):{f}}"
    return f"{blocks} generated block(s), branch scale {span(scales, '.3f')}, kernel error {span(errors, '.2f')}"


def curve_reading(name: str, report: dict[str, dict], accuracy: dict[str, float] | None = None) -> str:
    """How to read `name`'s accuracy-vs-γ curve given what its block report measured: the words 'interpolating' and
    'extrapolating' are used only when the generated blocks carry function, and the curve is called flat only when
    its measured `accuracy` ({γ: fraction}, optional) spans at most 2 points."""
    state = block_state(report)
    if state is None:
        return f"{name}: no block report, so this curve cannot be tied to its generated blocks."
    if state == OFF:
        lo, hi = (100 * min(accuracy.values()), 100 * max(accuracy.values())) if accuracy else (0.0, 0.0)
        if accuracy and hi - lo > 2:  # the report is measured at γ = 0 only: a spread elsewhere is not explained by it
            return (f"{block_sentence(name, report)} The curve still spans {lo:.1f}–{hi:.1f}% over γ, which this report "
                    "(measured at γ = 0 only) does not explain; it is no evidence that the INR interpolates between "
                    "pool widths or extrapolates beyond them.")
        flat = f"the curve is flat ({lo:.1f}–{hi:.1f}%) because of that, and " if accuracy else "the curve "
        return (f"{block_sentence(name, report)} Every γ therefore builds nearly the same network (the prior with these "
                f"blocks removed): {flat}says nothing about how the INR interpolates between pool widths or "
                "extrapolates beyond them.")
    if state == PARTLY:
        return (f"{block_sentence(name, report)} The blocks act below the prior's strength (branch scale 1), so the "
                "curve mixes what the INR generates with the rest of the network, which every γ shares.")
    return (f"{block_sentence(name, report)} The blocks carry function, so the curve measures what the INR generates: "
            "points between pool widths show it interpolating, points beyond the pool and at γ < 0 extrapolating.")


def objective_text(cfg) -> str:
    """What notebook 03's training loss is for `cfg` (a `MorphConfig`): the sum `kit.metatrain.MorphTask.loss`
    minimises, term by term (the run's history records the sum and each weighted term per epoch)."""
    loss = cfg.loss
    task = "CE" if loss.distill == 0 else "KL to the prior" if loss.distill == 1 else \
        f"{1 - loss.distill:g}·CE + {loss.distill:g}·KL to the prior"
    if not cfg.train_inr:
        return f"{loss.task:g}·({task}) (the null control trains only the tail)"
    terms = [f"{loss.task:g}·({task})"]
    if loss.reconstruction:
        terms.append(f"{loss.reconstruction:g}·reconstruction ({loss.reconstruction_kind}, at γ = 0 only)")
    if loss.regularization:
        terms.append(f"{loss.regularization:g}·Σ‖W‖")
    return " + ".join(terms)
