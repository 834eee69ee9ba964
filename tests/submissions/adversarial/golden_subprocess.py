"""Adversarial sample: read the golden answer through a child process.

Attack: a grader that audits or patches file access inside Python (sys.addaudithook,
a patched open) does not see a child process, so run ``cat`` on the golden .npy
and parse its stdout with np.load(io.BytesIO(...)).
New design: Landlock restrictions are inherited by every child, so ``cat`` can
no more read the golden files than the worker can (nor, usually, be executed at
all: /usr/bin is not in the allowed set, and RLIMIT_NPROC caps forking); the
sample returns zeros.
Each file is tried once per worker process (a refusal does not change), so the attack does not spend the
grading time of its class.
"""
import io
import os
import subprocess

import numpy as np
import torch


_TRIED = {}


def _cat(sub, name):
    if (sub, name) not in _TRIED:
        try:
            _TRIED[sub, name] = _cat_once(sub, name)
        except Exception as error:
            _TRIED[sub, name] = error
    if isinstance(_TRIED[sub, name], Exception):
        raise _TRIED[sub, name]
    return _TRIED[sub, name]


def _cat_once(sub, name):
    for start in (os.getcwd(), os.path.dirname(os.path.abspath(__file__)), "/work/main"):
        for _ in range(6):
            path = os.path.join(start, "golden", "data", sub, name)
            try:
                done = subprocess.run(["cat", path], capture_output=True, timeout=5)
                if done.returncode == 0 and done.stdout:
                    return np.load(io.BytesIO(done.stdout))
            except Exception:
                pass
            start = os.path.dirname(start)
    raise FileNotFoundError(name)


def self_attention(x, w_q, w_k, w_v, causal=False):
    sub = "causal" if causal else "self"
    shape_c, shape_w = (*x.shape[:-1], w_v.shape[0]), (*x.shape[:-1], x.shape[-2])
    try:
        context, weights = _cat(sub, "context.npy"), _cat(sub, "weights.npy")
        if context.shape == shape_c and weights.shape == shape_w:
            return torch.from_numpy(context).to(x.dtype), torch.from_numpy(weights).to(x.dtype)
    except Exception:
        pass
    return (torch.zeros(*shape_c, dtype=x.dtype, device=x.device), torch.zeros(*shape_w, dtype=x.dtype, device=x.device))
