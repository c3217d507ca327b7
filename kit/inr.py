"""Implicit neural representation (INR) of weights: coordinates of a weight → its value, for any width.

Paper 002 sec. 3.2 (eq. 3) and paper 000 sec. 2.1 (eq. 1): every generated element (a conv kernel, a
bias entry) has coordinates (layer index, output index, input index) and the sizes they are normalised
by, relative to the prior ("reference") network:

    x = [l / L, o / O, c / I, L / L_ref, O / O_ref, I / I_ref]          (6 values per kernel)

where O × I is the generated tensor's size and O_ref × I_ref the prior's. Fourier features
[x, sin(2^k π x), cos(2^k π x)] (k < num_freqs) feed a residual MLP. "Block-based" (paper 000 sec. 2.1):
one MLP per generated tensor. `WeightINR` keeps them in two `MLPBank`s, one for kernels and one for
biases, whose weights are stacked, so one batched matmul per layer evaluates every MLP at once: no Python
loop over tensors, no masked writes, tensors routed by their integer slot and never by a noisy coordinate
(../shared/notes/neumeta-reference.md sec. 1.4, 7).

Decoding (paper 000 sec. 2.1): a kernel MLP outputs k_max² values per (o, c) kernel; a smaller kernel takes
the spatial centre; kernels are divided by the fan-in I (input channels, as the reference code does, not I·k²:
the sum over a kernel's inputs stays of the same size at every width). A bias takes the first output of its MLP (NeuMeta),
or its MLP has a single output ("disentangled", paper 000 sec. 3.5).

Cross-network smoothing (paper 002 sec. 3.3): during training the index coordinates o and c get uniform
noise of `noise` index steps; the layer slot, the sizes and the fan-in divisor stay exact. At evaluation
`average` takes the running mean of K generations, the first without noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from kit.bounds import MAX_INR_PARAMETERS, MAX_K, check_inr_size, check_k  # noqa: F401 (re-exported)
from kit.errors import KitError
from kit.mlpbank import MLPBank

__all__ = ["MAX_SAFE_FREQS", "MAX_K", "SIZE_ENCODINGS", "coordinates",
           "fourier_features", "size_columns", "check_inr_size", "check_k", "TensorSpec", "WeightINR", "MLPBank"]

MAX_SAFE_FREQS = 16  # 2^15·π·x still has ~1e-2 rad float32 resolution at x≈1; beyond that features are noise

def coordinates(layer: int, num_layers: int, out_size: int, in_size: int, ref_out: int, ref_in: int,
                ref_layers: int | None = None, device=None) -> torch.Tensor:
    """(out_size·in_size, 6) coordinates of an (out, in) tensor's elements, output-major (row o·in + c).

    Indices are divided by the generated sizes (so they span [0, 1) at every width) and the sizes by the
    prior's; a bias is the in_size = 1 case."""
    if min(out_size, in_size) < 1:
        raise KitError(f"Cannot generate a tensor of size {out_size}×{in_size}; widths must be at least 1.")
    o = torch.arange(out_size, device=device, dtype=torch.float32) / out_size
    c = torch.arange(in_size, device=device, dtype=torch.float32) / in_size
    oo, cc = torch.meshgrid(o, c, indexing="ij")  # (out, in) each
    n = out_size * in_size
    const = torch.tensor([layer / num_layers, 0.0, 0.0, num_layers / (ref_layers or num_layers),
                          out_size / ref_out, in_size / ref_in], device=device)
    x = const.expand(n, 6).clone()
    x[:, 1], x[:, 2] = oo.reshape(-1), cc.reshape(-1)
    return x


def fourier_features(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """(N, D) → (N, D·(1 + 2·num_freqs)): [x, sin(2^k π x), cos(2^k π x)] for k = 0 … num_freqs−1."""
    if not 0 <= num_freqs <= MAX_SAFE_FREQS:
        raise KitError(f"num_freqs must be between 0 and {MAX_SAFE_FREQS} (higher frequencies are below float32 "
                       f"resolution, the reference code's 32 is meaningless noise); got {num_freqs}.")
    freqs = math.pi * 2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype)  # (F,)
    angles = (x[..., None] * freqs).flatten(-2)  # (..., D·F)
    return torch.cat([x, angles.sin(), angles.cos()], dim=-1)


