"""Adversarial sample: return a torch.Tensor subclass that lies to the comparisons.

Attack: the outputs are a Tensor subclass whose __torch_function__ makes every
subtraction return zeros (so any error is 0) and every eq / equal / allclose /
isclose say "equal"; an in-process grader that compares the returned objects
directly passes them.
New design: the worker sends only the raw bytes, dtype and shape of each output
(plain data); the judge rebuilds ordinary tensors from those bytes, so the
subclass and its __torch_function__ never reach the comparison: zeros fail.
"""
import torch

_ZERO = {"sub", "sub_", "__sub__", "__rsub__", "__isub__", "subtract", "abs", "__abs__"}
_TRUE = {"eq", "__eq__", "isclose"}
_FALSE = {"ne", "__ne__", "isnan", "isinf"}


class _Agreeable(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("allclose", "equal"):
            return True
        if name in _ZERO | _TRUE | _FALSE:
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            if name in _TRUE:
                return torch.ones_like(out, dtype=torch.bool)
            if name in _FALSE:
                return torch.zeros_like(out, dtype=torch.bool)
            return torch.zeros_like(out)
        return super().__torch_function__(func, types, args, kwargs)


def self_attention(x, w_q, w_k, w_v, causal=False):
    n, d_v = x.shape[-2], w_v.shape[0]
    context = torch.zeros(*x.shape[:-1], d_v, dtype=x.dtype, device=x.device)
    weights = torch.zeros(*x.shape[:-1], n, dtype=x.dtype, device=x.device)
    try:
        return context.as_subclass(_Agreeable), weights.as_subclass(_Agreeable)
    except Exception:
        return context, weights
