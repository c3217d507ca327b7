"""A metamorphic training run: HTTY (paper 000 sec. 3) and NeuMeta (paper 002 sec. 3.4), the null control and the
kit's recipes, stage by stage, each a set of switches of `MorphConfig` (`config.METHOD_SWITCHES`); NeuMeta is HTTY
with every component switched off. The loss of one configuration is `kit.morphtask.MorphTask`'s.

`train_morph` reads top to bottom as its steps: `prepare` (the smoothed prior, its data, the metamorphic network),
then per stage `generate` (the stage's new blocks start generated: INR initialisation, the pre-fit, the neutral size
features), `distill` (block-wise width distillation on cached activations) and `end_to_end` (the task on the kit's
one loop), then `evaluate` and `save`. HTTY's components:
  - incremental (sec. 3.1): one stage per metamorphic block, in forward order; stage k generates blocks 1…k and
    fine-tunes the earlier blocks' INRs with the new one; a non-incremental run is one stage of blocks × epochs;
  - α-scaling (sec. 3.2): generated blocks are `metamorph.ScaledBlock`s with a learnable α, 0 at the start;
  - INR initialisation (sec. 3.3): stage k's new MLPs start as copies of block k−1's final ones;
  - gradient accumulation (sec. 3.4) and disentangled biases (sec. 3.5): `kit.morphtask`, `kit.inr`;
  - the tail (sec. 3.1): the final block (unless generated) and the classifier, trained directly for every γ.
The kit's own switches: the pre-fit (`kit.prefit`: a block's INRs fitted to the prior's tensors when the block joins),
neutral size features (`WeightINR.neutralise_sizes`), α starting at `alpha_init`, `train_inr=False` (the null
control: only the tail trains, on HTTY's tail budget) and `width_distillation` (`kit.blockwise`: after a stage's
pre-fit, every block at several widths per step against the prior block's output); `end_to_end=False` keeps only
the block-local phases.
AdamW, warm-up (first stage) then constant, gradient clipping by norm, an EMA of every trained tensor. After each
epoch the EMA state is validated at `select_gammas` (K = k_select) on the validation split (never on test, which the
reference code selected on); each stage continues from the previous stage's selected state, and after each stage the
test accuracy at `select_gammas` is recorded (the block-count curve of Fig. 4). The final test evaluation averages
K = k_samples generations at every γ of `gammas_eval`, at the coordinate noise the INR was trained with, and reports
K = 1 beside it; with several blocks, it also evaluates networks whose blocks sit at different pool widths
(`mixed_configurations`); each stage records the width study (every block's output error against the prior's per γ,
after each phase). Every phase checkpoints and a rerun resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from kit import config as C
from kit import data as D
from kit import blockwise, io, metamorph, models, permute, train
from kit.errors import KitError
from kit.morphtask import MorphTask, evaluate_gammas
from kit.prefit import prefit
from kit.runtime import pick_device, provenance, seed_everything


@dataclass
class MorphResult:
    net: metamorph.MetamorphicNet  # with the selected (best validation) EMA weights, on the CPU
    history: list[dict]
    metrics: dict  # accuracy {γ: test accuracy}, kinds, costs, prior accuracy, train_seconds, inr_parameters, …
    checkpoint: Path  # metamorph.pt


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


def activate(net: metamorph.MetamorphicNet, active: int, inr_init: bool, initial: dict[str, torch.Tensor],
             start: int | None = None) -> range:
    """Make the first `active` blocks generated and initialise the MLPs of those new to generation, `start` …
    active − 1 (default: from the currently active count; a run's first stage passes 0, since its first blocks are
    active from the start and hold their own initial weights). A new block's MLPs start as copies of its
    predecessor's (INR initialisation, paper 000 sec. 3.3), else from their own initial weights `initial` (an INR
    state_dict). Returns the new blocks' numbers (0-based)."""
    added = range(net.active if start is None else start, active)
    net.set_active(active)
    for block in added:
        slots = metamorph.block_slots(block)
        if inr_init and block > 0:
            net.inr.copy_slots([(s - metamorph.SLOTS_PER_BLOCK, s) for s in slots])  # the predecessor's same part
        else:
            fresh = copy.deepcopy(net.inr)
            fresh.load_state_dict(initial)
            net.inr.copy_slots([(s, s) for s in slots], source=fresh)
    return added


