"""Adversarial sample: hook os._exit to leave a fake or blocking report behind.

Attack: at import, os._exit is replaced by a function that first writes '{}'
to ./report.json (an empty report read as "no failures"), then tries to replace
report.json with a FIFO in the cwd and in its parent (a grader that opens it to
read blocks forever), and only then exits for real; self_attention calls
os._exit(0) so the hook runs in the middle of grading.
New design: the worker's cwd is a scratch directory the judge never reads
reports from, Landlock denies writing the parent, and the judge gets results
only over its pipe: a worker that exits mid-call is recorded as a crash.
"""
import os

import torch

_real_exit = os._exit


def _hooked_exit(status=0):
    try:
        with open("report.json", "w") as handle:
            handle.write("{}")
    except OSError:
        pass
    for folder in (os.getcwd(), os.path.dirname(os.getcwd())):
        path = os.path.join(folder, "report.json")
        try:
            if os.path.lexists(path):
                os.unlink(path)
            os.mkfifo(path)
        except OSError:
            pass
    _real_exit(status)


os._exit = _hooked_exit


def self_attention(x, w_q, w_k, w_v, causal=False):
    os._exit(0)
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
