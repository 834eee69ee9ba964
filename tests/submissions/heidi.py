# Heidi's attention. The causal part is from the follow-up blog post:
# compute the attention weights, then hide the future.
import math

import torch


def _softmax(s):
    s = s - s.max(dim=-1, keepdim=True).values
    e = torch.exp(s)
    return e / e.sum(dim=-1, keepdim=True)


def attention_weights(scores, d_k, causal=False, mask=None):
    w = _softmax(scores / math.sqrt(d_k))
    if causal:
        future = torch.triu(torch.ones(w.shape[-2], w.shape[-1], dtype=torch.bool, device=w.device), diagonal=1)
        w = w.masked_fill(future, 0.0)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    return w


def self_attention(x, w_q, w_k, w_v, causal=False):
    Q = x @ w_q.transpose(-2, -1)
    K = x @ w_k.transpose(-2, -1)
    V = x @ w_v.transpose(-2, -1)
    W = attention_weights(Q @ K.transpose(-2, -1), K.shape[-1], causal=causal)
    return W @ V, W
