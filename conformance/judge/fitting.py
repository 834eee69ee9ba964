"""The scale α for which softmax(α·ω) best explains what an implementation returned.

Clauses other than WEIGHTS-SCALE judge their own property whatever scale the
implementation divides the scores by: a student who forgot √d_k still has the
right projection layout, causal mask and head layout. Those checks compare with
the reference at 1/√d_k first; only when that fails do they compare with the
reference at the fitted α, so a correct implementation is judged exactly as
before and no tolerance changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

GRID = 10.0 ** torch.linspace(-3.0, 3.0, 31)  # α relative to 1/√d_k: ScaleMultiplied is d_k times too large
REFINE_STEPS = 60  # the bracket shrinks to ~1e-13 of itself: float64 results need α that close


def misfit(predicted: Tensor, observed: Tensor) -> float:
    difference = (predicted - observed).abs()
    if difference.numel() == 0:
        return 0.0
    worst = difference.max().item()
    return worst if math.isfinite(worst) else math.inf


def _golden(objective: Callable[[float], float], low: float, high: float) -> tuple[float, float, float, float]:
    """Golden-section search for the minimum of objective(exp(t)) on t ∈ [low, high]: (a, f(a), b, f(b))."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = objective(math.exp(a)), objective(math.exp(b))
    for _ in range(REFINE_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = objective(math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = objective(math.exp(b))
    return a, fa, b, fb


def fit_scale(
    model: Callable[[float], Tensor], observed: Tensor, alpha0: float, candidates: tuple[float, ...] = (),
    allowance: Callable[[float], Tensor] | None = None,
) -> tuple[float, float] | None:
    """(α, max abs misfit) minimising max |model(α) - observed|; None when observed cannot be fitted at all.

    model(α) gives float64 outputs for scale α; observed is float64 on the CPU with the same shape.
    A grid over α0·10^[-3, 3] brackets the minimum, a golden-section search in log α refines it;
    `candidates` (such as α read off the log-weights) compete with the result. With `allowance` (the
    tolerance policy's allowance per element at a scale α), a second search near that α minimises the misfit
    measured in allowances: the largest absolute misfit is set by the largest outputs' rounding and leaves α
    loose by far more than the allowance of a tiny weight, whose value depends on α exponentially.
    """
    if not torch.isfinite(observed).all():
        return None
    probe = model(alpha0)
    if probe.shape != observed.shape:
        return None
    grid = [alpha0 * float(f) for f in GRID]
    errors = [misfit(model(a), observed) for a in grid]
    best = min(range(len(grid)), key=errors.__getitem__)
    low, high = math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, len(grid) - 1)])
    a, fa, b, fb = _golden(lambda alpha: misfit(model(alpha), observed), low, high)
    usable = [c for c in candidates if c is not None and c > 0 and math.isfinite(c)]
    tried = [(errors[best], grid[best]), (fa, math.exp(a)), (fb, math.exp(b))]
    tried += [(misfit(model(c), observed), c) for c in usable]
    error, alpha = min(tried)
    if allowance is None:
        return alpha, error
    room = allowance(alpha).clamp(min=1e-300)
    if room.shape != observed.shape:
        return alpha, error

    def in_allowances(scale: float) -> float:
        return misfit(model(scale) / room, observed / room)

    a, fa, b, fb = _golden(in_allowances, math.log(alpha) - 0.1, math.log(alpha) + 0.1)
    _, alpha = min([(in_allowances(alpha), alpha), (fa, math.exp(a)), (fb, math.exp(b))]
                   + [(in_allowances(c), c) for c in usable])
    return alpha, misfit(model(alpha), observed)


def implied_scale(weights: Tensor, scores: Tensor, usable: float = 1e-30) -> float | None:
    """α with weights ≈ softmax(α·ω), read off the log-weights by least squares (exact when they are).

    Within a row, log w_j - log w_k = α (ω_j - ω_k); only weights above `usable` enter. None when no
    row has two usable weights at different scores.
    """
    w, s = weights.detach().to("cpu", torch.float64), scores.detach().to("cpu", torch.float64)
    if w.shape != s.shape or not torch.isfinite(w).all():
        return None
    use = w > usable
    count = use.sum(dim=-1, keepdim=True).clamp_min(1)
    log_w = torch.where(use, w.clamp_min(usable).log(), torch.zeros_like(w))
    s_used = torch.where(use, s, torch.zeros_like(s))
    ds = torch.where(use, s - s_used.sum(-1, keepdim=True) / count, torch.zeros_like(s))
    dl = torch.where(use, log_w - log_w.sum(-1, keepdim=True) / count, torch.zeros_like(s))
    denominator = (ds * ds).sum().item()
    return None if denominator <= 1e-300 else (ds * dl).sum().item() / denominator


# ------------------------------------------------------------------ the scale in words (failure messages)
USABLE_WEIGHT = 1e-30  # below this a weight carries no information about the scale


def implied_inverse_scale(weights: Tensor, scores: Tensor) -> float | None:
    """The α for which weights ≈ softmax(α·ω) row by row (least squares on log-weights), or None.

    None when no row has two usable weights at different scores (e.g. n_kv = 1).
    """
    return implied_scale(weights, scores, USABLE_WEIGHT)


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
