"""Spec section "scores": ω = Q Kᵀ with one row per query."""

from __future__ import annotations

from hypothesis import given

from conformance import clause, needs
from conformance.judge.assertions import assert_matches
from conformance.judge.cases import expect_scores
from conformance.judge.strategies import problems


@clause("SCORE-DOT")
@needs("attention_scores")
@given(problem=problems("cross"))
def test_scores_are_queries_times_keys_transposed(cases, problem):
    case = cases.pipeline(problem)
    i = case.inputs
    queries, keys = i.x_q @ i.w_q.transpose(-2, -1), i.x_kv @ i.w_k.transpose(-2, -1)
    omega = case.implementation.tensor("attention_scores", queries, keys)
    assert_matches(omega, expect_scores(queries, keys, case.dtype), "ω[i, j] = q_i · k_j, shape (n_q, n_kv)")
