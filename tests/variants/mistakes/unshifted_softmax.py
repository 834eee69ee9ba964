"""A softmax written as exp(s) / Σ exp(s), without subtracting the row maximum: right until the scores are
large, then exp overflows to inf and the weights are NaN (WEIGHTS-STABLE). Only the attention functions."""

from __future__ import annotations

import torch

from tests.variants.mistakes._base import CAPABILITIES, attend  # noqa: F401


def _softmax(scaled):
    exp = torch.exp(scaled)
    return exp / exp.sum(dim=-1, keepdim=True)


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    return attend(x_q @ w_q.transpose(-2, -1), x_kv @ w_k.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1), causal,
                  normalise=_softmax)


def self_attention(x, w_q, w_k, w_v, causal=False):
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def multihead_attention(x, w_q, w_k, w_v, causal=False):
    x = x.unsqueeze(-3)
    return attend(x @ w_q.transpose(-2, -1), x @ w_k.transpose(-2, -1), x @ w_v.transpose(-2, -1), causal,
                  normalise=_softmax)
