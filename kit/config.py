"""Run configuration: dataclasses with units and strict validation, built from a named profile.

A config is built from a named profile (`kit.profiles`: smoke, quick, full, paper) plus explicit overrides,
never from loose globals:

    cfg = kit.config.build(kit.config.PriorConfig, "quick", {"optim.epochs": 3})

Unknown keys, wrong types and unknown profiles stop with one sentence naming the problem.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kit import bounds
from kit.errors import KitError


DATASETS = ("fashion-mnist", "cifar10", "cifar100")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise KitError(message)


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # dataset: 'fashion-mnist', 'cifar10' or 'cifar100'
    root: str = "data"  # folder for dataset files the user places or downloads (relative: from the project root)
    val_size: int = 5000  # images held out of the training split for model selection (stratified by class)
    train_limit: int = 0  # keep only this many training images, class-balanced (0 = all); for smoke runs
    test_limit: int = 0  # keep only this many test images, class-balanced (0 = all); for smoke runs
    batch_size: int = 128  # images per optimiser step
    eval_batch_size: int = 1000  # images per forward pass when evaluating (a GPU's choice; on 2 CPU cores 128 is
    # ≈ 2× faster: the activations stay in cache)
    crop_padding: int = 2  # pixels of zero padding for random-crop augmentation (0 = no crop)
    flip: bool = True  # random horizontal flips (clothes and CIFAR objects are left-right symmetric)

    def __post_init__(self):
        _require(self.name in DATASETS, f"Unknown dataset {self.name!r}; choose one of {', '.join(DATASETS)}.")
        _require(self.val_size >= 1, f"data.val_size must be at least 1; got {self.val_size}.")
        _require(self.train_limit >= 0 and self.test_limit >= 0, "data.train_limit and data.test_limit must be ≥ 0 (0 = all).")
        _require(self.batch_size >= 1 and self.eval_batch_size >= 1, "data.batch_size and data.eval_batch_size must be ≥ 1.")
        _require(self.crop_padding >= 0, f"data.crop_padding must be ≥ 0; got {self.crop_padding}.")


@dataclass
class ModelConfig:
    depth: int = 20  # CIFAR ResNet depth, 6n+2 (8, 20, 32, 44, 56, 110): n blocks per stage
    width: int = 16  # channels of the first stage; the three stages have width·(1, 2, 4)
    hidden: dict[str, int] = field(default_factory=dict)  # inner width (channels) of named blocks, e.g.
    # {'layer3.1': 32}: the individually trained baselines of notebook 04; {} = every block at its stage's width

    def __post_init__(self):
        _require(self.depth >= 8 and (self.depth - 2) % 6 == 0,
                 f"ResNet depth must be 6n+2 with n ≥ 1 (8, 20, 32, 44, 56, 110, …); got {self.depth}.")
        _require(self.width >= 1, f"model.width must be a positive integer; got {self.width}.")
        bad = next((b for b, h in self.hidden.items() if h < 1), None)
        _require(bad is None, f"model.hidden[{bad!r}] must be a positive number of channels.")


OPTIMIZERS = ("sgd", "adamw")


@dataclass
class OptimConfig:
    epochs: int = 4  # passes over the training split
    optimizer: str = "sgd"  # 'sgd' (with momentum; the priors) or 'adamw' (the INRs, paper 002/000 sec. 4.1)
    lr: float = 0.1  # peak learning rate, reached at the end of warm-up
    momentum: float = 0.9  # SGD momentum coefficient (sgd only)
    nesterov: bool = True  # Nesterov momentum (sgd only)
    weight_decay: float = 5e-4  # decay of weight matrices and kernels, never biases, norms or gates (AdamW: decoupled)
    warmup_epochs: float = 0.5  # epochs of linear warm-up from 0 to lr (fractions allowed)
    final_lr_ratio: float = 0.0  # cosine decays to lr·final_lr_ratio at the last step
    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 1)
    grad_clip: float = 0.0  # max global gradient norm (0 = no clipping)

    def __post_init__(self):
        _require(self.epochs >= 1, f"optim.epochs must be at least 1; got {self.epochs}.")
        _require(self.optimizer in OPTIMIZERS, f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        _require(self.lr > 0 and self.weight_decay >= 0 and self.grad_clip >= 0 and self.warmup_epochs >= 0,
                 "optim.lr must be > 0 and optim.weight_decay, grad_clip, warmup_epochs ≥ 0.")
        _require(0 <= self.momentum < 1 and 0 <= self.final_lr_ratio <= 1,
                 "optim.momentum must be in [0, 1) and optim.final_lr_ratio in [0, 1].")
        _require(0 <= self.label_smoothing < 1, f"optim.label_smoothing must be in [0, 1); got {self.label_smoothing}.")


@dataclass
class RuntimeConfig:
    device: str = "auto"  # 'auto' (CUDA if present, else CPU), 'cpu', 'cuda' or 'cuda:N'
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU, which runs float32
    channels_last: bool = True  # NHWC memory layout: about 20% faster convolutions on CPU and GPU
    progress: bool = True  # tqdm progress bar over the batches of each epoch (one log line per epoch either way)

    def __post_init__(self):
        _require(self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
                 f"Unknown device {self.device!r}; use auto, cpu, cuda or cuda:N.")


@dataclass
class PriorConfig:
    """Training of the prior (teacher) network: notebook 01 and `python -m kit train-prior`."""

    SECTION: ClassVar[str] = "prior"
    profile: str = "quick"  # name of the profile these values started from (recorded, not used)
    seed: int = 0  # seeds model initialisation, the validation split, batch order and augmentation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


PERMUTE_METHODS = ("identity", "random", "greedy", "2opt", "tsp")  # channel orders kit.permute offers


@dataclass
class PermuteConfig:
    """Weight smoothing by channel permutation: notebook 02 (paper 002 sec. 3.3)."""

    SECTION: ClassVar[str] = "permute"
    profile: str = "quick"  # name of the profile these values started from (recorded, not used)
    seed: int = 0  # seeds the 'random' method
    method: str = "tsp"  # channel order: 'tsp' (shortest Hamiltonian path: greedy, 2-opt + Or-opt, iterated local
    # search), '2opt' (greedy + 2-opt descent), 'greedy', 'random', 'identity' (kit.paths.shortest_path)
    kicks: int = 20  # rounds of iterated local search per coupled group ('tsp'): a count, never a time budget,
    # so the order is the same on every machine under any load
    compare_methods: bool = True  # also smooth with every other method, for the comparison figure

    def __post_init__(self):
        _require(self.method in PERMUTE_METHODS,
                 f"Unknown permutation method {self.method!r}; choose one of {', '.join(PERMUTE_METHODS)}.")
        _require(isinstance(self.kicks, int) and not isinstance(self.kicks, bool) and 0 <= self.kicks <= 100_000,
                 f"permute.kicks is a number of search rounds and must be an integer in [0, 100000]; got {self.kicks!r}.")


INR_ACTIVATIONS = ("relu", "elu")


@dataclass
class INRConfig:
    """The hypernetwork: one residual MLP per generated tensor (paper 002 sec. 3.2, paper 000 sec. 2.1)."""

    hidden: int = 256  # units in every hidden layer of each MLP (paper 002 sec. 4.1: 256; HTTY: 512)
    depth: int = 5  # input layer + (depth − 1) gated residual layers, then the output layer (paper 002: 5; HTTY: 8)
    activation: str = "elu"  # 'elu' (HTTY, paper 000 sec. 4.1) or 'relu' (NeuMeta's reference code)
    num_freqs: int = 10  # Fourier frequencies 2^0…2^(F−1)·π per coordinate; ≤ 16 (float32 resolves no more). On
    # clean index coordinates o/O, frequencies with 2^k ≥ 2·O are constant (aliased), so F ≈ log2(2·O) + 1 carries
    # all the information of an O-wide tensor; the default keeps NeuMeta's "more than enough".
    gate_init: float = 0.1  # starting value of the residual gates (NeuMeta's resmlp: 0.1)
    disentangled: bool = True  # biases from their own scalar-output MLPs (HTTY sec. 3.5), not a k²-output's first
    size_encoding: str = "absolute"  # how O/O_ref, I/I_ref enter: 'absolute' (eq. 1) or 'offset' (minus their value at
    # the prior's size, so that size reaches the MLP as 0 through them: their weights act only at other widths)

    def __post_init__(self):
        _require(self.hidden >= 1 and self.depth >= 1, "inr.hidden and inr.depth must be ≥ 1.")
        _require(self.activation in INR_ACTIVATIONS, f"inr.activation must be 'relu' or 'elu'; got {self.activation!r}.")
        _require(0 <= self.num_freqs <= 16, f"inr.num_freqs must be between 0 and 16 (higher frequencies are below "
                                            f"float32 resolution); got {self.num_freqs}.")
        _require(self.size_encoding in ("absolute", "offset"),
                 f"inr.size_encoding must be 'absolute' or 'offset'; got {self.size_encoding!r}.")


RECONSTRUCTION_KINDS = ("weighted", "relative")
SIZE_FEATURES = ("paper", "neutral")


@dataclass
class LossConfig:
    """Loss weights of metamorphic training (paper 002 eq. 9, paper 000 eq. 3)."""

    task: float = 1.0  # λ_task: cross-entropy of the generated network
    reconstruction: float = 1.0  # λ_rec: magnitude-weighted MSE to the smoothed prior's weights, when γ = 0
    regularization: float = 1e-4  # λ_reg: Σ over generated tensors of their Frobenius norm
    distill: float = 0.0  # fraction of the task term taken by distillation from the prior: (1 − d)·CE(labels) +
    # d·KL(softmax(prior logits) ‖ softmax(logits)) at every γ; the prior is the teacher of what each width should compute
    reconstruction_kind: str = "weighted"  # R: 'weighted' = MSE weighted by |W*| / max|W*| (NeuMeta's code, reference
    # notes sec. 4); 'relative' = mean over tensors of ‖W − W*‖² / ‖W*‖², scale-free: the fan-in-divided kernels are
    # ~1e-2, so their weighted MSE is ~1e-5 and no λ makes it compete with CE without drowning the small tensors

    def __post_init__(self):
        _require(min(self.task, self.reconstruction, self.regularization) >= 0, "loss weights must be ≥ 0.")
        _require(0 <= self.distill <= 1, f"loss.distill is a fraction in [0, 1]; got {self.distill}.")
        _require(self.reconstruction_kind in RECONSTRUCTION_KINDS,
                 f"loss.reconstruction_kind must be one of {', '.join(RECONSTRUCTION_KINDS)}; got {self.reconstruction_kind!r}.")


@dataclass
class BlockwiseConfig:
    """Block-wise width distillation (`kit.blockwise`): each generated block, at several widths per step, against the
    prior block's output on cached prior activations. The coordinate noise is `MorphConfig.coordinate_noise`, the
    pool `gamma_max` / `pool_size`: the same the end-to-end phase trains with and K-averaging evaluates with."""

    steps: int = 600  # optimiser steps of the phase per stage, after the pre-fit and before the end-to-end phase
    images: int = 12800  # augmented training images whose block inputs and outputs are cached (once per stage)
    probe_images: int = 512  # validation images cached to measure each block's output error per width (the width study)
    batch_size: int = 128  # cached inputs per step (every configuration of a step sees the same inputs)
    configurations: int = 3  # width configurations per step: γ = 0 first, then `sandwich`'s, then pool draws
    sandwich: bool = False  # one configuration per step at the pool's largest γ (the smallest width; slimmable
    # networks' sandwich rule, Yu & Huang 2019)
    per_block: bool = True  # the drawn configurations give each block its own γ (blocks of different widths compose)
    lr: float = 1e-4  # peak Adam learning rate over every INR parameter
    warmup_steps: int = 50  # steps of linear warm-up from 0 to lr: Adam's first steps move every weight by ≈ lr
    # whatever its gradient's scale, which wrecks a fitted INR at lr ≥ 3e-4 (notebook 07 measures it)
    final_lr_ratio: float = 0.1  # cosine decay to lr·final_lr_ratio at the last step
    reconstruction: float = 1.0  # weight of the relative reconstruction ‖W − W*‖² / ‖W*‖² at the γ = 0 configuration
    grad_clip: float = 0.0  # max global gradient norm (0 = no clipping)
    probe_every: int = 100  # steps between measurements of the width errors on the probe inputs (0 = at the start and
    # the end only)
    checkpoint_every: int = 100  # steps between checkpoints of the phase (a killed run resumes from the last)

    def __post_init__(self):
        _require(self.steps >= 1 and self.images >= 1 and self.probe_images >= 1 and self.batch_size >= 1,
                 "blockwise.steps must be ≥ 1 and blockwise.images, probe_images, batch_size ≥ 1.")
        _require(self.configurations >= 1, f"blockwise.configurations must be ≥ 1; got {self.configurations}.")
        _require(self.lr > 0 and 0 <= self.final_lr_ratio <= 1 and self.warmup_steps >= 0,
                 "blockwise.lr must be > 0, blockwise.final_lr_ratio in [0, 1] and blockwise.warmup_steps ≥ 0.")
        _require(self.reconstruction >= 0 and self.grad_clip >= 0, "blockwise.reconstruction and grad_clip must be ≥ 0.")
        _require(self.probe_every >= 0 and self.checkpoint_every >= 1,
                 "blockwise.probe_every must be ≥ 0 and blockwise.checkpoint_every ≥ 1.")


GAMMAS_EVAL = [-0.25, -0.125, 0.0, 0.125, 0.25, 0.265625, 0.375, 0.5, 0.625, 0.75]  # seen, between, beyond
TABLE_GAMMAS = [0.0, 0.25, 0.5]  # the seen γ columns of paper 000 Tables 1–2 (the block-sweep runs evaluate these)
# The training recipes of notebook 03. NeuMeta is HTTY with every component switched off (paper 000 sec. 4.2).
# 'prefit' is the kit's recipe for a laptop budget (notebook 07 says why): each block's INRs are first fitted to the
# prior's tensors (with coordinate noise), the size features enter as offsets from the prior's size and start at zero
# weight (another width starts as a resampling of the prior), α starts at the prior's scale 1, and a short, gentle
# task phase (INR lr 1e-4, tail frozen, one configuration at γ = 0 with relative reconstruction ×10 and one pool γ
# per step, both distilled from the prior's logits) teaches the widths; a configuration at γ ≠ 0 may change only the
# size features' weights, so no width undoes what the prior's width holds. 'blockwise' is the kit's recipe for every
# width, the pre-fit recipe's successor (which stays as a row of the ablations profile): the pre-fit of every block at
# once (one stage), then block-wise width distillation (kit.blockwise: each block at γ = 0, the pool's largest γ and a
# γ drawn per block, against the prior block's output on cached activations), then a short end-to-end phase with the
# same three kinds of configuration (the sandwich rule of slimmable networks, Yu & Huang 2019) distilled from the
# prior's logits; every INR weight trains in every phase, α stays 1, the tail frozen, and the coordinate noise is 0.5
# throughout (so K-averaging resamples with the noise the INR learned). 'null' is the control every metamorphic result is read against: the
# prior with its metamorphic blocks removed (α ≡ 0: each block is the identity) and the tail retrained with HTTY's
# tail budget (the same stages × epochs of batches, steps of `accumulate` batches, tail lr); its INR is never used.
METHOD_SWITCHES: dict[str, dict] = {
    "htty": {"incremental": True, "alpha_scaling": True, "accumulate": 4, "inr_init": True, "train_tail": True,
             "inr": {"disentangled": True}},
    "neumeta": {"incremental": False, "alpha_scaling": False, "accumulate": 1, "inr_init": False, "train_tail": False,
                "inr": {"disentangled": False}},
    "prefit": {"incremental": True, "alpha_scaling": True, "accumulate": 2, "inr_init": True, "train_tail": False,
               "inr": {"disentangled": True, "size_encoding": "offset"}, "prefit": True, "size_features": "neutral",
               "width_updates": "sizes", "alpha_init": 1.0, "alpha_lr": 1e-3,
               "loss": {"reconstruction": 10.0, "reconstruction_kind": "relative", "distill": 1.0},
               "optim": {"lr": 1e-4, "warmup_epochs": 0.0}},
    "blockwise": {"incremental": False, "alpha_scaling": True, "accumulate": 3, "inr_init": False, "train_tail": False,
                  "inr": {"disentangled": True, "size_encoding": "offset"}, "prefit": True, "size_features": "neutral",
                  "width_updates": "all", "alpha_init": 1.0, "alpha_lr": 0.0, "coordinate_noise": 0.5,
                  "prefit_noise": 0.5, "per_block_gammas": True, "sandwich": True, "joint_epochs": 3,
                  "width_distillation": True, "blockwise": {"sandwich": True},
                  "loss": {"reconstruction": 1.0, "reconstruction_kind": "relative", "distill": 1.0,
                           "regularization": 0.0},
                  "optim": {"lr": 1e-4, "warmup_epochs": 0.25, "final_lr_ratio": 0.1}},
    "null": {"incremental": False, "alpha_scaling": True, "accumulate": 4, "inr_init": False, "train_tail": True,
             "train_inr": False, "alpha_init": 0.0, "alpha_lr": 0.0, "inr": {"disentangled": True}},
}
# A recipe with one component off: the rows of paper 000 Tables 1 and 2 (HTTY), and the kit recipe's own ablation.
ABLATIONS: dict[str, dict[str, dict]] = {
    "htty": {"none": {}, "incremental": {"incremental": False}, "alpha": {"alpha_scaling": False},
             "accumulation": {"accumulate": 1}, "init": {"inr_init": False}, "disentangle": {"inr": {"disentangled": False}}},
    "prefit": {"none": {}, "prefit": {"prefit": False},
               "sizes": {"size_features": "paper", "inr": {"size_encoding": "absolute"}},
               "width-updates": {"width_updates": "all"}, "alpha-init": {"alpha_init": 0.0},
               "relative": {"loss": {"reconstruction_kind": "weighted"}}, "distill": {"loss": {"distill": 0.0}},
               "frozen-tail": {"train_tail": True}},
    "blockwise": {"none": {}, "prefit": {"prefit": False}, "blockwise": {"width_distillation": False},
                  "end-to-end": {"end_to_end": False}, "per-block": {"per_block_gammas": False,
                                                                    "blockwise": {"per_block": False}},
                  "sandwich": {"sandwich": False, "blockwise": {"sandwich": False}},
                  "warmup": {"blockwise": {"warmup_steps": 0}}},
    "neumeta": {"none": {}}, "null": {"none": {}},
}


@dataclass
class MorphConfig:
    """Metamorphic training on a smoothed prior: notebook 03 (HTTY, paper 000 sec. 3–4.1; NeuMeta, paper 002).

    `method` and `ablation` are labels that set the component switches through `METHOD_SWITCHES` and
    `ABLATIONS` when the config is built (`build`); explicit overrides of a switch win over them."""

    SECTION: ClassVar[str] = "morph"
    profile: str = "quick"  # name of the profile these values started from (recorded, not used)
    seed: int = 0  # seeds the INR's initialisation, the γ draws, the coordinate noise and the batch order
    method: str = "htty"  # training recipe: 'htty' (paper 000), 'neumeta' (paper 002), 'prefit' (the kit's laptop
    # recipe at the prior's width), 'blockwise' (pre-fit → block-wise width distillation → a short end-to-end phase:
    # the kit's recipe for every width) or 'null' (the control: blocks removed, tail retrained); sets the switches below
    ablation: str = "none"  # the method with one component off (ABLATIONS): htty: 'incremental', 'alpha',
    # 'accumulation', 'init', 'disentangle'; prefit: 'prefit', 'sizes', 'width-updates', 'alpha-init', 'relative',
    # 'distill', 'frozen-tail'; blockwise: 'prefit', 'blockwise', 'end-to-end', 'per-block', 'sandwich', 'warmup'
    incremental: bool = True  # sec. 3.1: one training stage per block, in order, earlier INRs fine-tuned jointly
    alpha_scaling: bool = True  # sec. 3.2: generated blocks' branch × a learnable α (init 0); off = BN folded only
    accumulate: int = 4  # sec. 3.4: configurations (batches) whose gradients make one step, the first at γ = 0; 1 = off
    inr_init: bool = True  # sec. 3.3: a new block's MLPs start as copies of the previous block's (else their own init)
    train_tail: bool = True  # sec. 3.1: the final block (unless generated) and the classifier trained directly
    train_inr: bool = True  # False: the INR is frozen and never generated while training (the null control, α ≡ 0)
    alpha_init: float = 0.0  # α's starting value (α-scaling only): 0 = SkipInit (sec. 3.2); 1 = the BN-folded prior's
    # own branch scale, which keeps a pre-fitted INR's function
    prefit: bool = False  # fit a block's INRs to the smoothed prior's tensors at γ = 0 (relative error, coordinate noise
    # `prefit_noise`) when the block becomes metamorphic, before its stage trains (the kit's; off in the papers)
    prefit_steps: int = 2000  # full-batch Adam steps of that pre-fit, per block (quick: ≈ 30 s for a 32-wide block, 75 s
    # for a 64-wide one on 2 CPU cores)
    prefit_lr: float = 3e-3  # pre-fit learning rate, cosine-decayed to a tenth over its steps
    prefit_noise: float = 0.5  # coordinate noise of the pre-fit, in index steps: a fit that is smooth between channels
    # can be resampled at other widths (cross-network smoothing, paper 002 sec. 3.3)
    width_updates: str = "all"  # what a configuration at γ ≠ 0 may change: 'all' (the papers) or 'sizes' (only the
    # INR's first-layer weights of the size features; with inr.size_encoding 'offset' those never act at the prior's
    # size, so no other width can undo what γ = 0 holds)
    size_features: str = "paper"  # how O/O_ref, I/I_ref enter the INR: 'paper' (eq. 1, trained from the start);
    # 'neutral': when a block joins (after its pre-fit), their first-layer weights are zeroed and their value at the
    # prior's size folded into the bias, so another width starts as a resampling of the prior's function and learns
    # only what the width changes
    width_distillation: bool = False  # block-wise width distillation (kit.blockwise) after the pre-fit, before the
    # end-to-end phase: every block at several widths per step against the prior block's output
    blockwise: BlockwiseConfig = field(default_factory=BlockwiseConfig)  # its settings
    end_to_end: bool = True  # the task phase on the whole network after the pre-fit and the distillation (False: the
    # block-local phases only; α and the tail stay as they start)
    joint_epochs: int = 0  # epochs of the one stage of a non-incremental run (0 = blocks × optim.epochs, the same
    # training as the incremental stages, paper 000 sec. 4.1)
    per_block_gammas: bool = False  # a task configuration at γ ≠ 0 draws one γ per block (blocks of different widths
    # are trained together, as the explorer's per-block sliders build them) instead of one for every block
    sandwich: bool = False  # with accumulate ≥ 2, the second configuration of every step is the pool's largest γ (the
    # smallest width; slimmable networks' sandwich rule: the widest, γ = 0, is always the first)
    alpha_lr: float = 1e-4  # peak learning rate of α (the authors' code: 1e-4), same schedule as the INR's
    tail_lr: float = 7e-5  # peak learning rate of the directly trained tail (the authors' code: 7e-5)
    epoch_scale: int = 1  # multiplies the epochs of every stage (paper 000 Fig. 6 "extended training": 3)
    train_images: int = 0  # class-balanced subset of the prior's training split trained on (0 = all of it)
    val_images: int = 0  # class-balanced subset of the prior's validation split used for selection (0 = all of it)
    setting: str = "last_block"  # metamorphic blocks: 'last_block', 'last_stage', 'all', 'all:3' (first 3), or names
    gamma_max: float = 0.5  # the training pool is [0, gamma_max] (compression ratio γ: hidden width (1 − γ)·H)
    pool_size: int = 17  # evenly spaced γ in the pool, ends included (17: every 2nd width of a 64-wide block)
    coordinate_noise: float = 1.0  # width of the uniform noise on the index coordinates, in index steps (0 = none)
    k_samples: int = 10  # generations averaged (K) for the final evaluation and for export
    k_select: int = 5  # generations averaged when validating after each epoch
    select_gammas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])  # mean val accuracy here selects
    gammas_eval: list[float] = field(default_factory=lambda: list(GAMMAS_EVAL))  # γ of the final test evaluation
    ema: float = 0.995  # decay per step of the INR's exponential moving average, which is evaluated (0 = off)
    # The t-th step of a stage (t = 1, 2, …) averages with decay min(ema, t / (9 + t)), as TensorFlow's moving
    # averages do: a fixed 0.995 remembers ~200 steps, so a stage of 50 steps would evaluate mostly its start.
    ema_warmup: bool = True  # ramp the EMA's decay up over the first steps of each stage (False = fixed decay)
    batch_size: int = 128  # images per step (paper 002 sec. 4.1: 128); the other data settings are the prior's
    inr: INRConfig = field(default_factory=INRConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # optim.epochs is per stage (paper 000 sec. 4.1: 50); a non-incremental run trains blocks × epochs in one stage.
    # Warm-up then constant (final_lr_ratio 1, sec. 4.1), in the first stage only.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=50, optimizer="adamw", lr=1e-3, weight_decay=1e-2, warmup_epochs=20.0, final_lr_ratio=1.0,
        grad_clip=10.0))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @staticmethod
    def preset(values: dict, sections: dict | None = None) -> dict:
        """The switches that `values`' method and ablation stand for (applied by `build` under the overrides): the
        method's, then the profile's sizes of that method's phases (its section 'morph.<method>' in `sections`, the
        profile's sections), then the ablation's."""
        # an unknown name adds nothing here and is refused, in one sentence, by __post_init__
        method, ablation = values.get("method", "htty"), values.get("ablation", "none")
        return _merge(_merge(copy.deepcopy(METHOD_SWITCHES.get(method, {})),
                             copy.deepcopy((sections or {}).get(f"morph.{method}", {}))),
                      copy.deepcopy(ABLATIONS.get(method, {}).get(ablation, {})))

    def __post_init__(self):
        _require(self.method in METHOD_SWITCHES, f"Unknown method {self.method!r}; choose one of {', '.join(METHOD_SWITCHES)}.")
        owner = next((m for m, rows in ABLATIONS.items() if self.ablation in rows and self.ablation != "none"), None)
        _require(self.ablation == "none" or owner is not None,
                 f"Unknown ablation {self.ablation!r}; choose one of "
                 f"{', '.join(sorted({a for rows in ABLATIONS.values() for a in rows}))}.")
        _require(self.ablation in ABLATIONS[self.method],
                 f"Ablation {self.ablation!r} switches off a component of {owner!r}; use it with method {owner!r}.")
        _require(self.prefit_steps >= 1 and self.prefit_lr > 0 and self.prefit_noise >= 0,
                 "prefit_steps must be ≥ 1, prefit_lr > 0 and prefit_noise ≥ 0 (switch the pre-fit off with prefit=False).")
        _require(self.width_updates in ("all", "sizes"), f"width_updates must be 'all' or 'sizes'; got {self.width_updates!r}.")
        _require(self.size_features in SIZE_FEATURES,
                 f"size_features must be one of {', '.join(SIZE_FEATURES)}; got {self.size_features!r}.")
        _require(self.train_inr or self.alpha_scaling and self.alpha_init == 0 and self.alpha_lr == 0,
                 "train_inr=False is the null control: it needs alpha_scaling with alpha_init = 0 and alpha_lr = 0 "
                 "(blocks removed), else an untrained INR would generate the blocks.")
        _require(self.accumulate >= 1 and self.epoch_scale >= 1 and min(self.train_images, self.val_images) >= 0,
                 "accumulate and epoch_scale must be ≥ 1, train_images and val_images ≥ 0.")
        _require(self.alpha_lr >= 0 and self.tail_lr >= 0, "alpha_lr and tail_lr must be ≥ 0.")
        _require(self.joint_epochs >= 0, f"joint_epochs must be ≥ 0 (0 = blocks × optim.epochs); got {self.joint_epochs}.")
        _require(self.end_to_end or self.width_distillation or self.prefit,
                 "end_to_end=False leaves only the block-local phases; switch on the pre-fit or width_distillation.")
        _require(self.train_inr or not self.width_distillation,
                 "width_distillation trains the INR; the null control (train_inr=False) has none to train.")
        _require(not (self.width_distillation and self.alpha_scaling and self.alpha_init == 0),
                 "width_distillation with α-scaling needs alpha_init > 0: at α = 0 a block's output does not depend on "
                 "its weights, so distillation would teach the INR nothing.")
        _require(not self.sandwich or self.accumulate >= 2,
                 f"sandwich puts the pool's largest γ second in every step; it needs accumulate ≥ 2 (got "
                 f"{self.accumulate}).")
        _require(not (self.per_block_gammas and self.width_updates == "sizes"),
                 "per_block_gammas draws blocks at γ = 0 inside configurations at γ ≠ 0, which width_updates='sizes' "
                 "would freeze; use width_updates='all' with it.")
        _require(0 <= self.gamma_max < 1, f"gamma_max must be in [0, 1); got {self.gamma_max}.")
        _require(self.pool_size >= 2 or (self.pool_size == 1 and self.gamma_max == 0),
                 f"pool_size must be ≥ 2 (γ = 0 and gamma_max included), or 1 with gamma_max = 0; got {self.pool_size}.")
        _require(self.coordinate_noise >= 0 and 0 <= self.ema < 1, "coordinate_noise must be ≥ 0 and ema in [0, 1).")
        _require(self.k_samples >= 1 and self.k_select >= 1,
                 f"k_samples and k_select (generations averaged, K) must be ≥ 1; got {self.k_samples}, {self.k_select}.")
        bounds.check_k(self.k_samples, "k_samples asks for")
        bounds.check_k(self.k_select, "k_select asks for")
        bounds.check_inr_size(self.inr.hidden, self.inr.depth, "morph.inr")
        _require(bool(self.select_gammas) and bool(self.gammas_eval), "select_gammas and gammas_eval must not be empty.")
        _require(self.batch_size >= 1, f"batch_size must be ≥ 1; got {self.batch_size}.")


PRUNE_CRITERIA = ("random", "l1", "l2", "taylor", "hessian")  # kit.prune's importance criteria


@dataclass
class SlimmableConfig:
    """The universally slimmable network of notebook 04 (`kit.slimmable`; Yu & Huang, ICCV 2019): the prior's
    metamorphic blocks made slimmable in their hidden width, trained with the sandwich rule and in-place distillation,
    BatchNorm recalibrated per width after training. Its budget defaults to HTTY's of the same profile: as many
    optimiser steps, each of `widths_per_step` batches, over as many images."""

    train: bool = True  # train it in notebook 04 (False: no slimmable rows)
    gamma_max: float = 0.75  # widths trained: h(γ) for γ in [0, gamma_max] (US-Nets: width multipliers 0.25 … 1)
    widths_per_step: int = 4  # the sandwich rule: the widest, the narrowest and n − 2 random widths per step (US-Nets: 4)
    shared_batch: bool = False  # True: every width of a step on one batch (US-Nets); False: each width its own batch,
    # as the metamorphic runs' accumulated configurations (the same steps and images as HTTY's accumulation of 4)
    distill: bool = True  # in-place distillation: narrower widths learn the widest's predictions (KL), the widest the
    # labels; False: every width learns the labels
    order: str = "hessian"  # pruning criterion whose scores order the prior's hidden channels: width h starts as the
    # prior pruned to h by it (Hessian: the best criterion without fine-tuning on the quick prior)
    train_images: int = 0  # class-balanced subset of the prior's training split trained on (0 = all of it)
    val_images: int = 0  # class-balanced subset of the prior's validation split used for selection (0 = all of it)
    batch_size: int = 128  # images per batch (one width's forward and backward)
    calibration_images: int = 1024  # unaugmented training images whose statistics recalibrate every BN at each width
    select_gammas: list[float] = field(default_factory=lambda: [0.0, 0.5])  # mean val accuracy here selects the epoch
    gammas: list[float] = field(default_factory=lambda: [g for g in GAMMAS_EVAL if g >= 0])  # γ of the test evaluation
    # the metamorphic runs' optimiser family (AdamW), warm-up then cosine; optim.epochs: passes over the training
    # images (6 = HTTY's quick budget: 3 stages × 2 epochs); lr 1e-4 had the best validation accuracy of 1e-3, 3e-4,
    # 1e-4 on the quick prior (89.1, 90.0, 90.1% at γ = 0 and 0.5): every weight of the trained prior moves
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=6, optimizer="adamw", lr=1e-4, weight_decay=1e-2, warmup_epochs=0.5))

    def __post_init__(self):
        _require(0 < self.gamma_max < 1, f"slimmable.gamma_max must lie in (0, 1); got {self.gamma_max}.")
        _require(self.widths_per_step >= 2, "slimmable.widths_per_step must be ≥ 2 (the sandwich rule's widest and "
                 f"narrowest); got {self.widths_per_step}.")
        _require(self.order in PRUNE_CRITERIA, f"slimmable.order must be one of {', '.join(PRUNE_CRITERIA)}; "
                 f"got {self.order!r}.")
        _require(self.batch_size >= 1 and self.calibration_images >= 1,
                 "slimmable.batch_size and calibration_images must be ≥ 1.")
        _require(self.train_images >= 0 and self.val_images >= 0, "slimmable.train_images and val_images must be ≥ 0.")
        for name in ("select_gammas", "gammas"):
            values = getattr(self, name)
            _require(bool(values) and all(0 <= g < 1 for g in values), f"slimmable.{name} must be a non-empty list of "
                     f"γ in [0, 1): a slimmable network cannot grow (γ < 0); got {values}.")


@dataclass
class BaselineConfig:
    """The baselines of notebook 04 (paper 000 sec. 4.2): networks individually trained at h(γ), and the prior
    with its metamorphic blocks' hidden channels pruned to h(γ) by each structured-pruning criterion."""

    SECTION: ClassVar[str] = "baseline"
    profile: str = "quick"  # name of the profile these values started from (recorded, not used)
    seed: int = 0  # seeds the individual networks' training and the random criterion's draw
    seeds: int = 1  # number of seeds, seed … seed + seeds − 1: each trains its own individual networks and draws
    # its own calibration images and random scores (the prior is the same for all: notebook 01 trains one)
    setting: str = "last_block"  # the metamorphic blocks whose hidden widths change (as notebook 03's `setting`)
    individual_gammas: list[float] = field(default_factory=lambda: [0.25, 0.5])  # γ > 0 trained from scratch
    # with the prior's recipe (γ = 0 is the prior itself: same architecture, recipe and seed, so not retrained)
    prune_gammas: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.375, 0.5, 0.625, 0.75])  # γ ≥ 0 pruned
    criteria: list[str] = field(default_factory=lambda: list(PRUNE_CRITERIA))  # importance criteria compared
    calibration_images: int = 1280  # training images whose gradients score 'taylor' and 'hessian' (NeuMeta: 10×128)
    finetune_epochs: int = 0  # epochs of fine-tuning each pruned network (0 = none, as the papers report)
    finetune_lr: float = 0.01  # peak SGD learning rate of the fine-tune (cosine to 0, no warm-up)
    finetune_images: int = 0  # class-balanced subset of the training split the fine-tune sees (0 = all of it)
    finetune_criteria: list[str] = field(default_factory=list)  # criteria whose pruned networks are fine-tuned
    # (empty = every criterion of `criteria`)
    slimmable: SlimmableConfig = field(default_factory=SlimmableConfig)  # the universally slimmable network
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self):
        unknown = sorted(set(self.criteria) - set(PRUNE_CRITERIA))
        _require(not unknown, f"Unknown pruning criterion {unknown[0]!r}; choose from {', '.join(PRUNE_CRITERIA)}."
                 if unknown else "")
        _require(all(0 < g < 1 for g in self.individual_gammas),
                 f"individual_gammas must lie in (0, 1) (γ = 0 is the prior); got {self.individual_gammas}.")
        _require(all(0 <= g < 1 for g in self.prune_gammas),
                 f"prune_gammas must lie in [0, 1): pruning only removes channels; got {self.prune_gammas}.")
        _require(isinstance(self.seeds, int) and not isinstance(self.seeds, bool) and self.seeds >= 1,
                 f"baseline.seeds is a number of seeds and must be an integer ≥ 1; got {self.seeds!r}.")
        _require(self.calibration_images >= 1 and self.finetune_epochs >= 0 and self.finetune_images >= 0,
                 "calibration_images must be ≥ 1 and finetune_epochs, finetune_images ≥ 0.")
        _require(self.finetune_lr > 0, f"finetune_lr must be > 0; got {self.finetune_lr}.")
        stray = sorted(set(self.finetune_criteria) - set(self.criteria))
        _require(not stray, f"finetune_criteria names {stray[0]!r}, which is not among the criteria compared "
                 f"({', '.join(self.criteria)}); add it to criteria or drop it." if stray else "")