def prefit_blocks(net: metamorph.MetamorphicNet, blocks: Sequence[int], cfg: C.MorphConfig, stage: int) -> dict:
    """The pre-fit (`kit.prefit`) of each of `blocks` (0-based) in turn, each with its own seed: {block: record}."""
    return {net.blocks[b]: prefit(net, metamorph.block_slots(b), cfg.prefit_steps, cfg.prefit_lr, cfg.prefit_noise,
                                  cfg.seed * 1000 + 100 * stage + b, cfg.runtime.progress) for b in blocks}


@dataclass
class Run:
    """What every step of one `train_morph` shares: its inputs, the network, and what the stages have recorded."""

    cfg: C.MorphConfig
    smoothed_path: Path
    out_dir: Path
    resume: bool
    prior: models.ResNet  # the smoothed, BN-folded prior (the skeleton)
    record: dict  # smoothed.pt's record (the prior's config, dataset, …)
    device: torch.device
    data: D.Data
    generator: torch.Generator  # the loop's data order and augmentation, carried across stages
    net: metamorph.MetamorphicNet
    initial: dict[str, torch.Tensor]  # each MLP's own initialisation (a new block without INR initialisation)
    digest: str  # of the smoothed skeleton the INR is trained on: a checkpoint of another prior is refused
    pool: list[float]  # the training pool's γ
    width_gammas: list[float]  # where the width study measures every block
    plan: list[tuple[int, int]]  # (active blocks, epochs) per stage: `stage_plan`
    history: list[dict] = field(default_factory=list)  # every epoch of every stage
    stages: list[dict] = field(default_factory=list)  # one record per stage
    seconds: float = 0.0  # training time: pre-fit, distillation and end-to-end phases

    def checkpoint(self, stage: int) -> Path:
        """The end-to-end phase's checkpoint of a stage (every epoch; a finished stage's state)."""
        return self.out_dir / f"checkpoint_stage{stage}.pt"

    def distillation(self, stage: int) -> Path:
        """The width distillation's checkpoint and record of a stage."""
        return self.out_dir / f"blockwise_stage{stage}.pt"

    def prefit_file(self, stage: int) -> Path:
        """The pre-fit's record of a stage (its state lives in the later phases' checkpoints)."""
        return self.out_dir / f"prefit_stage{stage}.json"

    def fingerprint(self, stage: int, active: int) -> dict:
        """What a stage's checkpoints must have been written with to be resumed (the config, the skeleton, the stage)."""
        base = {k: v for k, v in C.to_dict(self.cfg).items() if k not in ("runtime", "profile")}
        return {**base, "skeleton": self.digest, "stage": stage, "active": active}


def prepare(cfg: C.MorphConfig, smoothed_path: str | Path, out_dir: str | Path, resume: bool) -> Run:
    """The smoothed prior, its dataset, and the metamorphic network of `cfg` on the device, its first stage's blocks
    active; every γ the run will build is checked now, not after an epoch."""
    prior, record = permute.load_smoothed(smoothed_path)
    device = pick_device(cfg.runtime.device)
    data = D.for_prior(record["config"], device, cfg.batch_size, cfg.train_images, cfg.val_images, cfg.seed)
    generator = seed_everything(cfg.seed)
    net = metamorph.MetamorphicNet(prior, metamorph.blocks_for(prior, cfg.setting), cfg.inr, cfg.coordinate_noise,
                                   cfg.alpha_scaling, cfg.train_tail, cfg.alpha_init)
    net.inr.requires_grad_(cfg.train_inr)
    pool = metamorph.pool_gammas(cfg.gamma_max, cfg.pool_size)
    for gamma in {*pool, *cfg.select_gammas, *cfg.gammas_eval}:
        net.widths(gamma)
    net.to(device)
    initial = {k: v.clone() for k, v in net.inr.state_dict().items()}
    net.set_active(1 if cfg.incremental else len(net.blocks))
    return Run(cfg, Path(smoothed_path), Path(out_dir), resume, prior, record, device, data, generator, net, initial,
               permute.state_digest(prior), pool, width_study_gammas(cfg), stage_plan(cfg, len(net.blocks)))


