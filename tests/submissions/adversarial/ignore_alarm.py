"""Adversarial sample: disarm the grader's SIGALRM timeout, then spin forever.

Attack: a grader that bounds each call with signal.alarm / setitimer inside the
same process is defeated by ignoring SIGALRM at import and by a background
thread that keeps cancelling the interval timer; self_attention then loops
forever (``while True: pass``), holding the whole batch hostage.
New design: the deadline is enforced by the judge process from outside the
worker (it kills the worker's PID namespace with SIGKILL, which cannot be
ignored), backed by RLIMIT_CPU; the call is recorded as a timeout.
"""
import signal
import threading
import time

import torch


def _keep_disarmed():
    while True:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        except Exception:
            pass
        time.sleep(0.001)


try:
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
except Exception:
    pass
try:
    threading.Thread(target=_keep_disarmed, name="keep-disarmed", daemon=True).start()
except Exception:
    pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    while True:
        pass
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
