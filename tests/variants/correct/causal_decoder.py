"""A decoder's attention: causal only, one head width, a fixed context length (after nanoGPT's CausalSelfAttention).

What makes it different: like most decoder blocks it has no `causal` argument and no
non-causal mode at all; its mask is a lower-triangular buffer of BLOCK_SIZE × BLOCK_SIZE
sliced to the sequence (top-left, as the spec requires), and it refuses sequences longer
than that buffer or value heads wider or narrower than the query/key heads. It declares
exactly that (causal="only", equal_head_dims, max_length), so the suite must keep to it:
any example outside the declaration raises here and would fail the run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.variants.correct import CAPABILITIES as SHARED

BLOCK_SIZE = 64
CAPABILITIES = {**SHARED, "causal": "only", "equal_head_dims": True, "max_length": BLOCK_SIZE}

_BIAS = torch.tril(torch.ones(BLOCK_SIZE, BLOCK_SIZE, dtype=torch.bool))  # a registered buffer in a module


def _attend(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    n_q, n_kv = q.size(-2), k.size(-2)
    if max(n_q, n_kv) > BLOCK_SIZE:
        raise ValueError(f"cannot attend over {max(n_q, n_kv)} tokens, block size is only {BLOCK_SIZE}")
    if v.size(-1) != k.size(-1):
        raise ValueError(f"one head width for q, k and v: got d_k={k.size(-1)}, d_v={v.size(-1)}")
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(~_BIAS[:n_q, :n_kv].to(att.device), float("-inf"))
    att = F.softmax(att, dim=-1)
    return att @ v, att


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> tuple[Tensor, Tensor]:
    return _attend(F.linear(x, w_q), F.linear(x, w_k), F.linear(x, w_v))


def cross_attention(x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> tuple[Tensor, Tensor]:
    return _attend(F.linear(x_q, w_q), F.linear(x_kv, w_k), F.linear(x_kv, w_v))


def _split(x: Tensor, w: Tensor) -> Tensor:
    """All heads in one matmul, as a fused c_attn does: (..., n, d_in) @ (d_in, h·d) -> (..., h, n, d)."""
    h, d, _ = w.shape
    fused = x @ w.reshape(h * d, -1).transpose(-2, -1)
    return fused.unflatten(-1, (h, d)).transpose(-3, -2)


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> tuple[Tensor, Tensor]:
    return _attend(_split(x, w_q), _split(x, w_k), _split(x, w_v))


def multihead_attention_concat(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor,
                               w_o: Tensor | None = None) -> tuple[Tensor, Tensor]:
    context, weights = multihead_attention(x, w_q, w_k, w_v)
    joined = context.transpose(-3, -2).flatten(-2)  # (..., n, h·d_v), head-major
    return (joined if w_o is None else F.linear(joined, w_o)), weights
