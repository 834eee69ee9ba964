"""Pins the failure messages of conformance/judge/assertions.py.

Those messages are the suite's whole user interface when a check fails: the person reading
"context[1, 2] is 0.7 but the float64 reference is 0.6: error 0.1; float32 allows 4 × ... = 2e-06"
must learn where the result is wrong, by how much, and what was allowed, without rerunning anything.
These tests feed each helper small hand-built tensors that fail in a known way and assert that the
ClauseFailure names the index, the observed and expected values, the error and the allowance (numbers
are read back from the message, so a change of wording or of digits passes and a lost number fails).
Passing inputs must raise nothing; NaN, ±inf, a wrong shape and a wrong dtype must give a message too,
not a crash or a silent pass.
"""

from __future__ import annotations

import math

import pytest
import torch

from conformance.judge.assertions import (
    ClauseFailure,
    assert_agree,
    assert_exactly_zero,
    assert_matches,
    assert_rows_stochastic,
    check_shape,
    matches,
)
from conformance.judge import rounding
from conformance.judge.tolerance import Expected, expected, max_abs_error
from tests.meta import mentions, numbers_in

REFERENCE = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)
WHERE = "self_attention in float32 on Problem(n_q=2)"


def bound_of(reference: torch.Tensor, per_element: float = 1e-7) -> rounding.Bounded:
    """A derived bound made by hand: `per_element` everywhere."""
    return rounding.Bounded(reference, torch.full_like(reference, per_element))


def float32_context() -> Expected:
    """The float64 reference with a hand-made derived bound and a plain float32 computation as the baseline."""
    return expected("context", REFERENCE, REFERENCE.float(), "float32", bound_of(REFERENCE))


def failure(call, *args, **kwargs) -> str:
    with pytest.raises(ClauseFailure) as raised:
        call(*args, **kwargs)
    return str(raised.value)


def wrong_at(tensor: torch.Tensor, index: tuple[int, ...], value: float) -> torch.Tensor:
    bad = tensor.clone()
    bad[index] = value
    return bad


# --- passing inputs ------------------------------------------------------------------------------------------


def test_passing_inputs_raise_nothing():
    target = float32_context()
    assert_matches(REFERENCE, target)
    assert_matches(REFERENCE.float(), target, WHERE)  # the plain float32 computation is within its own bound
    assert matches(REFERENCE.float(), target)
    check_shape("context", REFERENCE, (2, 3))
    check_shape("context", REFERENCE, [2, 3], "(..., n_q, d_v)")
    assert_agree("context", REFERENCE, REFERENCE.flip(0).flip(0), 0.0, "permuting tokens permutes the context")
    scores = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_rows_stochastic(torch.softmax(scores.float(), dim=-1), 1e-6)
    assert_rows_stochastic(torch.softmax(scores, dim=-1), 1e-12)
    causal = torch.softmax(torch.zeros(4, 4).masked_fill(torch.ones(4, 4).triu(1).bool(), -math.inf), dim=-1)
    assert_exactly_zero(causal, torch.ones(4, 4, dtype=torch.bool).triu(1), "future keys")


def test_a_result_just_inside_the_allowance_passes_and_just_outside_fails():
    target = float32_context()
    here = target.allowance[1, 2].item()
    inside = wrong_at(REFERENCE, (1, 2), 0.6 + 0.9 * here)
    outside = wrong_at(REFERENCE, (1, 2), 0.6 + 1.1 * here)
    assert_matches(inside, target)
    assert matches(inside, target) and not matches(outside, target)
    assert "[1, 2]" in failure(assert_matches, outside, target)


def test_each_element_is_judged_by_its_own_allowance():
    """A large allowance on one row excuses nothing on another: the error at [0, 0], below the largest
    allowance but above its own, fails and is the element named."""
    reference = torch.zeros(2, 3, dtype=torch.float64)
    allowance = torch.tensor([[1e-7] * 3, [1e-3] * 3], dtype=torch.float64)
    target = expected("context", reference, reference.clone(), "float32", rounding.Bounded(reference, allowance))
    actual = wrong_at(reference, (0, 0), 1e-5)
    assert 1e-5 < target.allowed
    message = failure(assert_matches, actual, target)
    assert "context[0, 0]" in message and mentions(message, 1e-5) and "1 of 6 elements" in message
    assert_matches(wrong_at(reference, (1, 0), 1e-5), target)


# --- assert_matches --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_assert_matches_names_index_values_error_and_allowance(dtype):
    target = float32_context()
    actual = wrong_at(REFERENCE, (1, 2), 0.7).to(dtype)
    message = failure(assert_matches, actual, target, WHERE)
    assert "context[1, 2]" in message  # the output and where in it
    assert mentions(message, 0.7) and mentions(message, 0.6)  # what it is, what it should be
    assert mentions(message, max_abs_error(actual, REFERENCE))  # the error
    here = target.allowance[1, 2].item()
    assert "float32 allows" in message and mentions(message, here)  # the allowance of that element ...
    assert mentions(message, target.derived[1, 2].item())  # ... and its parts: the derived bound,
    assert mentions(message, target.baseline[1, 2].item()) and "error analysis" in message  # the baseline
    assert "float64 reference" in message  # what it was compared with
    assert WHERE in message  # the call and problem


