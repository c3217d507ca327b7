"""Why generated blocks switch off, and what keeps them on: the evidence of notebook 07.

HTTY (paper 000 sec. 3.2) multiplies each generated block's branch by a learnable α that starts at 0 (SkipInit).
While α = 0 the block is the identity, so the cross-entropy gradient reaching its INR is exactly zero: only the
reconstruction term (γ = 0) and α's own gradient move anything. On a budget of a few hundred steps the INR does
not learn the prior's kernels (relative error ≈ 1), α stays near 0, and the network is the prior with those
blocks removed and its tail retrained: the null control. The kit's 'prefit' recipe fits the INRs to the prior
first, starts α at 1 and the size features neutral, and trains gently (`config.METHOD_SWITCHES`).

This module reads what notebook 03 recorded (the per-epoch block report in each run's history, the pre-fit
records of each stage) into tidy tables and measures the zero-gradient fact on a live network; the block report and
the sentences quoted from it are `kit.diagnostics`'. Plots are in `kit.plots`.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from kit import diagnostics, io, metamorph, records, results
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


def evidence(history: list[dict]) -> list[dict]:
    """Long-format rows from a notebook-03 history: one per (epoch, block, quantity) with quantity one of 'alpha',
    'branch scale' or 'error <tensor>', plus the validation accuracy per (epoch, γ) as quantity 'val accuracy'."""
    rows = []
    for h in history:
        base = {"epoch": h["run_epoch"], "stage": h.get("stage"), "updates": h.get("updates")}
        for key, value in h.items():
            if value is None:
                continue
            if (entry := diagnostics.history_entry(key)) is not None:
                rows.append({**base, "block": entry[0], "quantity": entry[1], "value": value})
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


def objective_text(cfg) -> str:
    """What notebook 03's training loss is for `cfg` (a `MorphConfig`): the sum `kit.morphtask.MorphTask.loss`
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
