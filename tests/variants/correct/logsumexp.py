"""Attention whose softmax is exp(s - logsumexp(s)), in log space.

What makes it different: the weights are never normalised by a division.
Each row's log-normaliser is torch.logsumexp(s), and weights = exp(s - lse).
Masked scores are -inf, so they get exp(-inf) = 0 exactly; a row whose scores
are all -inf (nothing visible) would give -inf - (-inf) = NaN, so such rows
are replaced by 0 before the logsumexp and their weights forced to zero.

Multi-head attention is also done differently: the h per-head weights are
stacked into one big (h·d, d_in) projection, applied once, and the result is
split into heads with a view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tests.variants.correct import CAPABILITIES  # noqa: F401  (the claims every variant here shares)


def project(x: Tensor, weight: Tensor) -> Tensor:
    return x @ weight.mT


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    return queries @ keys.mT


def _log_softmax_weights(logits: Tensor) -> Tensor:
    """exp(logits - logsumexp(logits)) over the last axis; all -inf rows give zeros."""
    empty = torch.isneginf(logits).all(dim=-1, keepdim=True)
    safe = torch.where(empty, torch.zeros_like(logits), logits)
    log_norm = torch.logsumexp(safe, dim=-1, keepdim=True)
    weights = torch.exp(safe - log_norm)
    return torch.where(empty, torch.zeros_like(weights), weights)


def attention_weights(scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    logits = scores * (1.0 / math.sqrt(d_k))
    hidden = None
    if causal:
        n_q, n_kv = scores.shape[-2:]
        hidden = torch.ones(n_q, n_kv, dtype=torch.bool, device=scores.device).triu(diagonal=1)
    if mask is not None:
        not_allowed = ~mask.to(device=scores.device, dtype=torch.bool)
        hidden = not_allowed if hidden is None else hidden | not_allowed
    if hidden is not None:
        logits = logits.masked_fill(hidden, float("-inf"))
    return _log_softmax_weights(logits)


def _attend(q: Tensor, k: Tensor, v: Tensor, d_k: int, causal: bool) -> tuple[Tensor, Tensor]:
    weights = attention_weights(attention_scores(q, k), d_k, causal=causal)
    return weights @ v, weights


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    return _attend(project(x_q, w_q), project(x_kv, w_k), project(x_kv, w_v), w_q.shape[0], causal)


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def _split_heads(x: Tensor, w: Tensor) -> Tensor:
    """One projection with the stacked (h·d, d_in) weight, then (..., n, h, d) -> (..., h, n, d)."""
    h, d, d_in = w.shape
    y = project(x, w.reshape(h * d, d_in))
    return y.unflatten(-1, (h, d)).movedim(-2, -3)


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    q, k, v = _split_heads(x, w_q), _split_heads(x, w_k), _split_heads(x, w_v)
    return _attend(q, k, v, w_q.shape[1], causal)


def multihead_attention_concat(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    context, weights = multihead_attention(x, w_q, w_k, w_v, causal)
    concat = context.movedim(-3, -2).flatten(-2)  # (..., n, h, d_v) -> (..., n, h·d_v)
    if w_o is not None:
        concat = project(concat, w_o)
    return concat, weights
