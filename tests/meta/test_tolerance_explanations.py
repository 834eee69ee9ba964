"""Pins the tolerance policy of conformance/judge/tolerance.py and the way it explains itself.

Every accuracy verdict rests on `allowed = factor[dtype] × baseline_error + floor` (spec/clauses.toml,
[tolerance]), and every accuracy failure ends with its explanation ("float32 allows 4 × 2.4e-08 (error of
a plain float32 reference) + 1.9e-06 (floor) = 2e-06"). These tests read factors and floor_ulps from the
spec (never from a copy), and check: the allowance is that formula and grows with the baseline's error;
the explanation carries each of its terms; lower precision is allowed more (float64 < float32 < float16,
bfloat16), on a bound computed from a real plain computation, not just on the constants; the floor
keeps a zero baseline from demanding perfection; the baseline is the largest over the summation orders
given, and an overflowing baseline discards the example (OutOfRange); token_orders / permute_tokens /
restore_tokens give the same computation in another order and put it back, and a causal problem keeps
its one order because permuting its tokens changes the result.
"""

from __future__ import annotations

import math

import pytest
import torch

import spec
from conformance.judge.capabilities import DTYPES
from conformance.judge.tolerance import (
    Expected,
    OutOfRange,
    dot_scale,
    expected,
    max_abs_error,
    permute_tokens,
    restore_tokens,
    token_orders,
)
from tests.meta import mentions

POLICY = spec.load().tolerance
REFERENCE = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)


def floor_of(dtype: str, scale: float) -> float:
    return POLICY[dtype].floor_ulps * torch.finfo(DTYPES[dtype]).eps * scale


def attention(x: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain self-attention with x as queries, keys and values (enough to see what an order changes)."""
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    if causal:
        n = x.shape[-2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
    weights = torch.softmax(scores, dim=-1)
    return weights @ x, weights


def plain_softmax_allowance(dtype: str) -> float:
    """The allowance for softmax weights computed plainly in `dtype` on fixed scores."""
    scores = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    reference = torch.softmax(scores, dim=-1)
    baseline = torch.softmax(scores.to(DTYPES[dtype]), dim=-1)
    return expected("weights", reference, baseline, dtype, scale=1 + scores.abs().max().item()).allowed


def test_the_spec_has_a_policy_for_every_dtype_the_suite_checks():
    assert set(POLICY) == set(DTYPES)
    for policy in POLICY.values():
        assert policy.factor >= 1 and policy.floor_ulps > 0


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_allowance_is_factor_times_baseline_plus_floor(dtype):
    target = Expected("context", REFERENCE, dtype, baseline_error=3e-3, scale=2.5)
    assert target.factor == POLICY[dtype].factor
    assert target.floor == pytest.approx(floor_of(dtype, 2.5), rel=1e-12)
    assert target.allowed == pytest.approx(POLICY[dtype].factor * 3e-3 + floor_of(dtype, 2.5), rel=1e-12)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_explanation_names_dtype_factor_baseline_floor_and_total(dtype):
    target = Expected("context", REFERENCE, dtype, baseline_error=3.7e-5, scale=4.0)
    text = target.explain()
    assert text.startswith(f"{dtype} allows")
    assert mentions(text, target.factor) and "×" in text
    assert mentions(text, 3.7e-5) and f"(error of a plain {dtype} reference)" in text
    assert mentions(text, target.floor) and "(floor)" in text
    assert mentions(text, target.allowed)
    assert text.index("(floor)") < text.rindex("=")  # the total comes last


def test_explanation_says_when_the_baseline_is_the_largest_of_several_orders():
    text = Expected("context", REFERENCE, "float32", 1e-7, 1.0, orders=3).explain()
    assert "largest error of a plain float32 reference in 3 summation orders" in text
    assert "summation orders" not in Expected("context", REFERENCE, "float32", 1e-7, 1.0, orders=1).explain()


def test_allowance_grows_with_the_baselines_error():
    allowed = [expected("context", REFERENCE, REFERENCE + error, "float32", 1.0).allowed
               for error in (0.0, 1e-7, 1e-5, 1e-3)]
    assert allowed == sorted(allowed) and len(set(allowed)) == len(allowed)
    assert allowed[-1] - allowed[-2] == pytest.approx(POLICY["float32"].factor * (1e-3 - 1e-5), rel=1e-6)


def test_the_baseline_is_the_largest_error_over_the_orders_given():
    lucky, unlucky = REFERENCE + 1e-8, REFERENCE + 1e-6
    target = expected("context", REFERENCE, [lucky, unlucky, lucky], "float32", 1.0)
    assert target.orders == 3
    assert target.baseline_error == pytest.approx(max_abs_error(unlucky, REFERENCE))
    assert expected("context", REFERENCE, lucky, "float32", 1.0).orders == 1


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_an_overflowing_baseline_discards_the_example(bad):
    baseline = REFERENCE.clone()
    baseline[2, 3] = bad
    with pytest.raises(OutOfRange, match="float16"):
        expected("scores", REFERENCE, [REFERENCE, baseline], "float16", 1.0)


def test_max_abs_error():
    assert max_abs_error(REFERENCE + 0.25, REFERENCE) == pytest.approx(0.25)
    assert max_abs_error(REFERENCE.float(), REFERENCE) <= torch.finfo(torch.float32).eps
    assert max_abs_error(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.float64)) == 0.0
    assert max_abs_error(REFERENCE.index_fill(0, torch.tensor([1]), math.nan), REFERENCE) == math.inf


def test_float64_is_tighter_than_float32_and_float32_than_the_half_precisions():
    """On one real input, each dtype's plain computation and floor give the bound it is judged by."""
    allowed = {dtype: plain_softmax_allowance(dtype) for dtype in DTYPES}
    assert allowed["float64"] < allowed["float32"] < allowed["float16"]
    assert allowed["float32"] < allowed["bfloat16"]
    for dtype in DTYPES:  # and on the floor alone, at one scale
        assert floor_of("float64", 1.0) <= floor_of(dtype, 1.0)
    assert floor_of("float32", 1.0) < min(floor_of("float16", 1.0), floor_of("bfloat16", 1.0))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_the_floor_keeps_an_exact_baseline_from_demanding_perfection(dtype):
    exact = expected("weights", REFERENCE, REFERENCE.clone(), dtype, scale=3.0)
    assert exact.baseline_error == 0.0
    assert exact.allowed == exact.floor > 0
    assert exact.floor == pytest.approx(3 * Expected("weights", REFERENCE, dtype, 0.0, 1.0).floor)  # ∝ scale
    assert "(floor)" in exact.explain() and mentions(exact.explain(), exact.floor)


def test_dot_scale_is_the_largest_sum_of_absolute_products():
    a = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 4.0], [-1.0, 1.0]], dtype=torch.float64)
    assert dot_scale(a, b) == 1 * 3 + 2 * 4  # not |1·3 - 2·4| = 5: rounding acts on the terms
    assert dot_scale(a, b[:0]) == 0.0