def test_assert_matches_names_the_largest_error_in_row_major_order():
    """Of two wrong elements the worse one is named, with its index counted like the tensor's (row-major)."""
    reference = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 10
    target = expected("weights", reference, reference.float(), "float32", bound_of(reference))
    actual = reference.clone()
    actual[0, 2, 1] += 0.01
    actual[1, 0, 3] += 0.5
    message = failure(assert_matches, actual, target)
    assert "weights[1, 0, 3]" in message
    assert mentions(message, reference[1, 0, 3].item() + 0.5) and mentions(message, reference[1, 0, 3].item())
    assert "[0, 2, 1]" not in message


def test_assert_matches_explains_the_largest_of_several_summation_orders():
    target = expected("context", REFERENCE, [REFERENCE.float(), REFERENCE.float().flip(0).flip(0)], "float32",
                      bound_of(REFERENCE))
    assert target.orders == 2
    message = failure(assert_matches, wrong_at(REFERENCE, (0, 1), 1.0), target)
    assert "2 summation orders" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_assert_matches_names_the_first_non_finite_element(value):
    actual = wrong_at(REFERENCE, (1, 1), value)
    actual[1, 2] = value  # the first one is named
    message = failure(assert_matches, actual, float32_context(), WHERE)
    assert "context[1, 1]" in message
    assert mentions(message, value)
    assert mentions(message, REFERENCE[1, 1].item()) and "float64 reference" in message
    assert WHERE in message


def test_assert_matches_reports_a_wrong_shape_before_comparing_values():
    message = failure(assert_matches, REFERENCE[:1], float32_context())
    assert "context" in message and "(1, 3)" in message and "(2, 3)" in message
    transposed = failure(assert_matches, REFERENCE.T.contiguous(), float32_context())
    assert "(3, 2)" in transposed and "(2, 3)" in transposed


def test_a_lower_precision_result_is_judged_by_the_allowance_of_the_expected_dtype():
    """A float16 result handed in for float32 is not rounded in: its float16 rounding errors fail, and the
    message says it was the float32 allowance that they exceeded."""
    target = float32_context()
    actual = REFERENCE.half()
    message = failure(assert_matches, actual, target)
    assert "float32 allows" in message
    assert any(mentions(message, e) for e in (actual.double() - REFERENCE).abs().flatten().tolist())
    assert not matches(actual, target)


def test_a_complex_result_is_not_silently_taken_for_its_real_part():
    """Found by these tests: a cast to float64 kept the real part (a UserWarning only) and passed."""
    actual = REFERENCE.to(torch.complex128) + 1j
    message = failure(assert_matches, actual, float32_context())
    assert "complex" in message and "real" in message


# --- check_shape -----------------------------------------------------------------------------------------------


def test_check_shape_names_the_output_both_shapes_and_the_layout():
    message = failure(check_shape, "weights", torch.zeros(2, 6, 8), (2, 8, 6), "(..., n_q, n_kv)")
    assert "weights" in message
    assert "(2, 6, 8)" in message and "(2, 8, 6)" in message
    assert "(..., n_q, n_kv)" in message
    assert "(2, 6, 8)" in failure(check_shape, "weights", torch.zeros(2, 6, 8), (6, 8))  # a missing batch axis


# --- assert_agree ----------------------------------------------------------------------------------------------


def test_assert_agree_names_index_both_values_difference_allowance_and_relation():
    first = torch.zeros(2, 3, 4, dtype=torch.float64)
    second = first.clone()
    second[1, 2, 0] = 0.25
    relation = "batch element 1 computed alone must equal its row of the batched result"
    message = failure(assert_agree, "context", first, second, 1e-6, relation)
    assert "context[1, 2, 0]" in message
    assert mentions(message, 0.0) and mentions(message, 0.25)  # both values
    assert mentions(message, 1e-6)  # the allowance
    assert relation in message


def test_assert_agree_reports_a_shape_mismatch_and_non_finite_values():
    relation = "heads are independent"
    shape = failure(assert_agree, "context", torch.zeros(3, 4), torch.zeros(4, 3), 1e-6, relation)
    assert "(4, 3)" in shape and "(3, 4)" in shape
    for value in (math.nan, math.inf):
        message = failure(assert_agree, "context", torch.zeros(3, 4), torch.zeros(3, 4).index_fill(0,
                          torch.tensor([1]), value), 1e-6, relation)
        assert "non-finite" in message and relation in message


def test_assert_agree_within_the_allowance_passes():
    assert_agree("context", torch.zeros(3), torch.full((3,), 1e-7), 1e-6, "relation")
    with pytest.raises(ClauseFailure):
        assert_agree("context", torch.zeros(3), torch.full((3,), 1e-5), 1e-6, "relation")