@dataclass
class ExplorerConfig:
    """The interactive γ explorer of notebook 06 (`kit.explorer`, `kit.widgets.GammaExplorer`): what each update of
    the controls evaluates, and what the notebook records."""

    SECTION: ClassVar[str] = "explorer"
    profile: str = "quick"  # name of the profile these values started from (recorded, not used)
    seed: int = 0  # draws the fixed evaluation subset and the coordinate noise of the K averaged generations
    eval_images: int = 500  # class-balanced test images each update evaluates (0 = the whole test split); 500
    # keeps an update of the quick network under 1 s on 2 CPU cores (standard error ≈ 1.8 points at 80%)
    k_max: int = 10  # largest K (generations averaged) the K slider offers
    record_gammas: list[float] = field(default_factory=lambda: [-0.25, 0.0, 0.25, 0.5, 0.75])  # γ whose accuracy
    # notebook 06 records through the explorer's own functions (metrics.json)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self):
        _require(self.eval_images >= 0, f"eval_images must be ≥ 0 (0 = the whole test split); got {self.eval_images}.")
        _require(self.k_max >= 1, f"k_max (the largest K offered) must be ≥ 1; got {self.k_max}.")
        bounds.check_k(self.k_max, "k_max (the largest K offered) asks for")
        _require(bool(self.record_gammas) and all(-1 <= g < 1 for g in self.record_gammas),
                 f"record_gammas must be a non-empty list of γ in [-1, 1); got {self.record_gammas}.")