SIZE_ENCODINGS = ("absolute", "offset")


def size_columns(num_freqs: int) -> list[int]:
    """Columns of `fourier_features` that carry the size coordinates O/O_ref, I/I_ref (d = 4, 5): features are
    [x (6), sin(2^k π x_d) at 6 + d·F + k, cos(2^k π x_d) at 6 + 6F + d·F + k]."""
    f = num_freqs
    return [4, 5] + [6 + off + d * f + k for off in (0, 6 * f) for d in (4, 5) for k in range(f)]


@dataclass(frozen=True)
class TensorSpec:
    """One generated parameter tensor at the prior's size: what the INR's coordinates are relative to."""

    name: str  # parameter name in the network, e.g. 'layer3.2.conv1.weight'
    kind: str  # 'kernel' (conv weight (O, I, k, k)) or 'bias' ((O,))
    ref_out: int  # O_ref: output channels in the prior
    ref_in: int  # I_ref: input channels in the prior (1 for a bias)
    kernel: int = 1  # spatial size k of a conv kernel (1 for a bias)


class WeightINR(nn.Module):
    """The INRs of a list of tensors: one MLP per tensor, kernels in one bank and biases in another.

    `forward(sizes, noise, generator)` takes each tensor's current (out, in) size and returns the tensors,
    differentiable with respect to the INR's parameters."""

    def __init__(self, specs: list[TensorSpec], hidden: int = 256, depth: int = 4, activation: str = "relu",
                 num_freqs: int = 10, gate_init: float = 0.1, disentangled: bool = False, size_encoding: str = "absolute"):
        super().__init__()
        if not specs:
            raise KitError("An INR needs at least one tensor to generate; the metamorphic setting selected none.")
        bad = [s.kind for s in specs if s.kind not in ("kernel", "bias")]
        if bad:
            raise KitError(f"Unknown generated tensor kind {bad[0]!r}; use 'kernel' or 'bias'.")
        fourier_features(torch.zeros(1, 6), num_freqs)  # validates num_freqs in one sentence
        if size_encoding not in SIZE_ENCODINGS:
            raise KitError(f"Unknown size encoding {size_encoding!r}; choose one of {', '.join(SIZE_ENCODINGS)}.")
        self.specs, self.num_freqs, self.disentangled = list(specs), num_freqs, disentangled
        # what the MLP's input holds in the size columns (O/O_ref, I/I_ref and their Fourier features) at the prior's
        # size. 'offset' subtracts it from every input row, so the prior's size reaches the MLP through those columns
        # as exactly 0 and their weights only act at other sizes.
        cols = size_columns(num_freqs)
        at_prior, mask = torch.zeros(6 * (1 + 2 * num_freqs)), torch.zeros(6 * (1 + 2 * num_freqs), dtype=torch.bool)
        at_prior[cols] = fourier_features(torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]), num_freqs)[0, cols]
        mask[cols] = True
        self.size_encoding = size_encoding
        self.register_buffer("size_offset", at_prior if size_encoding == "offset" else torch.zeros_like(at_prior),
                             persistent=False)  # (in_dim,), subtracted from every input row
        self.register_buffer("size_at_prior", at_prior - self.size_offset, persistent=False)  # (in_dim,), as the MLP sees it
        self.register_buffer("size_mask", mask, persistent=False)  # (in_dim,) bool: the size columns
        self.kernels = [i for i, s in enumerate(specs) if s.kind == "kernel"]
        self.biases = [i for i, s in enumerate(specs) if s.kind == "bias"]
        self.row = {i: r for group in (self.kernels, self.biases) for r, i in enumerate(group)}  # slot → row in its bank
        self.k_max = max((specs[i].kernel for i in self.kernels), default=1)
        off_centre = [specs[i].name for i in self.kernels if (self.k_max - specs[i].kernel) % 2]
        if off_centre:
            raise KitError(f"{off_centre[0]} cannot be cut from the centre of a {self.k_max}×{self.k_max} kernel "
                           "(sizes differ by an odd number); generate odd kernel sizes only.")
        in_dim = 6 * (1 + 2 * num_freqs)
        check_inr_size(hidden, depth)
        outputs = len(self.kernels) * self.k_max ** 2 + len(self.biases) * (1 if disentangled else self.k_max ** 2)
        weights = len(specs) * (in_dim * hidden + (depth - 1) * hidden ** 2) + outputs * hidden
        if weights > MAX_INR_PARAMETERS:
            raise KitError(f"An INR of {len(specs)} MLPs of hidden width {hidden} and depth {depth} would have "
                           f"{weights:,} weights, beyond the kit's bound of {MAX_INR_PARAMETERS:,}, so nothing is allocated; "
                           "use a smaller INR or fewer metamorphic blocks.")
        mk = lambda count, out: MLPBank(count, in_dim, hidden, out, depth, activation, gate_init) if count else None
        self.kernel_bank = mk(len(self.kernels), self.k_max ** 2)
        self.bias_bank = mk(len(self.biases), 1 if disentangled else self.k_max ** 2)
        self._coords: dict[tuple, torch.Tensor] = {}  # (slot, out, in, device) → (out·in, 6), built once

    def coords(self, slot: int, out_size: int, in_size: int, device) -> torch.Tensor:
        key = (slot, out_size, in_size, str(device))
        if key not in self._coords:
            s = self.specs[slot]
            self._coords[key] = coordinates(slot, len(self.specs), out_size, in_size, s.ref_out, s.ref_in, device=device)
        return self._coords[key]

    def _inputs(self, slots: list[int], sizes: dict[int, tuple[int, int]], noise: float,
                generator: torch.Generator | None, device) -> list[torch.Tensor]:
        feats = []
        for i in slots:
            out_size, in_size = sizes[i]
            x = self.coords(i, out_size, in_size, device)
            if noise > 0:  # uniform noise of `noise` index steps on the o and c coordinates only
                u = torch.rand(len(x), 2, device=device, generator=generator) - 0.5
                step = torch.tensor([1.0 / out_size, 1.0 / in_size if in_size > 1 else 0.0], device=device)
                x = torch.cat([x[:, :1], x[:, 1:3] + noise * u * step, x[:, 3:]], dim=1)
            feats.append(fourier_features(x, self.num_freqs) - self.size_offset)
        return feats

    def forward(self, sizes: list[tuple[int, int]], noise: float = 0.0, generator: torch.Generator | None = None,
                chunk: int = 1 << 15, slots: list[int] | None = None, sizes_only: bool = False) -> list[torch.Tensor]:
        """The tensors `slots` (every spec when None) at the given (out, in) sizes, one size per slot, in that order:
        kernels (out, in, k, k), biases (out,). Unlisted slots are not evaluated at all (incremental training).
        `sizes_only`: the same values, but gradient reaches only the first-layer weights of the size features."""
        slots = list(range(len(self.specs))) if slots is None else list(slots)
        if len(sizes) != len(slots):
            raise KitError(f"Got sizes for {len(sizes)} tensors but asked for {len(slots)}.")
        device = next(self.parameters()).device
        if generator is not None and generator.device.type != device.type:
            raise KitError(f"The noise generator is on {generator.device} but the INR on {device}; "
                           "create it with torch.Generator(device=...) on the INR's device.")
        size = dict(zip(slots, sizes))
        out: dict[int, torch.Tensor] = {}
        learn = self.size_mask.float() if sizes_only else None  # gradient only on the size columns' weights
        for bank, members in ((self.kernel_bank, self.kernels), (self.bias_bank, self.biases)):
            wanted = [i for i in members if i in size]
            if not wanted:
                continue
            raw = bank.run(self._inputs(wanted, size, noise, generator, device), chunk, [self.row[i] for i in wanted], learn)
            for i, r in zip(wanted, raw):  # kernels decoded; a bias is the first output (NeuMeta) or the only one
                out[i] = self._decode_kernel(r, *size[i], self.specs[i].kernel) if self.specs[i].kind == "kernel" else r[:, 0]
        return [out[i] for i in slots]

    @torch.no_grad()
    def copy_slots(self, pairs: list[tuple[int, int]], source: "WeightINR | None" = None) -> None:
        """For each (from, to) pair, the MLP of slot `to` becomes a copy of slot `from`'s (of `source`, an INR of the
        same specs, when given): HTTY's INR initialisation (paper 000 sec. 3.3), or a reset to initial weights."""
        for a, b in pairs:
            if self.specs[a].kind != self.specs[b].kind:
                raise KitError(f"Cannot initialise the {self.specs[b].kind} MLP of {self.specs[b].name} from the "
                               f"{self.specs[a].kind} MLP of {self.specs[a].name}.")
            bank = self.kernel_bank if self.specs[b].kind == "kernel" else self.bias_bank
            other = None if source is None else (source.kernel_bank if self.specs[b].kind == "kernel" else source.bias_bank)
            bank.copy_rows(self.row[a], self.row[b], other)

    @torch.no_grad()
    def neutralise_sizes(self, slots: list[int]) -> None:
        """Zero the first-layer weights of the size features O/O_ref, I/I_ref (and their Fourier features) of the MLPs
        of `slots`, folding their value at the prior's size (both ratios 1) into the first-layer bias. The MLPs'
        output at the prior's size is unchanged; at another size it starts as the same function of the index
        coordinates, i.e. a resampling of what was fitted (`MorphConfig.size_features`)."""
        cols = self.size_mask
        for i in slots:
            bank = self.kernel_bank if self.specs[i].kind == "kernel" else self.bias_bank
            w, r = bank.w_in, self.row[i]  # w: (count, in_dim, hidden)
            bank.b_in[r, 0] += self.size_at_prior[cols].to(w.dtype) @ w[r, cols]  # (hidden,); 0 when 'offset'
            w[r, cols] = 0.0

    def _decode_kernel(self, raw: torch.Tensor, out_size: int, in_size: int, k: int) -> torch.Tensor:
        """(out·in, k_max²) → (out, in, k, k): the spatial centre k×k of each k_max×k_max kernel, / fan-in."""
        w = raw.reshape(out_size, in_size, self.k_max, self.k_max)
        s = (self.k_max - k) // 2
        return w[:, :, s:s + k, s:s + k] / in_size

    @torch.no_grad()
    def average(self, sizes: list[tuple[int, int]], k: int, noise: float, seed: int = 0,
                slots: list[int] | None = None) -> list[torch.Tensor]:
        """Running mean of k generations: the first without noise, the others with (paper 002 sec. 3.3)."""
        check_k(k)
        device = next(self.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        mean = [t.float() for t in self(sizes, slots=slots)]
        for i in range(2, k + 1):
            for m, t in zip(mean, self(sizes, noise, generator, slots=slots)):
                m.add_(t.float() - m, alpha=1.0 / i)
        return mean


def per_tensor_loop(inr: WeightINR, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The same tensors as `inr(sizes)`, one MLP at a time (`MLPBank.forward_one`): the oracle the batched
    banks are tested against, and the 'loop' row of `python -m kit bench inr`."""
    device = next(inr.parameters()).device
    out: list = [None] * len(inr.specs)
    sizes_of = dict(enumerate(sizes))
    for bank, slots in ((inr.kernel_bank, inr.kernels), (inr.bias_bank, inr.biases)):
        for i, x in zip(slots, inr._inputs(slots, sizes_of, 0.0, None, device)):
            raw = bank.forward_one(inr.row[i], x)
            out[i] = raw[:, 0] if inr.specs[i].kind == "bias" else inr._decode_kernel(raw, *sizes[i], inr.specs[i].kernel)
    return out
