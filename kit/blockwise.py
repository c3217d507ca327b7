"""Block-wise width distillation: every generated block, at several widths per step, trained to reproduce the prior
block's output on inputs cached from the frozen prior.

Why: a metamorphic network trained end to end sees each width only through the whole network's loss, a few hundred
steps for all widths together, and HTTY's γ ≠ 0 configurations (paper 000 sec. 3.4) carry no direct signal about
what a block at that width should compute. Here the target is explicit: the prior block B* maps its input x to
B*(x), and the generated block B_h of hidden width h should too. With x taken from the prior itself, the blocks are
independent problems (no error compounds from one generated block into the next), every step can train each block
at several widths, and a configuration costs one generation of the INR plus the generated blocks' convolutions,
not a whole network's forward and backward pass. It is
the block-local form of the in-place distillation of slimmable networks (Yu & Huang, ICCV 2019: narrower widths
learn from the widest one, here from the prior), and of knowledge distillation's hint losses.

Per step (`BlockwiseConfig`): a batch of cached inputs; `configurations` sets of widths: the first at γ = 0 (the prior's
width, where the relative reconstruction ‖W − W*‖² / ‖W*‖² also acts, paper 002 eq. 9's role), with `sandwich` one
at the pool's largest γ (the smallest width), the rest drawn from the pool, independently per block with `per_block`
(so blocks of different widths compose, as the explorer's per-block sliders allow). The loss of a block is
mean‖B_h(x) − B*(x)‖² divided by the mean energy of the prior block's residual branch on the cache: 1 means "as
wrong as leaving the branch out", the same scale for every block. Adam on every INR parameter with a linear
warm-up (`warmup_steps`: a fitted INR is fragile under Adam's first, unnormalised steps; notebook 07 measures it) and
a cosine decay. α and the tail are not trained here: the block output already fixes the branch's scale.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from kit import config as C
from kit import data as D
from kit import io, metamorph, models
from kit.errors import KitError
from kit.diagnostics import relative_squared_error


@dataclass
class BlockCache:
    """The prior's activations at the generated blocks, on one device."""

    inputs: dict[str, torch.Tensor]  # block → (N, C, H, W): what the prior feeds the block
    outputs: dict[str, torch.Tensor]  # block → (N, C, H', W'): what the prior block returns
    energy: dict[str, float]  # block → mean square of the prior block's residual branch (the loss's unit)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


@torch.no_grad()
def cache_blocks(net: metamorph.MetamorphicNet, batches, images: int, blocks: Sequence[str] | None = None) -> BlockCache:
    """Run the frozen prior (the skeleton with its own weights) on `batches` until `images` inputs are seen, and keep
    every block's input and output. The skeleton's α buffers are 1, so a `ScaledBlock` here is the prior's block."""
    blocks = list(net.active_blocks if blocks is None else blocks)
    modules = dict(net.skeleton.named_modules())
    seen: dict[str, list] = {b: [] for b in blocks}
    hooks = [modules[b].register_forward_hook(lambda m, i, o, b=b: seen[b].append((i[0].detach(), o.detach())))
             for b in blocks]
    n = 0
    try:
        for x, _ in batches:
            net.skeleton(x[:images - n])
            n += min(len(x), images - n)
            if n >= images:
                break
    finally:
        for h in hooks:
            h.remove()
    if n < images:
        raise KitError(f"Only {n} training images were available to cache but distillation asks for {images}; lower "
                       "blockwise.images or train on more images (train_images).")
    inputs = {b: torch.cat([i for i, _ in v]) for b, v in seen.items()}
    outputs = {b: torch.cat([o for _, o in v]) for b, v in seen.items()}
    state = net.skeleton.state_dict()
    energy = {}
    for b in blocks:  # mean square of the prior's branch conv2(relu(conv1(x))) (BN folded; α = 1 in the prior)
        x = inputs[b][:1024]
        energy[b] = float(_branch(modules[b], state, b, x).square().mean().clamp_min(1e-12))
    return BlockCache(inputs, outputs, energy)


