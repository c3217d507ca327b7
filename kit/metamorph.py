"""Metamorphic networks: one full-width skeleton whose chosen blocks take INR-generated weights at any γ.

Compression ratio (paper 000 eq. 2 and appendix): a metamorphic residual block of reference hidden width H
gets hidden width h = round((1 − γ)·H) (halves round up); conv1 goes C→h and conv2 h→C. γ = 0 is the prior;
γ < 0 is wider than the prior. The skeleton is the smoothed, BN-folded prior; its other blocks keep the
prior's weights. `forward(x, γ)` runs the skeleton with the generated tensors through
`torch.func.functional_call` — one skeleton for every width, no per-width model copies (the reference
code builds 33; ../shared/notes/neumeta-reference.md sec. 4, 7). `export(γ, k)` returns a plain
`kit.models.ResNet` that runs without the INR.

Which blocks are metamorphic (`blocks_for`): 'last_block' (NeuMeta, paper 000 Table 2: the network's final
block), 'last_stage' (the last stage's blocks but its projection block and its final block: Table 1, blocks
1…7 of ResNet-56's layer3), 'all' (every block but projection blocks and the final block: Fig. 2), 'S:k' (the
first k blocks of setting S in forward order: the Fig. 4 sweep), or a comma-separated list of block names.
The final block is left out of the multi-block settings because HTTY trains it directly (sec. 3.1).

HTTY's metamorphic block (paper 000 appendix, sec. 3.2): conv C→h, ReLU, conv h→C, the branch scaled by a
learnable α (one per block, shared by every γ; 0 at the start, SkipInit) and added to the shortcut, no BN.
With `alpha_scaling` the skeleton's metamorphic blocks are `ScaledBlock`s whose α is passed in with the
generated tensors; `export` folds α into conv2. With `train_tail` the final block (when it is not
metamorphic) and the classifier are parameters trained directly, shared by every γ (sec. 3.1). `active`
blocks (the first ones, in order) take generated weights; the others keep the prior's (incremental
training, sec. 3.1).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from kit import config as C
from kit import io, models
from kit.errors import KitError
from kit.inr import TensorSpec, WeightINR, check_inr_size, check_k

SETTINGS = ("last_block", "last_stage", "all")
GAMMA_MIN = -1.0  # widest supported network: twice the prior's width (the INR's size coordinates reach 2)

Gamma = float | Mapping[str, float]  # one γ for every metamorphic block, or one per block

# The INR's tensor layout: every metamorphic block is 4 consecutive slots, in block order.
BLOCK_PARTS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
SLOTS_PER_BLOCK = len(BLOCK_PARTS)


def block_slots(block: int) -> list[int]:
    """The INR slots of metamorphic block number `block` (0-based), in `BLOCK_PARTS` order."""
    return [SLOTS_PER_BLOCK * block + j for j in range(SLOTS_PER_BLOCK)]


def blocks_for(model: models.ResNet, setting: str | Sequence[str]) -> list[str]:
    """Names of the metamorphic blocks of `model` under a setting, in forward order."""
    named = list(model.blocks())
    names = [n for n, _ in named]
    plain = [n for n, b in named[:-1] if b.shortcut is None]  # no projection shortcut, not the final block
    count = None
    if isinstance(setting, str) and ":" in setting:
        setting, _, k = setting.partition(":")
        if not k.strip().isdigit() or int(k) < 1:
            raise KitError(f"In the setting '{setting}:{k}' the block count must be a positive integer, e.g. 'all:3'.")
        count = int(k)
    if isinstance(setting, str) and setting in SETTINGS:
        chosen = {"last_block": names[-1:], "last_stage": [n for n in plain if n.startswith("layer3.")],
                  "all": plain}[setting]
    else:
        chosen = [s.strip() for s in setting.split(",")] if isinstance(setting, str) else list(setting)
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise KitError(f"Unknown block {unknown[0]!r} in the metamorphic setting; use one of "
                           f"{', '.join(SETTINGS)} (optionally ':k') or block names {names[0]} … {names[-1]}.")
        chosen = [n for n in names if n in chosen]
    if not chosen:
        raise KitError(f"The setting {setting!r} selects no block of ResNet-{model.depth} (its stages hold only "
                       "projection blocks and the final block); use 'last_block', block names, or a deeper prior.")
    if count is not None and count > len(chosen):
        raise KitError(f"The setting '{setting}:{count}' asks for {count} blocks but '{setting}' has only "
                       f"{len(chosen)} in ResNet-{model.depth}.")
    return chosen[:count]


class ScaledBlock(models.BasicBlock):
    """relu(α·conv2(relu(conv1(x))) + shortcut(x)) on a BN-folded block (paper 000 appendix). α is a buffer
    (1 = the prior's block) that `MetamorphicNet.forward` overrides with its learnable α."""

    def __init__(self, block: models.BasicBlock):
        nn.Module.__init__(self)
        self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = (block.conv1, block.bn1, block.conv2, block.bn2,
                                                                     block.shortcut)
        self.register_buffer("alpha", torch.ones((), device=block.conv1.weight.device), persistent=False)

    def forward(self, x):  # x: (B, cin, H, W) → (B, cout, H/stride, W/stride)
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) * self.alpha
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def width(gamma: float, reference: int) -> int:
    """h = round((1 − γ)·H), halves rounded up; one sentence when γ leaves no channel or is too wide."""
    if not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise KitError(f"γ must be a finite number; got {gamma!r}.")
    if gamma < GAMMA_MIN:
        raise KitError(f"γ = {gamma} asks for more than twice the prior's width, beyond what the INR supports; "
                       f"use γ ≥ {GAMMA_MIN}.")
    h = math.floor((1 - gamma) * reference + 0.5)
    if gamma >= 1 or h < 1:
        raise KitError(f"γ = {gamma} leaves a block of width {reference} with no channel; use γ < "
                       f"{1 - 0.5 / reference:.4g} (γ = 1 would be zero width).")
    return h


