# Ursula -- precomputes "all possible" attention weights up front: asks for 64 GB
import math

import torch


def self_attention(x, w_q, w_k, w_v, causal=False):
    cache = torch.empty(16 * 2**30, dtype=torch.float32)  # 64 GiB "lookup table"
    q, k, v = x @ w_q.transpose(-2, -1), x @ w_k.transpose(-2, -1), x @ w_v.transpose(-2, -1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]) + cache[0], dim=-1)
    return weights @ v, weights
