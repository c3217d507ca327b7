"""Training metamorphic networks: HTTY (paper 000 sec. 3) and NeuMeta (paper 002 sec. 3.4) as one `Task` on
the kit's one loop (`kit.train.fit`); NeuMeta is HTTY with every component switched off (`config.METHOD_SWITCHES`).

Each configuration (one batch) samples γ from the training pool, generates the active blocks' weights with
coordinate noise and contributes

    λ_task·CE + λ_rec·R (only when γ = 0, the prior's size) + λ_reg·Σ‖W‖₂

where R is the MSE to the smoothed prior's weights weighted by |W*| / max|W*| per tensor (reference notes
sec. 4). HTTY's components, each a switch of `MorphConfig`:
  - incremental (sec. 3.1): one stage per metamorphic block, in forward order; stage k generates blocks 1…k and
    fine-tunes the earlier blocks' INRs with the new one; a non-incremental run is one stage of blocks × epochs;
  - α-scaling (sec. 3.2): generated blocks are `metamorph.ScaledBlock`s with a learnable α, 0 at the start;
  - INR initialisation (sec. 3.3): stage k's new MLPs start as copies of block k−1's final ones;
  - gradient accumulation (sec. 3.4): `accumulate` batches, each its own configuration, make one step, and
    the first is always γ = 0 so that R acts on every step (the loop's accumulation, `train.run_epoch`);
  - disentangled biases (sec. 3.5): the INR's scalar-output bias bank;
  - the tail (sec. 3.1): the final block (unless generated) and the classifier, trained directly for every γ.
The kit's own switches (issue 15; `METHOD_SWITCHES['prefit']` and the null control `METHOD_SWITCHES['null']`):
  - pre-fit (`kit.prefit`): a block's INRs are fitted to the prior's tensors when the block joins;
  - neutral size features (`WeightINR.neutralise_sizes`), α starting at `alpha_init`;
  - `loss.distill`: part of the task term is KL to the prior's own logits (the frozen skeleton is the teacher);
  - `loss.reconstruction_kind` 'relative': R as the squared relative error per tensor;
  - `train_inr=False` (the null control): α ≡ 0 removes the blocks; only the tail trains, on HTTY's tail budget;
  - `width_distillation` (`kit.blockwise`, `METHOD_SWITCHES['blockwise']`): after a stage's pre-fit, every block at
    several widths per step against the prior block's output on cached activations; `per_block_gammas` and
    `sandwich` then shape the end-to-end configurations; `end_to_end=False` keeps only the block-local phases.
AdamW, warm-up (first stage) then constant, gradient clipping by norm, an EMA of every trained tensor.
After each epoch the EMA state is validated at `select_gammas` (K = k_select) on the validation split
(never on test, which the reference code selected on); each stage continues from the previous stage's
selected state, and after each stage the test accuracy at `select_gammas` is recorded (the block-count
curve of Fig. 4). The final test evaluation averages K = k_samples generations at every γ of `gammas_eval`, at the
coordinate noise the INR was trained with, and reports K = 1 beside it; with several blocks, it also evaluates
networks whose blocks sit at different pool widths (`mixed_configurations`); each stage records the width study
(every block's output error against the prior's per γ, after each phase).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kit import config as C
from kit import data as D
from kit import blockwise, io, metamorph, models, permute, results, train
from kit.prefit import block_slots, prefit, relative_squared_error
from kit.errors import KitError
from kit.runtime import pick_device, provenance, seed_everything


def reconstruction_loss(weights: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                        kind: str = "weighted") -> torch.Tensor:
    """R, a mean over tensors. 'weighted': mean((W − W*)² · (|W*| + 1e-6) / max(|W*| + 1e-6)), large prior weights
    count most (NeuMeta's code); 'relative': ‖W − W*‖² / ‖W*‖², the squared relative error the block report shows."""
    terms = []
    for name, w in weights.items():
        t = targets[name].to(w.device, torch.float32)  # float32 even under bf16 autocast: the target is exact
        if kind == "relative":
            terms.append(relative_squared_error(w, t))
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
            report = results.block_report(self.module)
        rows = {f"{key.replace('error ', 'error@' + b + '.') if key.startswith('error') else key + '@' + b}": v
                for b, row in report.items() for key, v in row.items() if key != "alpha"}
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


@dataclass
class MorphResult:
    net: metamorph.MetamorphicNet  # with the selected (best validation) EMA weights, on the CPU
    history: list[dict]
    metrics: dict  # accuracy {γ: test accuracy}, kinds, costs, prior accuracy, train_seconds, inr_parameters, …
    checkpoint: Path  # metamorph.pt


def load_smoothed(path: str | Path) -> tuple[models.ResNet, dict]:
    """(BN-folded, permuted prior, record) from notebook 02's smoothed.pt: plain data only (`io.load_torch`), its
    architecture within `models`' bounds and its weights finite, else one sentence naming the file."""
    record = io.load_torch(path, "smoothed prior", "if an older version of this kit wrote it, delete it and rerun "
                                                   "notebook 02 (`python -m kit pipeline` on its run folder does)")
    if not isinstance(record, dict) or not {"arch", "config", "state_dict", "report"} <= set(record):
        raise KitError(f"{path} is not a smoothed prior (notebook 02's smoothed.pt); run notebook 02 first "
                       "(METHOD='identity' there keeps the prior's channel order).")
    source = f"smoothed prior {path}"
    state = models.check_tensors(record["state_dict"], source)
    prior = models.load_weights(models.from_arch(record["arch"], source), state, source)
    if record.get("input_shape") is not None:
        models.check_input_shape(record["input_shape"], source, prior.arch["in_channels"])
    return prior.eval(), record


def stage_plan(cfg: C.MorphConfig, blocks: int) -> list[tuple[int, int]]:
    """(active blocks, epochs) per stage: one stage per block when incremental, else one stage of blocks × epochs
    (the same total training, paper 000 sec. 4.1) or of `joint_epochs`."""
    epochs = cfg.optim.epochs * cfg.epoch_scale
    if cfg.incremental:
        return [(k, epochs) for k in range(1, blocks + 1)]
    return [(blocks, cfg.joint_epochs * cfg.epoch_scale if cfg.joint_epochs else epochs * blocks)]


def budget(cfg: C.MorphConfig, blocks: int, train_images: int) -> dict[str, int]:
    """Optimiser steps and images of the task phase on the kit's one loop over every stage of `stage_plan`, on
    `train_images` training images (`kit.data` drops a short last batch): the budget the baselines are matched to.
    The pre-fit and the block-wise distillation run on no images of their own (prior tensors, cached activations)."""
    batches, epochs = train_images // cfg.batch_size, sum(e for _, e in stage_plan(cfg, blocks))
    return {"steps": epochs * train.steps_per_epoch(batches, cfg.accumulate), "images": epochs * batches * cfg.batch_size}


def begin_stage(net: metamorph.MetamorphicNet, active: int, inr_init: bool, initial: dict[str, torch.Tensor],
                cfg: C.MorphConfig | None = None, stage: int = 1, fit: bool = True, start: int | None = None) -> dict:
    """Make the first `active` blocks generated. The MLPs of a block added now start as copies of its predecessor's
    (INR initialisation, paper 000 sec. 3.3) or from their own initial weights `initial` (an INR state_dict). With
    `cfg.prefit`, those MLPs are then fitted to the prior's tensors (`prefit`; the predecessor's copy is its warm
    start); `fit=False` skips that work when a saved stage checkpoint will replace the state anyway. The blocks new
    to generation are `start` … active − 1 (default: from the currently active count; a run's first stage passes 0,
    since its first blocks are active from the start, hold their own initial weights, and are due their pre-fit).
    Returns {block: pre-fit record} of the blocks fitted now."""
    added = range(net.active if start is None else start, active)  # blocks new to generation (0-based)
    net.set_active(active)
    records = {}
    for block in added:
        slots = block_slots(block)
        if inr_init and block > 0:
            net.inr.copy_slots([(s - 4, s) for s in slots])
        else:
            fresh = copy.deepcopy(net.inr)
            fresh.load_state_dict(initial)
            net.inr.copy_slots([(s, s) for s in slots], source=fresh)
        if cfg is not None and cfg.prefit and fit:
            records[net.blocks[block]] = prefit(net, slots, cfg.prefit_steps, cfg.prefit_lr, cfg.prefit_noise,
                                                cfg.seed * 1000 + 100 * stage + block, cfg.runtime.progress)
    return records


def train_morph(cfg: C.MorphConfig, smoothed_path: str | Path, out_dir: str | Path, resume: bool = True,
                on_epoch_end: Callable[[int, list[dict]], None] | None = None) -> MorphResult:
    """Train the metamorphic network of `cfg` on the smoothed prior, stage by stage, and write out_dir/metamorph.pt.

    Each stage checkpoints to out_dir/checkpoint_stage<k>.pt after every epoch; a rerun resumes where it stopped
    (a finished stage is reloaded, not retrained). `on_epoch_end(epoch, history)` sees the whole run's history."""
    out_dir = Path(out_dir)
    prior, record = load_smoothed(smoothed_path)
    device = pick_device(cfg.runtime.device)
    data = load_data_for(record["config"], device, cfg.batch_size, cfg.train_images, cfg.val_images, cfg.seed)
    generator = seed_everything(cfg.seed)
    net = metamorph.MetamorphicNet(prior, metamorph.blocks_for(prior, cfg.setting), cfg.inr, cfg.coordinate_noise,
                                   cfg.alpha_scaling, cfg.train_tail, cfg.alpha_init)
    net.inr.requires_grad_(cfg.train_inr)
    for gamma in {*metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size), *cfg.select_gammas, *cfg.gammas_eval}:
        net.widths(gamma)  # every γ this run will build is checked now, not after an epoch
    net.to(device)
    initial = {k: v.clone() for k, v in net.inr.state_dict().items()}  # each MLP's own initialisation
    net.set_active(1 if cfg.incremental else len(net.blocks))
    digest = permute.state_digest(prior)  # of the smoothed skeleton the INR is trained on
    base = {**{k: v for k, v in C.to_dict(cfg).items() if k not in ("runtime", "profile")}, "skeleton": digest}
    history, stages, seconds = [], [], 0.0
    plan = stage_plan(cfg, len(net.blocks))
    pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
    width_gammas = width_study_gammas(cfg)
    for stage, (active, epochs) in enumerate(tqdm(plan, desc=f"{cfg.method} stages", disable=not cfg.runtime.progress), 1):
        checkpoint = out_dir / f"checkpoint_stage{stage}.pt"
        _refuse_other_prior(checkpoint, digest, smoothed_path, resume)
        fitted = out_dir / f"prefit_stage{stage}.json"  # the pre-fit's record; its state lives in the checkpoint
        distilled = out_dir / f"blockwise_stage{stage}.pt"  # the distillation's checkpoint (INR state and record)
        later = checkpoint.exists() or (cfg.width_distillation and distilled.exists())  # a later phase has saved
        again = not (resume and later and fitted.exists())
        added = range(0 if stage == 1 else net.active, active)
        records = begin_stage(net, active, cfg.incremental and cfg.inr_init, initial, cfg, stage, again, added.start)
        probe = {}
        if cfg.size_features == "neutral" and again:
            # what the neutral size features change before any task training: validation accuracy at the selection
            # γ (K = 1) with the fitted INR as it is, then with the size features folded (notebook 07's evidence)
            look = lambda: evaluate_gammas(net, data, cfg.select_gammas, 1, "val", cfg.runtime, cfg.seed)
            probe["paper sizes"] = look() if cfg.prefit else None
            for block in added:
                net.inr.neutralise_sizes(block_slots(block))
            probe["neutral sizes"] = look() if cfg.prefit else None
        widths = {}  # the width study: each block's output error against the prior's per γ, after each phase
        probe_cache = blockwise.caches_for(net, data, cfg.blockwise, cfg.seed, train=False)[1] if cfg.train_inr else None
        if cfg.prefit and again:
            if probe_cache is not None:
                widths["after pre-fit"] = blockwise.width_errors(net, probe_cache, width_gammas)
            io.write_json({"blocks": records, "probe": probe, "widths": widths.get("after pre-fit")}, fitted)
        elif cfg.prefit:  # a resumed stage: the pre-fit ran before, its state is in the checkpoint, its record here
            saved = io.read_json(fitted, "pre-fit record")
            records, probe = saved["blocks"], saved["probe"]
            if saved.get("widths"):  # a record from before the width study has none
                widths["after pre-fit"] = saved["widths"]
        distill = None
        stage_print = {**base, "stage": stage, "active": active}
        if cfg.width_distillation and resume and checkpoint.exists():
            # the end-to-end phase has saved: its checkpoint holds the state, the distillation's file its record
            distill = blockwise.finished_record(distilled, cfg.blockwise, stage_print)
        elif cfg.width_distillation:
            train_cache = blockwise.caches_for(net, data, cfg.blockwise, cfg.seed, probe=False)[0]
            distill = blockwise.run(net, train_cache, probe_cache, cfg.blockwise, pool, cfg.coordinate_noise,
                                    cfg.seed * 1000 + stage, distilled, width_gammas, resume, cfg.runtime.progress,
                                    stage_print)
            del train_cache
        if distill is not None:
            widths["after distillation"] = distill["widths"][-1]["error"]
        task = MorphTask(net, cfg, stage)
        done = len(history)
        if cfg.end_to_end:
            optim = dataclasses.replace(cfg.optim, epochs=epochs,
                                        warmup_epochs=cfg.optim.warmup_epochs if stage == 1 else 0.0)
            fit = train.fit(task, data, optim, cfg.runtime, checkpoint, generator, resume,
                            stage_print, None if on_epoch_end is None else
                            (lambda epoch, rows: on_epoch_end(done + epoch, history + rows)),
                            desc=f"{cfg.method} stage {stage}/{len(plan)}", test_each_epoch=False)
            net.load_trainable(fit.best_state, "selected state")  # the next stage starts from this stage's selection
            rows, best, fit_seconds = fit.history, fit.best_epoch, fit.seconds
        else:  # the block-local phases only: one row with an epoch row's keys (no training values: None)
            val = task.evaluate(data, "val", cfg.runtime)
            rows = [{"epoch": 1, "loss": None, "train_accuracy": None, "val_accuracy": val["accuracy"], "val_loss": None,
                     "test_accuracy": None, "test_loss": None, "lr": 0.0, "seconds": 0.0, "images_per_second": None,
                     **{f"val_{k}": v for k, v in val.items() if k not in ("accuracy", "loss")}, **task.epoch_log()}]
            best, fit_seconds = 1, 0.0
        if probe_cache is not None:
            widths["after end-to-end" if cfg.end_to_end else "final"] = blockwise.width_errors(net, probe_cache,
                                                                                            width_gammas)
        history += [{**row, "run_epoch": done + i + 1} for i, row in enumerate(rows)]
        distill_seconds = distill["seconds"] if distill else 0.0
        seconds += fit_seconds + distill_seconds
        acc = evaluate_gammas(net, data, cfg.select_gammas, cfg.k_select, "test", cfg.runtime, cfg.seed)
        stages.append({"stage": stage, "blocks": net.active_blocks, "epochs": epochs if cfg.end_to_end else 0,
                       "best_epoch": best, "val_accuracy": rows[best - 1]["val_accuracy"], "test_accuracy": acc,
                       "alpha": net.alphas(), "seconds": fit_seconds, "prefit": records, "after_prefit": probe,
                       "prefit_seconds": sum(r["seconds"] for r in records.values()), "blockwise": distill,
                       "blockwise_seconds": distill_seconds, "widths": widths})
        seconds += sum(r["seconds"] for r in records.values())  # the pre-fit is training time too
    t0 = time.perf_counter()
    accuracy = evaluate_gammas(net, data, cfg.gammas_eval, cfg.k_samples, "test", cfg.runtime, cfg.seed)
    # K = 1 beside K (the null control never uses its INR: one network whatever K)
    single = accuracy if cfg.k_samples == 1 or not cfg.train_inr else evaluate_gammas(net, data, cfg.gammas_eval, 1,
                                                                                      "test", cfg.runtime)
    mixed = [{"gammas": mix, "accuracy": train.evaluate(net.export(mix, cfg.k_samples, cfg.seed), data, "test",
                                                        cfg.runtime)["accuracy"]}
             for mix in mixed_configurations(net.blocks, cfg.gamma_max, cfg.pool_size)] if cfg.train_inr else []
    prior_acc = train.evaluate(prior, data, "test", cfg.runtime)["accuracy"]
    net = net.to("cpu")
    metrics = {
        "accuracy": accuracy, "accuracy_k1": single, "k_samples": cfg.k_samples, "eval_noise": net.noise,
        "mixed": mixed,
        "kind": {metamorph.gamma_key(g): net.kind(g, pool) for g in cfg.gammas_eval},
        "cost": {metamorph.gamma_key(g): net.cost(g, data.input_shape) for g in cfg.gammas_eval},
        "widths": {metamorph.gamma_key(g): net.widths(g) for g in cfg.gammas_eval},
        "prior_accuracy": prior_acc, "val_accuracy": stages[-1]["val_accuracy"], "stages": stages,
        "alpha": net.alphas(), "epochs": sum(s["epochs"] for s in stages), "train_seconds": seconds,
        **({"budget": budget(cfg, len(net.blocks), len(data.splits["train"]))} if cfg.end_to_end else {}),
        "eval_seconds": time.perf_counter() - t0, "inr_parameters": models.count_parameters(net.inr),
        "generated_parameters": sum(t.numel() for t in net.prior_tensors().values()),
        "blocks": net.blocks, "pool": pool, "method": cfg.method, "ablation": cfg.ablation, "setting": cfg.setting,
        "switches": {k: getattr(cfg, k) for k in ("incremental", "alpha_scaling", "accumulate", "inr_init", "train_tail",
                                                   "train_inr", "alpha_init", "prefit", "size_features",
                                                   "end_to_end", "per_block_gammas", "sandwich", "width_distillation")}
        | {"disentangled": cfg.inr.disentangled, "reconstruction_kind": cfg.loss.reconstruction_kind},
    }
    path = net.save(out_dir / "metamorph.pt", config=C.to_dict(cfg), prior_config=record["config"],
                    dataset=data.name, input_shape=data.input_shape, skeleton_digest=digest, metrics=metrics,
                    provenance=provenance(device), smoothed=str(smoothed_path))
    return MorphResult(net.eval(), history, metrics, path)


