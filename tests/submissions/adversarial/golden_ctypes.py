"""Adversarial sample: read the golden answer with libc's open/read through ctypes.

Attack: Python-level guards (audit hooks, a patched builtins.open or os.open)
never see a direct libc call, so the golden .npy is opened and read with
ctypes and parsed with np.load(io.BytesIO(...)).
New design: Landlock is enforced in the kernel on the open(2) syscall itself,
however it is reached; the golden files are outside the worker's readable set,
libc's open returns -1 (EACCES) and the sample returns zeros.
Each file is tried once per worker process (a refusal does not change), so the attack does not spend the
grading time of its class.
"""
import ctypes
import ctypes.util
import io
import os

import numpy as np
import torch


def _libc_read(path):
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = libc.open(path.encode(), os.O_RDONLY)
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), path)
    data, buf = bytearray(), ctypes.create_string_buffer(1 << 16)
    while (got := libc.read(fd, buf, len(buf))) > 0:
        data += buf.raw[:got]
    libc.close(fd)
    return np.load(io.BytesIO(bytes(data)))


_TRIED = {}


def _golden(sub, name):
    if (sub, name) not in _TRIED:
        try:
            _TRIED[sub, name] = _golden_once(sub, name)
        except Exception as error:
            _TRIED[sub, name] = error
    if isinstance(_TRIED[sub, name], Exception):
        raise _TRIED[sub, name]
    return _TRIED[sub, name]


def _golden_once(sub, name):
    for start in (os.getcwd(), os.path.dirname(os.path.abspath(__file__)), "/work/main"):
        for _ in range(6):
            try:
                return _libc_read(os.path.join(start, "golden", "data", sub, name))
            except Exception:
                start = os.path.dirname(start)
    raise FileNotFoundError(name)


def self_attention(x, w_q, w_k, w_v, causal=False):
    sub = "causal" if causal else "self"
    shape_c, shape_w = (*x.shape[:-1], w_v.shape[0]), (*x.shape[:-1], x.shape[-2])
    try:
        context, weights = _golden(sub, "context.npy"), _golden(sub, "weights.npy")
        if context.shape == shape_c and weights.shape == shape_w:
            return torch.from_numpy(context).to(x.dtype), torch.from_numpy(weights).to(x.dtype)
    except Exception:
        pass
    return (torch.zeros(*shape_c, dtype=x.dtype, device=x.device), torch.zeros(*shape_w, dtype=x.dtype, device=x.device))
