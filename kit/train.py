"""The one training loop of the kit, and the prior (teacher) trainer built on it.

`fit(task, data, …)` owns everything every trainer shares: the optimiser and its warm-up +
cosine schedule (per step), bf16 autocast on CUDA, gradient clipping, a tqdm bar per epoch and
one log line per epoch, evaluation on the validation split (model selection) and on the test
split (reported only), an atomic checkpoint after every epoch, and exact resumption of a killed
run. A trainer is a `Task`: the module it trains, its loss on a batch and its evaluation. The
prior below is the plain classifier task (SGD + Nesterov, paper 002 sec. 4.1 uses such priors);
later trainers (NeuMeta, HTTY, individually trained baselines) are other tasks on this loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from kit import config as C
from kit import data as D
from kit import io, models
from kit.errors import KitError
from kit.runtime import autocast, pick_device, provenance, seed_everything


class Task:
    """What `fit` trains. A subclass sets `module` and overrides `loss`; the other hooks have defaults that
    later trainers override (an INR's AdamW, an EMA updated after each step, extra state to checkpoint)."""

    module: nn.Module
    accumulate: int = 1  # batches whose gradients are summed into one optimiser step (HTTY sec. 3.4)

    def loss(self, x: torch.Tensor, y: torch.Tensor, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar loss, logits (B, classes)) of one training batch; `micro` is the batch's place in its
        accumulation group (0 … accumulate − 1)."""
        raise NotImplementedError

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on weight matrices and kernels only, never on biases, norms or scalars."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        rest = [p for p in params if p.ndim <= 1]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    def configure_optimizer(self, optim: C.OptimConfig, steps_per_epoch: int):
        """(optimiser, per-step scheduler): SGD with Nesterov momentum, linear warm-up, cosine decay."""
        return make_optimizer(self, optim, steps_per_epoch)

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to update an EMA)."""

    def epoch_log(self) -> dict:
        """Extra values for the epoch's history row (e.g. HTTY's α per block)."""
        return {}

    def state_dict(self) -> dict:
        """Everything a checkpoint must hold to resume this task exactly."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict, source: str) -> None:
        models.load_weights(self.module, state, source)

    def selection_state(self) -> dict:
        """The state kept when validation accuracy is best (a copy on the CPU)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    def evaluate(self, data: D.Data, split: str, runtime: C.RuntimeConfig) -> dict[str, float]:
        """Metrics on a split; 'accuracy' (a fraction) drives model selection on 'val'."""
        return evaluate(self.module, data, split, runtime)


class ClassifierTask(Task):
    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        self.module, self.label_smoothing = model, label_smoothing

    def loss(self, x, y, micro=0):
        logits = self.module(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


@torch.no_grad()
def evaluate(model: nn.Module, data: D.Data, split: str = "test",
             runtime: C.RuntimeConfig | None = None) -> dict[str, float]:
    """Accuracy (fraction) and mean cross-entropy of `model` on a split, in eval mode, on the data's device
    (the model is moved there)."""
    runtime = runtime or C.RuntimeConfig()
    was_training = model.training
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model.to(data.device, memory_format=fmt).eval()  # weights in the inputs' layout: 1.4× faster on the CPU
    correct, loss_sum, n = 0, 0.0, 0
    for x, y in data.eval_batches(split):
        with autocast(data.device, runtime.amp):
            logits = model(x.contiguous(memory_format=fmt)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was_training)
    return {"accuracy": correct / n, "loss": loss_sum / n}


def lr_lambda(total_steps: int, warmup_steps: int, final_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak lr at a step: linear warm-up from 0, then cosine down to final_ratio."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return factor


def make_optimizer(task: Task, optim: C.OptimConfig, steps_per_epoch: int):
    groups = task.parameter_groups(optim.weight_decay)
    if optim.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=optim.lr)
    else:
        opt = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)
    total = optim.epochs * steps_per_epoch
    warmup = max(1, round(optim.warmup_epochs * steps_per_epoch))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, warmup, optim.final_lr_ratio))


def train_step(task: Task, opt: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]],
               device: torch.device, amp: bool, grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the summed gradients of `batches` (one, or an accumulation group), each loss
    weighted by its share of the group's images, so the step equals one on the group as a single batch;
    returns the (detached) group loss and the logits of every image."""
    opt.zero_grad(set_to_none=True)
    total = sum(len(y) for _, y in batches)
    loss_sum, logits = 0.0, []
    for micro, (x, y) in enumerate(batches):
        with autocast(device, amp):
            loss, out = task.loss(x, y, micro)
        (loss * (len(y) / total)).backward()
        loss_sum = loss_sum + loss.detach().float() * (len(y) / total)
        logits.append(out.detach())
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(task.module.parameters(), grad_clip)
    opt.step()
    task.after_step()
    return loss_sum, torch.cat(logits)


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimiser steps in an epoch of `batches` batches, grouped `accumulate` at a time (the last group may be short)."""
    return math.ceil(batches / accumulate)


