"""A pure-PyTorch port of FlashAttention's interface (flash_attn_func and flash_attn_varlen_func), for checking
that the suite reads FlashAttention's spelling: no fused kernel, the same arguments and conventions.

    python -m conformance --impl examples/flash_attn_port.py:flash_attn_func
    python -m conformance --impl examples/flash_attn_port.py:flash_attn_varlen_func

The conventions of flash_attn (2.x) that the suite reads off the parameter names:
- layout (batch, seqlen, heads, headdim); k and v may have fewer heads than q (grouped-query attention);
- causal and window_size=(left, right) align query i with key i + seqlen_k - seqlen_q (bottom-right), and
  -1 leaves a side unbounded; a query that sees no key gets a context of 0;
- softcap c > 0 turns the scaled scores s into c·tanh(s / c); alibi_slopes (heads,) or (batch, heads) add
  -slope·|i + seqlen_k - seqlen_q - j| to them;
- the varlen form takes sequences packed along the token axis, (total, heads, headdim), with int32 offsets
  cu_seqlens of length batch + 1, and attends each sequence alone.

Scores are computed in float32 for float16 and bfloat16 inputs (as flash_attn accumulates), and the result is
returned in the inputs' dtype. deterministic has nothing to choose here; return_attn_probs also returns the
log-sum-exp of each row (and, for flash_attn_func, the probabilities), as flash_attn does for testing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _attend(q: Tensor, k: Tensor, v: Tensor, dropout_p: float, softmax_scale: float | None, causal: bool,
            window_size: tuple[int, int], softcap: float, alibi_slopes: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One batch, (b, n, h, d) in and out: (out, logsumexp (b, h, n_q), probabilities (b, h, n_q, n_kv))."""
    batch, n_q, heads, d = q.shape
    n_kv, kv_heads = k.shape[1], k.shape[2]
    dtype = q.dtype
    if heads % kv_heads:
        raise ValueError(f"{kv_heads} key/value heads cannot serve {heads} query heads (it must divide them)")
    work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    # (b, h, n, d), each key/value head repeated for its group of consecutive query heads
    q, k, v = (t.transpose(1, 2).to(work) for t in (q, k, v))
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)

    scale = 1 / math.sqrt(d) if softmax_scale is None else softmax_scale
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    position = torch.arange(n_q, device=q.device)[:, None] + (n_kv - n_q)  # query i's key, bottom-right
    key = torch.arange(n_kv, device=q.device)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(device=q.device, dtype=work).reshape(-1, heads)[..., None, None]  # (1 or b, h, 1, 1)
        scores = scores - slopes * (position - key).abs()
    left, right = window_size
    if causal:  # causal is the window's right side at 0 (flash_attn sets window_size[1] = 0)
        right = 0
    visible = torch.ones(n_q, n_kv, dtype=torch.bool, device=q.device)
    if left >= 0:
        visible &= key >= position - left
    if right >= 0:
        visible &= key <= position + right
    scores = scores.masked_fill(~visible, -math.inf)

    seen = visible.any(dim=-1, keepdim=True)  # a query with no visible key gets weight 0 everywhere
    top = scores.amax(dim=-1, keepdim=True).masked_fill(~seen, 0.0)
    exp = (scores - top).exp()
    total = exp.sum(dim=-1, keepdim=True)
    probs = torch.where(seen, exp / total, torch.zeros_like(exp))
    logsumexp = (top + total.log()).squeeze(-1)
    weights = probs
    if dropout_p > 0:
        weights = probs * (torch.rand_like(probs) >= dropout_p) / (1 - dropout_p)
    return (weights @ v).transpose(1, 2).to(dtype), logsumexp, probs


def flash_attn_func(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, softmax_scale: float | None = None,
                    causal: bool = False, window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                    alibi_slopes: Tensor | None = None, deterministic: bool = False,
                    return_attn_probs: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """q (batch, seqlen_q, heads, headdim), k and v (batch, seqlen_k, heads_k, headdim[_v]) -> out (batch,
    seqlen_q, heads, headdim_v); with return_attn_probs, (out, softmax_lse, probabilities)."""
    out, logsumexp, probs = _attend(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes)
    return (out, logsumexp, probs) if return_attn_probs else out


def flash_attn_varlen_func(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                           max_seqlen_q: int, max_seqlen_k: int, dropout_p: float = 0.0,
                           softmax_scale: float | None = None, causal: bool = False,
                           window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                           alibi_slopes: Tensor | None = None, deterministic: bool = False,
                           return_attn_probs: bool = False) -> Tensor | tuple[Tensor, Tensor, None]:
    """q (total_q, heads, headdim), k and v (total_k, heads_k, headdim[_v]): sequence s holds queries
    cu_seqlens_q[s] .. cu_seqlens_q[s+1] - 1 and keys cu_seqlens_k[s] .. cu_seqlens_k[s+1] - 1, and is attended
    alone. -> out (total_q, heads, headdim_v); with return_attn_probs, (out, softmax_lse (heads, total_q), None):
    a pack's probabilities have no rectangular shape."""
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    if len(starts_q) != len(starts_k) or not starts_q:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must both hold batch + 1 offsets")
    if starts_q[-1] != q.shape[0] or starts_k[-1] != k.shape[0]:
        raise ValueError(f"the offsets end at {starts_q[-1]} and {starts_k[-1]}, the pack holds {q.shape[0]} "
                         f"queries and {k.shape[0]} keys")
    outs, logsumexps = [], []
    for s, (q0, q1, k0, k1) in enumerate(zip(starts_q, starts_q[1:], starts_k, starts_k[1:])):
        slopes = alibi_slopes[s] if alibi_slopes is not None and alibi_slopes.dim() == 2 else alibi_slopes
        out, logsumexp, _ = _attend(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], dropout_p, softmax_scale,
                                    causal, window_size, softcap, slopes)
        outs.append(out[0])
        logsumexps.append(logsumexp[0])
    out = torch.cat(outs, dim=0) if outs else q.new_zeros(0, q.shape[1], v.shape[-1])
    if return_attn_probs:
        return out, (torch.cat(logsumexps, dim=-1) if logsumexps else q.new_zeros(q.shape[1], 0)), None
    return out