def generate(run: Run, stage: int, active: int) -> tuple[dict, dict, bool]:
    """Stage `stage`'s new blocks become generated (`activate`); with the pre-fit they are fitted to the prior's
    tensors, unless a resumed stage's later phase has already saved (which holds that state). Returns (the pre-fit
    records, the neutral-size probe, whether the pre-fit ran now)."""
    cfg, net = run.cfg, run.net
    later = run.checkpoint(stage).exists() or (cfg.width_distillation and run.distillation(stage).exists())
    again = not (run.resume and later and run.prefit_file(stage).exists())  # the pre-fit's work is due
    added = activate(net, active, cfg.incremental and cfg.inr_init, run.initial, 0 if stage == 1 else None)
    records = prefit_blocks(net, added, cfg, stage) if cfg.prefit and again else {}
    probe = {}
    if cfg.size_features == "neutral" and again:
        # what the neutral size features change before any task training: validation accuracy at the selection
        # γ (K = 1) with the fitted INR as it is, then with the size features folded (notebook 07's evidence)
        look = lambda: evaluate_gammas(net, run.data, cfg.select_gammas, 1, "val", cfg.runtime, cfg.seed)
        probe["paper sizes"] = look() if cfg.prefit else None
        for block in added:
            net.inr.neutralise_sizes(metamorph.block_slots(block))
        probe["neutral sizes"] = look() if cfg.prefit else None
    return records, probe, again


def prefit_record(run: Run, stage: int, records: dict, probe: dict, fitted_now: bool,
                  probe_cache) -> tuple[dict, dict, dict]:
    """The pre-fit's record in out_dir/prefit_stage<k>.json: written with the width study after the pre-fit when it
    ran now, read back in a resumed stage. Returns (the records, the probe, the width study so far)."""
    cfg, fitted, widths = run.cfg, run.prefit_file(stage), {}
    if cfg.prefit and fitted_now:
        if probe_cache is not None:
            widths["after pre-fit"] = blockwise.width_errors(run.net, probe_cache, run.width_gammas)
        io.write_json({"blocks": records, "probe": probe, "widths": widths.get("after pre-fit")}, fitted)
    elif cfg.prefit:  # a resumed stage: the pre-fit ran before, its state is in the checkpoint, its record here
        saved = io.read_json(fitted, "pre-fit record")
        records, probe = saved["blocks"], saved["probe"]
        if saved.get("widths"):  # a record from before the width study has none
            widths["after pre-fit"] = saved["widths"]
    return records, probe, widths


def distill(run: Run, stage: int, active: int, probe_cache) -> dict | None:
    """Block-wise width distillation of the stage's generated blocks (`kit.blockwise.run`), or the record of a resumed
    stage whose end-to-end phase has saved; None when the recipe has no such phase."""
    cfg, distilled = run.cfg, run.distillation(stage)
    if not cfg.width_distillation:
        return None
    if run.resume and run.checkpoint(stage).exists():
        return blockwise.finished_record(distilled, cfg.blockwise, run.fingerprint(stage, active))
    train_cache = blockwise.caches_for(run.net, run.data, cfg.blockwise, cfg.seed, probe=False)[0]
    return blockwise.run(run.net, train_cache, probe_cache, cfg.blockwise, run.pool, cfg.coordinate_noise,
                         cfg.seed * 1000 + stage, distilled, run.width_gammas, run.resume, cfg.runtime.progress,
                         run.fingerprint(stage, active))


