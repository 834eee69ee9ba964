"""Adversarial sample: read the golden answer without calling open().

Attack: a grader that blocks ``open``/``np.load`` on paths is dodged by finding
the golden folder (walking up from the cwd and this file, the usual checkout
path, and an os.walk of '/' to depth 4), opening the folder with os.open and the
file with ``dir_fd`` and a relative name, and np.load-ing the raw bytes.
New design: Landlock is enforced by the kernel on every open, whatever the
syscall path; the worker may read only the interpreter, its libraries and its
own file, so every attempt fails and the sample returns zeros.
"""
import io
import os

import numpy as np
import torch


def _golden_dirs(sub):
    for start in (os.getcwd(), os.path.dirname(os.path.abspath(__file__))):
        for _ in range(6):
            yield os.path.join(start, "golden", "data", sub)
            start = os.path.dirname(start)
    yield os.path.join("/work/main/golden/data", sub)
    for root, dirs, _files in os.walk("/"):
        if root.count(os.sep) >= 4 or root.startswith(("/proc", "/sys", "/dev")):
            dirs[:] = []
        if os.path.basename(root) == "golden":
            yield os.path.join(root, "data", sub)


def _read(folder, name):
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)
        return np.load(io.BytesIO(b"".join(chunks)))
    finally:
        os.close(dfd)


def self_attention(x, w_q, w_k, w_v, causal=False):
    shape_c, shape_w = (*x.shape[:-1], w_v.shape[0]), (*x.shape[:-1], x.shape[-2])
    try:
        for folder in _golden_dirs("causal" if causal else "self"):
            try:
                context, weights = _read(folder, "context.npy"), _read(folder, "weights.npy")
            except OSError:
                continue
            if context.shape == shape_c and weights.shape == shape_w:
                return (torch.from_numpy(context).to(x.dtype).to(x.device),
                        torch.from_numpy(weights).to(x.dtype).to(x.device))
    except Exception:
        pass
    return (torch.zeros(*shape_c, dtype=x.dtype, device=x.device), torch.zeros(*shape_w, dtype=x.dtype, device=x.device))
