"""The tolerance policy of spec/clauses.toml, applied: every element against an allowance of its own.

|result − float64 reference| ≤ max(derived, factor[dtype] × baseline), per element: `derived` comes from the
error analysis of the computation behind that element (rounding.py: the lengths of its reductions, the
magnitudes of their terms, the dtype's unit roundoff, a stated failure probability); `baseline` is the error
a plain same-dtype reference made there, the largest over several summation orders (the tokens in their
order, reversed, shuffled). The factor lives in the spec, not here; nothing else is a constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

import spec
from conformance.judge import rounding
from conformance.judge.rounding import Step


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
    """What one output should be: the float64 reference and, per element, how far a correct result may be.

    The allowance of an element is the larger of two independent ones: `derived`, the error analysis of the
    computation behind it (rounding.py; the float64 reference's own share included), and factor × `baseline`,
    the error a plain same-dtype reference made there (the largest over its summation orders)."""

    name: str
    reference: Tensor  # float64, CPU
    dtype: str
    derived: Tensor  # per element (broadcast to the reference's shape)
    baseline: Tensor  # per element (broadcast to the reference's shape)
    orders: int = 1  # summation orders the baseline is the largest of
    step: Step | None = field(default=None, compare=False)  # the derived allowance's last step (for messages)

    @property
    def factor(self) -> float:
        return spec.load().tolerance[self.dtype].factor

    @cached_property
    def allowance(self) -> Tensor:
        """The allowance of every element (the reference's shape)."""
        shape = self.reference.shape
        return torch.maximum(self.derived.expand(shape), self.factor * self.baseline.expand(shape))

    @property
    def allowed(self) -> float:
        """The largest allowance of any element (relations between two results compare against it)."""
        return self.allowance.max().item() if self.allowance.numel() else 0.0

    @property
    def baseline_error(self) -> float:
        """The plain reference's largest error."""
        return self.baseline.max().item() if self.baseline.numel() else 0.0

    def explain(self, flat: int | None = None) -> str:
        """Where the allowance of element `flat` (the largest when None) comes from, in words and numbers."""
        if self.allowance.numel() == 0:
            return f"{self.dtype} allows nothing: there are no elements"
        if flat is None:
            flat = int(self.allowance.flatten().argmax())
        derived = self.derived.expand(self.reference.shape).flatten()[flat].item()
        base = self.baseline.expand(self.reference.shape).flatten()[flat].item()
        allowed = self.allowance.flatten()[flat].item()
        plain = (f"the largest error of a plain {self.dtype} reference in {self.orders} summation orders"
                 if self.orders > 1 else f"the error of a plain {self.dtype} reference")
        return (f"{self.dtype} allows {allowed:.3g} here, the larger of {derived:.3g} from the error analysis "
                f"({self.analysis(flat)}) and {self.factor:g} × {base:.2g} ({plain} here)")

    def analysis(self, flat: int) -> str:
        """The derived allowance of one element in words: the last step's own rounding and what it inherits."""
        a = rounding.arithmetic(self.dtype)
        odds = f"failure probability {a.failure:g} per step"
        if self.step is None:
            return odds
        shape = self.reference.shape
        local = self.step.local.expand(shape).flatten()[flat].item()
        magnitude = self.step.magnitude.expand(shape).flatten()[flat].item()
        derived = self.derived.expand(shape).flatten()[flat].item() / (1 + a.reference_share)
        carried = max(derived - local, 0.0)
        accumulation = f", accumulated in {a.accumulation}" if a.accumulation != a.dtype else ""
        return (f"{self.step.what} with Σ|terms| = {magnitude:.3g} in {self.dtype}{accumulation}: {local:.2g} of its "
                f"own rounding, {carried:.2g} carried from the steps before it; {odds}")


def expected(name: str, reference: Tensor, baseline: Tensor | Sequence[Tensor], dtype: str,
             bound: rounding.Bounded) -> Expected:
    """Bundle a float64 reference with its derived bound (rounding.py, for the same computation) and the plain
    same-dtype baseline computed from the same inputs (or the baselines of several summation orders, each put
    back in the reference's order: the largest error per element counts)."""
    baselines = [baseline] if isinstance(baseline, Tensor) else list(baseline)
    errors = [error_per_element(b, reference) for b in baselines]
    base = torch.stack(errors).amax(0) if errors[0].numel() else errors[0]
    if not bool(torch.isfinite(base).all()):
        raise OutOfRange(f"a plain {dtype} computation of {name} overflows for this input")
    share = 1 + rounding.arithmetic(dtype).reference_share
    return Expected(name, reference, dtype, bound.error * share, base, len(baselines), bound.step)


def error_per_element(actual: Tensor, reference: Tensor) -> Tensor:
    """|actual − reference| per element, in float64 on the CPU (NaN where either is NaN: inf)."""
    difference = (actual.detach().to("cpu", torch.float64) - reference).abs()
    return difference.nan_to_num(nan=math.inf, posinf=math.inf)


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
