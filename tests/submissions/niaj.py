# niaj -- multi-head attention homework
import math

import torch


def attention_weights(scores, d_k, causal=False, mask=None):
    scaled = scores / math.sqrt(d_k)
    if causal:
        n_q, n_kv = scaled.shape[-2:]
        scaled = scaled.masked_fill(
            torch.ones(n_q, n_kv, dtype=torch.bool, device=scaled.device).triu(1), float("-inf")
        )
    if mask is not None:
        scaled = scaled.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scaled, dim=-1)
    return torch.where(torch.isnan(w), torch.zeros_like(w), w)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q = x @ w_q.transpose(-2, -1)
    k = x @ w_k.transpose(-2, -1)
    v = x @ w_v.transpose(-2, -1)
    w = attention_weights(q @ k.transpose(-2, -1), k.shape[-1], causal)
    return w @ v, w


def multihead_attention(x, w_q, w_k, w_v, causal=False):
    x = x.unsqueeze(-3)  # (..., 1, n, d_in) broadcasts against (h, d_out, d_in)
    return self_attention(x, w_q, w_k, w_v, causal)


def multihead_attention_concat(x, w_q, w_k, w_v, w_o=None, causal=False):
    ctx, w = multihead_attention(x, w_q, w_k, w_v, causal)
    # (..., h, n, d_v) -> (..., n, d_v, h) -> (..., n, h*d_v)
    ctx = ctx.permute(*range(ctx.dim() - 3), -2, -1, -3)
    out = ctx.reshape(*ctx.shape[:-2], -1)
    if w_o is not None:
        out = out @ w_o.transpose(-2, -1)
    return out, w
