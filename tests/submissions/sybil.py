"""Sybil -- correct attention, but left a lot of debugging output in."""
import math
import os

import torch

_CHUNK = b"#" * (1 << 20)  # 1 MiB


def attention_weights(scores, d_k, causal=False, mask=None):
    s = scores / math.sqrt(d_k)
    ok = torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool, device=s.device)
    if causal:
        ok = ok.tril()
    if mask is not None:
        ok = ok & mask
    s = s.masked_fill(~ok, float("-inf"))
    w = torch.softmax(s, dim=-1)
    print("DEBUG weights:", w.tolist())
    return w.masked_fill(~ok.any(dim=-1, keepdim=True), 0.0)


def self_attention(x, w_q, w_k, w_v, causal=False):
    q = x @ w_q.transpose(-2, -1)
    k = x @ w_k.transpose(-2, -1)
    v = x @ w_v.transpose(-2, -1)
    for i in range(2000):
        print("DEBUG step", i, "q =", q.tolist())
    # "fast" logging straight to file descriptor 1, past sys.stdout: 50 MiB per call
    for _ in range(50):
        view = memoryview(_CHUNK)
        while view:
            view = view[os.write(1, view):]
    a = attention_weights(q @ k.transpose(-2, -1), k.shape[-1], causal)
    return a @ v, a
