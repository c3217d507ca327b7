"""Training metamorphic networks: NeuMeta's recipe as a `Task` on the kit's one loop (`kit.train.fit`).

Paper 002 sec. 3.4 and 4.1 (HTTY's baseline, paper 000 sec. 2.2). Each step samples γ from the training
pool, generates the metamorphic blocks' weights with coordinate noise and minimises

    λ_task·CE + λ_rec·R (only when γ = 0, the prior's size) + λ_reg·Σ‖W‖₂

where R is the MSE to the smoothed prior's weights weighted by |W*| / max|W*| per tensor (reference notes
sec. 4). AdamW, gradient clipping by norm (the reference clips by value), an EMA of the INR after every
step. After each epoch the EMA INR is validated at `select_gammas` (K = k_select) on the held-out
validation split — never on the test split, which the reference code selected on — and the best epoch is
kept; the final test evaluation averages K = k_samples generations at every γ of `gammas_eval`.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kit import config as C
from kit import data as D
from kit import io, metamorph, models, permute, train
from kit.errors import KitError
from kit.runtime import pick_device, provenance, seed_everything


def reconstruction_loss(weights: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over tensors of mean((W − W*)² · (|W*| + 1e-6) / max(|W*| + 1e-6)): large prior weights count most."""
    terms = []
    for name, w in weights.items():
        t = targets[name].to(w.device, torch.float32)  # float32 even under bf16 autocast: the target is exact
        m = t.abs() + 1e-6
        terms.append(((w.float() - t).square() * (m / m.max())).mean())
    return torch.stack(terms).mean()


class MorphTask(train.Task):
    """NeuMeta training of a `MetamorphicNet`'s INR (the skeleton stays frozen)."""

    def __init__(self, net: metamorph.MetamorphicNet, cfg: C.MorphConfig):
        self.module, self.cfg = net, cfg
        self.pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
        self.draws = torch.Generator().manual_seed(cfg.seed + 1)  # which γ each step trains; checkpointed
        self.targets = net.prior_tensors()
        self.ema = {n: p.detach().clone() for n, p in net.inr.named_parameters()} if cfg.ema > 0 else None

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Decay on the INR's weight matrices (w_*), not on its biases or gates."""
        is_matrix = lambda name: name.split(".")[1].startswith("w_")  # '<bank>.w_in', '<bank>.w_hidden.<j>', …
        named = list(self.module.inr.named_parameters())
        return [{"params": [p for n, p in named if is_matrix(n)], "weight_decay": weight_decay},
                {"params": [p for n, p in named if not is_matrix(n)], "weight_decay": 0.0}]

    def loss(self, x, y):
        cfg, net = self.cfg, self.module
        gamma = self.pool[int(torch.randint(len(self.pool), (1,), generator=self.draws))]
        weights = net.generate(gamma, noise=cfg.coordinate_noise)
        logits = net(x, gamma, weights)
        loss = cfg.loss.task * F.cross_entropy(logits, y)
        if cfg.loss.regularization:
            loss = loss + cfg.loss.regularization * sum(w.float().norm() for w in weights.values())
        if gamma == 0 and cfg.loss.reconstruction:
            loss = loss + cfg.loss.reconstruction * reconstruction_loss(weights, self.targets)
        return loss, logits

    @torch.no_grad()
    def after_step(self) -> None:
        if self.ema is not None:
            for name, p in self.module.inr.named_parameters():
                self.ema[name].lerp_(p.detach(), 1 - self.cfg.ema)

    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily put the EMA weights into the INR (evaluation uses them)."""
        if self.ema is None:
            yield
            return
        live = {n: p.detach().clone() for n, p in self.module.inr.named_parameters()}
        self.module.inr.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.module.inr.load_state_dict(live)

    def state_dict(self) -> dict:
        return {"inr": self.module.inr.state_dict(), "ema": self.ema, "draws": self.draws.get_state()}

    def load_state_dict(self, state: dict, source: str) -> None:
        models.load_weights(self.module.inr, state["inr"], source)
        if self.ema is not None:
            self.ema = {n: state["ema"][n].to(p.device) for n, p in self.module.inr.named_parameters()}
        self.draws.set_state(state["draws"])

    def selection_state(self) -> dict:
        with self.ema_weights():
            return {k: v.detach().to("cpu", copy=True) for k, v in self.module.inr.state_dict().items()}

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


@dataclass
class MorphResult:
    net: metamorph.MetamorphicNet  # with the selected (best validation) EMA weights, on the CPU
    history: list[dict]
    metrics: dict  # accuracy {γ: test accuracy}, kinds, costs, prior accuracy, train_seconds, inr_parameters, …
    checkpoint: Path  # metamorph.pt


def load_smoothed(path: str | Path) -> tuple[models.ResNet, dict]:
    """(BN-folded, permuted prior, record) from notebook 02's smoothed.pt."""
    record = io.load_torch(path, "smoothed prior")
    if not isinstance(record, dict) or not {"arch", "config", "state_dict", "report"} <= set(record):
        raise KitError(f"{path} is not a smoothed prior (notebook 02's smoothed.pt); run notebook 02 first "
                       "(METHOD='identity' there keeps the prior's channel order).")
    prior = models.load_weights(models.from_arch(record["arch"]), record["state_dict"], f"smoothed prior {path}")
    return prior.eval(), record