def end_to_end(run: Run, stage: int, active: int, epochs: int, on_epoch_end) -> tuple[list[dict], int, float]:
    """The stage's task phase on the kit's one loop, then the selected state loaded: (its epoch rows, the selected
    epoch, seconds). Without the phase (`end_to_end=False`), one row with an epoch row's keys, validation only."""
    cfg, net, done = run.cfg, run.net, len(run.history)
    task = MorphTask(net, cfg, stage)
    if not cfg.end_to_end:
        val = task.evaluate(run.data, "val", cfg.runtime)
        return [{"epoch": 1, "loss": None, "train_accuracy": None, "val_accuracy": val["accuracy"], "val_loss": None,
                 "test_accuracy": None, "test_loss": None, "lr": 0.0, "seconds": 0.0, "images_per_second": None,
                 **{f"val_{k}": v for k, v in val.items() if k not in ("accuracy", "loss")}, **task.epoch_log()}], 1, 0.0
    optim = dataclasses.replace(cfg.optim, epochs=epochs, warmup_epochs=cfg.optim.warmup_epochs if stage == 1 else 0.0)
    fit = train.fit(task, run.data, optim, cfg.runtime, run.checkpoint(stage), run.generator, run.resume,
                    run.fingerprint(stage, active), None if on_epoch_end is None else
                    (lambda epoch, rows: on_epoch_end(done + epoch, run.history + rows)),
                    desc=f"{cfg.method} stage {stage}/{len(run.plan)}", test_each_epoch=False)
    net.load_trainable(fit.best_state, "selected state")  # the next stage starts from this stage's selection
    return fit.history, fit.best_epoch, fit.seconds


def train_stage(run: Run, stage: int, active: int, epochs: int, on_epoch_end=None) -> None:
    """One stage, phase after phase, appended to the run's history and stage records."""
    cfg, net = run.cfg, run.net
    _refuse_other_prior(run.checkpoint(stage), run.digest, run.smoothed_path, run.resume)
    records, probe, fitted_now = generate(run, stage, active)
    probe_cache = blockwise.caches_for(net, run.data, cfg.blockwise, cfg.seed, train=False)[1] \
        if cfg.train_inr else None  # every active block's validation inputs and outputs: the width study's
    records, probe, widths = prefit_record(run, stage, records, probe, fitted_now, probe_cache)
    distilled = distill(run, stage, active, probe_cache)
    if distilled is not None:
        widths["after distillation"] = distilled["widths"][-1]["error"]
    done = len(run.history)
    rows, best, fit_seconds = end_to_end(run, stage, active, epochs, on_epoch_end)
    if probe_cache is not None:
        widths["after end-to-end" if cfg.end_to_end else "final"] = blockwise.width_errors(net, probe_cache,
                                                                                        run.width_gammas)
    run.history += [{**row, "run_epoch": done + i + 1} for i, row in enumerate(rows)]
    distill_seconds = distilled["seconds"] if distilled else 0.0
    prefit_seconds = sum(r["seconds"] for r in records.values())
    run.seconds += fit_seconds + distill_seconds
    acc = evaluate_gammas(net, run.data, cfg.select_gammas, cfg.k_select, "test", cfg.runtime, cfg.seed)
    run.stages.append({"stage": stage, "blocks": net.active_blocks, "epochs": epochs if cfg.end_to_end else 0,
                       "best_epoch": best, "val_accuracy": rows[best - 1]["val_accuracy"], "test_accuracy": acc,
                       "alpha": net.alphas(), "seconds": fit_seconds, "prefit": records, "after_prefit": probe,
                       "prefit_seconds": prefit_seconds, "blockwise": distilled,
                       "blockwise_seconds": distill_seconds, "widths": widths})
    run.seconds += prefit_seconds  # the pre-fit is training time too


SWITCHES = ("incremental", "alpha_scaling", "accumulate", "inr_init", "train_tail", "train_inr", "alpha_init", "prefit",
            "size_features", "end_to_end", "per_block_gammas", "sandwich", "width_distillation")  # recorded per run


