"""Assertion helpers: every failure says what was observed, where, and what was required.

Messages are written for the person who has to fix the implementation:
"weights row 3 sums to 0.71; required 1 within 2.4e-07", not "assert False".
The clause id is added by the pytest plugin, which knows which clause the
test verifies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch
from torch import Tensor

from conformance.judge.capabilities import DTYPES
from conformance.judge.tolerance import Expected, max_abs_error


class ClauseFailure(AssertionError):
    """The implementation's output breaks the clause the test verifies."""


def fail(message: str) -> NoReturn:
    raise ClauseFailure(message)


def _index(flat: int, shape: Sequence[int]) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return "[" + ", ".join(str(i) for i in reversed(index)) + "]"


def _value(x: float) -> str:
    return f"{x:.6g}"


def check_shape(name: str, actual: Tensor, shape: Sequence[int], layout: str = "") -> None:
    if tuple(actual.shape) != tuple(shape):
        hint = f" {layout}" if layout else ""
        fail(f"{name} has shape {tuple(actual.shape)}; expected {tuple(shape)}{hint}")


def assert_matches(actual: Tensor, expected: Expected, where: str = "") -> None:
    """actual is within the tolerance policy of the float64 reference."""
    check_shape(expected.name, actual, expected.reference.shape)
    context = f" ({where})" if where else ""
    if actual.is_complex():  # a cast to float64 would keep the real part and pass
        fail(f"{expected.name} is {actual.dtype} (complex){context}; the result must be real")
    got = actual.detach().to("cpu", torch.float64)
    allowance = expected.allowance
    # where the analysis allows more than the dtype's largest number, the dtype cannot compute the element at all
    # (a float16 backward pass on scores of 1e4 overflows): any value there, inf included, is within it
    beyond = allowance >= torch.finfo(DTYPES[expected.dtype]).max
    bad = ~torch.isfinite(got) & ~beyond
    if bad.any():
        flat = int(bad.flatten().nonzero()[0])
        fail(
            f"{expected.name}{_index(flat, got.shape)} is {got.flatten()[flat].item()}{context}; "
            f"the float64 reference is {_value(expected.reference.flatten()[flat].item())}"
        )
    error = (got - expected.reference).abs().masked_fill(beyond, 0.0)
    outside = error > allowance
    if outside.any():
        # of the elements outside their own allowance (a large allowance elsewhere excuses nothing), the one
        # furthest off: the most visible symptom of the mistake
        flat = int(torch.where(outside, error, torch.full_like(error, -1.0)).flatten().argmax())
        count, total = int(outside.sum()), outside.numel()
        fail(
            f"{expected.name}{_index(flat, got.shape)} is {_value(got.flatten()[flat].item())} but the float64 "
            f"reference is {_value(expected.reference.flatten()[flat].item())}{context}: error "
            f"{error.flatten()[flat].item():.3g}; {expected.explain(flat)} "
            f"({count} of {total} elements are outside their allowance)"
        )


def matches(actual: Tensor, expected: Expected) -> bool:
    """Whether assert_matches would pass: for checks that try several references before failing."""
    try:
        assert_matches(actual, expected)
    except ClauseFailure:
        return False
    return True


def assert_agree(name: str, first: Tensor, second: Tensor, allowed: float, relation: str) -> None:
    """Two results of the implementation that must agree (a relation such as equivariance)."""
    check_shape(name, second, first.shape)
    a = first.detach().to("cpu", torch.float64)
    b = second.detach().to("cpu", torch.float64)
    error = max_abs_error(a, b)
    if error > allowed:
        if math.isinf(error):
            fail(f"{name}: non-finite values; {relation}")
        flat = int((a - b).abs().flatten().argmax())
        fail(
            f"{name}{_index(flat, a.shape)}: {_value(a.flatten()[flat].item())} vs "
            f"{_value(b.flatten()[flat].item())}, difference {error:.3g} > allowed {allowed:.3g}; {relation}"
        )


def assert_rows_stochastic(weights: Tensor, allowed: float | Tensor, rows: Tensor | None = None) -> None:
    """Every row (last axis) is ≥ 0 and sums to 1 within `allowed` (one number, or one per row); `rows` selects
    rows that must (others are skipped)."""
    w = weights.detach().to("cpu", torch.float64)
    if not torch.isfinite(w).all():
        flat = int((~torch.isfinite(w)).flatten().nonzero()[0])
        fail(f"weights{_index(flat, w.shape)} is {w.flatten()[flat].item()}; weights must be finite probabilities")
    if (w < 0).any():
        flat = int(w.flatten().argmin())
        fail(f"weights{_index(flat, w.shape)} is {_value(w.flatten()[flat].item())}; weights must be ≥ 0")
    sums = w.sum(dim=-1)
    deviation = (sums - 1).abs()
    if rows is not None:
        deviation = torch.where(rows, deviation, torch.zeros_like(deviation))
    limit = torch.as_tensor(allowed, dtype=torch.float64)
    if limit.dim() and tuple(limit.shape) != tuple(deviation.shape):  # outputs of another shape: the largest
        limit = limit.max()
    excess = deviation - limit
    if deviation.numel() and excess.max().item() > 0:
        flat = int(excess.flatten().argmax())
        row = _index(flat, sums.shape)
        low, high = sums.min().item(), sums.max().item()
        total = sums.flatten()[flat].item()
        here = limit.expand(deviation.shape).flatten()[flat].item()
        fail(
            f"weights row {row} sums to {_value(total)} (1 {'+' if total >= 1 else '-'} {abs(total - 1):.3g}); "
            f"required 1 within {here:.2g} (row sums range over {_value(low)}…{_value(high)})"
        )


