"""The baselines of paper 000 sec. 4.2 (notebook 04): individually trained networks and structured pruning.

**Individual.** For each γ, the prior's architecture with the metamorphic blocks' hidden widths set to h(γ)
(`kit.metamorph.width`, the width notebook 03 builds), trained from scratch by `kit.train.train_prior` with the
prior's own config (recipe, data, limits) — the one training loop, nothing copied. Its wall time is the "Train
Cost" of paper 000 Tables 1–2, where the Individual row sums it over the γ trained. γ = 0 is the prior itself
(same architecture, recipe and seed), so it is read from notebook 01, not retrained.

**Pruning.** `kit.prune` scores the blocks' hidden channels once per criterion (random, L1, L2, Taylor, Hessian)
on the prior, then cuts them to h(γ) for every γ, without fine-tuning as the papers report; with
`finetune_epochs` > 0 each pruned network is also fine-tuned by the shared loop (SGD, cosine, no warm-up).

**Slimmable.** `kit.slimmable`: the prior's blocks made slimmable in their hidden width (channels ordered by
`slimmable.order`'s scores, the same scores pruning uses), trained with the sandwich rule and in-place distillation
on HTTY's budget, BN recalibrated per width; one network, evaluated at every γ ≥ 0 of `slimmable.gammas`.

Every result is a row of one tidy table (`FIELDS`: one row per method × γ × seed). Rows are kept in
out_dir/rows.json, written atomically after each one, each with a fingerprint of what produced it, so an
interrupted notebook resumes and a changed setting recomputes exactly the rows it affects.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch.nn as nn
from tqdm.auto import tqdm

from kit import config as C
from kit import data as D
from kit import io, metamorph, models, permute, prune, slimmable, train
from kit.errors import KitError
from kit.runtime import pick_device, provenance, seed_everything

FIELDS = ("method", "family", "criterion", "finetuned", "gamma", "seed", "accuracy", "parameters", "macs",
          "train_seconds", "widths")  # the tidy CSV's columns
# family: 'individual', 'pruning' or 'slimmable'; train_seconds: training (individual; slimmable: its one training,
# the same on each of its rows) or fine-tuning (pruning) wall time


def reference_widths(prior: models.ResNet) -> dict[str, int]:
    """{block: hidden width} of every block of the prior."""
    return {name: block.hidden for name, block in prior.blocks()}


def individual_config(prior_cfg: C.PriorConfig, prior: models.ResNet, blocks: list[str], gamma: float,
                      seed: int) -> C.PriorConfig:
    """The prior's config with `blocks` at hidden width h(γ) and `seed`: the recipe of one individual network."""
    widths = reference_widths(prior)
    hidden = {b: metamorph.width(gamma, widths[b]) for b in blocks}
    return dataclasses.replace(prior_cfg, seed=seed, model=dataclasses.replace(prior_cfg.model, hidden=hidden))


def prior_row(record: dict, prior: models.ResNet, blocks: list[str]) -> dict:
    """The γ = 0 row of the Individual baseline: the prior of notebook 01 (`prior`, its prior.pt `record`)."""
    m, widths = record["metrics"], reference_widths(prior)
    return _row("individual", "individual", "", False, 0.0, record["config"]["seed"], m["test_accuracy"],
                m["parameters"], m["macs"], m["seconds"], {b: widths[b] for b in blocks})


def train_individual(prior_cfg: C.PriorConfig, prior: models.ResNet, blocks: list[str], gamma: float, seed: int,
                     out_dir: str | Path, tag: str = "") -> dict:
    """Train (or resume, or reload when finished) the individual network at γ into out_dir/individual-γ<tag>/
    (tag: '-s<seed>' when several seeds share out_dir)."""
    cfg = individual_config(prior_cfg, prior, blocks, gamma, seed)
    name = f"individual-{metamorph.gamma_key(gamma)}{tag}"
    result = train.train_prior(cfg, Path(out_dir) / name, desc=name)
    m = result.metrics
    return _row("individual", "individual", "", False, gamma, seed, m["test_accuracy"], m["parameters"], m["macs"],
                m["seconds"], dict(cfg.model.hidden))


