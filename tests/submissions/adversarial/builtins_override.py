"""Adversarial sample: replace builtins.any / builtins.sum so the grader's checks lie.

Attack: builtins are shared by every module of one interpreter, so at import the
submission swaps ``any`` (-> False: "no element out of tolerance") and ``sum``
(-> 0: "no failures") for versions that lie whenever the caller's file path
contains 'conformance', and honest values otherwise.
New design: the grader's checks run in the judge process, which never imports
the submission; the worker's builtins are its own, and patching them changes
nothing the judge computes. The sample returns zeros and fails.
"""
import builtins
import sys

import torch

_real_any, _real_sum = builtins.any, builtins.sum


def _from_grader():
    try:
        return "conformance" in sys._getframe(2).f_code.co_filename
    except Exception:
        return False


def _any(iterable):
    return False if _from_grader() else _real_any(iterable)


def _sum(iterable, /, start=0):
    return 0 if _from_grader() else _real_sum(iterable, start)


try:
    builtins.any, builtins.sum = _any, _sum
except Exception:
    pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