def assert_exactly_zero(weights: Tensor, where: Tensor, what: str) -> None:
    """weights are exactly 0.0 wherever `where` is True."""
    w = weights.detach().cpu()
    try:
        fits = torch.broadcast_shapes(w.shape, where.shape) == w.shape
    except RuntimeError:
        fits = False
    if not fits:
        fail(f"weights have shape {tuple(w.shape)}; {what} are given for shape {tuple(where.shape)}")
    offending = where.cpu() & (w != 0)
    if offending.any():
        flat = int(offending.flatten().nonzero()[0])
        fail(
            f"weights{_index(flat, w.shape)} is {_value(w.flatten()[flat].item())}; {what} must be exactly 0 "
            f"({int(offending.sum())} such weights are not)"
        )


def assert_empty_rows(name: str, actual: Tensor, rows: Tensor, policy: str, what: str) -> None:
    """The rows of `actual` (..., n_q, d) where `rows` (broadcast to (..., n_q)) is True are exactly 0 (policy
    "zeros") or all NaN ("nan"): what a query that sees no key gets, as the implementation declares."""
    a = actual.detach().cpu()
    where = rows.cpu()[..., None].expand(a.shape)
    wrong = where & (~a.isnan() if policy == "nan" else a != 0)  # NaN != 0: NaN is wrong where zeros are declared
    if wrong.any():
        flat = int(wrong.flatten().nonzero()[0])
        required = "NaN" if policy == "nan" else "exactly 0"
        fail(
            f"{name}{_index(flat, a.shape)} is {_value(a.flatten()[flat].item())}; {what} must be {required} "
            f"(declared masked_rows={policy!r}; {int(wrong.sum())} such elements are not)"
        )


# ------------------------------------------------ checks shared by a clause's tests and its detector
# A detector (detectors.py) asks whether its clause's property is broken on a case; it answers with the
# very check the clause's own tests make, so a block is never claimed on a weaker or stronger criterion.


def holds(check: Callable[..., None], *args, **kwargs) -> bool:
    """Whether an assertion helper passes on these arguments (for callers that decide rather than fail)."""
    try:
        check(*args, **kwargs)
    except ClauseFailure:
        return False
    return True


def row_sum_allowance(expected: Expected) -> Tensor:
    """How far each row of weights may sum from 1: Σ_j ŵ_ij − 1 = Σ_j (ŵ_ij − w_ij) exactly, so the sum of the
    row's allowances (tolerance policy), plus the float64 rounding of the judge's own sum."""
    allowance = expected.allowance
    n_kv = allowance.shape[-1] if allowance.dim() else 1
    return allowance.sum(dim=-1) + 2 * n_kv * torch.finfo(torch.float64).eps


def assert_weights_are_probabilities(weights: Tensor, expected: Expected, rows: Tensor | None = None) -> None:
    """WEIGHTS-PROBABILITY: every row (those selected by `rows`) is ≥ 0 and sums to 1 within the sum of its
    weights' allowances; `expected` is the weights' expectation (its bounds and dtype)."""
    assert_rows_stochastic(weights, row_sum_allowance(expected), rows)


def future_keys(n_q: int, n_kv: int) -> Tensor:
    """True where key j lies after query i (j > i): what a causal mask hides (top-left aligned)."""
    return torch.ones(n_q, n_kv, dtype=torch.bool).triu(diagonal=1)


def assert_no_future_weight(weights: Tensor, what: str = "a key after its query (j > i, top-left aligned)") -> None:
    """CAUSAL-MASK: the weights on keys after their query (last two axes: queries, keys) are exactly 0."""
    n_q, n_kv = weights.shape[-2:]
    assert_exactly_zero(weights, future_keys(n_q, n_kv).expand(weights.shape), what)


def assert_every_query_sees_a_key(weights: Tensor) -> None:
    """CAUSAL-MASK: every query sees at least itself (keys 0..i), so no causal row is without weight."""
    n_q = weights.shape[-2]
    totals = weights.detach().to("cpu", torch.float64).sum(dim=-1)
    if not torch.isfinite(totals).all() or (totals <= 0).any():
        bad = ~torch.isfinite(totals) | (totals <= 0)
        flat = int(bad.flatten().nonzero()[0])
        row = flat % n_q
        fail(f"causal weights row {row} has no weight on any key (sum {totals.flatten()[flat].item():.3g}); "
             f"query {row} must see keys 0..{row}")


def assert_causal_mask(weights: Tensor, n_q: int, n_kv: int) -> None:
    """CAUSAL-MASK's check of a causal call's weights: keys after their query get exactly 0, every query some."""
    if tuple(weights.shape[-2:]) != (n_q, n_kv):
        fail(f"causal weights have shape {tuple(weights.shape)}; the last two axes must be (n_q, n_kv) = ({n_q}, {n_kv})")
    assert_no_future_weight(weights)
    assert_every_query_sees_a_key(weights)
