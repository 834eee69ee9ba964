"""frank / attention hw"""
import math

import torch


def softmax(t, dim):
    """numerically stable softmax along `dim` (all -inf slices give zeros)"""
    m = t.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(t - m)
    z = e.sum(dim=dim, keepdim=True)
    return e / torch.where(z > 0, z, torch.ones_like(z))


def attention_weights(scores, d_k, causal=False, mask=None):
    scores = scores / math.sqrt(d_k)
    if causal:
        causal_mask = torch.ones(scores.shape[-2], scores.shape[-1], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal_mask, -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    # normalise the attention of every token
    return softmax(scores, dim=-2)


def self_attention(x, w_q, w_k, w_v, causal=False):
    queries = torch.matmul(x, w_q.mT)
    keys = torch.matmul(x, w_k.mT)
    values = torch.matmul(x, w_v.mT)
    weights = attention_weights(torch.matmul(queries, keys.mT), keys.shape[-1], causal)
    return torch.matmul(weights, values), weights
