"""QKV-DROPOUT's bounds: how far the mean of S dropout draws may lie from the dropout-free context, and when two
seeds must give different results.

One draw of attention(q, k, v, dropout_p=p) is C = (W ⊙ M / (1 − p)) V, with W the dropout-free weights and M
independent Bernoulli(1 − p) keeps, one per weight. For a direction u over the context fixed before the draws,
uᵀC = Σ_hij g_hij M_hij with g_hij = W_hij (u_hi · V_hj) / (1 − p): a sum of independent terms, each in an
interval of width a_hij = |g_hij|, whose expectation is uᵀ W V. Over S independent draws (S·N terms in all)
Hoeffding's inequality gives

    P(|uᵀ(mean_s C_s − W V)| ≥ t) ≤ 2 exp(−2 S t² / Σ a²),   so   t = sqrt(Σ a² · ln(2/α) / (2S))

is exceeded with probability at most α. Several directions are judged, each with its share of α (Bonferroni),
so a correct kernel fails any of them with probability at most α in all.

The implementation's draws are not exact: each of its context elements may differ from the exact draw with
the same keeps by its rounding, at most `allowed` (the tolerance policy); so uᵀ of the mean by at most
‖u‖₁ · allowed, which is added to t. Nothing here is tuned: a wrong mean fails when its shift along u passes
that sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from conformance.judge import oracle, rounding
from conformance.judge.tolerance import Expected, OutOfRange, max_abs_error

ALPHA = 1e-9  # the clause's: the probability that a correct kernel fails a statistical check


@dataclass(frozen=True)
class Direction:
    """A unit direction over the context (float64, the context's shape), named for the messages."""

    name: str
    u: Tensor


def directions(expected: Tensor) -> list[Direction]:
    """The directions judged, from the dropout-free context E (float64): E itself, normalised (the most
    sensitive to a mean that is a multiple of E, which a missing or wrong rescale gives), and its signs
    normalised (every element's signed contribution counted alike: a few large elements cannot drown a shift
    the others show). A zero context has no direction: nothing to judge."""
    made = []
    for name, vector in (("the dropout-free context", expected), ("the signs of the dropout-free context",
                                                                   torch.sign(expected))):
        norm = vector.norm().item()
        if norm > 0 and math.isfinite(norm):
            made.append(Direction(name, vector / norm))
    return made


def coefficients(weights: Tensor, values: Tensor, u: Tensor, p: float) -> Tensor:
    """a_hij = |W_hij (u_hi · V_hj)| / (1 − p): the widest change one weight's keep can make to uᵀC.

    weights (..., h, n_q, n_kv) dropout-free, values (..., h, n_kv, d_v) one per query head, u (..., h, n_q, d_v);
    float64."""
    along = torch.einsum("...id,...jd->...ij", u, values)
    return (weights * along).abs() / (1 - p)


def hoeffding(a: Tensor, samples: int, alpha: float) -> float:
    """t such that a mean over `samples` independent draws of Σ terms of widths `a` strays from its
    expectation by t or more with probability at most alpha."""
    return math.sqrt(a.square().sum().item() * math.log(2 / alpha) / (2 * samples))


@dataclass(frozen=True)
class MeanCheck:
    """uᵀ(mean − expected) along one direction, and the bound it must stay within."""

    direction: str
    statistic: float
    hoeffding: float
    rounding: float
    alpha: float
    samples: int

    @property
    def bound(self) -> float:
        return self.hoeffding + self.rounding

    @property
    def holds(self) -> bool:
        return abs(self.statistic) <= self.bound

    def explain(self) -> str:
        return (f"along {self.direction} (unit u), uᵀ(mean − dropout-free context) over {self.samples} draws is "
                f"{self.statistic:.4g}; allowed |·| ≤ {self.bound:.4g} = {self.hoeffding:.4g} (Hoeffding: correct "
                f"draws exceed it with probability at most α = {self.alpha:.2g}, this direction's share) + "
                f"{self.rounding:.2g} (rounding: ‖u‖₁ × the tolerance per element)")


def mean_checks(mean: Tensor, expected: Tensor, weights: Tensor, values: Tensor, p: float, samples: int,
                allowed: float, alpha: float = ALPHA) -> list[MeanCheck]:
    """Every direction's check of the mean context of `samples` draws against the dropout-free one.

    mean: the implementation's mean context (any float dtype); expected, weights, values: the dropout-free
    float64 reference; allowed: the rounding allowed per element of one draw's context."""
    found = directions(expected)
    share = alpha / max(len(found), 1)
    shift = mean.detach().to("cpu", torch.float64) - expected
    checks = []
    for direction in found:
        u = direction.u
        statistic = (u * shift).sum().item()
        if not math.isfinite(statistic):
            statistic = math.inf  # a NaN mean fails, and says so
        bound = hoeffding(coefficients(weights, values, u, p), samples, share)
        checks.append(MeanCheck(direction.name, statistic, bound, u.abs().sum().item() * allowed, share, samples))
    return checks


def draw_expectations(q: Tensor, k: Tensor, v: Tensor, scale: float | None, dtype: str, p: float,
                      plain: tuple[Expected, Expected], keeps: int = 3, seed: int = 0) -> tuple[Expected, Expected]:
    """The tolerance policy's allowance per element of one draw's (context, weights): the baseline is the error
    of a plain same-dtype draw (the dropout-free weights in the dtype, times the keeps, over 1 − p, times v)
    against the float64 draw with the same keeps, the largest over `keeps` keeps of the judge's own; the derived
    allowance is the dropout-free call's (plain: its Expected outputs) over 1 − p, the most a kept weight grows.
    q, k, v as passed to the implementation. Raises OutOfRange where the dtype cannot compute the call."""
    exact = oracle.upcast(q, k, v)
    given = [t.detach().cpu() for t in (q, k, v)]
    reference_context, reference_weights = oracle.attention(*exact, scale=scale)
    _, plain_weights = oracle.attention(*given, scale=scale)
    exact_values, plain_values = (per_query_head(t, q.shape[-3]) for t in (exact[2], given[2]))
    generator = torch.Generator().manual_seed(seed)
    context_error = weights_error = 0.0
    for _ in range(keeps):
        keep = torch.rand(reference_weights.shape, generator=generator, dtype=torch.float64) >= p
        exact_draw = reference_weights * keep / (1 - p)
        plain_draw = plain_weights * keep.to(plain_weights.dtype) / (1 - p)
        weights_error = max(weights_error, max_abs_error(plain_draw, exact_draw))
        context_error = max(context_error, max_abs_error(torch.einsum("...ij,...jd->...id", plain_draw, plain_values),
                                                         torch.einsum("...ij,...jd->...id", exact_draw, exact_values)))
    if math.isinf(context_error) or math.isinf(weights_error):
        raise OutOfRange(f"a plain {dtype} computation of a dropout draw overflows for this input")
    context, weights = plain
    # a draw's weights are the dropout-free ones kept and scaled by 1/(1 − p) (two more roundings): every
    # term of the analysis grows by at most that factor, whichever weights are kept
    grow = (1 + 2 * rounding.arithmetic(dtype).u) / (1 - p)
    return (Expected("context", reference_context, dtype, context.derived * grow,
                     torch.tensor(context_error, dtype=torch.float64), 1, context.step),
            Expected("weights", reference_weights, dtype, weights.derived * grow,
                     torch.tensor(weights_error, dtype=torch.float64), 1, weights.step))


def per_query_head(values: Tensor, heads: int) -> Tensor:
    """Values (..., h_kv, n_kv, d_v) repeated for each query head they serve (grouped-query attention)."""
    return values.repeat_interleave(heads // values.shape[-3], dim=-3)


def influential(weights: Tensor, values: Tensor, p: float, resolution: float) -> int:
    """How many weights change their row's context by more than `resolution` when dropped: the largest
    W_hij · max|V_hj| / (1 − p) over the row's elements. Two draws that disagree on one of them (and on no other
    weight of that row) give contexts that differ by more than it."""
    reach = values.abs().amax(dim=-1).unsqueeze(-2)  # (..., h, 1, n_kv)
    return int((weights * reach / (1 - p) > resolution).sum().item())


def same_draw_probability(p: float, count: int) -> float:
    """The probability that two independent draws keep or drop alike each of `count` weights."""
    return (p * p + (1 - p) * (1 - p)) ** count


__all__ = ["ALPHA", "Direction", "MeanCheck", "coefficients", "directions", "draw_expectations", "hoeffding",
           "influential", "mean_checks", "per_query_head", "same_draw_probability"]
