# Quentin -- attention homework (did not run it before submitting)
import math
import torch


def self_attention(x, w_q, w_k, w_v, causal=False)
    q = x @ w_q.T
    k = x @ w_k.T
    v = x @ w_v.T
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]), dim=-1)
    return a @ v, a
