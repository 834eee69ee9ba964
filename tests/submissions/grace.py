import torch


def attention_weights(scores, d_k, causal=False, mask=None):
    scaled = scores / d_k  # normalise by the key dimension
    allowed = None
    if causal:
        allowed = torch.tril(torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device))
    if mask is not None:
        allowed = mask if allowed is None else allowed & mask
    if allowed is not None:
        scaled = scaled.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scaled, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T
    weights = attention_weights(q @ k.transpose(-2, -1), q.shape[-1], causal)
    return weights @ v, weights
