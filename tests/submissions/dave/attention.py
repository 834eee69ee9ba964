import torch
import torch.nn.functional as F


def _attend(q, k, v, causal):
    d_k = q.size(-1)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (d_k ** -0.5)
    if causal:
        n_q, n_k = scores.size(-2), scores.size(-1)
        future = torch.triu(torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights


def self_attention(x, w_q, w_k, w_v, causal=False):
    """x: (..., n, d_in); w_*: (d_out, d_in)."""
    return _attend(F.linear(x, w_q), F.linear(x, w_k), F.linear(x, w_v), causal)


def multihead_attention(x, w_q, w_k, w_v, causal=False):
    """w_*: (h, d_out, d_in) -> context (..., h, n, d_v), weights (..., h, n, n)."""
    q = torch.einsum("...nd,hkd->...hnk", x, w_q)
    k = torch.einsum("...nd,hkd->...hnk", x, w_k)
    v = torch.einsum("...nd,hkd->...hnk", x, w_v)
    return _attend(q, k, v, causal)
