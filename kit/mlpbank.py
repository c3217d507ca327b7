"""A bank of residual MLPs of one shape, evaluated together with batched matmuls (the INR's engine).

Each MLP (paper 002 sec. 4.1, NeuMeta's `resmlp`; paper 000 sec. 4.1 uses ELU):

    h ← act(x W_in + b_in);   h ← h + g_j · act(h W_j + b_j)  for j < depth − 1;   y = h W_out + b_out

with one learnable scalar gate g_j per residual block. The weights of all MLPs are stacked along a first
"count" axis, so one `baddbmm` per layer runs every MLP at once.

The residual block has its own backward (`_ResidualBlock`): autograd's generic one materialises
g_j·act(·), its gradient and several same-sized temporaries per layer, and on a CPU that elementwise traffic
cost as much as the matmuls. The hand-written backward reads each saved tensor once, folds the gate into the
small weight matrix instead of the large activations, and fuses the residual add into the input-gradient
matmul. `forward_one` is the plain per-MLP reference it is tested against (and gradchecked in float64).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kit.errors import KitError

ACTIVATIONS = ("relu", "elu")


def _act(x: torch.Tensor, activation: str) -> torch.Tensor:
    return F.relu(x) if activation == "relu" else F.elu(x)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """bf16 under CUDA autocast (mixed precision), otherwise the tensor's own dtype."""
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return x.dtype


class _ResidualBlock(torch.autograd.Function):
    """out = h + g·act(h W + b) for stacked MLPs. h: (C, N, H), W: (C, H, H), b: (C, 1, H), g: (C,)."""

    @staticmethod
    def forward(ctx, h, w, b, g, activation: str):
        dtype = _compute_dtype(h)
        hc, wc, bc, gc = (t.to(dtype) for t in (h, w, b, g))
        a = _act(torch.baddbmm(bc, hc, wc), activation)  # (C, N, H)
        ctx.save_for_backward(hc, wc, gc, a)
        ctx.activation, ctx.dtypes = activation, (h.dtype, w.dtype, b.dtype, g.dtype)
        return torch.addcmul(hc, gc[:, None, None], a)

    @staticmethod
    def backward(ctx, grad):
        h, w, g, a = ctx.saved_tensors
        grad = grad.to(a.dtype)
        gates = g[:, None, None]
        # (C,) = Σ grad·a per MLP: C BLAS dot products read each tensor once (a (1×NH)·(NH×1) bmm is slow)
        dg = torch.stack([torch.dot(gi.reshape(-1), ai.reshape(-1)) for gi, ai in zip(grad, a)])
        if ctx.activation == "relu":  # dz = grad · act'(z), act' read off the saved output a
            dz = torch.ops.aten.threshold_backward(grad, a, 0)
        else:  # ELU: act'(z) = 1 where a > 0, else a + 1
            dz = torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, a)
        dw = torch.bmm(h.transpose(1, 2), dz) * gates  # (C, H, H)
        db = dz.sum(1, keepdim=True) * gates  # (C, 1, H)
        dh = torch.baddbmm(grad, dz, (w * gates).transpose(1, 2))  # grad + g·dz Wᵀ, the residual add fused
        dt_h, dt_w, dt_b, dt_g = ctx.dtypes
        return dh.to(dt_h), dw.to(dt_w), db.to(dt_b), dg.to(dt_g), None


