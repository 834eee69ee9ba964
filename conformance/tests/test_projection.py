"""Spec section "projection": weight layout (d_out, d_in) and the role of each weight."""

from __future__ import annotations

from hypothesis import given

from conformance import clause, needs
from conformance.judge.assertions import assert_matches
from conformance.judge.blocking import judged
from conformance.judge.cases import assert_outputs_match, expect_projection
from conformance.judge.strategies import Inputs, problems


@clause("PROJ-LAYOUT")
@needs("project")
@given(problem=problems("cross"))
def test_project_is_x_times_w_transposed(cases, problem):
    case = cases.pipeline(problem)
    i = case.inputs
    # w_k is (d_k, d_in_kv), applied to x_kv: rarely square, so x @ W fails loudly
    for x, w in ((i.x_q, i.w_q), (i.x_kv, i.w_k), (i.x_kv, i.w_v)):
        assert_matches(case.implementation.tensor("project", x, w), expect_projection(x, w, case.dtype))


@clause("PROJ-LAYOUT")
@needs("self_attention")
@given(problem=problems("self", square=True))
def test_square_weights_are_transposed_too(cases, problem):
    """With d_in = d_k = d_v, x @ W runs without error but computes something else.

    One weight serves as W_Q, W_K and W_V, so only the layout shows: a mix-up of roles or of the
    scores' orientation gives the same result here, and the scale is judged up to a fitted α.
    """
    base = cases.pipeline(problem)
    i = base.inputs
    case = base.with_inputs(Inputs(i.x_q, i.x_kv, i.w_q, i.w_q, i.w_q, i.w_o))
    with judged(case):
        assert_outputs_match(case, case.run(), "square weights: x Wᵀ, not x W")


@clause("PROJ-ROLES")
@needs("self_attention")
@given(problem=problems("self"))
def test_each_weight_has_its_role(cases, problem):
    case = cases.pipeline(problem)
    with judged(case):
        assert_outputs_match(case, case.run(), "queries from W_Q, keys from W_K, values from W_V")