def run_epoch(task: Task, opt, sched, batches, device: torch.device, runtime: C.RuntimeConfig,
              grad_clip: float = 0.0) -> dict[str, float]:
    """Train on every batch of `batches` (any iterable of (x, y)), `task.accumulate` batches per step; mean loss
    and accuracy over them."""
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    task.module.train()
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    group: list = []

    def step():
        nonlocal loss_sum, correct, seen
        loss, logits = train_step(task, opt, group, device, runtime.amp, grad_clip)
        sched.step()
        y = torch.cat([b for _, b in group])
        loss_sum += loss * len(y)  # stays on the device: no sync per step
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        group.clear()

    for x, y in batches:
        group.append((x.contiguous(memory_format=fmt), y))
        if len(group) == task.accumulate:
            step()
    if group:
        step()
    return {"loss": (loss_sum / seen).item(), "accuracy": (correct / seen).item(), "images": seen}


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0  # epoch (1-based) with the highest validation accuracy
    best_state: dict = field(default_factory=dict)  # module state at best_epoch
    seconds: float = 0.0  # training wall time, summed over resumed parts


# What to do about a training checkpoint that is refused (written by an older version of this kit, or not by it).
RESTART = "delete it to train afresh (the same command then starts from the first epoch)"


def fit(task: Task, data: D.Data, optim: C.OptimConfig, runtime: C.RuntimeConfig, checkpoint: str | Path,
        generator: torch.Generator, resume: bool = True, fingerprint: dict | None = None,
        on_epoch_end: Callable[[int, list[dict]], None] | None = None, desc: str = "train",
        test_each_epoch: bool = True) -> FitResult:
    """Train `task` for optim.epochs, checkpointing to `checkpoint` after every epoch.

    With resume=True an existing checkpoint (whose `fingerprint` must match) is continued from the
    epoch after the last one saved, with the optimiser, schedule and data-order generator restored,
    so the result equals that of an uninterrupted run."""
    device, checkpoint = data.device, Path(checkpoint)
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    task.module.to(device=device, memory_format=fmt)
    steps = data.num_batches("train")
    opt, sched = task.configure_optimizer(optim, steps_per_epoch(steps, task.accumulate))
    result, start = FitResult(), 1
    if resume and checkpoint.exists():
        state = io.load_torch(checkpoint, "training checkpoint", RESTART)
        saved = state.get("fingerprint") if isinstance(state, dict) else None
        if saved != fingerprint:
            raise KitError(f"The checkpoint {checkpoint} was written by a run with other settings "
                           f"({_first_difference(saved, fingerprint)}); delete it (or pick another "
                           "output folder) to start afresh, or rerun with its settings.")
        task.load_state_dict(state["module"], f"checkpoint {checkpoint}")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        result = FitResult(state["history"], state["best_epoch"], state["best_state"], state["seconds"])
        start = len(result.history) + 1
        if start <= optim.epochs:
            tqdm.write(f"{desc}: resuming from {checkpoint} after epoch {start - 1}")
    best_acc = max((r["val_accuracy"] for r in result.history), default=-1.0)
    for epoch in range(start, optim.epochs + 1):
        t0 = time.perf_counter()
        bar = tqdm(data.train_batches(generator), total=steps, desc=f"{desc} {epoch}/{optim.epochs}",
                   leave=False, disable=not runtime.progress)
        stats = run_epoch(task, opt, sched, bar, device, runtime, optim.grad_clip)
        train_seconds = time.perf_counter() - t0
        val = task.evaluate(data, "val", runtime)
        test = task.evaluate(data, "test", runtime) if test_each_epoch else {"accuracy": None, "loss": None}
        row = {"epoch": epoch, "loss": stats["loss"], "train_accuracy": stats["accuracy"],
               "val_accuracy": val["accuracy"], "val_loss": val["loss"], "test_accuracy": test["accuracy"],
               "test_loss": test["loss"], "lr": sched.get_last_lr()[0], "seconds": train_seconds,
               "images_per_second": stats["images"] / train_seconds,
               **{f"val_{k}": v for k, v in val.items() if k not in ("accuracy", "loss")},  # e.g. per-γ accuracy
               **task.epoch_log()}
        result.history.append(row)
        result.seconds += time.perf_counter() - t0
        if val["accuracy"] >= best_acc:  # ties go to the later (lower-lr) epoch
            best_acc, result.best_epoch = val["accuracy"], epoch
            result.best_state = task.selection_state()
        io.save_torch({"fingerprint": fingerprint, "module": task.state_dict(), "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "generator": generator.get_state(),
                       "torch_rng": torch.get_rng_state(),
                       "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                       "history": result.history,
                       "best_epoch": result.best_epoch, "best_state": result.best_state,
                       "seconds": result.seconds}, checkpoint)
        tqdm.write(f"{desc} epoch {epoch}/{optim.epochs}: loss {row['loss']:.4f}  train {row['train_accuracy']:.4f}  "
                   f"val {row['val_accuracy']:.4f}  " + (f"test {row['test_accuracy']:.4f}  " if test_each_epoch else "") +
                   f"{train_seconds:.1f}s ({row['images_per_second']:.0f} img/s)")
        if on_epoch_end is not None:
            on_epoch_end(epoch, result.history)
    return result


