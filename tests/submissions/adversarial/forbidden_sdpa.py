"""Sample (honest content): correct attention through torch's fused helper.

Computes the right answer, but the context comes from
torch.nn.functional.scaled_dot_product_attention, which a course rule may
forbid ("write the attention yourself"). The weights are computed by hand, since
the helper does not return them. Used to test that such a rule is enforced
(statically and at runtime in the worker) while the numbers are correct.
"""
import math

import torch
import torch.nn.functional as F


def _weights(q, k, causal):
    s = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if causal:
        n_q, n_kv = s.shape[-2], s.shape[-1]
        keep = torch.ones(n_q, n_kv, dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, dim=-1)


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    q, k, v = x_q @ w_q.transpose(-2, -1), x_kv @ w_k.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1)
    context = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return context, _weights(q, k, causal)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.transpose(-2, -1), x @ w_k.transpose(-2, -1), x @ w_v.transpose(-2, -1)
    context = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return context, _weights(q, k, causal)