def mixed_configurations(blocks: Sequence[str], gamma_max: float, pool_size: int) -> list[dict[str, float]]:
    """Networks whose blocks sit at different widths of the pool: pool points evenly spaced from 0 to gamma_max across
    the blocks, and their cyclic shifts (one per block; none for a single block or a one-point pool), so each block
    takes every one of them."""
    n, pool = len(blocks), metamorph.pool_gammas(gamma_max, pool_size)
    if n < 2 or len(pool) < 2:
        return []
    spread = [pool[round(i * (len(pool) - 1) / (n - 1))] for i in range(n)]  # pool points, 0 … gamma_max
    return [dict(zip(blocks, spread[k:] + spread[:k])) for k in range(n)]


def width_study_gammas(cfg: C.MorphConfig) -> list[float]:
    """The γ at which the width study measures each block's output error: those the run evaluates."""
    return sorted(set(cfg.gammas_eval))


def _refuse_other_prior(checkpoint: Path, digest: str, smoothed_path, resume: bool) -> None:
    """One sentence, before any work, when a checkpoint to resume was trained on another prior."""
    if resume and checkpoint.exists():
        saved = io.load_torch(checkpoint, "training checkpoint", train.RESTART).get("fingerprint") or {}
        if saved.get("skeleton") not in (None, digest):
            raise KitError(f"{checkpoint} was trained on another prior than {smoothed_path}; delete it (or pick another "
                           "output folder) to train on this prior.")


