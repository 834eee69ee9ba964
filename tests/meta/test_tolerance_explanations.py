"""Pins the tolerance policy of conformance/judge/tolerance.py and rounding.py, and the way it explains itself.

Every accuracy verdict rests on a per-element allowance: max(derived, factor[dtype] × baseline), where
`derived` is the error analysis of the computation (spec/clauses.toml, [tolerance]) and `baseline` the error
of a plain same-dtype reference at that element. These tests read the model's parameters from the spec (never
from a copy) and check, on small cases worked by hand: β(N) is the smaller of the worst-case γ_N and the
probabilistic bound with λ for the spec's failure probability; half precision accumulates in float32; a
product's bound is the sum of its own rounding and the errors carried in; the softmax's bound is what its
derivation says on a two-key row; the float64 reference's share is added; the allowance is the larger of
the two per element and explains both; lower precision is allowed more on a real computation; the baseline
is the largest over the orders given and an overflowing one discards the example; and the token orders give
the same computation in another order (a causal problem keeps its one order).
"""

from __future__ import annotations

import math

import pytest
import torch

import spec
from conformance.judge import rounding
from conformance.judge.capabilities import DTYPES
from conformance.judge.tolerance import (
    Expected,
    OutOfRange,
    expected,
    max_abs_error,
    permute_tokens,
    restore_tokens,
    token_orders,
)
from tests.meta import mentions