def prune_rows(prior: models.ResNet, prior_cfg: C.PriorConfig, cfg: C.BaselineConfig, blocks: list[str],
               data: D.Data, out_dir: str | Path, done: dict[str, dict] | None = None,
               on_row=None) -> list[dict]:
    """Rows of every criterion × γ of `cfg` (and their fine-tuned versions when cfg.finetune_epochs > 0) for the
    prior (with BatchNorm, as notebook 01 wrote it). `done` maps row keys to rows already computed with the same
    fingerprint (they are reused); `on_row(key, row)` is called after each new row, e.g. to save it."""
    done, rows = done or {}, []
    device = pick_device(cfg.runtime.device)
    images = labels = finetune_data = None  # loaded at the first row not already done
    todo = [(c, g) for c in cfg.criteria for g in cfg.prune_gammas]
    bar = tqdm(todo, desc="pruning", disable=not cfg.runtime.progress)
    fingerprint = prune.score_fingerprint(prior, blocks, cfg.calibration_images, cfg.seed)
    scores = prune.saved_scores(out_dir, fingerprint)  # {criterion: {block: (hidden,)}}, kept in out_dir/scores-s<seed>.pt
    for criterion, gamma in bar:
        tuned = cfg.finetune_epochs and (not cfg.finetune_criteria or criterion in cfg.finetune_criteria)
        for finetuned in (False, True) if tuned else (False,):
            key = row_key(f"prune-{criterion}" + ("+ft" if finetuned else ""), gamma, cfg.seed)
            if key in done:
                rows.append(done[key])
                continue
            if images is None:
                images, labels = D.calibration(data, cfg.calibration_images, cfg.seed)
            if criterion not in scores:  # once per criterion: scores do not depend on γ
                scores[criterion] = prune.block_scores(prior.to(device), blocks, criterion, images, labels, cfg.seed)
                prune.save_scores(out_dir, fingerprint, scores)
            model = prune.prune_to(prior, scores[criterion], gamma, images)
            seconds = 0.0
            if finetuned:
                if finetune_data is None:
                    finetune_data = D.for_prior(C.to_dict(prior_cfg), device, None, cfg.finetune_images, 0, cfg.seed)
                model, seconds = finetune(model, finetune_data, cfg, Path(out_dir) / "finetune" / f"{key}.pt")
            accuracy = train.evaluate(model, data, "test", cfg.runtime)["accuracy"]
            model = model.to("cpu")
            row = _row(key.split("@")[0], "pruning", criterion, finetuned, gamma, cfg.seed, accuracy,
                       **models.cost(model, data.input_shape), train_seconds=seconds,
                       widths={b: model.get_submodule(b).hidden for b in blocks})
            rows.append(row)
            if on_row is not None:
                on_row(key, row)
    return rows