def load_data_for(prior_config: dict, device: str | torch.device = "cpu", batch_size: int | None = None,
                  train_images: int = 0, val_images: int = 0, seed: int = 0, test_images: int = 0) -> D.Data:
    """The prior's dataset with the prior's validation split and normalisation (its seed and limits), e.g. for
    record['prior_config'] of a metamorph.pt or record['config'] of a smoothed.pt. `train_images` / `val_images` /
    `test_images` > 0 keep a class-balanced subset of those splits (drawn with `seed`, in that order); test is
    whole by default (the γ explorer evaluates a fixed subset of it)."""
    prior_cfg = C.from_dict(C.PriorConfig, prior_config)
    values = C.to_dict(prior_cfg.data)
    if batch_size:
        values["batch_size"] = batch_size
    data = D.load(C.from_dict(C.DataConfig, values), pick_device(str(device)), prior_cfg.seed)
    generator = torch.Generator().manual_seed(seed)
    for split, keep in (("train", train_images), ("val", val_images), ("test", test_images)):
        full = data.splits[split]
        if keep and keep < len(full):
            idx = D.balanced_order(full.labels.cpu(), generator)[:keep].sort().values.to(full.labels.device)
            data.splits[split] = D.Split(full.images[idx], full.labels[idx])
    if data.num_batches("train") < 1 or len(data.splits["train"]) < data.cfg.batch_size:
        raise KitError(f"train_images = {train_images} is less than one batch of {data.cfg.batch_size}; raise it or "
                       "lower batch_size.")
    return data
