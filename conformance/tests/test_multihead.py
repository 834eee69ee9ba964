"""Spec section "multihead": per-head layout, independent heads, head-major concatenation."""

from __future__ import annotations

from dataclasses import replace

import torch
from hypothesis import given

from conformance import clause, needs
from conformance.judge import oracle
from conformance.judge.assertions import assert_agree, check_shape
from conformance.judge.blocking import judged
from conformance.judge.cases import Case, assert_outputs_match
from conformance.judge.strategies import Inputs, problems


@clause("MH-LAYOUT")
@needs("multihead_attention")
@given(problem=problems("multihead"))
def test_per_head_outputs_have_the_head_axis_after_the_batch(cases, problem):
    case = cases.pipeline(problem)
    p = case.problem
    with judged(case):  # a call that raises cannot show its layout
        out = case.run()
    # the head axis is this clause's business; the width of a head's context is API-SHAPES'
    check_shape("multi-head context (all but the last axis)", out.context[..., 0] if out.context.dim() else out.context,
                (*p.batch, p.heads, p.n_q), "= (..., h, n, ·)")
    if out.weights is not None:
        check_shape("multi-head weights", out.weights, (*p.batch, p.heads, p.n_q, p.n_q), "= (..., h, n, n)")


@clause("MH-HEADS")
@needs("multihead_attention")
@given(problem=problems("multihead"))
def test_each_head_is_single_head_attention(cases, problem):
    case = cases.pipeline(problem)
    with judged(case):
        # one scale for all heads, fitted if it is not 1/√d_k: the scale is WEIGHTS-SCALE's business
        assert_outputs_match(case, case.run_checked(), "head t uses w_q[t], w_k[t], w_v[t]")


def _single_heads(multi: Case) -> list[Case]:
    """Head t of a multi-head case as the implementation's own single-head self-attention call."""
    i = multi.inputs
    single = multi.on(replace(multi.problem, kind="self", heads=1, d_o=None))
    return [single.with_inputs(Inputs(i.x_q, i.x_kv, i.w_q[t], i.w_k[t], i.w_v[t], None)) for t in range(i.w_q.shape[0])]


@clause("MH-HEADS")
@needs("multihead_attention", "self_attention")
@given(problem=problems("multihead"))
def test_each_head_equals_the_single_head_result(cases, problem):
    """Relative to the implementation's own self_attention: each head is that call on its own weights."""
    multi = cases.pipeline(problem)
    singles = _single_heads(multi)
    relation = "head t of multi-head attention must equal single-head attention with w_q[t], w_k[t], w_v[t] (√d_k of one head)"
    with judged(multi, *singles):
        out = multi.run_checked()
        for t, single in enumerate(singles):
            result = single.run_checked()
            bound = multi.expected().context.allowed + single.expected().context.allowed
            assert_agree("context", out.context.select(-3, t), result.context, bound, f"head {t}: {relation}")
            if out.weights is not None and result.weights is not None:
                bound = multi.expected().weights.allowed + single.expected().weights.allowed
                assert_agree("weights", out.weights.select(-3, t), result.weights, bound, f"head {t}: {relation}")


@clause("MH-CONCAT")
@needs("multihead_attention_concat")
@given(problem=problems("concat"))
def test_concatenation_is_head_major_then_w_o(cases, problem):
    case = cases.pipeline(problem)  # without w_o when the concatenation does not take it
    p = case.problem
    what = "[head_0 | head_1 | ...] W_oᵀ" if p.d_o is not None else "[head_0 | head_1 | ...]"
    width = p.d_o if p.d_o is not None else p.heads * p.d_v
    with judged(case):
        out = case.run()
        check_shape("concatenated context", out.context, (*p.batch, p.n_q, width), "= (..., n, h·d_v) or (..., n, d_o)")
        if out.weights is not None:
            check_shape("per-head weights", out.weights, (*p.batch, p.heads, p.n_q, p.n_q), "= (..., h, n, n)")
        if case.implementation.has("multihead_attention"):
            # relative to the implementation's own heads: how they are computed is MH-HEADS' business
            heads = case.on(replace(p, kind="multihead", d_o=None)).with_inputs(case.inputs)
            per_head = heads.run().context.detach().to("cpu", torch.float64)
            (w_o,) = oracle.upcast(case.inputs.w_o)
            joined = oracle.concat_heads(per_head, w_o)
            bound = case.expected().context.allowed + heads.expected().context.allowed * (
                1.0 if w_o is None else w_o.abs().sum(dim=-1).max().item())
            assert_agree("context", out.context, joined, bound, f"the concatenation must be {what} of your heads")
        else:
            assert_outputs_match(case, out, what)
