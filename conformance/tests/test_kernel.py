"""Spec section "kernel": attention(q, k, v, causal, mask, scale) in SDPA's layout, grouped-query heads, and the
declared conventions and optional features of shipped kernels: causal alignment, local windows, softcapping, ALiBi."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.adapter import Attention
from conformance.judge.assertions import (
    ClauseFailure,
    assert_exactly_zero,
    assert_matches,
    matches,
)
from conformance.judge import oracle
from conformance.judge.blocking import prerequisite
from conformance.judge.capabilities import DTYPES
from conformance.judge.cases import KernelCase
from conformance.judge.strategies import (
    ALIGNMENT_CASES,
    alibi_slopes,
    alignment_problem,
    kernel_problems,
    softcaps,
    windows,
)

SCALES = (0.05, 0.3, 1.0, 2.5)  # explicit scales: smaller and larger than 1/√d_k for every drawn d_k


def _check(call: KernelCase, where: str) -> Attention:
    """The outputs match the reference; when they do not, and the plain call on the same q, k, v does not
    either, the failure is QKV-ATTEND's; else, for a causal call, when the bare causal call (no mask, scale,
    window, softcap or ALiBi) does not match either, it is QKV-CAUSAL's (the test is blocked by it, if it
    lists it)."""
    try:
        out = call.run_checked()
        expected = call.expected()
        assert_matches(out.context, expected.context, where)
        if out.weights is not None:
            assert_matches(out.weights, expected.weights, where)
        return out
    except ClauseFailure as error:
        plain = call.plain()
        try:
            plain_out, plain_expected = plain.run_checked(), plain.expected()
            broken = not matches(plain_out.context, plain_expected.context) or (
                plain_out.weights is not None and not matches(plain_out.weights, plain_expected.weights))
        except ClauseFailure as plain_error:
            broken, why = True, str(plain_error).splitlines()[0]
        else:
            why = "without mask, causal or scale, its context is not softmax(q kᵀ/√d_k) v on the same q, k, v"
        if broken:
            prerequisite(call, "QKV-ATTEND", why, str(error))
        if call.causal and not _holds(call.bare_causal()):
            prerequisite(call, "QKV-CAUSAL", f"causal=True alone ({call.alignment} aligned) does not match the "
                         "reference on the same q, k, v", str(error))
        raise


def _holds(call: KernelCase) -> bool:
    try:
        out, expected = call.run_checked(), call.expected()
    except ClauseFailure:
        return False
    return matches(out.context, expected.context) and (out.weights is None or matches(out.weights, expected.weights))


def _hidden(call: KernelCase, out: Attention):
    """Where the weights must be exactly 0: the keys causal and the window hide, broadcast to the weights."""
    p = call.problem
    keep = oracle.visible(p.n_q, p.n_kv, call.causal, call.window, call.alignment, torch.device("cpu"))
    return (~keep).expand(out.weights.shape)


def _alignment_examples(**extra):
    """@example for each alignment case (n_q = 1 < n_kv, n_q < n_kv, n_q > n_kv, n_kv = 1), in every profile."""
    def decorate(test):
        for n_q, n_kv in reversed(ALIGNMENT_CASES):
            test = example(problem=alignment_problem(n_q, n_kv), **extra)(test)
        return test
    return decorate


@clause("QKV-ATTEND")
@pytest.mark.parametrize("dtype_name", [pytest.param(d, marks=needs("attention", f"dtype:{d}")) for d in DTYPES])
@given(problem=kernel_problems())
def test_context_is_softmax_of_scaled_scores_times_values(cases, dtype_name, problem):
    call = cases.kernel(problem, dtype_name)
    out = call.run_checked()
    expected = call.expected()
    assert_matches(out.context, expected.context, f"attention in {dtype_name}")
    if out.weights is not None:
        assert_matches(out.weights, expected.weights, f"attention in {dtype_name}")


@clause("QKV-SCALE")
@needs("attention")
@given(problem=kernel_problems(), scale=st.sampled_from(SCALES))
def test_an_explicit_scale_replaces_the_default(cases, problem, scale):
    _check(cases.kernel(problem, scale=scale), f"scale={scale:g} (softmax({scale:g} · q kᵀ) v)")


@clause("QKV-CAUSAL")
@needs("attention")
@_alignment_examples()
@given(problem=kernel_problems())
def test_causal_queries_see_only_earlier_keys(cases, problem):
    call = cases.kernel(problem, causal=True, masked=False)
    where = ("causal=True, bottom-right aligned (query i sees keys 0..i + n_kv - n_q)"
             if call.alignment == "bottom_right" else "causal=True, top-left aligned (query i sees keys 0..i)")
    out = _check(call, where)
    if out.weights is not None:
        assert_exactly_zero(out.weights, _hidden(call, out), f"a key after its query ({call.alignment} aligned)")


@clause("QKV-ALIGN")
@needs("attention")
@_alignment_examples()
@given(problem=kernel_problems())
def test_causal_alignment_as_declared(cases, problem):
    """Bottom-right: decoding with a KV cache, the last m queries alone give the last m rows of the full causal
    pass over the n_kv keys. Top-left: the first m queries alone give its first m rows."""
    full = cases.kernel(replace(problem, n_q=problem.n_kv, mask="none"), causal=True, masked=False)
    m = min(problem.n_q, problem.n_kv)
    bottom = full.alignment == "bottom_right"
    rows = slice(problem.n_kv - m, problem.n_kv) if bottom else slice(0, m)
    out = _check(full, f"causal=True over {problem.n_kv} queries and keys")
    part = full.queries(rows)
    what = (f"the last {m} of {problem.n_kv} queries alone (a decoding step with a KV cache)" if bottom
            else f"the first {m} of {problem.n_kv} queries alone")
    alone = _check(part, f"causal=True, {what}")
    expected = part.expected()
    assert_matches(out.context[..., rows, :], expected.context, f"rows {rows.start}..{rows.stop - 1} of the full "
                   f"causal pass, against {what}")
    if alone.weights is not None and out.weights is not None:
        assert_matches(out.weights[..., rows, :], expected.weights, f"the full pass's rows, against {what}")


@clause("QKV-WINDOW")
@needs("attention", "local_window")
@_alignment_examples(window=(2, 0), causal=True)
@example(problem=alignment_problem(5, 5), window=(-1, -1), causal=False)
@given(problem=kernel_problems(), window=windows(), causal=st.booleans())
def test_local_window_hides_keys_outside_it(cases, problem, window, causal):
    call = cases.kernel(problem, causal=causal, masked=False, window=window)
    out = _check(call, f"window={window} ({call.alignment} aligned){', causal=True' if causal else ''}")
    if out.weights is not None:
        assert_exactly_zero(out.weights, _hidden(call, out), f"a key outside the window {window}")


@clause("QKV-SOFTCAP")
@needs("attention", "softcap")
@example(problem=alignment_problem(6, 9), softcap=1e6, scale=None)
@example(problem=alignment_problem(6, 9), softcap=2.0, scale=100.0)
@given(problem=kernel_problems(), softcap=softcaps(), scale=st.sampled_from((None, *SCALES, 100.0)))
def test_softcap_bends_the_scaled_scores(cases, problem, softcap, scale):
    call = cases.kernel(problem, scale=scale, masked=False, softcap=softcap)
    shown = "1/√d_k" if scale is None else f"{scale:g}"
    _check(call, f"softcap={softcap:g}: softmax({softcap:g}·tanh(q kᵀ·{shown} / {softcap:g})) v")


@clause("QKV-ALIBI")
@needs("attention", "alibi")
@_alignment_examples(slopes=(0.5, 0.125) + (0.0,) * 10, causal=True)
@given(problem=kernel_problems(), slopes=alibi_slopes(), causal=st.booleans())
def test_alibi_bias_on_the_scaled_scores(cases, problem, slopes, causal):
    call = cases.kernel(problem, causal=causal, masked=False, alibi=slopes)
    _check(call, f"{call.features}: -slope·|p_i - j| added to the scaled scores ({call.alignment} aligned)"
                 f"{', causal=True' if causal else ''}")


@clause("QKV-MASK")
@needs("attention", "masks")
@given(problem=kernel_problems(mask=("bool", "float")))
def test_boolean_and_additive_masks(cases, problem):
    call = cases.kernel(problem)
    kind = "boolean, True = may attend" if call.mask.dtype == torch.bool else "float, added to the scaled scores"
    out = _check(call, f"a {kind} mask of shape {tuple(call.mask.shape)}")
    if out.weights is not None and call.mask.dtype == torch.bool:
        assert_exactly_zero(out.weights, (~call.mask.cpu()).expand(out.weights.shape), "a key the mask hides")


@clause("QKV-GQA")
@needs("attention", "grouped_kv_heads")
@given(problem=kernel_problems(grouped=True))
def test_grouped_key_value_heads(cases, problem):
    call = cases.kernel(problem)
    p = call.problem
    _check(call, f"{p.heads} query heads over {p.kv_heads} key/value heads (head i uses i // {p.heads // p.kv_heads})")
