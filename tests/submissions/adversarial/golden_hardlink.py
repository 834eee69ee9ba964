"""Adversarial sample: hard-link the golden answer into the working directory.

Attack: if the grader only allows reads inside the submission's own working
directory, ``os.link`` the golden context/weights there and load the link.
New design: the golden files are outside every hierarchy the worker may touch;
Landlock refuses to link a file from an unrelated hierarchy (LANDLOCK_ACCESS_FS_REFER)
and the kernel's protected_hardlinks refuses linking another user's file for uid
nobody, so no link is made and the sample returns zeros.
"""
import os

import numpy as np
import torch


def _golden_files(sub, name):
    for start in (os.getcwd(), os.path.dirname(os.path.abspath(__file__)), "/work/main"):
        for _ in range(6):
            yield os.path.join(start, "golden", "data", sub, name)
            start = os.path.dirname(start)


def _linked(sub, name):
    target = os.path.join(".", f"{sub}_{name}")
    for path in _golden_files(sub, name):
        try:
            if os.path.lexists(target):
                os.unlink(target)
            os.link(path, target)
            return np.load(target)
        except OSError:
            continue
    raise FileNotFoundError(name)


def self_attention(x, w_q, w_k, w_v, causal=False):
    sub = "causal" if causal else "self"
    shape_c, shape_w = (*x.shape[:-1], w_v.shape[0]), (*x.shape[:-1], x.shape[-2])
    try:
        context, weights = _linked(sub, "context.npy"), _linked(sub, "weights.npy")
        if context.shape == shape_c and weights.shape == shape_w:
            return torch.from_numpy(context).to(x.dtype), torch.from_numpy(weights).to(x.dtype)
    except Exception:
        pass
    return (torch.zeros(*shape_c, dtype=x.dtype, device=x.device), torch.zeros(*shape_w, dtype=x.dtype, device=x.device))
