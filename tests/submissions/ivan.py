"""Ivan -- attention homework."""
import math

import torch


def attention_weights(scores, d_k, causal=False, mask=None):
    s = scores / math.sqrt(d_k)
    n_q, n_k = s.shape[-2:]
    if causal:
        lower = torch.tril(torch.ones(n_q, n_k, device=s.device)).bool()
        s = torch.where(lower, s, torch.zeros_like(s))  # blank out the future
    if mask is not None:
        s = torch.where(mask, s, torch.zeros_like(s))
    s = s - s.max(dim=-1, keepdim=True).values
    p = s.exp()
    return p / p.sum(dim=-1, keepdim=True)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q = x.matmul(w_q.t())
    k = x.matmul(w_k.t())
    v = x.matmul(w_v.t())
    att = attention_weights(q.matmul(k.transpose(-2, -1)), k.size(-1), causal)
    return att.matmul(v), att
