"""Spec section "cross": queries from x_q, keys and values from x_kv."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given

from conformance import clause, needs
from conformance.judge.assertions import check_shape
from conformance.judge.blocking import judged
from conformance.judge.cases import Case, assert_outputs_match
from conformance.judge.strategies import problems


def _check_sources(case: Case) -> None:
    p = case.problem
    with judged(case):
        out = case.run()
        check_shape("cross-attention context", out.context, (*p.batch, p.n_q, p.d_v), "= (..., n_q, d_v)")
        if out.weights is not None:
            check_shape("cross-attention weights", out.weights, (*p.batch, p.n_q, p.n_kv), "= (..., n_q, n_kv)")
        # at the implementation's own scale of the scores: the scale is WEIGHTS-SCALE's business
        assert_outputs_match(case, out, "queries from x_q, keys and values from x_kv")


@clause("CROSS-SOURCES")
@needs("cross_attention")
@given(problem=problems("cross"))
def test_keys_and_values_come_from_the_second_input(cases, problem):
    _check_sources(cases.pipeline(problem))


@clause("CROSS-SOURCES")
@needs("cross_attention")
@given(problem=problems("cross"))
def test_sources_with_as_many_keys_as_queries(cases, problem):
    """n_kv = n_q and d_in_kv = d_in: keys or values taken from x_q by mistake have the right shapes, so only
    the values show it."""
    _check_sources(cases.pipeline(replace(problem, n_kv=problem.n_q, d_in_kv=problem.d_in)))
