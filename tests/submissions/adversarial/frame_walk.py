"""Adversarial sample: walk the caller's stack frames to steal the expected answer.

Attack: in an in-process grader the test that calls the submission has a local
variable ``case`` whose ``expected()`` method returns the float64 reference; the
submission walks up sys._getframe() and returns that reference.
New design: the caller in the worker is only the wire shim that decodes tensor
bytes; the Case, its expected values and the tolerance stay in the judge process,
so no frame holds them and the sample returns zeros.
"""
import sys

import torch


def self_attention(x, w_q, w_k, w_v, causal=False):
    try:
        frame = sys._getframe(1)
        while frame is not None:
            case = frame.f_locals.get("case")
            if case is not None and callable(getattr(case, "expected", None)):
                expected = case.expected()
                if getattr(case, "causal", causal) == causal:
                    context = expected.context.reference.to(x.dtype).to(x.device)
                    weights = expected.weights.reference.to(x.dtype).to(x.device)
                    return context, weights
            frame = frame.f_back
    except Exception:
        pass
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
