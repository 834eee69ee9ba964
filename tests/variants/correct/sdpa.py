"""Attention built on torch.nn.functional.scaled_dot_product_attention (SDPA).

What makes it different: every softmax in this module is done by PyTorch's
fused SDPA kernel, never by an explicit softmax.  SDPA only returns the
context, so the attention *weights* are obtained from a second SDPA call whose
"values" are the identity matrix: softmax(Q Kᵀ·s) · I is the weights matrix
itself.  attention_weights(scores, d_k) uses the same trick with the scores as
queries and the identity as keys (scores · I = scores).  Projections use
F.linear (the nn.Linear kernel), whose weight layout is the spec's (d_out, d_in).

SDPA's is_causal is top-left aligned and its boolean attn_mask means
True = may attend, both as the spec requires.  A row with no visible key is
forced to zeros explicitly (some SDPA versions return NaN there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.variants.correct import CAPABILITIES  # noqa: F401  (the claims every variant here shares)


def _causal(n_q: int, n_kv: int, device: torch.device) -> Tensor:
    """Top-left aligned lower triangle: True where key j <= query i."""
    return torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril()


def _sdpa(q: Tensor, k: Tensor, v: Tensor, d_k: int, allowed: Tensor | None) -> Tensor:
    """SDPA with an explicit 1/sqrt(d_k) scale; rows without a visible key become zeros."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0 / math.sqrt(d_k))
    if allowed is not None:
        visible = allowed.any(dim=-1, keepdim=True)
        out = torch.where(visible, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out


def _identity_like(n: int, like: Tensor) -> Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _attend(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
    n_q, n_kv, d_k = q.shape[-2], k.shape[-2], q.shape[-1]
    allowed = _causal(n_q, n_kv, q.device) if causal else None
    context = _sdpa(q, k, v, d_k, allowed)
    # weights = softmax(...) @ I, with the identity broadcast over the batch/head axes
    eye = _identity_like(n_kv, q).expand(*k.shape[:-2], n_kv, n_kv)
    weights = _sdpa(q, k, eye, d_k, allowed)
    return context, weights


def project(x: Tensor, weight: Tensor) -> Tensor:
    return F.linear(x, weight)


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    return torch.matmul(queries, keys.transpose(-1, -2))


def attention_weights(scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    n_q, n_kv = scores.shape[-2], scores.shape[-1]
    allowed = None
    if mask is not None:
        allowed = torch.broadcast_to(mask.to(device=scores.device, dtype=torch.bool), scores.shape)
    if causal:
        tri = _causal(n_q, n_kv, scores.device)
        allowed = tri if allowed is None else allowed & tri
    eye = _identity_like(n_kv, scores).expand(*scores.shape[:-2], n_kv, n_kv)
    # queries = scores, keys = values = I  =>  SDPA's score matrix is scores · Iᵀ = scores
    return _sdpa(scores, eye, eye, d_k, allowed)


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    return _attend(F.linear(x_q, w_q), F.linear(x_kv, w_k), F.linear(x_kv, w_v), causal)


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def _heads(x: Tensor, w: Tensor) -> Tensor:
    """(..., n, d_in) with (h, d, d_in) -> (..., h, n, d)."""
    return torch.matmul(x.unsqueeze(-3), w.transpose(-1, -2))


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return _attend(_heads(x, w_q), _heads(x, w_k), _heads(x, w_v), causal)


def multihead_attention_concat(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    context, weights = multihead_attention(x, w_q, w_k, w_v, causal)
    h, n, d_v = context.shape[-3:]
    concat = context.transpose(-3, -2).reshape(*context.shape[:-3], n, h * d_v)
    if w_o is not None:
        concat = F.linear(concat, w_o)
    return concat, weights
