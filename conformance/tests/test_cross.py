"""Spec section "cross": queries from x_q, keys and values from x_kv."""

from __future__ import annotations

from hypothesis import given

from conformance import clause, needs
from conformance.judge.assertions import assert_matches, check_shape
from conformance.judge.cases import Case
from conformance.judge.strategies import problems


@clause("CROSS-SOURCES")
@needs("cross_attention")
@given(problem=problems("cross"))
def test_keys_and_values_come_from_the_second_input(implementation, device, dtype, problem):
    case = Case(implementation, problem, dtype, device)
    p = case.problem
    out = case.run()
    check_shape("cross-attention context", out.context, (*p.batch, p.n_q, p.d_v), "= (..., n_q, d_v)")
    if out.weights is not None:
        check_shape("cross-attention weights", out.weights, (*p.batch, p.n_q, p.n_kv), "= (..., n_q, n_kv)")
        assert_matches(out.weights, case.expected().weights, "queries from x_q, keys from x_kv")
    assert_matches(out.context, case.expected().context, "values from x_kv")
