"""Spec section "kernel": attention(q, k, v, causal, mask, scale) in SDPA's layout, grouped-query heads."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge import oracle
from conformance.judge.adapter import Attention, Implementation
from conformance.judge.assertions import ClauseFailure, assert_exactly_zero, assert_matches, check_shape, matches
from conformance.judge.blocking import prerequisite
from conformance.judge.capabilities import DTYPES
from conformance.judge.cases import Outputs, expect_output, fit_problem
from conformance.judge.strategies import KernelProblem, kernel_problems
from conformance.judge.tolerance import dot_scale

SCALES = (0.05, 0.3, 1.0, 2.5)  # explicit scales: smaller and larger than 1/√d_k for every drawn d_k


class Call:
    """One call of attention(q, k, v, ...) on a drawn problem, and the reference for it."""

    def __init__(self, implementation: Implementation, problem: KernelProblem, dtype: str, device: str,
                 causal: bool = False, scale: float | None = None, masked: bool = True) -> None:
        self.implementation, self.dtype = implementation, dtype
        self.problem = fit_problem(problem, implementation)
        self.q, self.k, self.v, mask = self.problem.tensors(DTYPES[dtype], device)
        self.mask = mask if masked else None
        self.causal, self.scale = causal, scale

    @property
    def grouped(self) -> bool:
        return self.problem.kv_heads != self.problem.heads

    def run(self) -> Attention:
        out = self.implementation.kernel(self.q, self.k, self.v, causal=self.causal, mask=self.mask,
                                         scale=self.scale, grouped=self.grouped)
        p = self.problem
        check_shape("attention context", out.context, (*p.batch, p.heads, p.n_q, p.d_v), "(..., h, n_q, d_v)")
        if out.weights is not None:
            check_shape("attention weights", out.weights, (*p.batch, p.heads, p.n_q, p.n_kv), "(..., h, n_q, n_kv)")
        return out

    def expected(self) -> Outputs:
        exact = oracle.upcast(self.q, self.k, self.v)
        plain = [t.detach().cpu() for t in (self.q, self.k, self.v)]
        mask = self.mask
        exact_mask = plain_mask = None if mask is None else mask.cpu()
        if mask is not None and mask.dtype != torch.bool:
            exact_mask = oracle.upcast(mask)[0]
        ref_context, ref_weights = oracle.attention(*exact, self.causal, exact_mask, self.scale)
        base_context, base_weights = oracle.attention(*plain, self.causal, plain_mask, self.scale)
        q, k, v = exact
        alpha = 1 / math.sqrt(q.shape[-1]) if self.scale is None else self.scale
        group = q.shape[-3] // k.shape[-3]
        # what rounding acts on: the scaled scores (plus a float mask), then the values they mix
        bias = exact_mask.abs().max().item() if exact_mask is not None and exact_mask.dtype != torch.bool else 0.0
        weights_scale = 1.0 + dot_scale(q, k.repeat_interleave(group, dim=-3)) * alpha + bias
        context_scale = weights_scale * max(v.abs().max().item() if v.numel() else 0.0, 1e-300)
        return Outputs(
            context=expect_output("context", ref_context, base_context, self.dtype, context_scale),
            weights=expect_output("weights", ref_weights, base_weights, self.dtype, weights_scale),
        )

    def plain(self) -> Call:
        """The same q, k, v with neither mask, causal nor scale, and every query head's own key/value head."""
        twin = copy.copy(self)
        group = self.problem.heads // self.problem.kv_heads
        twin.k, twin.v = self.k.repeat_interleave(group, dim=-3), self.v.repeat_interleave(group, dim=-3)
        twin.problem = replace(self.problem, kv_heads=self.problem.heads)
        twin.mask, twin.causal, twin.scale = None, False, None
        return twin


def _check(call: Call, where: str) -> Attention:
    """The outputs match the reference; when they do not, and the plain call on the same q, k, v does not
    either, the failure is QKV-ATTEND's (the test is blocked by it, if it lists it)."""
    try:
        out = call.run()
        expected = call.expected()
        assert_matches(out.context, expected.context, where)
        if out.weights is not None:
            assert_matches(out.weights, expected.weights, where)
        return out
    except ClauseFailure as error:
        plain = call.plain()
        try:
            plain_out, plain_expected = plain.run(), plain.expected()
            broken = not matches(plain_out.context, plain_expected.context) or (
                plain_out.weights is not None and not matches(plain_out.weights, plain_expected.weights))
        except ClauseFailure as plain_error:
            broken, why = True, str(plain_error).splitlines()[0]
        else:
            why = "without mask, causal or scale, its context is not softmax(q kᵀ/√d_k) v on the same q, k, v"
        if broken:
            prerequisite("QKV-ATTEND", why, str(error))
        raise


@clause("QKV-ATTEND")
@pytest.mark.parametrize("dtype_name", [pytest.param(d, marks=needs("attention", f"dtype:{d}")) for d in DTYPES])
@given(problem=kernel_problems())
def test_context_is_softmax_of_scaled_scores_times_values(implementation, device, dtype_name, problem):
    call = Call(implementation, problem, dtype_name, device)
    out = call.run()
    expected = call.expected()
    assert_matches(out.context, expected.context, f"attention in {dtype_name}")
    if out.weights is not None:
        assert_matches(out.weights, expected.weights, f"attention in {dtype_name}")


@clause("QKV-SCALE")
@needs("attention")
@given(problem=kernel_problems(), scale=st.sampled_from(SCALES))
def test_an_explicit_scale_replaces_the_default(implementation, device, dtype, problem, scale):
    _check(Call(implementation, problem, dtype, device, scale=scale), f"scale={scale:g} (softmax({scale:g} · q kᵀ) v)")


@clause("QKV-CAUSAL")
@needs("attention")
@given(problem=kernel_problems())
def test_causal_queries_see_only_earlier_keys(implementation, device, dtype, problem):
    call = Call(implementation, problem, dtype, device, causal=True, masked=False)
    out = _check(call, "causal=True, top-left aligned (query i sees keys 0..i)")
    if out.weights is not None:
        future = ~oracle.allowed(call.problem.n_q, call.problem.n_kv, True, None, "cpu")
        assert_exactly_zero(out.weights, future.expand(out.weights.shape), "a key after its query (j > i)")


@clause("QKV-MASK")
@needs("attention")
@given(problem=kernel_problems(mask=("bool", "float")))
def test_boolean_and_additive_masks(implementation, device, dtype, problem):
    call = Call(implementation, problem, dtype, device)
    kind = "boolean, True = may attend" if call.mask.dtype == torch.bool else "float, added to the scaled scores"
    out = _check(call, f"a {kind} mask of shape {tuple(call.mask.shape)}")
    if out.weights is not None and call.mask.dtype == torch.bool:
        assert_exactly_zero(out.weights, (~call.mask.cpu()).expand(out.weights.shape), "a key the mask hides")


@clause("QKV-GQA")
@needs("attention", "grouped_kv_heads")
@given(problem=kernel_problems(grouped=True))
def test_grouped_key_value_heads(implementation, device, dtype, problem):
    call = Call(implementation, problem, dtype, device)
    p = call.problem
    _check(call, f"{p.heads} query heads over {p.kv_heads} key/value heads (head i uses i // {p.heads // p.kv_heads})")
