"""Attention as an nn.Module that owns its projections, plugged in by an adapter.

What makes it different: the computation lives in `SelfAttentionModule`, a
regular nn.Module with nn.Linear(bias=False) layers for the queries, keys and
values of all heads (one Linear of width h·d per role) and an optional output
Linear, and a forward(x, x_kv=None, causal=False).  nn.Linear.weight already
has the spec's (d_out, d_in) layout, so the per-head (h, d, d_in) weights
stack into a Linear weight with a reshape.

`ModuleAdapter` (the plug-in target, tests.variants.correct.module:ModuleAdapter)
builds a module of the right size for each call and runs it with the given
weights through torch.func.functional_call.  Copying the weights into the
parameters under no_grad would cut the autograd graph; functional_call swaps
the caller's tensors in as the parameters, so gradients flow back to them.
The module is created on the "meta" device: its own initial parameters are
never materialised (no memory, no use of the global random generator).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from tests.variants.correct import CAPABILITIES  # the claims every variant here shares


class SelfAttentionModule(nn.Module):
    """h-head scaled dot-product attention; forward returns (concatenated heads or W_o output, weights)."""

    def __init__(
        self, d_in: int, d_k: int, d_v: int, heads: int = 1, d_kv_in: int | None = None, d_out: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        d_kv_in = d_in if d_kv_in is None else d_kv_in
        self.heads, self.d_k, self.d_v = heads, d_k, d_v
        self.query = nn.Linear(d_in, heads * d_k, bias=False, device=device)
        self.key = nn.Linear(d_kv_in, heads * d_k, bias=False, device=device)
        self.value = nn.Linear(d_kv_in, heads * d_v, bias=False, device=device)
        self.out = nn.Linear(heads * d_v, d_out, bias=False, device=device) if d_out is not None else None

    def _split(self, y: Tensor, d: int) -> Tensor:
        return y.unflatten(-1, (self.heads, d)).transpose(-3, -2)  # (..., n, h·d) -> (..., h, n, d)

    def forward(self, x: Tensor, x_kv: Tensor | None = None, causal: bool = False) -> tuple[Tensor, Tensor]:
        x_kv = x if x_kv is None else x_kv
        q = self._split(self.query(x), self.d_k)
        k = self._split(self.key(x_kv), self.d_k)
        v = self._split(self.value(x_kv), self.d_v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d_k)
        if causal:
            n_q, n_kv = scores.shape[-2:]
            future = torch.ones(n_q, n_kv, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))  # key 0 is always visible: no empty row
        weights = torch.softmax(scores, dim=-1)
        context = torch.matmul(weights, v).transpose(-3, -2).flatten(-2)  # (..., n, h·d_v), head-major
        if self.out is not None:
            context = self.out(context)
        return context, weights


class ModuleAdapter:
    """The spec's functions, each running a freshly sized SelfAttentionModule on the given weights."""

    CAPABILITIES = CAPABILITIES

    @staticmethod
    def _run(
        x: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None, causal: bool
    ) -> tuple[Tensor, Tensor]:
        """w_q/w_k/w_v are (h, d, d_in); returns the module's (output, weights (..., h, n_q, n_kv))."""
        heads, d_k, d_in = w_q.shape
        d_v, d_kv_in = w_v.shape[1], w_v.shape[2]
        module = SelfAttentionModule(
            d_in, d_k, d_v, heads, d_kv_in=d_kv_in, d_out=None if w_o is None else w_o.shape[0], device="meta"
        ).eval()
        params = {
            "query.weight": w_q.reshape(heads * d_k, d_in),
            "key.weight": w_k.reshape(heads * d_k, d_kv_in),
            "value.weight": w_v.reshape(heads * d_v, d_kv_in),
        }
        if w_o is not None:
            params["out.weight"] = w_o
        return functional_call(module, params, (x,), {"x_kv": x_kv, "causal": causal})

    def project(self, x: Tensor, weight: Tensor) -> Tensor:
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        return functional_call(linear, {"weight": weight}, (x,))

    def cross_attention(
        self, x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        context, weights = self._run(x_q, x_kv, w_q[None], w_k[None], w_v[None], None, causal)
        return context, weights.squeeze(-3)

    def self_attention(
        self, x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        return self.cross_attention(x, x, w_q, w_k, w_v, causal)

    def multihead_attention_concat(
        self, x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        return self._run(x, x, w_q, w_k, w_v, w_o, causal)

    def multihead_attention(
        self, x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        concat, weights = self._run(x, x, w_q, w_k, w_v, None, causal)
        heads, d_v = w_v.shape[0], w_v.shape[1]
        return concat.unflatten(-1, (heads, d_v)).transpose(-3, -2), weights
