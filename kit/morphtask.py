"""The metamorphic training task: one configuration's loss on the kit's one loop (`kit.train.fit`).

Each configuration (one batch) samples γ from the training pool, generates the active blocks' weights with coordinate
noise (paper 002 sec. 3.3) and contributes

    λ_task·CE + λ_rec·R (only when γ = 0, the prior's size) + λ_reg·Σ‖W‖₂

where R is the MSE to the smoothed prior's weights weighted by |W*| / max|W*| per tensor (reference notes sec. 4), or
with `loss.reconstruction_kind` 'relative' the squared relative error per tensor; with `loss.distill` part of the task
term is KL to the prior's own logits (the frozen skeleton is the teacher). `accumulate` batches, each its own
configuration, make one step (HTTY sec. 3.4), the first always at γ = 0 so that R acts on every step; `sandwich` puts
the pool's largest γ second; `per_block_gammas` draws one γ per block. The null control (`train_inr=False`) runs the
skeleton with α ≡ 0: only the tail trains. An EMA of every trained tensor is what validation and selection use.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F

from kit import config as C
from kit import data as D
from kit import diagnostics, metamorph, train


def reconstruction_loss(weights: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                        kind: str = "weighted") -> torch.Tensor:
    """R, a mean over tensors. 'weighted': mean((W − W*)² · (|W*| + 1e-6) / max(|W*| + 1e-6)), large prior weights
    count most (NeuMeta's code); 'relative': ‖W − W*‖² / ‖W*‖², the squared relative error the block report shows."""
    terms = []
    for name, w in weights.items():
        t = targets[name].to(w.device, torch.float32)  # float32 even under bf16 autocast: the target is exact
        if kind == "relative":
            terms.append(diagnostics.relative_squared_error(w, t))
        else:
            m = t.abs() + 1e-6
            terms.append(((w.float() - t).square() * (m / m.max())).mean())
    return torch.stack(terms).mean()


class MorphTask(train.Task):
    """One training stage of a `MetamorphicNet` (its active blocks' INRs, α and tail; the skeleton stays frozen)."""

    def __init__(self, net: metamorph.MetamorphicNet, cfg: C.MorphConfig, stage: int = 1):
        self.module, self.cfg, self.stage, self.accumulate = net, cfg, stage, cfg.accumulate
        self.pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
        self.draws = torch.Generator().manual_seed(cfg.seed + stage)  # which γ each batch trains; checkpointed
        self.targets = net.prior_tensors()
        self.ema = {n: p.detach().clone() for n, p in self._trained()} if cfg.ema > 0 else None
        self.updates = 0  # optimiser steps of this stage so far (the EMA's warm-up counts them)
        self._terms, self._seen = {}, 0  # the objective's weighted terms summed over this epoch's images (epoch_log)

    def _trained(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.module.named_parameters() if not n.startswith("skeleton.") and p.requires_grad]

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Decay on the INR's weight matrices (w_*) and the tail's kernels; α and the tail at their own lr."""
        groups = {"inr": [], "inr_rest": [], "alpha": [], "tail": [], "tail_rest": []}
        for name, p in self._trained():
            if name.startswith("inr."):
                groups["inr" if name.split(".")[2].startswith("w_") else "inr_rest"].append(p)  # inr.<bank>.w_in, …
            elif name == "alpha":
                groups["alpha"].append(p)
            else:
                groups["tail" if p.ndim > 1 else "tail_rest"].append(p)
        cfg = self.cfg
        out = [{"params": groups["inr"], "weight_decay": weight_decay}, {"params": groups["inr_rest"], "weight_decay": 0.0},
               {"params": groups["alpha"], "weight_decay": 0.0, "lr": cfg.alpha_lr},
               {"params": groups["tail"], "weight_decay": weight_decay, "lr": cfg.tail_lr},
               {"params": groups["tail_rest"], "weight_decay": 0.0, "lr": cfg.tail_lr}]
        return [g for g in out if g["params"]]

    def loss(self, x, y, micro=0):
        cfg, net = self.cfg, self.module
        gamma = self.gamma(micro)
        if not cfg.train_inr:  # the null control: α ≡ 0 removes the blocks, so their weights never matter
            logits = net(x, 0.0, self.targets)
            return self._count(len(y), task=cfg.loss.task * self._task_loss(logits, y)), logits
        prior_width = metamorph.at_prior(gamma)
        weights = net.generate(gamma, noise=cfg.coordinate_noise,
                               sizes_only=cfg.width_updates == "sizes" and not prior_width)
        logits = net(x, gamma, weights)
        terms = {"task": cfg.loss.task * self._task_loss(logits, y, x)}
        if cfg.loss.regularization:
            terms["regularization"] = cfg.loss.regularization * sum(w.float().norm() for w in weights.values())
        if prior_width and cfg.loss.reconstruction:
            terms["reconstruction"] = cfg.loss.reconstruction * reconstruction_loss(weights, self.targets,
                                                                                   cfg.loss.reconstruction_kind)
        return self._count(len(y), **terms), logits

    def gamma(self, micro: int) -> metamorph.Gamma:
        """The γ of a step's configuration `micro`: γ = 0 first when accumulating (HTTY sec. 3.4: every step holds
        the prior's size, so reconstruction always acts); with `sandwich` the pool's largest γ second; else a pool
        draw, one per block with `per_block_gammas`."""
        cfg = self.cfg
        if cfg.accumulate > 1 and micro == 0:
            return 0.0
        if cfg.sandwich and micro == 1:
            return float(max(self.pool))
        draw = lambda: self.pool[int(torch.randint(len(self.pool), (1,), generator=self.draws))]
        return {b: draw() for b in self.module.active_blocks} if cfg.per_block_gammas else draw()

    def _count(self, images: int, **terms: torch.Tensor) -> torch.Tensor:
        """The loss (the sum of `terms`), keeping each weighted term's sum over the epoch's images for epoch_log;
        detached and on the device, so counting costs no synchronisation."""
        for name, value in terms.items():
            self._terms[name] = self._terms.get(name, 0.0) + value.detach().float() * images
        self._seen += images
        return sum(terms.values())

    def _task_loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """(1 − d)·CE + d·KL(prior ‖ net), d = loss.distill; the prior's logits come from the frozen skeleton."""
        d = self.cfg.loss.distill
        loss = F.cross_entropy(logits, y) if d < 1 else logits.new_zeros(())
        if d > 0 and x is not None:
            with torch.no_grad():
                teacher = F.log_softmax(self.module.skeleton(x).float(), dim=1)  # (B, classes)
            kd = F.kl_div(F.log_softmax(logits.float(), dim=1), teacher, log_target=True, reduction="batchmean")
            loss = (1 - d) * loss + d * kd
        return loss

    @torch.no_grad()
    def after_step(self) -> None:
        self.updates += 1
        if self.ema is not None:
            decay = min(self.cfg.ema, self.updates / (9 + self.updates)) if self.cfg.ema_warmup else self.cfg.ema
            for name, p in self._trained():
                self.ema[name].lerp_(p.detach(), 1 - decay)

    def epoch_log(self) -> dict:
        """α, branch scale and relative error per generated tensor of the evaluated (EMA) weights, each epoch: the
        evidence of notebook 07 on whether the generated blocks carry the prior's function."""
        with self.ema_weights():
            rows = diagnostics.history_entries(diagnostics.block_report(self.module))
        alpha = {f"alpha@{b}": a for b, a in self.module.alphas().items()}
        # each weighted term's mean over the epoch's images (a term absent from a batch counts 0 there), so the
        # terms add up to the epoch's loss: task, reconstruction (γ = 0 batches only), regularization
        terms = {f"loss_{k}": float(v) / max(self._seen, 1) for k, v in self._terms.items()}
        self._terms, self._seen = {}, 0
        return {"stage": self.stage, "active_blocks": self.module.active, "updates": self.updates, **terms, **alpha,
                **rows}

    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily put the EMA weights into the network (evaluation uses them)."""
        if self.ema is None:
            yield
            return
        live = {n: p.detach().clone() for n, p in self._trained()}
        self._assign(self.ema)
        try:
            yield
        finally:
            self._assign(live)

    @torch.no_grad()
    def _assign(self, values: dict[str, torch.Tensor]) -> None:
        for name, p in self._trained():
            p.copy_(values[name])

    def state_dict(self) -> dict:
        return {"trainable": self.module.trainable_state(), "ema": self.ema, "updates": self.updates,
                "draws": self.draws.get_state()}

    def load_state_dict(self, state: dict, source: str) -> None:
        self.module.load_trainable(state["trainable"], source)
        if self.ema is not None:
            self.ema = {n: state["ema"][n].to(p.device) for n, p in self._trained()}
        self.updates = state["updates"]
        self.draws.set_state(state["draws"])

    def selection_state(self) -> dict:
        with self.ema_weights():
            return {k: v.detach().to("cpu", copy=True) for k, v in self.module.trainable_state().items()}

    def evaluate(self, data: D.Data, split: str, runtime: C.RuntimeConfig) -> dict[str, float]:
        with self.ema_weights():
            acc = evaluate_gammas(self.module, data, self.cfg.select_gammas, self.cfg.k_select, split, runtime)
        return {"accuracy": sum(acc.values()) / len(acc), "loss": None, **{f"accuracy@{g}": a for g, a in acc.items()}}


def evaluate_gammas(net: metamorph.MetamorphicNet, data: D.Data, gammas: Sequence[float], k: int = 1,
                    split: str = "test", runtime: C.RuntimeConfig | None = None, seed: int = 0) -> dict[str, float]:
    """{γ as a decimal string: accuracy} of the exported network at each γ (K-averaged, fixed noise seed)."""
    out = {}
    for gamma in gammas:
        model = net.export(gamma, k, seed)
        out[metamorph.gamma_key(gamma)] = train.evaluate(model, data, split, runtime)["accuracy"]
    return out