# --- assert_rows_stochastic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rows_stochastic_names_the_row_its_sum_the_allowance_and_the_range(dtype):
    weights = torch.tensor([[[0.5, 0.5], [0.25, 0.75]], [[0.3, 0.3], [1.0, 0.0]]], dtype=dtype)
    message = failure(assert_rows_stochastic, weights, 2.4e-7)
    assert "row [1, 0]" in message
    assert mentions(message, 0.6)  # what it sums to (also the low end of the range)
    assert mentions(message, 1) and mentions(message, 2.4e-7)  # what is required, within what
    assert "range" in message


def test_rows_stochastic_names_a_negative_weight():
    message = failure(assert_rows_stochastic, torch.tensor([[0.5, 0.5], [1.25, -0.25]]), 1e-6)
    assert "weights[1, 1]" in message and mentions(message, -0.25) and "≥ 0" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_rows_stochastic_names_a_non_finite_weight(value):
    message = failure(assert_rows_stochastic, torch.tensor([[0.5, 0.5], [0.5, value]]), 1e-6)
    assert "weights[1, 1]" in message and mentions(message, value) and "finite" in message


def test_rows_stochastic_checks_only_the_selected_rows_sums():
    weights = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.3, 0.3]], dtype=torch.float64)
    assert_rows_stochastic(weights, 1e-9, rows=torch.tensor([True, False, False]))  # e.g. fully masked rows
    message = failure(assert_rows_stochastic, weights, 1e-9, rows=torch.tensor([True, False, True]))
    assert "row [2]" in message and mentions(message, 0.6)
    assert_rows_stochastic(torch.zeros(0, 3), 1e-9)  # no rows: nothing to check


def test_rows_stochastic_takes_an_allowance_per_row():
    weights = torch.tensor([[0.5, 0.5 + 1e-4], [0.5, 0.5 + 1e-6]], dtype=torch.float64)
    assert_rows_stochastic(weights, torch.tensor([2e-4, 2e-6], dtype=torch.float64))
    message = failure(assert_rows_stochastic, weights, torch.tensor([2e-4, 5e-7], dtype=torch.float64))
    assert "row [1]" in message and mentions(message, 5e-7)


def test_rows_stochastic_shows_a_near_miss():
    """The usual float32 failure is a sum off by a few ulps: the message must show by how much (found by
    these tests: 6 significant digits printed 'sums to 1; required 1 within 2.4e-07')."""
    weights = torch.tensor([[0.5, 0.5], [0.5, 0.5 + 3e-7]], dtype=torch.float64)
    message = failure(assert_rows_stochastic, weights, 2.4e-7)
    assert "row [1]" in message
    shown = [n for n in numbers_in(message) if n != 1.0]
    assert any(math.isclose(n, 3e-7, rel_tol=0.05) or abs(n - (1 + 3e-7)) < 1.5e-7 for n in shown), message


# --- assert_exactly_zero ---------------------------------------------------------------------------------------


def test_exactly_zero_names_the_first_offending_weight_and_how_many_there_are():
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 1e-30], [0.2, 0.3, 0.5]])
    future = torch.ones(3, 3, dtype=torch.bool).triu(1)
    weights[0, 2] = 1e-12
    message = failure(assert_exactly_zero, weights, future, "future keys")
    assert "weights[0, 2]" in message and mentions(message, 1e-12)
    assert "future keys" in message and "exactly 0" in message
    assert mentions(message, 2)  # two such weights


def test_exactly_zero_ignores_weights_outside_the_region_and_flags_nan_inside():
    weights = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    future = torch.tensor([[False, True], [False, False]])
    assert_exactly_zero(weights, future, "future keys")
    assert_exactly_zero(torch.tensor([[1.0, -0.0], [0.5, 0.5]]), future, "future keys")  # -0.0 is zero
    message = failure(assert_exactly_zero, torch.tensor([[1.0, math.nan], [0.5, 0.5]]), future, "future keys")
    assert "weights[0, 1]" in message and mentions(message, math.nan)


def test_exactly_zero_reports_weights_of_the_wrong_shape():
    """Found by these tests: torch's broadcasting RuntimeError instead of a message naming the shapes."""
    future = torch.ones(2, 2, dtype=torch.bool).triu(1)
    message = failure(assert_exactly_zero, torch.zeros(2, 3), future, "future keys")
    assert "(2, 3)" in message


def test_an_element_beyond_the_dtypes_range_is_not_held_to_anything():
    """Where the analysis allows more than float16's largest number (a backward pass on scores of 1e4), float16
    cannot compute the element: inf there is within it; inf where the allowance is finite still fails."""
    reference = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    allowance = torch.tensor([[1e-3, 1e9]], dtype=torch.float64)
    target = expected("gradient", reference, reference.clone(), "float16", rounding.Bounded(reference, allowance))
    assert_matches(torch.tensor([[1.0, math.inf]], dtype=torch.float16), target)
    assert "gradient[0, 0]" in failure(assert_matches, torch.tensor([[math.inf, 2.0]], dtype=torch.float16), target)
