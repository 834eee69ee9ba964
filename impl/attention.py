"""Steps 2 and 3 of the seed: projections, scores, weights and context.

Every function takes its tensors explicitly, so any implementation can be fed
the very same inputs, and accepts leading batch dimensions (..., n, d).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def project(x: Tensor, weight: Tensor) -> Tensor:
    """x Wᵀ for a weight laid out (d_out, d_in), as W_Q = torch.rand(d_q, d) in the seed.

    Stacked weights (h, d_out, d_in) project once per head (used by multi-head).
    """
    _require(weight.dim() >= 2, f"weight must be (d_out, d_in), got shape {tuple(weight.shape)}")
    _require(
        x.shape[-1] == weight.shape[-1],
        f"x has {x.shape[-1]} features but the weight expects d_in = {weight.shape[-1]}",
    )
    return x @ weight.transpose(-2, -1)


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    """ω[i, j] = q_i · k_j: one row per query, one column per key."""
    _require(
        queries.shape[-1] == keys.shape[-1],
        f"queries have d_k = {queries.shape[-1]} but keys have {keys.shape[-1]}",
    )
    return queries @ keys.transpose(-2, -1)


def visible_keys(n_q: int, n_kv: int, causal: bool, mask: Tensor | None, device: torch.device) -> Tensor | None:
    """Boolean (n_q, n_kv)-broadcastable mask, True where query i may attend to key j."""
    allowed = mask
    if causal:
        # top-left alignment: query i sees keys 0..i whatever n_q and n_kv are
        lower = torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril()
        allowed = lower if allowed is None else allowed & lower
    return allowed


def attention_weights(scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    """softmax(ω / √d_k) over the keys, with masked keys given weight exactly 0."""
    _require(d_k >= 1, f"d_k must be a positive number of features, got {d_k}")
    if mask is not None:
        _require(mask.dtype == torch.bool, f"mask must be boolean (True = may attend), got {mask.dtype}")
    scaled = scores / math.sqrt(d_k)
    allowed = visible_keys(scores.shape[-2], scores.shape[-1], causal, mask, scores.device)
    return masked_softmax(scaled, allowed)


def masked_softmax(scaled: Tensor, allowed: Tensor | None) -> Tensor:
    """softmax over the keys (last axis), hidden keys given weight exactly 0."""
    if allowed is not None:
        scaled = scaled.masked_fill(~allowed, float("-inf"))
    # subtracting the row maximum keeps exp() from overflowing for large scores;
    # a fully masked row has maximum -inf, so it subtracts 0 instead
    row_max = scaled.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp_scores = torch.exp(scaled - row_max)
    total = exp_scores.sum(dim=-1, keepdim=True)
    # a fully masked row sums to 0: divide by `tiny` so it stays 0 instead of NaN
    return exp_scores / total.clamp_min(torch.finfo(total.dtype).tiny)


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    """Queries from x_q, keys and values from x_kv. Returns (context, weights)."""
    _require(
        x_q.shape[:-2] == x_kv.shape[:-2],
        f"x_q and x_kv must have the same batch dimensions, got {tuple(x_q.shape[:-2])} and {tuple(x_kv.shape[:-2])}",
    )
    queries = project(x_q, w_q)
    keys = project(x_kv, w_k)
    values = project(x_kv, w_v)
    scores = attention_scores(queries, keys)
    weights = attention_weights(scores, d_k=keys.shape[-1], causal=causal)
    context = weights @ values
    return context, weights


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    """Self-attention is cross-attention of a sequence with itself."""
    return cross_attention(x, x, w_q, w_k, w_v, causal=causal)
