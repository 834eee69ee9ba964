"""Spec section "causal": causal masking (top-left aligned), explicit masks, fully masked rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.assertions import (
    assert_agree,
    assert_exactly_zero,
    assert_matches,
    assert_rows_stochastic,
    fail,
)
from conformance.judge.capabilities import DTYPES
from conformance.judge.cases import Case, expect_weights, fit_batch
from conformance.judge.strategies import MASKING_LOGITS, Inputs, problems, score_problems

CAUSAL_KINDS = [
    pytest.param("self", marks=needs("self_attention.causal", "weights")),
    pytest.param("cross", marks=needs("cross_attention.causal", "weights")),
    pytest.param("multihead", marks=needs("multihead_attention.causal", "weights")),
]


def _future(n_q: int, n_kv: int) -> torch.Tensor:
    """True where key j lies after query i (j > i): what a causal mask hides."""
    return torch.ones(n_q, n_kv, dtype=torch.bool).triu(diagonal=1)


@clause("CAUSAL-MASK")
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@given(data=st.data())
def test_future_keys_get_exactly_zero_weight(implementation, device, dtype, kind, data):
    problem = data.draw(problems(kind, logit_targets=MASKING_LOGITS), label="problem")
    case = Case(implementation, problem, dtype, device, causal=True)
    weights = case.run().weights
    n_q, n_kv = case.problem.n_q, case.problem.n_kv
    if tuple(weights.shape[-2:]) != (n_q, n_kv):
        fail(f"causal weights have shape {tuple(weights.shape)}; the last two axes must be (n_q, n_kv) = ({n_q}, {n_kv})")
    assert_exactly_zero(weights, _future(n_q, n_kv).expand(weights.shape), "a key after its query (j > i, top-left aligned)")
    assert_matches(weights, case.expected().weights, "causal: query i sees keys 0..i")


@clause("CAUSAL-RENORM")
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@given(data=st.data())
def test_visible_weights_are_renormalised(implementation, device, dtype, kind, data):
    case = Case(implementation, data.draw(problems(kind), label="problem"), dtype, device, causal=True)
    weights = case.run().weights
    expected = case.expected().weights
    eps = torch.finfo(DTYPES[dtype]).eps
    assert_rows_stochastic(weights, expected.allowed + case.problem.n_kv * eps * expected.factor)
    assert_matches(weights, expected, "softmax over the visible keys only (mask with -inf before the softmax)")


@clause("CAUSAL-FUTURE")
@needs("self_attention.causal")
@given(problem=problems("self"), data=st.data())
def test_future_tokens_do_not_change_the_past(implementation, device, dtype, problem, data):
    case = Case(implementation, problem, dtype, device, causal=True)
    n = case.problem.n_q
    cut = data.draw(st.integers(0, n - 1), label="last unchanged position")
    i = case.inputs
    generator = torch.Generator().manual_seed(problem.seed + 4)
    noise = torch.randn(i.x_q.shape, generator=generator, dtype=torch.float64).to(i.x_q)
    changed_x = torch.cat([i.x_q[..., : cut + 1, :], noise[..., cut + 1 :, :]], dim=-2)
    changed = case.with_inputs(Inputs(changed_x, changed_x, i.w_q, i.w_k, i.w_v, i.w_o))
    before, after = case.run_checked(), changed.run()
    relation = f"tokens after position {cut} changed; outputs at positions 0..{cut} must not"
    assert_agree(
        "context", before.context[..., : cut + 1, :], after.context[..., : cut + 1, :],
        case.expected().context.allowed + changed.expected().context.allowed, relation,
    )
    if before.weights is not None:
        assert_agree(
            "weights", before.weights[..., : cut + 1, :], after.weights[..., : cut + 1, :],
            case.expected().weights.allowed + changed.expected().weights.allowed, relation,
        )


@clause("MASK-EXPLICIT")
@needs("attention_weights.mask")
@given(problem=score_problems(masked=True), causal=st.booleans())
def test_explicit_mask_true_means_may_attend(implementation, device, dtype, problem, causal):
    problem = fit_batch(problem, implementation)
    if causal and not implementation.claims("attention_weights.causal"):
        causal = False
    scores, mask = problem.scores(DTYPES[dtype], device), problem.mask(device)
    kwargs = {"mask": mask, **({"causal": True} if causal else {})}
    weights = implementation.tensor("attention_weights", scores, problem.d_k, **kwargs)
    hidden = ~mask.cpu()
    if causal:
        hidden = hidden | _future(problem.n_q, problem.n_kv)
    assert_exactly_zero(weights, hidden, "a weight where the mask is False" + (" or j > i" if causal else ""))
    assert_matches(weights, expect_weights(scores, problem.d_k, dtype, causal, mask), "True = may attend")


@clause("MASK-EMPTY-ROW")
@needs("attention_weights.mask")
@given(problem=score_problems(empty_rows=True))
def test_fully_masked_row_is_zero(implementation, device, dtype, problem):
    problem = fit_batch(problem, implementation)
    scores, mask = problem.scores(DTYPES[dtype], device), problem.mask(device)
    weights = implementation.tensor("attention_weights", scores, problem.d_k, mask=mask)
    empty = ~mask.cpu().any(dim=-1, keepdim=True)
    if not torch.isfinite(weights.detach().cpu()).all():
        fail("weights contain NaN or inf for a mask with fully masked rows; such rows must be all zeros")
    assert_exactly_zero(weights, empty.expand(weights.shape), "every weight of a row whose mask is all False")
    assert_matches(weights, expect_weights(scores, problem.d_k, dtype, mask=mask), "rows with a visible key")