def train_morph(cfg: C.MorphConfig, smoothed_path: str | Path, out_dir: str | Path, resume: bool = True,
                on_epoch_end: Callable[[int, list[dict]], None] | None = None) -> MorphResult:
    """Train the INR of `cfg` on the smoothed prior and write out_dir/metamorph.pt (selected on validation)."""
    out_dir = Path(out_dir)
    prior, record = load_smoothed(smoothed_path)
    device = pick_device(cfg.runtime.device)
    data = load_data_for(record["config"], device, cfg.batch_size)
    generator = seed_everything(cfg.seed)
    net = metamorph.MetamorphicNet(prior, metamorph.blocks_for(prior, cfg.setting), cfg.inr, cfg.coordinate_noise)
    for gamma in {*metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size), *cfg.select_gammas, *cfg.gammas_eval}:
        net.widths(gamma)  # every γ this run will build is checked now, not after an epoch
    net.to(device)
    task = MorphTask(net, cfg)
    digest = permute.state_digest(prior)  # of the smoothed skeleton the INR is trained on
    checkpoint = out_dir / "checkpoint.pt"
    if resume and checkpoint.exists():
        saved = io.load_torch(checkpoint, "training checkpoint").get("fingerprint") or {}
        if saved.get("skeleton") not in (None, digest):
            raise KitError(f"{checkpoint} was trained on another prior than {smoothed_path}; delete it (or pick another "
                           "output folder) to train on this prior.")
    fingerprint = {**{k: v for k, v in C.to_dict(cfg).items() if k not in ("runtime", "profile")}, "skeleton": digest}
    fit = train.fit(task, data, cfg.optim, cfg.runtime, checkpoint, generator, resume, fingerprint,
                    on_epoch_end, desc=cfg.method, test_each_epoch=False)
    models.load_weights(net.inr, fit.best_state, "selected INR state")
    t0 = time.perf_counter()
    accuracy = evaluate_gammas(net, data, cfg.gammas_eval, cfg.k_samples, "test", cfg.runtime, cfg.seed)
    prior_acc = train.evaluate(prior, data, "test", cfg.runtime)["accuracy"]
    net = net.to("cpu")
    metrics = {
        "accuracy": accuracy,
        "kind": {metamorph.gamma_key(g): net.kind(g, task.pool) for g in cfg.gammas_eval},
        "cost": {metamorph.gamma_key(g): net.cost(g, data.input_shape) for g in cfg.gammas_eval},
        "widths": {metamorph.gamma_key(g): net.widths(g) for g in cfg.gammas_eval},
        "prior_accuracy": prior_acc, "val_accuracy": fit.history[fit.best_epoch - 1]["val_accuracy"],
        "best_epoch": fit.best_epoch, "epochs": cfg.optim.epochs, "train_seconds": fit.seconds,
        "eval_seconds": time.perf_counter() - t0, "inr_parameters": models.count_parameters(net.inr),
        "generated_parameters": sum(t.numel() for t in net.prior_tensors().values()),
        "blocks": net.blocks, "pool": task.pool, "method": cfg.method, "setting": cfg.setting,
    }
    path = net.save(out_dir / "metamorph.pt", config=C.to_dict(cfg), prior_config=record["config"],
                    dataset=data.name, input_shape=data.input_shape, skeleton_digest=digest, metrics=metrics,
                    provenance=provenance(device), smoothed=str(smoothed_path))
    return MorphResult(net.eval(), fit.history, metrics, path)


def load_data_for(prior_config: dict, device: str | torch.device = "cpu", batch_size: int | None = None) -> D.Data:
    """The prior's dataset with the prior's validation split (its seed), e.g. for record['prior_config'] of a
    metamorph.pt or record['config'] of a smoothed.pt."""
    prior_cfg = C.from_dict(C.PriorConfig, prior_config)
    values = C.to_dict(prior_cfg.data)
    if batch_size:
        values["batch_size"] = batch_size
    return D.load(C.from_dict(C.DataConfig, values), pick_device(str(device)), prior_cfg.seed)
