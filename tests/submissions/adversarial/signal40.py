"""Adversarial sample: kill its own process with an unnamed real-time signal.

Attack: self_attention sends signal 40 (SIGRTMIN+6 on Linux, with no name in
Python's signal.Signals) to its own process. A grader that turns the exit status
into a message with signal.Signals(-rc).name crashes on the ValueError, or a
crash handler that assumes a named signal loses the whole batch.
New design: the judge describes a dead worker with a lookup that falls back to
"signal 40", records the call as a crash for this submission only, and goes on
grading the others; the sample never returns an answer, so it gains nothing.
"""
import os

import torch


def self_attention(x, w_q, w_k, w_v, causal=False):
    try:
        os.kill(os.getpid(), 40)
    except Exception:
        pass
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
