"""Sample (honest content): correct attention through torch's fused helper, hidden.

Like forbidden_sdpa.py, but dodges a rule against
torch.nn.functional.scaled_dot_product_attention: self_attention calls the same
kernel as ``torch._C._nn.scaled_dot_product_attention`` and cross_attention
looks it up with ``getattr(F, 'scaled_' + 'dot_product_attention')``: the first
bypasses a patched F attribute, the second a text search for the dotted name.
The numbers are correct; the runtime block must catch both routes.
"""
import math

import torch
import torch.nn.functional as F


def _weights(q, k, causal):
    s = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if causal:
        keep = torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, dim=-1)


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    q, k, v = x_q @ w_q.transpose(-2, -1), x_kv @ w_k.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1)
    fused = getattr(F, "scaled_" + "dot_product_attention")
    return fused(q, k, v, is_causal=causal), _weights(q, k, causal)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.transpose(-2, -1), x @ w_k.transpose(-2, -1), x @ w_v.transpose(-2, -1)
    fused = torch._C._nn.scaled_dot_product_attention
    return fused(q, k, v, is_causal=causal), _weights(q, k, causal)
