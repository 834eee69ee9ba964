"""The attention kernel: the same computation on queries, keys and values already split into heads.

This is where kernel authors work (scaled_dot_product_attention, FlashAttention), so it takes their
layout: q (..., h, n_q, d_k), k (..., h_kv, n_kv, d_k), v (..., h_kv, n_kv, d_v).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from impl.attention import _require, attention_scores, masked_softmax, visible_keys


def attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, mask: Tensor | None = None, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ · scale + mask) v, scale = 1/√d_k unless given. Returns (context, weights).

    mask: boolean (True = may attend) or float (added to the scaled scores). k and v may have fewer
    heads than q (grouped-query attention): query head i then uses key/value head i // (h / h_kv).
    """
    _require(q.dim() >= 3 and k.dim() >= 3 and v.dim() >= 3, "q, k and v must be (..., heads, n, d)")
    heads, kv_heads = q.shape[-3], k.shape[-3]
    _require(kv_heads >= 1 and heads % kv_heads == 0,
             f"{kv_heads} key/value heads cannot serve {heads} query heads (it must divide them)")
    group = heads // kv_heads
    keys, values = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)

    scores = attention_scores(q, keys)
    scaled = scores * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    boolean = mask is not None and mask.dtype == torch.bool
    if mask is not None and not boolean:
        scaled = scaled + mask  # a bias on the scaled scores (ALiBi-like; -inf hides a key)
    allowed = visible_keys(q.shape[-2], k.shape[-2], causal, mask if boolean else None, q.device)
    weights = masked_softmax(scaled, allowed)
    context = weights @ values
    return context, weights
