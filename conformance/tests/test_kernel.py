"""Spec section "kernel": attention(q, k, v, causal, mask, scale) in SDPA's layout, grouped-query heads."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.adapter import Attention
from conformance.judge.assertions import (
    ClauseFailure,
    assert_exactly_zero,
    assert_matches,
    assert_no_future_weight,
    matches,
)
from conformance.judge.blocking import prerequisite
from conformance.judge.capabilities import DTYPES
from conformance.judge.cases import KernelCase
from conformance.judge.strategies import kernel_problems

SCALES = (0.05, 0.3, 1.0, 2.5)  # explicit scales: smaller and larger than 1/√d_k for every drawn d_k


def _check(call: KernelCase, where: str) -> Attention:
    """The outputs match the reference; when they do not, and the plain call on the same q, k, v does not
    either, the failure is QKV-ATTEND's (the test is blocked by it, if it lists it)."""
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
        raise


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
@given(problem=kernel_problems())
def test_causal_queries_see_only_earlier_keys(cases, problem):
    call = cases.kernel(problem, causal=True, masked=False)
    out = _check(call, "causal=True, top-left aligned (query i sees keys 0..i)")
    if out.weights is not None:
        assert_no_future_weight(out.weights, "a key after its query (j > i)")


@clause("QKV-MASK")
@needs("attention")
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
