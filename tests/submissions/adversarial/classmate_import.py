"""Adversarial sample: hand in a classmate's solution by importing it.

Attack: the grader puts every submission in one folder (and, in process, on
sys.path), so ``import alice`` loads a classmate's correct file and this sample
re-exports its self_attention; it also tries the folders next to its own file.
New design: each worker gets only its own copied file in a scratch directory and
Landlock denies reading anything else, so alice.py cannot be found or read; the
sample falls back to zeros. (Honest content: none.)
"""
import os
import sys

import torch

try:
    import alice as _classmate
except Exception:
    _classmate = None
    _here = os.path.dirname(os.path.abspath(__file__))
    for _folder in (_here, os.path.dirname(_here), os.getcwd(), os.path.dirname(os.getcwd())):
        try:
            sys.path.insert(0, _folder)
            import alice as _classmate
            break
        except Exception:
            _classmate = None
        finally:
            sys.path.remove(_folder)


def self_attention(x, w_q, w_k, w_v, causal=False):
    if _classmate is not None:
        try:
            return _classmate.self_attention(x, w_q, w_k, w_v, causal=causal)
        except Exception:
            pass
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