# --- summation orders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("same", [True, False])
def test_token_orders_are_as_given_reversed_and_shuffled(same):
    n_q, n_kv = 9, 9 if same else 13
    orders = token_orders(n_q, n_kv, seed=5, same=same, causal=False)
    assert orders[0] is None and len(orders) == 3
    (rev_q, rev_kv), (shuffled_q, shuffled_kv) = orders[1], orders[2]
    assert rev_q.tolist() == list(range(n_q))[::-1] and rev_kv.tolist() == list(range(n_kv))[::-1]
    for order, n in ((shuffled_q, n_q), (shuffled_kv, n_kv)):
        assert sorted(order.tolist()) == list(range(n))
    if same:  # one sequence: queries and keys permuted together
        assert torch.equal(rev_q, rev_kv) and torch.equal(shuffled_q, shuffled_kv)


def test_token_orders_are_reproducible_per_seed():
    first = token_orders(40, 40, seed=11, same=True, causal=False)[2][0]
    assert torch.equal(first, token_orders(40, 40, seed=11, same=True, causal=False)[2][0])
    assert not torch.equal(first, token_orders(40, 40, seed=12, same=True, causal=False)[2][0])


def test_a_causal_problem_keeps_its_one_order():
    assert token_orders(9, 9, seed=5, same=True, causal=True) == [None]
    assert token_orders(9, 13, seed=5, same=False, causal=True) == [None]


def test_restore_tokens_undoes_permute_tokens():
    x = torch.randn(2, 3, 7, 5, generator=torch.Generator().manual_seed(1))
    for order in token_orders(7, 7, seed=2, same=True, causal=False)[1:]:
        q, _ = order
        assert not torch.equal(permute_tokens(x, q), x)
        assert torch.equal(restore_tokens(permute_tokens(x, q), q), x)
        columns = x.transpose(-2, -1)  # along another axis (the keys of a weights matrix)
        assert torch.equal(restore_tokens(columns.index_select(-1, q), q, dim=-1), columns)


def test_a_permuted_order_is_the_same_computation_unless_causal():
    """Why causal problems keep one order: permuting the tokens of a causal problem changes what each query
    sees, while without a mask the permuted result, put back, is the original up to rounding."""
    x = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for causal in (False, True):
        context, weights = attention(x, causal)
        for order in token_orders(8, 8, seed=9, same=True, causal=False)[1:]:
            q, kv = order
            permuted_context, permuted_weights = attention(permute_tokens(x, q), causal)
            back_context = restore_tokens(permuted_context, q)
            back_weights = restore_tokens(restore_tokens(permuted_weights, q), kv, dim=-1)
            error = max(max_abs_error(back_context, context), max_abs_error(back_weights, weights))
            if causal:
                assert error > 1e-3
            else:
                assert error < 1e-12
