# judy - hw3 attention
import math

import torch


def attention_scores(queries, keys):
    # omega[i, j] = dot product of key i and query j
    return keys @ queries.transpose(-2, -1)


def attention_weights(scores, d_k, causal=False, mask=None):
    s = scores / math.sqrt(d_k)
    if causal:
        keep = torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    mx = s.amax(-1, keepdim=True)
    mx = mx.masked_fill(torch.isinf(mx), 0.0)
    e = torch.exp(s - mx)
    tot = e.sum(-1, keepdim=True)
    return e / tot.masked_fill(tot == 0, 1.0)


def self_attention(x, w_q, w_k, w_v, causal=False):
    queries = x @ w_q.transpose(-2, -1)
    keys = x @ w_k.transpose(-2, -1)
    values = x @ w_v.transpose(-2, -1)
    weights = attention_weights(attention_scores(queries, keys), keys.shape[-1], causal=causal)
    return weights @ values, weights
