"""A flash-style attention kernel: keys in tiles of 16, an online softmax, no weights matrix.

What makes it different: like FlashAttention it never forms the full (n_q, n_kv) weights.
It walks over the keys one tile at a time, keeping per query the running maximum of the
scaled scores, the running sum of exp(score - max) and the running weighted sum of values,
and rescales both when the maximum grows. Grouped key/value heads are read by index
(query head i uses head i // group) instead of being copied. It returns the context only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tests.variants.correct import CAPABILITIES as SHARED

TILE = 16
CAPABILITIES = {**SHARED, "returns_weights": False, "grouped_kv_heads": True}


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, mask: Tensor | None = None,
              scale: float | None = None) -> Tensor:
    heads, kv_heads = q.shape[-3], k.shape[-3]
    n_q, n_kv = q.shape[-2], k.shape[-2]
    head_of = torch.arange(heads, device=q.device) // (heads // kv_heads)
    k, v = k.index_select(-3, head_of), v.index_select(-3, head_of)
    factor = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    if mask is not None:
        mask = mask.expand(*q.shape[:-1], n_kv)
    # accumulate in float32 at least: the running sums are long reductions
    work = torch.promote_types(q.dtype, torch.float32)
    top = torch.full((*q.shape[:-1], 1), -math.inf, dtype=work, device=q.device)
    total = torch.zeros((*q.shape[:-1], 1), dtype=work, device=q.device)
    mixed = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=work, device=q.device)
    rows = torch.arange(n_q, device=q.device).unsqueeze(-1)
    for start in range(0, n_kv, TILE):
        stop = min(start + TILE, n_kv)
        s = (q.to(work) @ k[..., start:stop, :].to(work).transpose(-2, -1)) * factor
        hidden = torch.zeros(s.shape, dtype=torch.bool, device=q.device)
        if mask is not None and mask.dtype == torch.bool:
            hidden |= ~mask[..., start:stop]
        elif mask is not None:
            s = s + mask[..., start:stop].to(work)
        if causal:
            hidden |= torch.arange(start, stop, device=q.device) > rows
        s = s.masked_fill(hidden, -math.inf)
        new_top = torch.maximum(top, s.amax(dim=-1, keepdim=True))
        safe = torch.where(torch.isfinite(new_top), new_top, torch.zeros_like(new_top))
        shrink = torch.exp(top - safe)  # exp(-inf) = 0 before the first visible key
        p = torch.exp(s - safe)
        total = total * shrink + p.sum(dim=-1, keepdim=True)
        mixed = mixed * shrink + p @ v[..., start:stop, :].to(work)
        top = new_top
    context = torch.where(total > 0, mixed / total.clamp_min(torch.finfo(work).tiny), torch.zeros_like(mixed))
    return context.to(q.dtype)