def build(cls: type, profile: str = "quick", overrides: dict[str, Any] | None = None):
    """Config of type `cls` from a profile, then `overrides` (dotted keys like 'optim.epochs' or nested
    dicts). An override whose value is None keeps the profile's value (notebook parameters use None
    for 'profile default')."""
    from kit.profiles import PROFILES  # imported here so that kit.profiles may import this module without a cycle
    if profile not in PROFILES:
        raise KitError(f"Unknown profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    values = copy.deepcopy(PROFILES[profile].get(cls.SECTION, {}))
    values["profile"] = profile
    user: dict = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _merge(user, _nest(key, value))
    preset = getattr(cls, "preset", None)  # e.g. a method's switches: over the profile, under the overrides
    if preset is not None:
        _merge(values, preset(_merge(copy.deepcopy(values), copy.deepcopy(user)), PROFILES[profile]))
    return from_dict(cls, _merge(values, user))


def from_dict(cls: type, values: dict[str, Any], where: str = ""):
    """Build dataclass `cls` from a (nested) dict, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise KitError(f"Config section {where or cls.__name__!r} must be a mapping, got {type(values).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise KitError(f"Unknown config key {where + unknown[0]!r}; valid keys here are: {', '.join(fields)}.")
    kwargs = {}
    for name, value in values.items():
        factory = fields[name].default_factory
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict) and factory is not dataclasses.MISSING:
            value = _merge(dataclasses.asdict(factory()), value)  # a section's own defaults (e.g. morph's AdamW) first
        kwargs[name] = _check(hints[name], value, where + name)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """Plain nested dict of a config, for JSON records and checkpoints."""
    return dataclasses.asdict(cfg)


def _check(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise KitError(f"Config key {key!r} must be a mapping, got {value!r}.")
        key_type, item = typing.get_args(hint)
        return {_check(key_type, k, f"{key} key"): _check(item, v, f"{key}[{k!r}]") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise KitError(f"Config key {key!r} must be a list, got {value!r}.")
        (item,) = set(typing.get_args(hint)) - {Ellipsis} or {Any}
        checked = [_check(item, v, key) for v in value]
        return tuple(checked) if origin is tuple else checked
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise KitError(f"Config key {key!r} must be {hint.__name__}, got {value!r} ({type(value).__name__}).")
    return value


def _nest(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into
