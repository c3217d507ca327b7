"""The pre-fit of the kit's recipes (notebook 07 says why): a block's INRs fitted to the smoothed prior's tensors at
γ = 0 when the block becomes metamorphic, before any task training.

Why: HTTY (paper 000 sec. 3.2–3.3) starts a new block at α = 0 with an INR that has never seen the prior, and
while α = 0 no task gradient reaches that INR; on a few hundred steps it never learns the prior's kernels. Full-batch
Adam on the relative squared error ‖W − W*‖² / ‖W*‖² (scale-free across tensors: the fan-in-divided kernels are
~1e-2) puts the prior into the INR in seconds to a minute. Uniform noise on the index coordinates (cross-network
smoothing, paper 002 sec. 3.3) makes the fitted function smooth between channels, so it can be resampled at other
widths; `WeightINR.neutralise_sizes` then keeps the size coordinates from spoiling that resampling.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from kit import metamorph
from kit.diagnostics import relative_error, relative_squared_error


def prefit(net: metamorph.MetamorphicNet, slots: Sequence[int], steps: int, lr: float, noise: float, seed: int,
           progress: bool = False) -> dict:
    """Fit the INRs of `slots` to the smoothed prior's tensors at γ = 0: full-batch Adam on the
    relative squared error, with `noise` index steps of coordinate noise, lr cosine-decayed to lr/10. The other MLPs
    get zero gradients, so Adam (no weight decay) leaves them exactly as they are. Returns the record: relative error
    per tensor without noise at the end, the loss curve (every 50 steps) and the seconds taken."""
    names = [net.specs[i].name for i in slots]
    state = net.skeleton.state_dict()
    targets = {n: state[n] for n in names}
    device = next(net.inr.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sizes = [net.sizes(0.0)[i] for i in slots]
    opt = torch.optim.Adam([p for p in net.inr.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr / 10)
    curve, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="pre-fit", disable=not progress, leave=False):
        weights = dict(zip(names, net.inr(sizes, noise, generator, slots=list(slots))))  # (O, I, k, k) / (O,) each
        loss = torch.stack([relative_squared_error(weights[n], targets[n]) for n in names]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            curve.append([step + 1, float(loss.detach())])
    with torch.no_grad():
        final = dict(zip(names, net.inr(sizes, slots=list(slots))))
        error = {n: relative_error(final[n], targets[n]) for n in names}
    return {"steps": steps, "lr": lr, "noise": noise, "seconds": time.perf_counter() - t0, "error": error, "curve": curve}
