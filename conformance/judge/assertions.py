"""Assertion helpers: every failure says what was observed, where, and what was required.

Messages are written for the person who has to fix the implementation:
"weights row 3 sums to 0.71; required 1 within 2.4e-07", not "assert False".
The clause id is added by the pytest plugin, which knows which clause the
test verifies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NoReturn

import torch
from torch import Tensor

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
    got = actual.detach().to("cpu", torch.float64)
    context = f" ({where})" if where else ""
    bad = ~torch.isfinite(got)
    if bad.any():
        flat = int(bad.flatten().nonzero()[0])
        fail(
            f"{expected.name}{_index(flat, got.shape)} is {got.flatten()[flat].item()}{context}; "
            f"the float64 reference is {_value(expected.reference.flatten()[flat].item())}"
        )
    error = max_abs_error(got, expected.reference)
    if error > expected.allowed:
        flat = int((got - expected.reference).abs().flatten().argmax())
        fail(
            f"{expected.name}{_index(flat, got.shape)} is {_value(got.flatten()[flat].item())} but the float64 "
            f"reference is {_value(expected.reference.flatten()[flat].item())}{context}: error {error:.3g}; "
            f"{expected.explain()}"
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


def assert_rows_stochastic(weights: Tensor, allowed: float, rows: Tensor | None = None) -> None:
    """Every row (last axis) is ≥ 0 and sums to 1 within `allowed`; `rows` selects rows that must (others are skipped)."""
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
    if deviation.numel() and deviation.max().item() > allowed:
        flat = int(deviation.flatten().argmax())
        row = _index(flat, sums.shape)
        low, high = sums.min().item(), sums.max().item()
        fail(
            f"weights row {row} sums to {_value(sums.flatten()[flat].item())}; required 1 within {allowed:.2g} "
            f"(row sums range over {_value(low)}…{_value(high)})"
        )


def assert_exactly_zero(weights: Tensor, where: Tensor, what: str) -> None:
    """weights are exactly 0.0 wherever `where` is True."""
    w = weights.detach().cpu()
    offending = where.cpu() & (w != 0)
    if offending.any():
        flat = int(offending.flatten().nonzero()[0])
        fail(
            f"weights{_index(flat, w.shape)} is {_value(w.flatten()[flat].item())}; {what} must be exactly 0 "
            f"({int(offending.sum())} such weights are not)"
        )