def evaluate(run: Run) -> dict:
    """The run's metrics: test accuracy at every γ of `gammas_eval` (K = k_samples and K = 1), the mixed-width
    networks, kinds, costs and widths, the stages, the budget and the switches."""
    cfg, net, data = run.cfg, run.net, run.data
    t0 = time.perf_counter()
    accuracy = evaluate_gammas(net, data, cfg.gammas_eval, cfg.k_samples, "test", cfg.runtime, cfg.seed)
    # K = 1 beside K (the null control never uses its INR: one network whatever K)
    single = accuracy if cfg.k_samples == 1 or not cfg.train_inr else evaluate_gammas(net, data, cfg.gammas_eval, 1,
                                                                                      "test", cfg.runtime)
    mixed = [{"gammas": mix, "accuracy": train.evaluate(net.export(mix, cfg.k_samples, cfg.seed), data, "test",
                                                        cfg.runtime)["accuracy"]}
             for mix in mixed_configurations(net.blocks, cfg.gamma_max, cfg.pool_size)] if cfg.train_inr else []
    prior_acc = train.evaluate(run.prior, data, "test", cfg.runtime)["accuracy"]
    net = run.net = net.to("cpu")
    return {
        "accuracy": accuracy, "accuracy_k1": single, "k_samples": cfg.k_samples, "eval_noise": net.noise,
        "mixed": mixed,
        "kind": {metamorph.gamma_key(g): net.kind(g, run.pool) for g in cfg.gammas_eval},
        "cost": {metamorph.gamma_key(g): net.cost(g, data.input_shape) for g in cfg.gammas_eval},
        "widths": {metamorph.gamma_key(g): net.widths(g) for g in cfg.gammas_eval},
        "prior_accuracy": prior_acc, "val_accuracy": run.stages[-1]["val_accuracy"], "stages": run.stages,
        "alpha": net.alphas(), "epochs": sum(s["epochs"] for s in run.stages), "train_seconds": run.seconds,
        **({"budget": budget(cfg, len(net.blocks), len(data.splits["train"]))} if cfg.end_to_end else {}),
        "eval_seconds": time.perf_counter() - t0, "inr_parameters": models.count_parameters(net.inr),
        "generated_parameters": sum(t.numel() for t in net.prior_tensors().values()),
        "blocks": net.blocks, "pool": run.pool, "method": cfg.method, "ablation": cfg.ablation, "setting": cfg.setting,
        "switches": {k: getattr(cfg, k) for k in SWITCHES}
        | {"disentangled": cfg.inr.disentangled, "reconstruction_kind": cfg.loss.reconstruction_kind},
    }


def save(run: Run, metrics: dict) -> MorphResult:
    """out_dir/metamorph.pt: the network with its config, the prior's config, the metrics and the provenance."""
    path = run.net.save(run.out_dir / "metamorph.pt", config=C.to_dict(run.cfg), prior_config=run.record["config"],
                        dataset=run.data.name, input_shape=run.data.input_shape, skeleton_digest=run.digest,
                        metrics=metrics, provenance=provenance(run.device), smoothed=str(run.smoothed_path))
    return MorphResult(run.net.eval(), run.history, metrics, path)


def train_morph(cfg: C.MorphConfig, smoothed_path: str | Path, out_dir: str | Path, resume: bool = True,
                on_epoch_end: Callable[[int, list[dict]], None] | None = None) -> MorphResult:
    """Train the metamorphic network of `cfg` on the smoothed prior, stage by stage, and write out_dir/metamorph.pt.

    Each stage checkpoints to out_dir/checkpoint_stage<k>.pt after every epoch; a rerun resumes where it stopped
    (a finished stage is reloaded, not retrained). `on_epoch_end(epoch, history)` sees the whole run's history."""
    run = prepare(cfg, smoothed_path, out_dir, resume)
    for stage, (active, epochs) in enumerate(tqdm(run.plan, desc=f"{cfg.method} stages",
                                                  disable=not cfg.runtime.progress), 1):
        train_stage(run, stage, active, epochs, on_epoch_end)
    return save(run, evaluate(run))


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
