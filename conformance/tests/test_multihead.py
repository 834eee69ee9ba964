"""Spec section "multihead": per-head layout, independent heads, head-major concatenation."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given

from conformance import clause, needs
from conformance.judge.assertions import assert_agree, assert_matches, check_shape
from conformance.judge.cases import Case
from conformance.judge.strategies import problems


@clause("MH-LAYOUT")
@needs("multihead_attention")
@given(problem=problems("multihead"))
def test_per_head_outputs_have_the_head_axis_after_the_batch(implementation, device, dtype, problem):
    case = Case(implementation, problem, dtype, device)
    p = case.problem
    out = case.run()
    check_shape("multi-head context", out.context, (*p.batch, p.heads, p.n_q, p.d_v), "= (..., h, n, d_v)")
    if out.weights is not None:
        check_shape("multi-head weights", out.weights, (*p.batch, p.heads, p.n_q, p.n_q), "= (..., h, n, n)")


@clause("MH-HEADS")
@needs("multihead_attention")
@given(problem=problems("multihead"))
def test_each_head_is_single_head_attention(implementation, device, dtype, problem):
    case = Case(implementation, problem, dtype, device)
    out = case.run()
    assert_matches(out.context, case.expected().context, "head t uses w_q[t], w_k[t], w_v[t] and √d_k of one head")
    if out.weights is not None:
        assert_matches(out.weights, case.expected().weights, "head t uses w_q[t], w_k[t] and √d_k of one head")


@clause("MH-HEADS")
@needs("multihead_attention", "self_attention")
@given(problem=problems("multihead"))
def test_one_head_equals_single_head_attention(implementation, device, dtype, problem):
    multi = Case(implementation, replace(problem, heads=1), dtype, device)
    i = multi.inputs
    single = implementation.attention("self_attention", i.x_q, i.w_q[0], i.w_k[0], i.w_v[0])
    out = multi.run()
    bound = 2 * multi.expected().context.allowed
    relation = "multi-head attention with h = 1 must equal single-head attention with that head's weights"
    check_shape("h = 1 multi-head context", out.context, (*single.context.shape[:-2], 1, *single.context.shape[-2:]))
    assert_agree("context", out.context.select(-3, 0), single.context, bound, relation)


@clause("MH-CONCAT")
@needs("multihead_attention_concat")
@given(problem=problems("concat"))
def test_concatenation_is_head_major_then_w_o(implementation, device, dtype, problem):
    if problem.d_o is not None and not implementation.claims("multihead_attention_concat.w_o"):
        problem = replace(problem, d_o=None)
    case = Case(implementation, problem, dtype, device)
    p = case.problem
    out = case.run()
    width = p.d_o if p.d_o is not None else p.heads * p.d_v
    check_shape("concatenated context", out.context, (*p.batch, p.n_q, width), "= (..., n, h·d_v) or (..., n, d_o)")
    what = "[head_0 | head_1 | ...] W_oᵀ" if p.d_o is not None else "[head_0 | head_1 | ...]"
    assert_matches(out.context, case.expected().context, what)
    if out.weights is not None:
        check_shape("per-head weights", out.weights, (*p.batch, p.heads, p.n_q, p.n_q), "= (..., h, n, n)")
