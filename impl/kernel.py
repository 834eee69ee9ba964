"""The attention kernel: the same computation on queries, keys and values already split into heads.

This is where kernel authors work (scaled_dot_product_attention, FlashAttention), so it takes their
layout: q (..., h, n_q, d_k), k (..., h_kv, n_kv, d_k), v (..., h_kv, n_kv, d_v).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from impl.attention import _require, attention_scores, masked_softmax


ALIGNMENT = "top_left"  # causal alignment: query i sits at key i (SDPA); "bottom_right": at i + n_kv - n_q


def query_positions(n_q: int, n_kv: int, device: torch.device) -> Tensor:
    """Each query's position among the keys, as a column (n_q, 1): i, or i + n_kv - n_q aligned bottom-right."""
    offset = n_kv - n_q if ALIGNMENT == "bottom_right" else 0
    return torch.arange(n_q, device=device).unsqueeze(-1) + offset


def window_keys(n_q: int, n_kv: int, window: tuple[int, int], device: torch.device) -> Tensor:
    """True where key j lies in query i's window: p_i - left <= j <= p_i + right (-1: unbounded)."""
    left, right = window
    position = query_positions(n_q, n_kv, device)
    key = torch.arange(n_kv, device=device)
    after_left = key >= position - left if left >= 0 else torch.ones_like(key, dtype=torch.bool)
    before_right = key <= position + right if right >= 0 else torch.ones_like(key, dtype=torch.bool)
    return after_left & before_right


def alibi(slopes: Tensor, n_q: int, n_kv: int) -> Tensor:
    """The ALiBi bias -slope_h · |p_i - j| of every query head: (h, n_q, n_kv)."""
    distance = (query_positions(n_q, n_kv, slopes.device) - torch.arange(n_kv, device=slopes.device)).abs()
    return -slopes[:, None, None] * distance


def dropout(weights: Tensor, p: float) -> Tensor:
    """Each weight kept with probability 1 - p, independently, and scaled by 1/(1 - p), so that the expected
    weights (and context) are the dropout-free ones. The keeps are drawn from torch's global generator, which
    the caller seeds (torch.manual_seed), as SDPA and FlashAttention draw theirs."""
    _require(0 <= p < 1, f"dropout_p must lie in [0, 1), got {p}")
    # drawn in float64: the keep probability is exactly 1 - p whatever the weights' dtype
    keep = torch.bernoulli(torch.full(weights.shape, 1 - p, dtype=torch.float64, device=weights.device))
    return weights * keep.to(weights.dtype) / (1 - p)


def attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, mask: Tensor | None = None, scale: float | None = None,
    window: tuple[int, int] | None = None, softcap: float | None = None, alibi_slopes: Tensor | None = None,
    dropout_p: float = 0.0, cu_seqlens_q: Tensor | None = None, cu_seqlens_k: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ · scale + mask) v, scale = 1/√d_k unless given. Returns (context, weights).

    mask: boolean (True = may attend) or float (added to the scaled scores). k and v may have fewer
    heads than q (grouped-query attention): query head i then uses key/value head i // (h / h_kv).
    window (left, right): query i sees keys p_i - left .. p_i + right only (-1: unbounded); softcap c:
    the scaled scores become c · tanh(scores / c); alibi_slopes (one per query head): -slope · |p_i - j|
    is added to the scaled scores. p_i is query i's position among the keys (ALIGNMENT). dropout_p: each
    weight is dropped with probability p and the kept ones scaled by 1/(1 - p) (dropout()).
    """
    if cu_seqlens_q is not None or cu_seqlens_k is not None:
        _require(mask is None, "a packed call takes no mask: each sequence is attended alone")
        context = packed(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale, window=window,
                         softcap=softcap, alibi_slopes=alibi_slopes, dropout_p=dropout_p)
        return context, None  # a pack's weights would be block-diagonal (h, Σ n_q, Σ n_kv): not returned
    _require(q.dim() >= 3 and k.dim() >= 3 and v.dim() >= 3, "q, k and v must be (..., heads, n, d)")
    heads, kv_heads = q.shape[-3], k.shape[-3]
    _require(kv_heads >= 1 and heads % kv_heads == 0,
             f"{kv_heads} key/value heads cannot serve {heads} query heads (it must divide them)")
    group = heads // kv_heads
    keys, values = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    n_q, n_kv = q.shape[-2], k.shape[-2]

    scores = attention_scores(q, keys)
    scaled = scores * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if softcap is not None:
        scaled = softcap * torch.tanh(scaled / softcap)  # bounded by the cap, smooth
    if alibi_slopes is not None:
        _require(alibi_slopes.shape == (heads,), f"alibi_slopes must hold one slope per query head ({heads},)")
        scaled = scaled + alibi(alibi_slopes.to(scaled.dtype), n_q, n_kv)
    boolean = mask is not None and mask.dtype == torch.bool
    if mask is not None and not boolean:
        scaled = scaled + mask  # a bias on the scaled scores (ALiBi-like; -inf hides a key)
    allowed = mask if boolean else None
    if causal:
        earlier = torch.arange(n_kv, device=q.device) <= query_positions(n_q, n_kv, q.device)
        allowed = earlier if allowed is None else allowed & earlier
    if window is not None:
        inside = window_keys(n_q, n_kv, window, q.device)
        allowed = inside if allowed is None else allowed & inside
    weights = masked_softmax(scaled, allowed)
    if dropout_p:
        weights = dropout(weights, dropout_p)  # the weights returned are the ones applied
    context = weights @ values
    return context, weights


def packed(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor | None, cu_seqlens_k: Tensor | None,
           **options: object) -> Tensor:
    """Sequences of different lengths packed one after another along the token axis (FlashAttention's varlen
    layout): q (h, Σ n_q, d_k), k (h_kv, Σ n_kv, d_k), v (h_kv, Σ n_kv, d_v). Sequence s holds queries
    cu_seqlens_q[s] .. cu_seqlens_q[s+1] - 1 and keys cu_seqlens_k[s] .. cu_seqlens_k[s+1] - 1. Each sequence
    is attended alone (causal, windows and ALiBi positions count from its own start); the contexts are
    concatenated: (h, Σ n_q, d_v)."""
    _require(cu_seqlens_q is not None and cu_seqlens_k is not None, "cu_seqlens_q and cu_seqlens_k go together")
    _require(q.dim() == 3 and k.dim() == 3 and v.dim() == 3, "packed q, k and v are (heads, tokens, d)")
    starts_q, starts_k = [int(i) for i in cu_seqlens_q.tolist()], [int(i) for i in cu_seqlens_k.tolist()]
    _require(len(starts_q) == len(starts_k) >= 1, "cu_seqlens_q and cu_seqlens_k must hold count + 1 offsets each")
    for starts, total, name in ((starts_q, q.shape[-2], "cu_seqlens_q"), (starts_k, k.shape[-2], "cu_seqlens_k")):
        _require(starts[0] == 0 and starts[-1] == total and all(a <= b for a, b in zip(starts, starts[1:])),
                 f"{name} must rise from 0 to the {total} packed tokens, got {starts}")
    contexts = [
        attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], **options)[0]
        for q0, q1, k0, k1 in zip(starts_q, starts_q[1:], starts_k, starts_k[1:])
    ]
    return torch.cat(contexts, dim=-2) if contexts else v.new_zeros(q.shape[-3], 0, v.shape[-1])
