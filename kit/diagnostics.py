"""Whether a metamorphic network's generated blocks carry function: the block report and the sentences quoted from it.

HTTY (paper 000 sec. 3.2) scales each generated block's branch by a learnable α. A block whose branch is all but
zero is the identity map, so accuracy then comes from the rest of the network whatever γ builds. The block report
measures, at γ = 0 without noise, per generated block: α, the relative error ‖W − W*‖ / ‖W*‖ of each generated
tensor against the smoothed prior's, and the branch scale ‖α·W2‖ / ‖W2*‖ of its second kernel.

Training logs the report every epoch (`history_entries`: flat keys, since a history row is one flat record), the
width study and notebook 07 read them back (`history_entry`), notebooks 03/05/06/07 and `kit summary` print the
sentences below. Training imports this module; the results reader (`kit.results`) is not needed to measure a net.

A block report record, as `metrics.json` keeps it: {block: {'alpha', 'error conv1.weight', 'error conv1.bias',
'error conv2.weight', 'branch scale', 'error conv2.bias'}}.
"""
from __future__ import annotations

import torch

from kit.metamorph import BLOCK_PARTS

OFF, ON, DEPARTING, PARTLY = "switched off", "carrying the prior's function", "on, departing", "partly on"


def relative_error(w: torch.Tensor, target: torch.Tensor) -> float:
    """‖W − W*‖ / ‖W*‖ in float32: how far a generated tensor is from the prior's (a zero target counts as a tiny
    one rather than dividing by zero)."""
    w, target = w.float(), target.to(w.device).float()
    return float((w - target).norm() / target.norm().clamp_min(1e-12))


def relative_squared_error(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖W − W*‖² / ‖W*‖² in float32, differentiable: the scale-free loss of the pre-fit and the block-wise recipe."""
    t = target.to(w.device, torch.float32)
    return (w.float() - t).square().sum() / t.square().sum().clamp_min(1e-12)


@torch.no_grad()
def block_report(net) -> dict[str, dict[str, float]]:
    """The block report record of a `MetamorphicNet`'s active blocks (α is 1 without α-scaling). A branch scale near 0
    means the block is all but the identity: a flat accuracy curve over γ."""
    weights, targets = net.generate(0.0), net.prior_tensors()
    alphas = net.alphas()
    out = {}
    for block in net.active_blocks:
        alpha = alphas.get(block, 1.0)
        row = {"alpha": alpha}
        for part in BLOCK_PARTS:
            w, t = weights[f"{block}.{part}"].float(), targets[f"{block}.{part}"].float()
            row[f"error {part}"] = relative_error(w, t)
            if part == "conv2.weight":
                row["branch scale"] = float(abs(alpha) * w.norm() / t.norm())
        out[block] = row
    return out


def history_entries(report: dict[str, dict[str, float]]) -> dict[str, float]:
    """A block report without α as flat history keys: 'error@<block>.<part>' and 'branch scale@<block>'."""
    return {(f"error@{block}.{key.removeprefix('error ')}" if key.startswith("error ") else f"{key}@{block}"): value
            for block, row in report.items() for key, value in row.items() if key != "alpha"}


def history_entry(key: str) -> tuple[str, str] | None:
    """(block, quantity) of a flat history key written by `history_entries` or of 'alpha@<block>' (quantity 'alpha',
    'branch scale' or 'error <part>'); None for any other key."""
    if key.startswith("error@"):
        name = key.removeprefix("error@")
        part = next((p for p in BLOCK_PARTS if name.endswith("." + p)), None)
        return (name.removesuffix("." + part), f"error {part}") if part else None
    what, at, block = key.partition("@")
    return (block, what) if at and what in ("alpha", "branch scale") else None


def block_state(report: dict[str, dict]) -> str | None:
    """What a block report says about the generated blocks: OFF when every branch scale is below 0.1 (each block all
    but the identity), ON when every branch scale is ≥ 0.5 and every kernel error ≤ 0.3, DEPARTING when on with larger
    errors, PARTLY otherwise; None without a report."""
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