def slimmable_rows(prior: models.ResNet, record: dict, prior_cfg: C.PriorConfig, cfg: C.BaselineConfig,
                   blocks: list[str], data: D.Data, out_dir: str | Path) -> tuple[list[dict], dict]:
    """(rows at every γ of cfg.slimmable.gammas, what the run recorded) of the slimmable network of cfg.seed: trained
    (or resumed, or reloaded when finished) in `slimmable.folder(out_dir, seed, seeds)`. `data` is the prior's
    dataset (calibration images are drawn from its whole training split, as the γ explorer draws them)."""
    s, seed = cfg.slimmable, cfg.seed
    folder = slimmable.folder(out_dir, seed, cfg.seeds)
    fingerprint = {"prior": permute.state_digest(prior), "blocks": list(blocks), "seed": seed,
                   "scores": prune.score_fingerprint(prior, blocks, cfg.calibration_images, seed),
                   "slimmable": C.to_dict(s), "data": C.to_dict(prior_cfg.data)}
    store, keys = RowStore(folder, fingerprint), [row_key("slimmable", g, seed) for g in s.gammas]
    if all(k in store.rows for k in keys) and (folder / "slimmable.pt").is_file():
        return [store.rows[k] for k in keys], io.read_json(folder / "metrics.json", "metrics")
    device = pick_device(cfg.runtime.device)
    images, labels = D.calibration(data, cfg.calibration_images, seed)
    scores = prune.saved_scores(out_dir, fingerprint["scores"])
    if s.order not in scores:
        scores[s.order] = prune.block_scores(prior.to(device), blocks, s.order, images, labels, seed)
    start = slimmable.ordered(prior, scores[s.order])
    net = slimmable.SlimmableNet(start, blocks)
    train_data = D.for_prior(C.to_dict(prior_cfg), device, s.batch_size, s.train_images, s.val_images, seed)
    calib = D.calibration(data, s.calibration_images, seed)[0]
    task = slimmable.SlimmableTask(net, s, seed, calib)
    result = train.fit(task, train_data, s.optim, cfg.runtime, folder / "checkpoint.pt", seed_everything(seed), True,
                       fingerprint, desc=folder.name, test_each_epoch=False)
    net.load_state_dict(result.best_state)
    rows = []
    for gamma, key in zip(s.gammas, keys):
        net.calibrate(gamma, calib, s.batch_size)
        accuracy = train.evaluate(net, data, "test", cfg.runtime)["accuracy"]
        rows.append(_row("slimmable", "slimmable", s.order, False, gamma, seed, accuracy,
                         **models.cost(net.export(gamma).to("cpu"), data.input_shape), train_seconds=result.seconds,
                         widths=net.widths(gamma)))
    folded = models.fold_bn(start).state_dict()
    metrics = {"seed": seed, **slimmable.budget(s, len(train_data.splits["train"])), "train_seconds": result.seconds,
               "best_epoch": result.best_epoch, "history": result.history, "order": s.order,
               "accuracy": {metamorph.gamma_key(r["gamma"]): r["accuracy"] for r in rows}}
    net.to("cpu").save(folder / "slimmable.pt", config=C.to_dict(s), baseline_config=C.to_dict(cfg),
                       prior_config=record["config"], dataset=data.name, input_shape=list(data.input_shape),
                       calibration={"images": s.calibration_images, "seed": seed, "batch_size": s.batch_size},
                       prior_tensors={f"{b}.{c}.weight": folded[f"{b}.{c}.weight"] for b in blocks
                                      for c in ("conv1", "conv2")},
                       metrics=metrics, provenance=provenance(device))
    io.write_json(metrics, folder / "metrics.json")
    for key, row in zip(keys, rows):
        store.add(key, row)
    return rows, metrics


def slimmable_records(out_dir: str | Path) -> list[dict]:
    """What each slimmable network of notebook 04 recorded (seed, budget, training seconds, best epoch, accuracy per
    γ), without its epoch history; [] when none was trained."""
    folders = sorted(Path(out_dir).glob("slimmable*/metrics.json"))
    return [{k: v for k, v in io.read_json(f, "metrics").items() if k != "history"} for f in folders]


def budgets(out_dir: str | Path, run_dir: str | Path | None) -> list[dict]:
    """The training budget of every slimmable network of `out_dir` beside the metamorphic runs' of `run_dir` (their
    task phase on the one loop; the pre-fit and the cached-activation distillation use no images of their own):
    one row each with its optimiser steps, images drawn, width passes and wall time."""
    from kit import results
    rows = [{"run": f"slimmable (seed {r['seed']})", "steps": r["steps"], "images": r["images"],
             "width passes": r["width_passes"], "train seconds": round(r["train_seconds"], 1)}
            for r in slimmable_records(out_dir)]
    for key, m in results.runs_of(run_dir).items():
        if "budget" in m and not results.is_null(m):
            rows.append({"run": f"{key} (notebook 03)", "steps": m["budget"]["steps"], "images": m["budget"]["images"],
                         "width passes": m["budget"]["images"], "train seconds": round(m["train_seconds"], 1)})
    return rows


