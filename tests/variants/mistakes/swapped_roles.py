"""The roles of W_Q and W_K are swapped: queries are projected with W_K and keys with W_Q, so the scores are
(x W_Kᵀ)(x W_Qᵀ)ᵀ, the transpose of the right ones for self-attention (PROJ-ROLES). Only the attention
functions."""

from __future__ import annotations

from tests.variants.mistakes._base import CAPABILITIES, attend  # noqa: F401


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    return attend(x_q @ w_k.transpose(-2, -1), x_kv @ w_q.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1), causal)


def self_attention(x, w_q, w_k, w_v, causal=False):
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def multihead_attention(x, w_q, w_k, w_v, causal=False):
    x = x.unsqueeze(-3)
    return attend(x @ w_k.transpose(-2, -1), x @ w_q.transpose(-2, -1), x @ w_v.transpose(-2, -1), causal)
