"""Adversarial sample: monkeypatch torch's comparison functions at import.

Attack: torch is one shared module in an in-process grader, so at import the
submission makes Tensor.abs return zeros (every error is 0), torch.equal /
torch.allclose return True and torch.isclose say "all close".
New design: the patches apply only inside the worker process; the judge process
imports its own torch, never imports the submission, and compares the plain
bytes it receives, so the zeros this sample returns fail.
"""
import torch

try:
    _real_isclose = torch.isclose
    torch.Tensor.abs = lambda self, *a, **k: torch.zeros_like(self)
    torch.Tensor.__abs__ = torch.Tensor.abs
    torch.abs = lambda t, *a, **k: torch.zeros_like(t)
    torch.equal = lambda a, b: True
    torch.allclose = lambda a, b, *args, **kwargs: True
    torch.Tensor.allclose = torch.allclose
    torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(_real_isclose(a, b), dtype=torch.bool)
    torch.Tensor.isclose = torch.isclose
except Exception:
    pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
