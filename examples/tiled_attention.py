"""A flash-style attention kernel whose memory grows linearly with the sequence length.

attention(q, k, v, causal=False, scale=None) takes SDPA's layout, q (..., h, n_q, d_k), k (..., h, n_kv, d_k),
v (..., h, n_kv, d_v), and returns the context (..., h, n_q, d_v) alone, as SDPA does.

It never builds the (n_q, n_kv) matrix of scores. The keys are visited in blocks of BLOCK; for every query it
keeps the running maximum m of its scaled scores, the running sum l of exp(score - m) and the running,
unnormalised context, and rescales both sums by exp(m_old - m_new) when a block raises the maximum (the
online softmax). What it holds at once is one (n_q, BLOCK) block of scores, so its memory is linear in n.

Gradients come from its own backward, as FlashAttention's do: autograd through the loop would keep every
block's probabilities for the backward pass, n_q x n_kv numbers in all, which is the quadratic memory the
loop avoids. The forward pass keeps only log(l) + m per query (the log-sum-exp of its scores); the backward
pass recomputes each block's probabilities from it and adds that block's share to the gradients.

float16 and bfloat16 inputs are computed in float32 and the results rounded once at the end.

    python -m conformance --impl examples/tiled_attention.py          # it conforms
    python -m conformance.bench --impl examples/tiled_attention.py    # its time and memory against SDPA's
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BLOCK = 128  # keys per block: large enough for the matrix products to be efficient, small against n

CAPABILITIES = {
    "dtypes": ["float32", "float64", "float16", "bfloat16"],
    "autograd": True,
    "returns_weights": False,
    "memory": "linear",  # checked by python -m conformance.bench against the measured growth
}


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(q kᵀ · scale) v over key blocks, scale = 1/√d_k unless given; causal: query i sees keys j <= i."""
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError("q, k and v must be (..., n, d)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has d_k = {q.shape[-1]} but k has {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k has {k.shape[-2]} keys but v has {v.shape[-2]} values")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"q, k and v must have the same leading (batch, head) dimensions, got "
                         f"{tuple(q.shape[:-2])}, {tuple(k.shape[:-2])} and {tuple(v.shape[:-2])}")
    factor = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _TiledAttention.apply(q, k, v, bool(causal), factor)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # the running sums are long reductions: at least float32
    return torch.promote_types(dtype, torch.float32)


def _block_scores(scaled_q: Tensor, k_block: Tensor, start: int, causal: bool) -> Tensor:
    """The scaled scores of every query against keys start .. start + len(block), hidden keys at -inf."""
    scores = scaled_q @ k_block.transpose(-2, -1)
    if causal:
        rows = torch.arange(scaled_q.shape[-2], device=scores.device).unsqueeze(-1)
        keys = torch.arange(start, start + k_block.shape[-2], device=scores.device)
        scores.masked_fill_(keys > rows, -math.inf)  # top-left alignment: query i sees keys 0 .. i
    return scores


def _blocks(n_q: int, n_kv: int, causal: bool) -> range:
    # causal (top-left): no query sees a key at or past n_q, so those blocks are skipped
    return range(0, min(n_kv, n_q) if causal else n_kv, BLOCK)


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> Tensor:  # noqa: ANN001
        work = _work_dtype(q.dtype)
        scaled_q = q.to(work) * scale
        n_q, n_kv = q.shape[-2], k.shape[-2]
        top = torch.full(q.shape[:-1], -math.inf, dtype=work, device=q.device)
        total = torch.zeros(q.shape[:-1], dtype=work, device=q.device)
        mixed = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=work, device=q.device)
        for start in _blocks(n_q, n_kv, causal):
            stop = min(start + BLOCK, n_kv)
            scores = _block_scores(scaled_q, k[..., start:stop, :].to(work), start, causal)
            new_top = torch.maximum(top, scores.amax(dim=-1))
            # a query whose keys so far are all hidden keeps -inf: subtract 0 there, its sums stay 0
            safe = torch.where(torch.isfinite(new_top), new_top, torch.zeros_like(new_top))
            shrink = torch.exp(top - safe)  # exp(-inf) = 0 before the first visible key
            probabilities = scores.sub_(safe.unsqueeze(-1)).exp_()  # in place: the scores are not needed again
            total.mul_(shrink).add_(probabilities.sum(dim=-1))
            mixed.mul_(shrink.unsqueeze(-1)).add_(probabilities @ v[..., start:stop, :].to(work))
            top = new_top
        # a query with no key (no keys at all) has mixed = 0 and total = 0: its context is 0 / tiny = 0
        tiny = torch.finfo(work).tiny
        context = mixed.div_(total.clamp_min(tiny).unsqueeze(-1))
        log_sum_exp = torch.where(total > 0, top + torch.log(total.clamp_min(tiny)),
                                  torch.full_like(top, math.inf))  # +inf: its probabilities recompute to 0
        ctx.save_for_backward(q, k, v, context, log_sum_exp)
        ctx.causal, ctx.scale = causal, scale
        return context.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_context: Tensor):  # noqa: ANN205
        q, k, v, context, log_sum_exp = ctx.saved_tensors
        causal, scale = ctx.causal, ctx.scale
        work = context.dtype
        scaled_q = q.to(work) * scale
        grad_context = grad_context.to(work)
        # D_i = Σ_j p_ij (dO_i · v_j) = dO_i · O_i: the softmax's backward needs it per query, not per key
        row_dot = (grad_context * context).sum(dim=-1, keepdim=True)
        grad_q = torch.zeros_like(scaled_q)
        grad_k = torch.zeros(k.shape, dtype=work, device=k.device)
        grad_v = torch.zeros(v.shape, dtype=work, device=v.device)
        for start in _blocks(q.shape[-2], k.shape[-2], causal):
            stop = min(start + BLOCK, k.shape[-2])
            k_block, v_block = k[..., start:stop, :].to(work), v[..., start:stop, :].to(work)
            probabilities = _block_scores(scaled_q, k_block, start, causal).sub_(log_sum_exp.unsqueeze(-1)).exp_()
            grad_v[..., start:stop, :] = probabilities.transpose(-2, -1) @ grad_context
            grad_scores = (grad_context @ v_block.transpose(-2, -1)).sub_(row_dot).mul_(probabilities)
            grad_q.add_(grad_scores @ k_block)
            grad_k[..., start:stop, :] = grad_scores.transpose(-2, -1) @ scaled_q
        return (grad_q.mul_(scale).to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None, None)