def _first_difference(saved, current, prefix: str = "") -> str:
    """'optim.epochs: 4 there, 6 here' for the first setting in which two nested dicts differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in list(saved) + [k for k in current if k not in saved]:
            if saved.get(key) != current.get(key):
                return _first_difference(saved.get(key), current.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'settings'}: {saved!r} there, {current!r} here"


# ---------------------------------------------------------------- the prior network

@dataclass
class PriorResult:
    model: nn.Module  # the selected (best validation) network, in eval mode, on the CPU
    history: list[dict]
    metrics: dict  # test_accuracy, val_accuracy, best_epoch, parameters, macs, seconds
    checkpoint: Path  # prior.pt: arch + weights + config + metrics


def train_prior(cfg: C.PriorConfig, out_dir: str | Path, resume: bool = True,
                on_epoch_end: Callable[[int, list[dict]], None] | None = None, desc: str = "prior") -> PriorResult:
    """Train the prior ResNet of `cfg` and write out_dir/prior.pt (the model selected on validation); `desc`
    names the run in progress bars and epoch lines (e.g. an individually trained baseline)."""
    out_dir = Path(out_dir)
    device = pick_device(cfg.runtime.device)
    generator = seed_everything(cfg.seed)
    data = D.load(cfg.data, device, cfg.seed)
    model = models.resnet(cfg.model.depth, cfg.model.width, data.input_shape[0], data.num_classes, cfg.model.hidden)
    fingerprint = {k: v for k, v in C.to_dict(cfg).items() if k not in ("runtime", "profile")}
    if not cfg.model.hidden:  # no custom widths: the fingerprint of checkpoints written before the field existed
        del fingerprint["model"]["hidden"]
    result = fit(ClassifierTask(model, cfg.optim.label_smoothing), data, cfg.optim, cfg.runtime,
                 out_dir / "checkpoint.pt", generator, resume, fingerprint, on_epoch_end, desc=desc)
    model.load_state_dict(result.best_state)
    test = evaluate(model, data, "test", cfg.runtime)
    best = result.history[result.best_epoch - 1]
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    metrics = {"test_accuracy": test["accuracy"], "val_accuracy": best["val_accuracy"],
               "best_epoch": result.best_epoch, "epochs": cfg.optim.epochs,
               **models.cost(model, data.input_shape), "seconds": result.seconds}
    path = io.save_torch({"arch": model.arch, "state_dict": model.state_dict(), "config": C.to_dict(cfg),
                          "dataset": data.name, "input_shape": data.input_shape, "metrics": metrics,
                          "provenance": provenance(device)}, out_dir / "prior.pt")
    return PriorResult(model, result.history, metrics, path)


REGENERATE_PRIOR = ("if an older version of this kit wrote it, delete it and write it again: `python -m kit pipeline` "
                    "on its run folder reruns notebook 01 (or `python -m kit train-prior`), `python -m kit morph` exports "
                    "a network again")


def load_prior(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, the whole record) from a prior.pt written by `train_prior`, or a plain network exported by
    `python -m kit morph` or the γ explorer (same layout). Plain data only (`io.load_torch`); an architecture beyond
    `models`' bounds, a malformed input shape or a NaN/infinite weight is refused in one sentence naming the file."""
    record = io.load_torch(path, "prior checkpoint", REGENERATE_PRIOR)
    if not isinstance(record, dict) or not {"arch", "state_dict"} <= set(record):  # a metamorph.pt has an arch too
        raise KitError(f"{path} is not a prior checkpoint written by kit.train.train_prior; point at a prior.pt.")
    source = f"prior checkpoint {path}"
    state = models.check_tensors(record["state_dict"], source)
    model = models.from_arch(record["arch"], source)  # bounds checked before the network is allocated
    if record.get("input_shape") is not None:
        models.check_input_shape(record["input_shape"], source, model.arch["in_channels"])
    models.load_weights(model, state, source)
    return model.eval(), record
