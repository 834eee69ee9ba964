"""Flash-style tiled attention: an online softmax over key blocks of 16.

What makes it different: the context is computed by walking over the keys in
blocks of BLOCK = 16, keeping for every query a running maximum m, a running
normaliser l and a running (unnormalised) context; when a block raises the
maximum the old sums are rescaled by exp(m_old - m_new).  The full
(n_q, n_kv) score matrix is never built for the context.  float16/bfloat16
inputs are accumulated in float32 and the results cast back.

The API must also return the weights; they come from a second pass over the
same blocks that reuses the final (m, l) statistics of the first pass, as a
FlashAttention backward pass would: weights_block = exp(s_block - m) / l.
attention_weights(scores, ...) uses the same two passes over column blocks.

Causal masking is top-left: query i sees keys j <= i, so a key block that
starts after the last query is skipped entirely.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from tests.variants.correct import CAPABILITIES  # noqa: F401  (the claims every variant here shares)

BLOCK = 16
_NEG_INF = float("-inf")

# logits of key block [start, stop): (..., n_q, stop - start), already scaled, masked with -inf
BlockLogits = Callable[[int, int], Tensor]


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _hide_future(logits: Tensor, start: int) -> Tensor:
    """Mask keys j > i inside the block that starts at key `start` (top-left causal)."""
    n_q, width = logits.shape[-2:]
    rows = torch.arange(n_q, device=logits.device).unsqueeze(-1)
    cols = torch.arange(start, start + width, device=logits.device)
    return logits.masked_fill(cols > rows, _NEG_INF)


def _key_blocks(n_q: int, n_kv: int, causal: bool) -> list[tuple[int, int]]:
    last = min(n_kv, n_q) if causal else n_kv  # with causal, keys >= n_q are seen by no query
    return [(start, min(start + BLOCK, n_kv)) for start in range(0, last, BLOCK)]


def _online_pass(
    block_logits: BlockLogits, blocks: list[tuple[int, int]], stat_shape: tuple[int, ...], like: Tensor,
    values: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Running max m, running sum l and (if values are given) running context, block by block."""
    m = torch.full(stat_shape, _NEG_INF, dtype=like.dtype, device=like.device)
    l = torch.zeros(stat_shape, dtype=like.dtype, device=like.device)
    acc = None
    for start, stop in blocks:
        s = block_logits(start, stop)
        # the running max is only a shift (softmax is shift invariant): it is kept out of the
        # autograd graph *everywhere*, so that the shifts cancel exactly in the gradient too
        m_new = torch.maximum(m, s.detach().amax(dim=-1, keepdim=True))
        # a row that has seen only -inf so far keeps m = -inf; shift it by 0 instead (no NaN)
        shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - shift)
        alpha = torch.exp(m - shift)  # 0 while m is still -inf
        l = l * alpha + p.sum(dim=-1, keepdim=True)
        if values is not None:
            contribution = p @ values[..., start:stop, :]
            acc = contribution if acc is None else acc * alpha + contribution
        m = m_new
    return m, l, acc


def _weights_pass(block_logits: BlockLogits, blocks: list[tuple[int, int]], m: Tensor, l: Tensor, n_kv: int) -> Tensor:
    """Second pass: normalised weights block by block from the final statistics."""
    shift = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # m carries no gradient
    norm = torch.where(l > 0, l, torch.ones_like(l))
    pieces = [torch.exp(block_logits(start, stop) - shift) / norm for start, stop in blocks]
    covered = blocks[-1][1] if blocks else 0
    if covered < n_kv:  # causal blocks that were skipped: nobody sees them
        pieces.append(torch.zeros(*m.shape[:-1], n_kv - covered, dtype=m.dtype, device=m.device))
    return torch.cat(pieces, dim=-1)


def _tiled_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
    dtype = q.dtype
    acc_dtype = _accumulation_dtype(dtype)
    scale = 1.0 / math.sqrt(q.shape[-1])
    q32, k32, v32 = q.to(acc_dtype), k.to(acc_dtype), v.to(acc_dtype)
    n_q, n_kv = q.shape[-2], k.shape[-2]

    def block_logits(start: int, stop: int) -> Tensor:
        s = (q32 @ k32[..., start:stop, :].mT) * scale
        return _hide_future(s, start) if causal else s

    blocks = _key_blocks(n_q, n_kv, causal)
    stat_shape = (*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), n_q, 1)
    m, l, acc = _online_pass(block_logits, blocks, stat_shape, q32, values=v32)
    context = acc / torch.where(l > 0, l, torch.ones_like(l))
    weights = _weights_pass(block_logits, blocks, m, l, n_kv)
    return context.to(dtype), weights.to(dtype)


def project(x: Tensor, weight: Tensor) -> Tensor:
    return x @ weight.transpose(-1, -2)


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    return queries @ keys.transpose(-1, -2)


def attention_weights(scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    dtype = scores.dtype
    s32 = scores.to(_accumulation_dtype(dtype))
    n_q, n_kv = scores.shape[-2:]
    allowed = None if mask is None else torch.broadcast_to(mask.to(device=scores.device, dtype=torch.bool), scores.shape)
    scale = 1.0 / math.sqrt(d_k)

    def block_logits(start: int, stop: int) -> Tensor:
        s = s32[..., start:stop] * scale
        if allowed is not None:
            s = s.masked_fill(~allowed[..., start:stop], _NEG_INF)
        return _hide_future(s, start) if causal else s

    blocks = _key_blocks(n_q, n_kv, causal)
    m, l, _ = _online_pass(block_logits, blocks, (*scores.shape[:-1], 1), s32)
    return _weights_pass(block_logits, blocks, m, l, n_kv).to(dtype)


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    return _tiled_attention(project(x_q, w_q), project(x_kv, w_k), project(x_kv, w_v), causal)


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    x = x.unsqueeze(-3)  # (..., 1, n, d_in): broadcasts against the (h, d, d_in) weights
    return _tiled_attention(project(x, w_q), project(x, w_k), project(x, w_v), causal)


def multihead_attention_concat(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    context, weights = multihead_attention(x, w_q, w_k, w_v, causal)
    heads = context.unbind(dim=-3)
    concat = torch.cat(heads, dim=-1)
    if w_o is not None:
        concat = project(concat, w_o)
    return concat, weights