def finetune(model: nn.Module, data: D.Data, cfg: C.BaselineConfig, checkpoint: Path) -> tuple[nn.Module, float]:
    """(the fine-tuned network selected on validation, seconds): cfg.finetune_epochs of SGD from cfg.finetune_lr
    down a cosine to 0, through the shared loop (resumable from `checkpoint`)."""
    optim = C.OptimConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, warmup_epochs=0.0)
    model = copy.deepcopy(model)
    fingerprint = {"arch": model.arch, "optim": C.to_dict(optim), "images": cfg.finetune_images, "seed": cfg.seed,
                   "start": permute.state_digest(model)}
    result = train.fit(train.ClassifierTask(model), data, optim, cfg.runtime, checkpoint, seed_everything(cfg.seed),
                       True, fingerprint, desc=checkpoint.stem, test_each_epoch=False)
    model.load_state_dict(result.best_state)
    return model.eval(), result.seconds


def row_key(method: str, gamma: float, seed: int) -> str:
    return f"{method}@{metamorph.gamma_key(gamma)}#s{seed}"


def _row(method, family, criterion, finetuned, gamma, seed, accuracy, parameters, macs, train_seconds, widths) -> dict:
    return dict(zip(FIELDS, (method, family, criterion, finetuned, float(gamma), seed, accuracy, parameters, macs,
                             train_seconds, widths)))


class RowStore:
    """out_dir/rows.json: finished rows with the fingerprint of what produced them (written after every row)."""

    def __init__(self, out_dir: str | Path, fingerprint: dict):
        self.path, self.fingerprint = Path(out_dir) / "rows.json", json.loads(json.dumps(fingerprint))  # as read back
        saved = io.read_json(self.path) if self.path.is_file() else {}
        self.rows: dict[str, dict] = saved.get("rows", {}) if saved.get("fingerprint") == self.fingerprint else {}

    def add(self, key: str, row: dict) -> None:
        self.rows[key] = row
        io.write_json({"fingerprint": self.fingerprint, "rows": self.rows}, self.path)


def run(cfg: C.BaselineConfig, prior_path: str | Path, out_dir: str | Path) -> list[dict]:
    """Every row of notebook 04: the prior (γ = 0), the individual networks, then pruning; resumable."""
    out_dir = Path(out_dir)
    prior, record = train.load_prior(prior_path)
    prior_cfg = C.from_dict(C.PriorConfig, record["config"])
    prior_cfg = dataclasses.replace(prior_cfg, runtime=cfg.runtime)
    blocks = metamorph.blocks_for(prior, cfg.setting)
    widths = reference_widths(prior)
    for gamma in {*cfg.individual_gammas, *cfg.prune_gammas}:
        for b in blocks:
            metamorph.width(gamma, widths[b])  # every γ is checked before any work
    if any(record["config"]["model"].get("hidden", {}).values()):
        raise KitError(f"{prior_path} already has custom hidden widths; point notebook 04 at the prior of notebook 01.")
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    tag = (lambda s: f"-s{s}") if cfg.seeds > 1 else (lambda s: "")
    rows = [prior_row(record, prior, blocks)]  # the prior is trained once, whatever the number of seeds
    todo = [(s, g) for s in seeds for g in cfg.individual_gammas]
    for seed, gamma in tqdm(todo, desc="individual", disable=not cfg.runtime.progress):
        rows.append(train_individual(prior_cfg, prior, blocks, gamma, seed, out_dir, tag(seed)))
    data = D.load(prior_cfg.data, pick_device(cfg.runtime.device), prior_cfg.seed)
    fingerprint = {"prior": permute.state_digest(prior), "blocks": blocks, "calibration_images": cfg.calibration_images,
                   "finetune": [cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_images]}
    store = RowStore(out_dir, fingerprint)  # row keys carry the seed: one store holds every seed's rows
    for seed in seeds:
        rows += prune_rows(prior, prior_cfg, dataclasses.replace(cfg, seed=seed), blocks, data, out_dir,
                           store.rows, store.add)
    for seed in seeds if cfg.slimmable.train else ():
        rows += slimmable_rows(prior, record, prior_cfg, dataclasses.replace(cfg, seed=seed), blocks, data,
                               out_dir)[0]
    return rows


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """The tidy CSV of `rows` (FIELDS as columns; widths as JSON), written atomically."""
    return io.write_csv([{**{k: r[k] for k in FIELDS}, "widths": json.dumps(r["widths"])} for r in rows], path)
