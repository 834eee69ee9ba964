"""Mallory: single-head and multi-head attention."""
import math

import torch


def attention_weights(scores, d_k, causal=False, mask=None):
    scores = scores / math.sqrt(d_k)
    visible = torch.ones(scores.shape[-2], scores.shape[-1], dtype=torch.bool, device=scores.device)
    if causal:
        visible = visible.tril()
    if mask is not None:
        visible = visible & mask
    scores = scores.masked_fill(~visible, -math.inf)
    peak = scores.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).min)
    expd = torch.exp(scores - peak)
    return expd / expd.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q = x @ w_q.transpose(-2, -1)
    k = x @ w_k.transpose(-2, -1)
    v = x @ w_v.transpose(-2, -1)
    a = attention_weights(q @ k.transpose(-2, -1), q.shape[-1], causal)
    return a @ v, a


def multihead_attention(x, w_q, w_k, w_v, causal=False):
    contexts, weights = [], []
    for head in range(w_q.shape[0]):
        c, a = self_attention(x, w_q[0], w_k[0], w_v[0], causal)
        contexts.append(c)
        weights.append(a)
    # stack the heads right after the batch axes
    return torch.stack(contexts, dim=-3), torch.stack(weights, dim=-3)
