"""Work out what a wrong result corresponds to, to say it in the failure message.

These functions never decide a verdict; they only turn "the numbers differ"
into "your weights are softmax(ω / 24), i.e. divided by d_k".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

USABLE_WEIGHT = 1e-30  # below this a weight carries no information about the scale


def implied_inverse_scale(weights: Tensor, scores: Tensor) -> float | None:
    """The α for which weights ≈ softmax(α·ω) row by row (least squares on log-weights), or None.

    None when no row has two usable weights at different scores (e.g. n_kv = 1).
    """
    w = weights.detach().to("cpu", torch.float64)
    s = scores.detach().to("cpu", torch.float64)
    if w.shape != s.shape or not torch.isfinite(w).all():
        return None
    use = w > USABLE_WEIGHT
    count = use.sum(dim=-1, keepdim=True).clamp_min(1)
    log_w = torch.where(use, w.clamp_min(USABLE_WEIGHT).log(), torch.zeros_like(w))
    s_used = torch.where(use, s, torch.zeros_like(s))
    ds = torch.where(use, s - s_used.sum(-1, keepdim=True) / count, torch.zeros_like(s))
    dl = torch.where(use, log_w - log_w.sum(-1, keepdim=True) / count, torch.zeros_like(s))
    denominator = (ds * ds).sum().item()
    if denominator <= 1e-300:
        return None
    return (ds * dl).sum().item() / denominator


def name_scale(divisor: float, dims: dict[str, int]) -> str:
    """Describe a divisor of the scores in terms of the problem's dimensions ("d_k", "√d_v", ...)."""
    candidates: dict[str, float] = {"1 (no scaling)": 1.0}
    for name, value in dims.items():
        if value == 1:  # indistinguishable from no scaling
            continue
        candidates[f"√{name}"] = math.sqrt(value)
        candidates[name] = float(value)
        candidates[f"1/√{name} (multiplied instead of divided)"] = 1 / math.sqrt(value)
    matches = [name for name, value in candidates.items() if math.isclose(divisor, value, rel_tol=2e-3)]
    return " = ".join(matches) if matches else "none of d_k, √d_k, √d_v, √d_in"


def scale_hint(weights: Tensor, scores: Tensor, dims: dict[str, int]) -> str:
    """A sentence on which scale the weights were computed with, or '' when it cannot be told."""
    alpha = implied_inverse_scale(weights, scores)
    if alpha is None or alpha <= 0:
        return ""
    divisor = 1 / alpha
    return f"your weights fit softmax(ω / {divisor:.4g}), a divisor of {name_scale(divisor, dims)}; the spec divides by √d_k = {math.sqrt(dims['d_k']):.4g}"
