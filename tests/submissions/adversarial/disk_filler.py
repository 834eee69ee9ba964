"""Adversarial sample: fill the grader's disk, many files at a time, then time out.

Attack: RLIMIT_FSIZE caps one file (16 MB), not the sum: at import, write 15 MB files into the
working directory (the scratch dir) until a write fails (up to 3 GB), then spin in build_vocab
until the call's time limit kills the worker (self_attention returns zeros). The scratch dir of a submission that timed out was never
removed, so its gigabytes stayed behind after the batch.
New design: the scratch dir is a tmpfs of --disk-mb (all files together) in the worker's own mount
namespace; writes past it fail with "no space left", and the tmpfs vanishes with the worker however
its run ends. The sample earns nothing.
"""
import os

import torch

_CHUNK = b"\0" * (15 * 2**20)
for _number in range(200):
    try:
        with open(f"filler-{_number}.bin", "wb") as _handle:
            _handle.write(_CHUNK)
    except OSError:
        break


def build_vocab(sentence):
    while True:
        pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    z = dict(dtype=x.dtype, device=x.device)
    return torch.zeros(*x.shape[:-1], w_v.shape[0], **z), torch.zeros(*x.shape[:-1], x.shape[-2], **z)
