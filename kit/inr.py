"""Implicit neural representation (INR) of weights: coordinates of a weight → its value, for any width.

Paper 002 sec. 3.2 (eq. 3) and paper 000 sec. 2.1 (eq. 1): every generated element (a conv kernel, a
bias entry) has coordinates (layer index, output index, input index) and the sizes they are normalised
by, relative to the prior ("reference") network:

    x = [l / L, o / O, c / I, L / L_ref, O / O_ref, I / I_ref]          (6 values per kernel)

where O × I is the generated tensor's size and O_ref × I_ref the prior's. Fourier features
[x, sin(2^k π x), cos(2^k π x)] (k < num_freqs) feed a residual MLP. "Block-based" (paper 000 sec. 2.1):
one MLP per generated tensor. Here all of them live in one `MLPBank` whose weights are stacked, so a
single batched matmul per layer evaluates every MLP at once (no Python loop over tensors, no masked
writes; ../shared/notes/neumeta-reference.md sec. 1.4, 7).

Status: coordinates, Fourier features and the batched bank (issue 4's first part). The kernel decoding,
noise averaging, metamorphic network and NeuMeta trainer are still to come.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kit.errors import KitError

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


class MLPBank(nn.Module):
    """`count` residual MLPs of one shape, evaluated together with batched matmuls.

    Each MLP: Linear(in → hidden), act, then (depth − 1) blocks x ← x + g_j · act(Linear_j(x)) with a learnable
    scalar gate g_j, then Linear(hidden → out). Input (count, N, in) → output (count, N, out)."""

    def __init__(self, count: int, in_dim: int, hidden: int, out_dim: int, depth: int = 4,
                 activation: str = "relu", gate_init: float = 0.1):
        super().__init__()
        if activation not in ("relu", "elu"):
            raise KitError(f"INR activation must be 'relu' or 'elu'; got {activation!r}.")
        if depth < 1 or count < 1:
            raise KitError(f"An MLP bank needs depth ≥ 1 and count ≥ 1; got depth {depth}, count {count}.")
        self.activation = activation
        self.w_in, self.b_in = self._linear(count, in_dim, hidden)
        blocks = [self._linear(count, hidden, hidden) for _ in range(depth - 1)]
        self.w_hidden = nn.Parameter(torch.stack([w for w, _ in blocks], 1) if blocks else torch.empty(count, 0, hidden, hidden))
        self.b_hidden = nn.Parameter(torch.stack([b for _, b in blocks], 1) if blocks else torch.empty(count, 0, 1, hidden))
        self.gates = nn.Parameter(torch.full((count, max(depth - 1, 0)), float(gate_init)))
        self.w_out, self.b_out = self._linear(count, hidden, out_dim)

    @staticmethod
    def _linear(count: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
        """PyTorch's default Linear initialisation, for `count` independent layers: (count, in, out), (count, 1, out)."""
        bound = 1 / math.sqrt(fan_in)
        w = torch.empty(count, fan_in, fan_out).uniform_(-bound, bound)
        b = torch.empty(count, 1, fan_out).uniform_(-bound, bound)
        return nn.Parameter(w), nn.Parameter(b)

    def _act(self, x):
        return F.relu(x) if self.activation == "relu" else F.elu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (count, N, in) → (count, N, out)
        h = self._act(torch.baddbmm(self.b_in, x, self.w_in))
        for j in range(self.w_hidden.shape[1]):
            h = h + self.gates[:, j, None, None] * self._act(torch.baddbmm(self.b_hidden[:, j], h, self.w_hidden[:, j]))
        return torch.baddbmm(self.b_out, h, self.w_out)

    def forward_one(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """MLP number `index` alone on (N, in): the plain reference the batched forward must equal."""
        h = self._act(x @ self.w_in[index] + self.b_in[index])
        for j in range(self.w_hidden.shape[1]):
            h = h + self.gates[index, j] * self._act(h @ self.w_hidden[index, j] + self.b_hidden[index, j])
        return h @ self.w_out[index] + self.b_out[index]

    def run(self, inputs: list[torch.Tensor], chunk: int = 1 << 16) -> list[torch.Tensor]:
        """Each MLP i on its own rows inputs[i] (N_i, in), in one batched pass per chunk of rows: shorter
        inputs are zero-padded to the longest and the padding is cut away again."""
        if len(inputs) != self.w_in.shape[0]:
            raise KitError(f"The bank holds {self.w_in.shape[0]} MLPs but got inputs for {len(inputs)} tensors.")
        longest = max(len(x) for x in inputs)
        padded = torch.stack([F.pad(x, (0, 0, 0, longest - len(x))) for x in inputs])  # (count, longest, in)
        out = torch.cat([self(padded[:, i:i + chunk]) for i in range(0, longest, chunk)], dim=1)
        return [out[k, :len(x)] for k, x in enumerate(inputs)]
