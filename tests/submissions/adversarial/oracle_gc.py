"""Adversarial sample: find the judge's oracle function through the garbage collector.

Attack: even if the oracle module is hidden from sys.modules, its function
objects are still alive in the grader's process, so gc.get_objects() finds a
function named 'cross_attention' whose module name contains 'oracle'.
New design: the worker process is a fresh interpreter that holds only the
submission; the oracle lives in the judge process, whose objects the worker
cannot reach, so the scan finds nothing and the sample returns zeros.
The scan runs once per worker process (what it can find there does not change), so the attack does not
spend the grading time of its class.
"""
import functools
import gc
import types
import warnings

import torch


@functools.cache
def _find_oracle():
    with warnings.catch_warnings():  # some lazy torch objects warn when inspected
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if (isinstance(obj, types.FunctionType) and obj.__name__ == "cross_attention"
                    and "oracle" in (obj.__module__ or "") and obj.__module__ != __name__):
                return obj
    return None


def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    try:
        oracle = _find_oracle()
        if oracle is not None:
            context, weights = oracle(x_q, x_kv, w_q, w_k, w_v, causal)
            return context.to(x_q.dtype), weights.to(x_q.dtype)
    except Exception:
        pass
    return (torch.zeros(*x_q.shape[:-1], w_v.shape[0], dtype=x_q.dtype, device=x_q.device),
            torch.zeros(*x_q.shape[:-1], x_kv.shape[-2], dtype=x_q.dtype, device=x_q.device))


def self_attention(x, w_q, w_k, w_v, causal=False):
    return cross_attention(x, x, w_q, w_k, w_v, causal)
