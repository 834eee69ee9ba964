"""The tolerance policy of spec/clauses.toml, applied.

error(result) ≤ factor[dtype] × error(plain same-dtype reference) + floor,
floor = floor_ulps[dtype] × eps(dtype) × scale, errors measured against the
float64 reference. Factors and floor_ulps live in the spec, not here.

The plain reference's error is the largest over several summation orders (the tokens in their
order, reversed, shuffled): one order's rounding can be luckily small on a long reduction (a
gradient summed over 128 queries), and a correct implementation that sums in another order must
not be judged by that luck.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import spec
from conformance.judge import oracle
from conformance.judge.capabilities import DTYPES


class OutOfRange(Exception):
    """The plain reference overflows in this dtype for this input: the input is
    outside what the dtype can compute, so the example is discarded, not judged."""


def max_abs_error(actual: Tensor, reference: Tensor) -> float:
    difference = (actual.detach().to("cpu", torch.float64) - reference).abs()
    if difference.numel() == 0:
        return 0.0
    if not torch.isfinite(difference).all():
        return math.inf
    return difference.max().item()


@dataclass(frozen=True)
class Expected:
    """What one output should be: float64 reference, plain-reference baseline and the bound derived from them."""

    name: str
    reference: Tensor  # float64, CPU
    dtype: str
    baseline_error: float
    scale: float
    orders: int = 1  # summation orders the baseline error is the largest of

    @property
    def floor(self) -> float:
        policy = spec.load().tolerance[self.dtype]
        return policy.floor_ulps * torch.finfo(DTYPES[self.dtype]).eps * self.scale

    @property
    def factor(self) -> float:
        return spec.load().tolerance[self.dtype].factor

    @property
    def allowed(self) -> float:
        return self.factor * self.baseline_error + self.floor

    def explain(self) -> str:
        plain = (f"largest error of a plain {self.dtype} reference in {self.orders} summation orders"
                 if self.orders > 1 else f"error of a plain {self.dtype} reference")
        return (
            f"{self.dtype} allows {self.factor:g} × {self.baseline_error:.2g} ({plain}) + {self.floor:.2g} (floor) "
            f"= {self.allowed:.2g}"
        )


def expected(name: str, reference: Tensor, baseline: Tensor | Sequence[Tensor], dtype: str, scale: float) -> Expected:
    """Bundle a float64 reference with the plain same-dtype baseline computed from the same inputs (or the
    baselines of several summation orders, each put back in the reference's order: the largest error counts)."""
    baselines = [baseline] if isinstance(baseline, Tensor) else list(baseline)
    baseline_error = max(max_abs_error(b, reference) for b in baselines)
    if math.isinf(baseline_error):
        raise OutOfRange(f"a plain {dtype} computation of {name} overflows for this input")
    return Expected(name, reference, dtype, baseline_error, scale, len(baselines))


def token_orders(n_q: int, n_kv: int, seed: int, same: bool, causal: bool) -> list[tuple[Tensor, Tensor] | None]:
    """Permutations of the queries and keys (None: as given) under which attention is the same computation
    in another summation order: reversed, and shuffled by `seed`. `same`: queries and keys are one sequence
    (self-attention), permuted together. A causal mask ties the order: as given only."""
    generator = torch.Generator().manual_seed(seed + 7)
    orders: list[tuple[Tensor, Tensor] | None] = [None]
    if causal:
        return orders
    for make in (lambda n: torch.arange(n - 1, -1, -1), lambda n: torch.randperm(n, generator=generator)):
        q = make(n_q)
        orders.append((q, q if same else make(n_kv)))
    return orders


def permute_tokens(x: Tensor, order: Tensor) -> Tensor:
    """x with its tokens (dim -2) in `order`."""
    return x.index_select(-2, order)


def restore_tokens(x: Tensor, order: Tensor, dim: int = -2) -> Tensor:
    """x, computed with tokens in `order` along `dim`, put back in the original order."""
    return x.index_select(dim, torch.argsort(order))


def dot_scale(a: Tensor, b: Tensor) -> float:
    """Largest Σ|a_i b_i| over all pairs of rows: what rounding in a dot product is proportional to."""
    if a.numel() == 0 or b.numel() == 0:
        return 0.0
    return torch.einsum("...id,...jd->...ij", a.abs(), b.abs()).max().item()


@dataclass(frozen=True)
class Scales:
    scores: float
    weights: float
    context: float


def scales(x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, alpha: float | None = None) -> Scales:
    """Magnitudes the rounding of each step acts on, from float64 inputs (alpha: scale of the scores)."""
    head = w_q.dim() == 3
    xq, xkv = (x_q.unsqueeze(-3), x_kv.unsqueeze(-3)) if head else (x_q, x_kv)
    q, k, v = oracle.project(xq, w_q), oracle.project(xkv, w_k), oracle.project(xkv, w_v)
    scores = dot_scale(q, k)
    weights = 1.0 + scores * (1 / math.sqrt(k.shape[-1]) if alpha is None else alpha)
    context = weights * max(v.abs().max().item() if v.numel() else 0.0, 1e-300)
    return Scales(scores, weights, context)