class MLPBank(nn.Module):
    """`count` residual MLPs of one shape. Input (count, N, in) → output (count, N, out)."""

    def __init__(self, count: int, in_dim: int, hidden: int, out_dim: int, depth: int = 4,
                 activation: str = "relu", gate_init: float = 0.1):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise KitError(f"INR activation must be 'relu' or 'elu'; got {activation!r}.")
        if depth < 1 or count < 1 or hidden < 1:
            raise KitError(f"An MLP bank needs depth, count and hidden ≥ 1; got {depth}, {count}, {hidden}.")
        self.activation = activation
        self.w_in, self.b_in = self._linear(count, in_dim, hidden)
        layers = [self._linear(count, hidden, hidden) for _ in range(depth - 1)]
        self.w_hidden = nn.ParameterList([w for w, _ in layers])  # each (count, hidden, hidden), contiguous
        self.b_hidden = nn.ParameterList([b for _, b in layers])  # each (count, 1, hidden)
        self.gates = nn.Parameter(torch.full((count, depth - 1), float(gate_init)))
        self.w_out, self.b_out = self._linear(count, hidden, out_dim)

    @property
    def count(self) -> int:
        return self.w_in.shape[0]

    @staticmethod
    def _linear(count: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
        """PyTorch's default Linear initialisation, for `count` independent layers: (count, in, out), (count, 1, out)."""
        bound = 1 / math.sqrt(fan_in)
        w = torch.empty(count, fan_in, fan_out).uniform_(-bound, bound)
        b = torch.empty(count, 1, fan_out).uniform_(-bound, bound)
        return nn.Parameter(w), nn.Parameter(b)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None, learn: torch.Tensor | None = None) -> torch.Tensor:
        """(count', N, in) → (count', N, out) for the MLPs `index` (all of them, in order, when None). With `learn`
        (an (in,) 0/1 mask of input columns), gradient reaches only the first-layer weights of those columns: the
        values are unchanged, every other parameter is treated as a constant."""
        pick = (lambda p: p) if index is None else (lambda p: p.index_select(0, index))
        if learn is None:
            w_in = pick(self.w_in)
        else:
            full = pick(self.w_in)
            w_in = full.detach() + (full - full.detach()) * learn[:, None]  # (count', in, hidden): grad only on `learn`
            pick = (lambda p: p.detach()) if index is None else (lambda p: p.detach().index_select(0, index))
        h = _act(torch.baddbmm(pick(self.b_in), x, w_in), self.activation)
        gates = pick(self.gates)
        for j, (w, b) in enumerate(zip(self.w_hidden, self.b_hidden)):
            h = _ResidualBlock.apply(h, pick(w), pick(b), gates[:, j], self.activation)
        return torch.baddbmm(pick(self.b_out), h, pick(self.w_out))

    def forward_one(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """MLP number `index` alone on (N, in), with autograd's own backward: the reference."""
        h = _act(x @ self.w_in[index] + self.b_in[index], self.activation)
        for j, (w, b) in enumerate(zip(self.w_hidden, self.b_hidden)):
            h = h + self.gates[index, j] * _act(h @ w[index] + b[index], self.activation)
        return h @ self.w_out[index] + self.b_out[index]

    def run(self, inputs: list[torch.Tensor], chunk: int = 1 << 15, which: list[int] | None = None,
            learn: torch.Tensor | None = None) -> list[torch.Tensor]:
        """MLP which[i] (i itself when which is None) on its own rows inputs[i] (N_i, in). Inputs of equal length
        go through one batched pass (no padding: tensors of other sizes form their own group), `chunk` rows at a time."""
        which = list(range(self.count)) if which is None else list(which)
        if len(inputs) != len(which) or any(not 0 <= j < self.count for j in which):
            raise KitError(f"The bank holds {self.count} MLPs but got inputs for {len(inputs)} tensors "
                           f"(MLPs {which}).")
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(len(x), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(inputs)
        for length, members in groups.items():
            mlps = [which[i] for i in members]
            index = None if mlps == list(range(self.count)) else torch.tensor(mlps, device=inputs[0].device)
            x = torch.stack([inputs[i] for i in members])  # (members, length, in)
            y = torch.cat([self(x[:, s:s + chunk], index, learn) for s in range(0, length, chunk)], dim=1)
            for k, i in enumerate(members):
                out[i] = y[k]
        return out

    @torch.no_grad()
    def copy_rows(self, source: int, target: int, other: "MLPBank | None" = None) -> None:
        """MLP `target` becomes a copy of MLP `source` (of `other`, a bank of the same shape, when given)."""
        for name, p in self.named_parameters():
            p[target].copy_(dict((other or self).named_parameters())[name][source])