def _branch(module, weights: Mapping[str, torch.Tensor], block: str, x: torch.Tensor) -> torch.Tensor:
    """conv2(relu(conv1(x))) of `block` with the given tensors: (B, C, H, W) → (B, C, H', W')."""
    conv = torch.nn.functional.conv2d
    c1, c2 = module.conv1, module.conv2
    h = torch.relu(conv(x, weights[f"{block}.conv1.weight"], weights[f"{block}.conv1.bias"], c1.stride, c1.padding))
    return conv(h, weights[f"{block}.conv2.weight"], weights[f"{block}.conv2.bias"], c2.stride, c2.padding)


def block_output(net: metamorph.MetamorphicNet, block: str, weights: Mapping[str, torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
    """The output of one generated block on input x with the generated `weights` (its α, if any, is the network's)."""
    module = net.skeleton.get_submodule(block)
    prefix = block + "."
    own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if net.alpha_scaling:  # indexed, not read as a float: no device synchronisation per block
        own["alpha"] = net.alpha[net.blocks.index(block)].detach()
    return functional_call(module, own, (x,))


def output_errors(net: metamorph.MetamorphicNet, cache: BlockCache, weights: Mapping[str, torch.Tensor],
                  index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{block: mean‖B(x) − B*(x)‖² / branch energy} of every active block with `weights`, on the cached inputs at
    `index` (None: all of them); differentiable in `weights`."""
    pick = (lambda t: t) if index is None else (lambda t: t[index])
    return {b: (block_output(net, b, weights, pick(cache.inputs[b])) - pick(cache.outputs[b])).square().mean()
            / cache.energy[b] for b in net.active_blocks}


def configurations(net: metamorph.MetamorphicNet, pool: Sequence[float], cfg: C.BlockwiseConfig,
                   generator: torch.Generator) -> list[dict[str, float]]:
    """The per-block γ of one step's configurations: γ = 0 first, then (with `sandwich`) the pool's largest γ, then
    pool draws, one per block with `per_block`, else one for every block."""
    blocks = net.active_blocks
    out = [{b: 0.0 for b in blocks}]
    if cfg.sandwich and cfg.configurations > 1:
        out.append({b: float(max(pool)) for b in blocks})
    draw = lambda: float(pool[int(torch.randint(len(pool), (1,), generator=generator))])
    while len(out) < cfg.configurations:
        shared = draw()
        out.append({b: draw() for b in blocks} if cfg.per_block else {b: shared for b in blocks})
    return out


def step_loss(net: metamorph.MetamorphicNet, cache: BlockCache, index: torch.Tensor, gammas: list[dict[str, float]],
              cfg: C.BlockwiseConfig, noise: float, targets: Mapping[str, torch.Tensor],
              generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, its terms) of one step: the normalised output error of every block at every configuration (mean over
    configurations, sum over blocks), plus the relative reconstruction at the first configuration (γ = 0)."""
    output, reconstruction = 0.0, None
    for n, gamma in enumerate(gammas):
        weights = net.generate(gamma, noise=noise, generator=generator)
        for err in output_errors(net, cache, weights, index).values():
            output = output + err / len(gammas)
        if n == 0 and cfg.reconstruction > 0:
            reconstruction = torch.stack([relative_squared_error(weights[k], targets[k]) for k in weights]).mean()
    loss = output if reconstruction is None else output + cfg.reconstruction * reconstruction
    terms = {"output": float(output.detach())}
    if reconstruction is not None:
        terms["reconstruction"] = float(reconstruction.detach())
    return loss, terms


@torch.no_grad()
def width_errors(net: metamorph.MetamorphicNet, cache: BlockCache, gammas: Sequence[float]) -> dict[str, dict[str, float]]:
    """{block: {γ: normalised output error}} without noise: mean‖B_h(x) − B*(x)‖² / branch energy of every generated
    block at each γ, each block on its own cached inputs (0 = the prior's block; 1 = as wrong as no branch)."""
    out: dict[str, dict[str, float]] = {b: {} for b in net.active_blocks}
    for gamma in gammas:
        for b, err in output_errors(net, cache, net.generate(gamma)).items():
            out[b][metamorph.gamma_key(gamma)] = float(err)
    return out


def run(net: metamorph.MetamorphicNet, cache: BlockCache, probe: BlockCache, cfg: C.BlockwiseConfig, pool: Sequence[float],
        noise: float, seed: int, checkpoint: str | Path, probe_gammas: Sequence[float], resume: bool = True,
        progress: bool = False, context: dict | None = None) -> dict:
    """Train the active blocks' INRs for `cfg.steps` steps of block-wise width distillation (module docstring).

    Checkpoints atomically to `checkpoint` every `cfg.checkpoint_every` steps (INR, optimiser, schedule, the draw and
    noise generators and the record so far), so a killed run resumes exactly; `context` (the run's own settings: prior,
    INR, pre-fit, stage) joins this phase's settings in the fingerprint a resumed checkpoint must match. Returns the
    record: the loss curve (every `CURVE_EVERY` steps), the width errors on `probe` (held-out inputs) at
    `probe_gammas` before the first step, every `cfg.probe_every` steps and after the last, and the seconds."""
    checkpoint = Path(checkpoint)
    params = [p for p in net.inr.parameters() if p.requires_grad]
    if not params:
        raise KitError("Block-wise distillation needs a trainable INR (train_inr=True).")
    device = params[0].device
    opt = torch.optim.Adam(params, lr=cfg.lr)
    warmup = max(1, cfg.warmup_steps)
    schedule = lambda step: min(1.0, (step + 1) / warmup) * (cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / max(1, cfg.steps - 1)))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    draws = torch.Generator().manual_seed(seed)  # which widths and which cached inputs each step uses
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    targets = net.prior_tensors()
    record = {"steps": cfg.steps, "curve": [], "widths": [], "seconds": 0.0}
    start = 0
    fingerprint = _fingerprint(net, cfg, noise, seed, pool, context)
    if resume and checkpoint.exists():
        state = io.load_torch(checkpoint, "distillation checkpoint", "delete it to distil afresh")
        if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
            raise KitError(f"The distillation checkpoint {checkpoint} was written with other settings; delete it (or pick "
                           "another output folder) to start afresh.")
        models.load_weights(net.inr, state["inr"], f"distillation checkpoint {checkpoint}")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        draws.set_state(state["draws"])
        noise_gen.set_state(state["noise"])
        record, start = state["record"], state["step"]
    else:  # the width errors before the first step (where the previous phase left them)
        record["widths"].append({"step": 0, "error": width_errors(net, probe, probe_gammas)})
    t0, base = time.perf_counter(), record["seconds"]
    bar = tqdm(range(start, cfg.steps), desc="width distillation", disable=not progress, leave=False,
               initial=start, total=cfg.steps)
    for step in bar:
        index = torch.randint(len(cache), (cfg.batch_size,), generator=draws).to(device)
        gammas = configurations(net, pool, cfg, draws)
        loss, terms = step_loss(net, cache, index, gammas, cfg, noise, targets, noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        done = step + 1
        if step % CURVE_EVERY == 0 or done == cfg.steps:
            record["curve"].append({"step": done, **terms})
        if (cfg.probe_every and done % cfg.probe_every == 0) or done == cfg.steps:
            record["widths"].append({"step": done, "error": width_errors(net, probe, probe_gammas)})
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            record["seconds"] = base + time.perf_counter() - t0
            io.save_torch({"fingerprint": fingerprint, "inr": net.inr.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "draws": draws.get_state(), "noise": noise_gen.get_state(),
                           "record": record, "step": done}, checkpoint)
    record["seconds"] = base + time.perf_counter() - t0
    return record


CURVE_EVERY = 50  # steps between the loss curve's points (the loss of one batch: a coarse trace is enough)


def _fingerprint(net, cfg: C.BlockwiseConfig, noise: float, seed: int, pool: Sequence[float],
                 context: dict | None) -> dict:
    return {"cfg": C.to_dict(cfg), "noise": noise, "seed": seed, "pool": list(pool), "blocks": net.active_blocks,
            "context": context}


def finished_record(checkpoint: str | Path, cfg: C.BlockwiseConfig, context: dict | None) -> dict:
    """The record of a finished distillation from its checkpoint, for a stage whose later phase has saved (its
    state is in that later checkpoint); one sentence when the file is missing, unfinished or of other settings."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise KitError(f"The end-to-end checkpoint of this stage exists but the distillation's {checkpoint} does not; "
                       "delete the stage's checkpoints (or the run folder) to train the stage afresh.")
    state = io.load_torch(checkpoint, "distillation checkpoint", "delete it to distil afresh")
    saved = state.get("fingerprint") if isinstance(state, dict) else None
    if not isinstance(saved, dict) or saved.get("cfg") != C.to_dict(cfg) or saved.get("context") != context \
            or state.get("step") != cfg.steps:
        raise KitError(f"The distillation checkpoint {checkpoint} is unfinished or was written with other settings; "
                       "delete the stage's checkpoints (or the run folder) to train the stage afresh.")
    return state["record"]


def caches_for(net: metamorph.MetamorphicNet, data: D.Data, cfg: C.BlockwiseConfig, seed: int,
               train: bool = True, probe: bool = True) -> tuple[BlockCache | None, BlockCache | None]:
    """(training cache: `cfg.images` augmented training images drawn with `seed`, probe cache: the first
    `cfg.probe_images` validation images), each None when not asked for."""
    held = cache_blocks(net, data.eval_batches("val"), min(cfg.probe_images, len(data.splits["val"]))) if probe else None
    if not train:
        return None, held
    generator = torch.Generator().manual_seed(seed)
    per_epoch = data.num_batches("train") * data.cfg.batch_size
    epochs = (data.train_batches(generator, augmented=True) for _ in range(-(-cfg.images // per_epoch)))
    return cache_blocks(net, itertools.chain.from_iterable(epochs), cfg.images), held


def first_steps(net: metamorph.MetamorphicNet, cache: BlockCache, probe: BlockCache, cfg: C.BlockwiseConfig,
                pool: Sequence[float], noise: float, seed: int, folder: str | Path,
                settings: Mapping[str, Mapping[str, float]], steps: int) -> dict[str, dict]:
    """What fine-tuning does to a fitted INR in its first steps: for each named setting (overrides of `cfg`, e.g.
    {'lr': 3e-4, 'warmup_steps': 0}), `steps` steps of this phase from a copy of `net`; per setting, the width errors
    on `probe` at γ = 0 and at the pool's largest γ every few steps, and the size of the first optimiser step relative
    to the weights per INR layer (‖Δθ‖ / ‖θ‖). Adam's first step is lr·sign(g) for every weight, whatever its
    gradient's size: a fitted INR moves by the full rate in every direction at once (notebook 07)."""
    out = {}
    gammas = [0.0, float(max(pool))]
    for name, changes in settings.items():
        trial = copy.deepcopy(net)
        before = {n: p.detach().clone() for n, p in trial.inr.named_parameters()}
        one = dataclasses.replace(cfg, **{**changes, "steps": 1, "probe_every": 0, "checkpoint_every": 1})
        run(trial, cache, probe, one, pool, noise, seed, Path(folder) / f"{name}-first.pt", gammas, resume=False)
        moved = {n: float((p.detach() - before[n]).norm() / before[n].norm().clamp_min(1e-12))
                 for n, p in trial.inr.named_parameters()}
        trial = copy.deepcopy(net)
        every = max(1, steps // 10)
        many = dataclasses.replace(cfg, **{**changes, "steps": steps, "probe_every": every, "checkpoint_every": steps})
        record = run(trial, cache, probe, many, pool, noise, seed, Path(folder) / f"{name}.pt", gammas, resume=False)
        out[name] = {"settings": dict(changes), "first_step": moved, "widths": record["widths"],
                     "seconds": record["seconds"]}
    return out