POLICY = spec.load().tolerance
MODEL = spec.load().rounding
REFERENCE = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
U = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def attention(x: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain self-attention with x as queries, keys and values (enough to see what an order changes)."""
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    if causal:
        n = x.shape[-2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
    weights = torch.softmax(scores, dim=-1)
    return weights @ x, weights


def softmax_allowance(dtype: str) -> float:
    """The largest allowance for softmax weights on fixed scores, with a plain computation as the baseline."""
    scores = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    reference = torch.softmax(scores, dim=-1)
    baseline = torch.softmax(scores.to(DTYPES[dtype]), dim=-1)
    _, bound = rounding.weights_of(rounding.given(scores), 1.0, None, rounding.arithmetic(dtype))
    return expected("weights", reference, baseline, dtype, bound).allowed


def test_the_spec_has_a_policy_for_every_dtype_and_a_model():
    assert set(POLICY) == set(DTYPES)
    for policy in POLICY.values():
        assert policy.factor >= 1
    assert 0 < MODEL.failure_probability <= 1e-6
    assert MODEL.extra_roundings >= 0 and MODEL.online_roundings >= 0 and MODEL.function_ulps >= 0.5
    assert MODEL.accumulation == {"float16": "float32", "bfloat16": "float32"}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_unit_roundoffs_and_accumulation(dtype):
    a = rounding.arithmetic(dtype)
    assert a.u == U[dtype] == torch.finfo(DTYPES[dtype]).eps / 2
    assert a.u_acc == (U["float32"] if dtype in ("float16", "bfloat16") else U[dtype])
    assert a.tiny == torch.finfo(DTYPES[dtype]).tiny


def test_lambda_gives_the_failure_probability():
    """Higham and Mary: the bound fails with probability at most 2N·exp(−λ²(1 − u)²/2)."""
    a = rounding.arithmetic("float32")
    for n in (1, 100, 10 ** 6):
        lam = a.lam(n)
        assert 2 * n * math.exp(-(lam * (1 - a.u_acc)) ** 2 / 2) == pytest.approx(MODEL.failure_probability, rel=1e-9)


def test_beta_is_the_smaller_of_the_worst_case_and_the_probabilistic_bound():
    a = rounding.arithmetic("float32")
    u = a.u_acc
    for n in (1, 10, 64, 1000, 26_244, 10 ** 7):
        worst = n * u / (1 - n * u)
        probable = math.exp(a.lam(n) * math.sqrt(n) * u + n * u * u / (1 - u)) - 1
        assert a.beta(n) == pytest.approx(min(worst, probable), rel=1e-12)
    assert a.beta(4) == pytest.approx(4 * u / (1 - 4 * u))  # short sums: the worst case is smaller
    assert a.beta(10 ** 6) < 0.01 * 10 ** 6 * u  # long ones: √N, not N
    assert rounding.arithmetic("bfloat16").beta(10 ** 6) == a.beta(10 ** 6)  # accumulated in float32


def test_the_terms_of_a_sum_include_the_extra_and_online_roundings():
    a = rounding.arithmetic("float32")
    assert a.terms(10) == 10 + MODEL.extra_roundings
    assert a.terms(10, over_keys=True) == (1 + MODEL.online_roundings) * 10 + MODEL.extra_roundings


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_dot_product_bound_worked_by_hand(dtype):
    """x·w = 1·3 + (−2)·4 = −5: rounding acts on Σ|terms| = 11, not on |−5|; the inputs' own errors carry."""
    a = rounding.arithmetic(dtype)
    x = rounding.Bounded(torch.tensor([[1.0, -2.0]], dtype=torch.float64), torch.tensor([[1e-3, 0.0]], dtype=torch.float64))
    w = rounding.given(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    out = rounding.contract("nd,od->no", x, w, 2, a)
    assert out.value.item() == -5.0
    own = a.beta(2 + MODEL.extra_roundings) * 11 + 2 * a.tiny_acc + a.u * 5 + a.tiny
    if dtype == "bfloat16":  # each product may be rounded to bfloat16 before the float32 sum
        own += min(a.u * 11, a.lam(2) * a.u * math.sqrt(1 * 9 + 4 * 16))
    assert out.step.local.item() == pytest.approx(own, rel=1e-12)
    assert out.error.item() == pytest.approx(own + 3e-3, rel=1e-12)  # + |1e-3 · 3|
    assert out.step.magnitude.item() == 11.0 and out.step.what == "a sum of 2 terms"


def test_a_softmax_bound_worked_by_hand():
    """Two equal scores: w = ½ each, z = 0, range 0; each p = 1 with the function's error; the row sum 2 with a
    sum over the keys' rounding; w's bound is (E_p + w·E_l)/(l − E_l) plus the division's 2u."""
    a = rounding.arithmetic("float32")
    s = rounding.Bounded(torch.zeros(1, 2, dtype=torch.float64), torch.full((1, 2), 1e-6, dtype=torch.float64))
    w = rounding.softmax(s, None, a)
    assert torch.equal(w.value, torch.full((1, 2), 0.5, dtype=torch.float64))
    argument = 2e-6 + a.u * math.log(2)  # its own error, the row's largest (the maximum), log l rounded
    growth = math.expm1(argument) * (1 + a.function) * (1 + a.u) + a.function + a.u
    p_error = growth + a.tiny
    l_error = 2 * p_error + a.beta(a.terms(2, over_keys=True)) * 2 + 2 * a.tiny_acc
    expected_error = (p_error + 0.5 * l_error) / (2 - l_error) + 2 * a.u * 0.5 + a.tiny
    assert w.error[0, 0].item() == pytest.approx(expected_error, rel=1e-12)


def test_masked_weights_are_exact_and_their_bounds_zero():
    a = rounding.arithmetic("float32")
    keep = torch.tensor([[True, False], [False, False]])
    w = rounding.softmax(rounding.given(torch.randn(2, 2, dtype=torch.float64)), keep, a)
    assert w.value.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert w.error[0, 1].item() == 0.0 and w.error[1].tolist() == [0.0, 0.0]  # a hidden key, an empty row


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_the_references_own_share_is_added(dtype):
    bound = rounding.Bounded(REFERENCE, torch.full_like(REFERENCE, 1e-6))
    target = expected("context", REFERENCE, REFERENCE.clone(), dtype, bound)
    share = U["float64"] / rounding.arithmetic(dtype).u_acc
    assert target.derived.max().item() == pytest.approx(1e-6 * (1 + share), rel=1e-12)
    if dtype == "float64":
        assert share == 1.0  # a float64 result and its float64 reference round alike


def test_the_allowance_is_the_larger_of_derived_and_factor_times_baseline_per_element():
    bound = rounding.Bounded(REFERENCE, torch.full_like(REFERENCE, 1e-6))
    baseline = REFERENCE.clone()
    baseline[0, 0] += 1e-3  # one element where the plain reference was far off
    target = expected("context", REFERENCE, baseline, "float32", bound)
    assert target.allowance[0, 0].item() == pytest.approx(POLICY["float32"].factor * 1e-3, rel=1e-9)
    assert target.allowance[2, 3].item() == pytest.approx(1e-6, rel=1e-6)  # the derived bound elsewhere
    assert target.allowed == target.allowance.max().item()
    assert target.baseline_error == pytest.approx(1e-3, rel=1e-9)


def test_the_explanation_names_both_allowances_and_the_last_step():
    a = rounding.arithmetic("float32")
    x = rounding.given(torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    w = rounding.given(torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    bound = rounding.contract("nd,od->no", x, w, 5, a)
    target = expected("projection", bound.value, bound.value.float(), "float32", bound)
    text = target.explain(6)
    assert text.startswith("float32 allows") and mentions(text, target.allowance.flatten()[6].item())
    assert "error analysis" in text and "a sum of 5 terms" in text
    assert mentions(text, bound.step.magnitude.flatten()[6].item())  # Σ|terms|
    assert mentions(text, target.derived.flatten()[6].item())
    assert mentions(text, target.factor) and "plain float32 reference" in text
    assert "failure probability" in text


def test_explanation_says_when_the_baseline_is_the_largest_of_several_orders():
    bound = rounding.given(REFERENCE)
    text = expected("context", REFERENCE, [REFERENCE.float()] * 3, "float32", bound).explain()
    assert "largest error of a plain float32 reference in 3 summation orders" in text
    assert "summation orders" not in expected("context", REFERENCE, REFERENCE.float(), "float32", bound).explain()


def test_the_baseline_is_the_largest_error_over_the_orders_given_per_element():
    lucky, unlucky = REFERENCE + 1e-8, REFERENCE.clone()
    unlucky[1, 1] += 1e-6
    target = expected("context", REFERENCE, [lucky, unlucky, lucky], "float32", rounding.given(REFERENCE))
    assert target.orders == 3
    assert target.baseline[1, 1].item() == pytest.approx(1e-6, rel=1e-6)
    assert target.baseline[0, 0].item() == pytest.approx(1e-8, rel=1e-6)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_an_overflowing_baseline_discards_the_example(bad):
    baseline = REFERENCE.clone()
    baseline[2, 3] = bad
    with pytest.raises(OutOfRange, match="float16"):
        expected("scores", REFERENCE, [REFERENCE, baseline], "float16", rounding.given(REFERENCE))


def test_max_abs_error():
    assert max_abs_error(REFERENCE + 0.25, REFERENCE) == pytest.approx(0.25)
    assert max_abs_error(REFERENCE.float(), REFERENCE) <= torch.finfo(torch.float32).eps
    assert max_abs_error(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.float64)) == 0.0
    assert max_abs_error(REFERENCE.index_fill(0, torch.tensor([1]), math.nan), REFERENCE) == math.inf


def test_float64_is_tighter_than_float32_and_float32_than_the_half_precisions():
    """On one real input, each dtype's bound is what its unit roundoff makes it."""
    allowed = {dtype: softmax_allowance(dtype) for dtype in DTYPES}
    assert allowed["float64"] < allowed["float32"] < allowed["float16"] < allowed["bfloat16"]


def test_an_exact_baseline_does_not_demand_perfection():
    """Where the plain reference happens to be exact, the derived bound still allows the dtype's rounding."""
    x = rounding.given(torch.tensor([[0.1, 0.7]], dtype=torch.float64))
    bound = rounding.contract("nd,od->no", x, x, 2, rounding.arithmetic("float32"))
    target = expected("scores", bound.value, bound.value.clone(), "float32", bound)
    assert target.baseline_error == 0.0 and target.allowed > 0.5 * 2 ** -24 * 0.5


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
