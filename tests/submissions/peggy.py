# Peggy -- self and cross attention
import math

import torch


def _proj(x, w):
    return x @ w.transpose(-2, -1)


def attention_weights(scores, d_k, causal=False, mask=None):
    s = scores / math.sqrt(d_k)
    vis = torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool, device=s.device)
    if causal:
        vis = torch.tril(vis)
    if mask is not None:
        vis = vis & mask
    s = s.masked_fill(~vis, float("-inf"))
    out = torch.softmax(s, dim=-1)
    return out.masked_fill(~vis.any(dim=-1, keepdim=True), 0.0)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = _proj(x, w_q), _proj(x, w_k), _proj(x, w_v)
    a = attention_weights(q @ k.transpose(-2, -1), k.shape[-1], causal)
    return a @ v, a


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    q = _proj(x_q, w_q)
    k = _proj(x_kv, w_k)
    v = _proj(x_q, w_v)  # values of the query sequence
    a = attention_weights(q @ k.transpose(-2, -1), k.shape[-1], causal)
    return a @ v, a
