"""Memory-saving attention: queries in chunks, each chunk under reentrant activation checkpointing.

What makes it different: training code that runs out of memory recomputes activations in the
backward pass instead of keeping them, here with torch.utils.checkpoint's reentrant mode, which
works through .backward() but refuses torch.autograd.grad(). The weights of a chunk of 8 queries
are computed, used and dropped; in the backward pass each chunk runs again. Its gradients are those
of plain attention, so NUM-GRADIENTS must judge their values, not the way they were asked for.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tests.variants.correct import CAPABILITIES

CHUNK = 8


def _chunk(q: Tensor, k: Tensor, v: Tensor, start: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if causal:
        rows = int(start) + torch.arange(q.shape[-2], device=q.device).unsqueeze(-1)
        future = torch.arange(k.shape[-2], device=q.device) > rows
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def cross_attention(x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor,
                    causal: bool = False) -> tuple[Tensor, Tensor]:
    q, k, v = x_q @ w_q.transpose(-2, -1), x_kv @ w_k.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1)
    contexts, weights = [], []
    for start in range(0, q.shape[-2], CHUNK):
        context, weight = checkpoint(_chunk, q[..., start:start + CHUNK, :], k, v, torch.tensor(start), causal,
                                     use_reentrant=True)
        contexts.append(context)
        weights.append(weight)
    return torch.cat(contexts, dim=-2), torch.cat(weights, dim=-2)


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return cross_attention(x, x, w_q, w_k, w_v, causal)
