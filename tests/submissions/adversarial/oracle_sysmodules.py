"""Adversarial sample: borrow the judge's float64 oracle from sys.modules.

Attack: an in-process grader has already imported its oracle (e.g.
``conformance.judge.oracle``), so the submission looks it up in sys.modules (or
imports it) and returns the oracle's answer instead of computing anything.
New design: the submission runs in a separate worker process that never imports
the judge, and Landlock lets it read only the interpreter, its libraries and its
own copied file, so there is no oracle to find or import; it returns zeros.
"""
import importlib
import sys

import torch


def _oracle():
    for name, module in list(sys.modules.items()):
        if "oracle" in name and name != __name__ and hasattr(module, "cross_attention"):
            return module
    try:
        return importlib.import_module("conformance.judge.oracle")
    except Exception:
        return None


def _zeros(x, w_v, n_kv):
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], n_kv, dtype=x.dtype, device=x.device))


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    oracle = _oracle()
    if oracle is not None:
        try:
            context, weights = oracle.cross_attention(x_q, x_kv, w_q, w_k, w_v, causal)
            return context.to(x_q.dtype), weights.to(x_q.dtype)
        except Exception:
            pass
    return _zeros(x_q, w_v, x_kv.shape[-2])


def self_attention(x, w_q, w_k, w_v, causal=False):
    return cross_attention(x, x, w_q, w_k, w_v, causal)
