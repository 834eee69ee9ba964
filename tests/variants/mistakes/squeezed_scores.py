"""The scores are squeezed (`.squeeze()`) before the softmax: fine until a query, a key or a batch of one makes
an axis of length 1 vanish, then the shapes are wrong or the softmax runs over the wrong axis (API-SHAPES).
Only the attention functions."""

from __future__ import annotations

from tests.variants.mistakes._base import CAPABILITIES, attend, scores_of  # noqa: F401


def _squeezed(q, k):
    return scores_of(q, k).squeeze()


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    return attend(x_q @ w_q.transpose(-2, -1), x_kv @ w_k.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1), causal,
                  scores=_squeezed)


def self_attention(x, w_q, w_k, w_v, causal=False):
    return cross_attention(x, x, w_q, w_k, w_v, causal)
