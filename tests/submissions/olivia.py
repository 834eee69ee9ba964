"""Olivia - attention.

softmax(z)_j = exp(z_j) / sum_k exp(z_k), straight from the formula.
"""
import math

import torch


def attention_weights(scores, d_k, causal=False, mask=None):
    z = scores / math.sqrt(d_k)
    if causal:
        tri = torch.tril(torch.ones(z.shape[-2], z.shape[-1], dtype=torch.bool, device=z.device))
        z = z.masked_fill(~tri, float("-inf"))
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    num = torch.exp(z)
    den = num.sum(dim=-1, keepdim=True)
    den = torch.where(den == 0, torch.ones_like(den), den)  # nothing visible -> all zeros
    return num / den


def self_attention(x, w_q, w_k, w_v, causal=False):
    q = x @ w_q.transpose(-2, -1)
    k = x @ w_k.transpose(-2, -1)
    v = x @ w_v.transpose(-2, -1)
    weights = attention_weights(q @ k.transpose(-2, -1), q.shape[-1], causal=causal)
    return weights @ v, weights
