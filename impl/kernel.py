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
    is added to the scaled scores. p_i is query i's position among the keys (ALIGNMENT).
    """
    if cu_seqlens_q is not None or cu_seqlens_k is not None:
        raise NotImplementedError("packed sequences (cu_seqlens): issue 19, in progress")
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
        raise NotImplementedError("dropout: issue 19, in progress")
    context = weights @ values
    return context, weights