def at_prior(gamma: Gamma) -> bool:
    """Whether γ (one number, or one per block) builds every generated block at the prior's width."""
    return all(g == 0 for g in gamma.values()) if isinstance(gamma, Mapping) else gamma == 0


def gamma_key(gamma: float) -> str:
    """γ as the decimal string used in metrics.json: '0.25', '-0.25', '0'."""
    return format(float(gamma) + 0.0, ".10g")  # + 0.0 turns -0.0 into 0.0


def pool_gammas(gamma_max: float, size: int) -> list[float]:
    """The training pool: `size` evenly spaced γ from 0 to gamma_max."""
    return [0.0] if size == 1 else [gamma_max * i / (size - 1) for i in range(size)]


class MetamorphicNet(nn.Module):
    """A BN-folded prior whose `blocks` get their conv1/conv2 kernels and biases from a `WeightINR`."""

    def __init__(self, prior: models.ResNet, blocks: Sequence[str], inr: C.INRConfig, noise: float = 1.0,
                 alpha_scaling: bool = False, train_tail: bool = False, alpha_init: float = 0.0):
        super().__init__()
        if prior.arch["batchnorm"]:
            raise KitError("A metamorphic network needs a BN-folded prior (notebook 02's smoothed.pt, or models.fold_bn).")
        self.skeleton = copy.deepcopy(prior).eval().requires_grad_(False)
        self.blocks, self.noise, self.inr_config = list(blocks), noise, inr
        self.alpha_scaling, self.train_tail = alpha_scaling, train_tail
        self.active = len(self.blocks)  # the first `active` blocks take generated weights (incremental training)
        modules = dict(self.skeleton.named_modules())
        self.reference = {b: modules[b].hidden for b in self.blocks}  # H per block
        specs = []
        for b in self.blocks:
            c1, c2 = modules[f"{b}.conv1"], modules[f"{b}.conv2"]
            specs += [TensorSpec(f"{b}.conv1.weight", "kernel", c1.out_channels, c1.in_channels, c1.kernel_size[0]),
                      TensorSpec(f"{b}.conv1.bias", "bias", c1.out_channels, 1),
                      TensorSpec(f"{b}.conv2.weight", "kernel", c2.out_channels, c2.in_channels, c2.kernel_size[0]),
                      TensorSpec(f"{b}.conv2.bias", "bias", c2.out_channels, 1)]  # BLOCK_PARTS' order
        self.specs = specs
        self.inr = WeightINR(specs, inr.hidden, inr.depth, inr.activation, inr.num_freqs, inr.gate_init, inr.disentangled,
                             inr.size_encoding)
        if alpha_scaling:
            for b in self.blocks:
                parent, _, index = b.rpartition(".")
                modules[parent][int(index)] = ScaledBlock(modules[b])
            # one α per block, shared by every γ: 0 = SkipInit (paper 000), 1 = the folded prior's own scale
            self.alpha = nn.Parameter(torch.full((len(self.blocks),), float(alpha_init)))
        # The directly trained tail (HTTY sec. 3.1): the final block unless it is generated, and the classifier.
        final = [n for n, _ in self.skeleton.blocks()][-1]
        tail = [] if not train_tail else ([] if final in self.blocks else
                                         [f"{final}.conv{i}.{t}" for i in (1, 2) for t in ("weight", "bias")])
        tail += ["fc.weight", "fc.bias"] if train_tail else []
        state = self.skeleton.state_dict()
        self.tail_names = tail
        self.tail = nn.ParameterList([nn.Parameter(state[n].clone()) for n in tail])

    # ---------------------------------------------------------------- incremental training

    @property
    def active_blocks(self) -> list[str]:
        return self.blocks[:self.active]

    @property
    def active_slots(self) -> list[int]:
        """Spec indices of the generated tensors (`block_slots` of every active block)."""
        return list(range(SLOTS_PER_BLOCK * self.active))

    def set_active(self, count: int) -> None:
        """Generate the first `count` blocks; the others keep the prior's weights (and α = 1)."""
        if not 1 <= count <= len(self.blocks):
            raise KitError(f"A metamorphic network of {len(self.blocks)} blocks can have 1 … {len(self.blocks)} "
                           f"generated blocks; got {count}.")
        self.active = count

    def direct_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors trained directly rather than generated: α of the active blocks and the tail."""
        out = dict(zip(self.tail_names, self.tail))
        if self.alpha_scaling:
            out.update({f"{b}.alpha": self.alpha[i] for i, b in enumerate(self.active_blocks)})
        return out

    # ---------------------------------------------------------------- γ and widths

    def widths(self, gamma: Gamma) -> dict[str, int]:
        """Hidden width of every generated block at γ (a number, or a mapping block → γ)."""
        active = {b: self.reference[b] for b in self.active_blocks}
        if isinstance(gamma, Mapping):
            unknown = sorted(set(gamma) - set(active))
            if unknown:
                raise KitError(f"{unknown[0]!r} is not a generated block of this network; they are {', '.join(active)}.")
            return {b: width(gamma.get(b, 0.0), h) for b, h in active.items()}
        return {b: width(gamma, h) for b, h in active.items()}

    def sizes(self, gamma: Gamma) -> list[tuple[int, int]]:
        """(out, in) of every generated tensor at γ, in spec order (active blocks only)."""
        w = self.widths(gamma)
        out = []
        for s in (self.specs[i] for i in self.active_slots):
            block, conv = s.name.split(".conv")[0], s.name.split(".")[-2]
            h = w[block]
            if conv == "conv1":
                out.append((h, s.ref_in))
            else:
                out.append((s.ref_out, h if s.kind == "kernel" else 1))
        return out

    def arch_at(self, gamma: Gamma) -> dict:
        """The plain ResNet architecture (for `models.from_arch`) of the network at γ."""
        arch = self.skeleton.arch
        hidden = dict(zip([n for n, _ in self.skeleton.blocks()], arch["hidden"]))
        return {**arch, "hidden": [self.widths(gamma).get(n, h) for n, h in hidden.items()]}

    def cost(self, gamma: Gamma, input_shape: Sequence[int]) -> dict[str, int]:
        """Parameters and MACs per image of the whole network at γ."""
        with torch.random.fork_rng(devices=[]):
            return models.cost(models.from_arch(self.arch_at(gamma)), input_shape)

    def kind(self, gamma: Gamma, pool: Sequence[float]) -> str:
        """'seen' (its widths are a pool point's), 'larger' (some block wider than the prior), 'smaller' (some
        block narrower than at the pool's largest γ) or 'between' (unseen widths inside the pool's range)."""
        w = self.widths(gamma)
        if any(w == self.widths(p) for p in pool):
            return "seen"
        if any(w[b] > h for b, h in self.widths(min(pool)).items()):
            return "larger"
        if any(w[b] < h for b, h in self.widths(max(pool)).items()):
            return "smaller"
        return "between"

    # ---------------------------------------------------------------- weights

    def generate(self, gamma: Gamma = 0.0, noise: float = 0.0, generator: torch.Generator | None = None,
                 sizes_only: bool = False) -> dict[str, torch.Tensor]:
        """The generated tensors of the active blocks at γ (differentiable), with `noise` index steps of coordinate noise
        (`sizes_only`: differentiable only in the INR's size-feature weights, `WeightINR.forward`)."""
        slots = self.active_slots
        return dict(zip((self.specs[i].name for i in slots),
                        self.inr(self.sizes(gamma), noise, generator, slots=slots, sizes_only=sizes_only)))

    def average(self, gamma: Gamma = 0.0, k: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
        """Mean of k generations at γ, the first without noise (evaluation, paper 002 sec. 3.3)."""
        slots = self.active_slots
        return dict(zip((self.specs[i].name for i in slots),
                        self.inr.average(self.sizes(gamma), k, self.noise, seed, slots=slots)))

    def prior_tensors(self) -> dict[str, torch.Tensor]:
        """The smoothed prior's values of the active generated tensors: the reconstruction target at γ = 0."""
        state = self.skeleton.state_dict()
        return {self.specs[i].name: state[self.specs[i].name] for i in self.active_slots}

    def forward(self, x: torch.Tensor, gamma: Gamma = 0.0, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (B, classes) of the network at γ; `weights` from `generate`/`average` (else generated, no noise)."""
        weights = self.generate(gamma) if weights is None else weights
        return functional_call(self.skeleton, {**weights, **self.direct_tensors()}, (x,))

    @torch.no_grad()
    def export(self, gamma: Gamma = 0.0, k: int = 1, seed: int = 0,
               weights: dict[str, torch.Tensor] | None = None) -> models.ResNet:
        """A plain ResNet with the widths and (K-averaged) weights of γ, α folded into conv2, on the CPU, in eval mode;
        `weights` (the generated tensors' names and γ's shapes, e.g. free blocks of `kit.widthstudy`) replace them."""
        weights = self.average(gamma, k, seed) if weights is None else weights
        state = {name: t.detach().to("cpu") for name, t in self.skeleton.state_dict().items()}
        state.update({name: t.detach().to("cpu", state[name].dtype) for name, t in weights.items()})
        state.update({name: t.detach().to("cpu") for name, t in zip(self.tail_names, self.tail)})
        if self.alpha_scaling:  # α·(W2 * h + b2) = (α·W2) * h + α·b2
            for i, b in enumerate(self.active_blocks):
                a = self.alpha[i].detach().to("cpu")
                state[f"{b}.conv2.weight"] = state[f"{b}.conv2.weight"] * a
                state[f"{b}.conv2.bias"] = state[f"{b}.conv2.bias"] * a
        with torch.random.fork_rng(devices=[]):
            model = models.from_arch(self.arch_at(gamma))
        return models.load_weights(model, state, f"network generated at γ = {gamma}").eval()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What training changes: the INR, α and the tail (the skeleton is frozen)."""
        return {n: t for n, t in self.state_dict().items() if not n.startswith("skeleton.")}

    def load_trainable(self, values: dict[str, torch.Tensor], source: str) -> None:
        """Load a `trainable_state` (in place), refusing any missing, extra or mis-shaped tensor in one sentence."""
        models.load_weights(self, {**{f"skeleton.{k}": v for k, v in self.skeleton.state_dict().items()}, **values}, source)

    def alphas(self) -> dict[str, float]:
        """α of every generated block ({} without α-scaling)."""
        return {b: float(self.alpha[i].detach()) for i, b in enumerate(self.active_blocks)} if self.alpha_scaling else {}

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path, **extra) -> Path:
        """metamorph.pt: the prior's architecture and weights, the blocks, the INR's config and the trained state."""
        return io.save_torch({"kind": "metamorphic", "arch": self.skeleton.arch, "blocks": self.blocks,
                              "active": self.active, "noise": self.noise, "inr_config": C.to_dict(self.inr_config),
                              "alpha_scaling": self.alpha_scaling, "train_tail": self.train_tail,
                              "skeleton": self.skeleton.state_dict(), "trainable": self.trainable_state(), **extra}, path)


RECORD_KEYS = {"arch", "blocks", "active", "noise", "inr_config", "alpha_scaling", "train_tail", "skeleton", "trainable"}


def load(path: str | Path, skeleton_digest: str | None = None) -> tuple[MetamorphicNet, dict]:
    """(network, record) from a metamorph.pt; with skeleton_digest (`permute.state_digest` of the smoothed prior),
    refuse one trained on another prior. Plain data only (`io.load_torch`: nothing in the file runs); NaN or infinite
    weights, and an architecture, INR, input shape or K beyond the kit's bounds, are refused in one sentence naming
    the file, before anything is allocated."""
    record = io.load_torch(path, "metamorphic checkpoint", "if an older version of this kit wrote it, delete it and "
                                                          "rerun notebook 03 (`python -m kit pipeline` on its run folder "
                                                          "does)")
    if not isinstance(record, dict) or record.get("kind") != "metamorphic" or not RECORD_KEYS <= set(record):
        raise KitError(f"{path} is not a metamorphic checkpoint of this kit version (metamorph.pt from notebook 03 or "
                       "kit.metatrain); retrain notebook 03 to write one.")
    if skeleton_digest is not None and record.get("skeleton_digest") != skeleton_digest:
        raise KitError(f"{path} was trained on another prior than the one given; use the checkpoint trained on this "
                       "prior, or retrain notebook 03 on it.")
    source = f"metamorphic checkpoint {path}"
    skeleton = models.check_tensors(record["skeleton"], source)
    trainable = models.check_tensors(record["trainable"], source)
    inr = C.from_dict(C.INRConfig, record["inr_config"])
    check_inr_size(inr.hidden, inr.depth, f"The {source}")
    if isinstance(record.get("config"), dict) and "k_samples" in record["config"]:
        check_k(record["config"]["k_samples"], f"The {source} asks for")  # the K that morph and evaluate default to
    if record.get("input_shape") is not None:
        models.check_input_shape(record["input_shape"], source)
    prior = models.load_weights(models.from_arch(record["arch"], source), skeleton, source)
    names, blocks = [n for n, _ in prior.blocks()], record["blocks"]
    if (not isinstance(blocks, list) or not blocks or any(b not in names for b in blocks)
            or type(record["active"]) is not int or type(record["noise"]) not in (int, float)
            or type(record["alpha_scaling"]) is not bool or type(record["train_tail"]) is not bool):
        raise KitError(f"The {source} holds a malformed record (its blocks, active count, noise or switches); use a "
                       "metamorph.pt written by this kit.")
    net = MetamorphicNet(prior, record["blocks"], inr, record["noise"], record["alpha_scaling"], record["train_tail"])
    net.set_active(record["active"])
    net.load_trainable(trainable, source)
    return net.eval(), record


def export_record(record: dict, checkpoint: str | Path, gamma: Gamma, k: int, seed: int) -> dict:
    """What an exported network's file records beside its weights (`models.save_plain`): γ, K, the noise seed, the
    metamorphic checkpoint it came from, and the prior's dataset, input shape and config (`train.load_prior` reads it)."""
    return {"gamma": dict(gamma) if isinstance(gamma, Mapping) else float(gamma), "k": k, "seed": seed,
            "source": str(Path(checkpoint).resolve()), "dataset": record["dataset"],
            "input_shape": record["input_shape"], "config": record["prior_config"]}
