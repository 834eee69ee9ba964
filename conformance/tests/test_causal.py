"""Spec section "causal": causal masking (top-left aligned), explicit masks, fully masked rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.assertions import (
    ClauseFailure,
    assert_agree,
    assert_causal_mask,
    assert_exactly_zero,
    assert_matches,
    assert_no_future_weight,
    assert_rows_stochastic,
    fail,
    future_keys,
    matches,
    row_sum_allowance,
)
from conformance.judge.blocking import judged, prerequisite
from conformance.judge.cases import Case, StepCase, expect_weights, explain, fitted_weights_scale, outputs_check
from conformance.judge.strategies import MASKING_LOGITS, Inputs, problems, score_problems

CAUSAL_KINDS = [
    pytest.param("self", marks=needs("self_attention.causal", "weights")),
    pytest.param("cross", marks=needs("cross_attention.causal", "weights")),
    pytest.param("multihead", marks=needs("multihead_attention.causal", "weights")),
]


@clause("CAUSAL-MASK")
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@given(data=st.data())
def test_future_keys_get_exactly_zero_weight(cases, kind, data):
    problem = data.draw(problems(kind, logit_targets=MASKING_LOGITS), label="problem")
    case = cases.pipeline(problem, causal=True)
    with judged(case):
        out = case.run()
        try:
            assert_causal_mask(out.weights, case.problem.n_q, case.problem.n_kv)
        except ClauseFailure:
            # future weights that are exactly 0 are this clause's alone; a query left with no weight at all can
            # be another clause's mistake (a softmax over the queries underflows whole rows): seen through it,
            # the mask is the reference's. Weights of another shape are API-SHAPES' (the blocker finds it).
            if tuple(out.weights.shape[-2:]) != (case.problem.n_q, case.problem.n_kv):
                raise
            assert_no_future_weight(out.weights)
            if explain(case, out, outputs_check(out)) is None:
                raise


@clause("CAUSAL-RENORM")
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@given(data=st.data())
def test_visible_weights_are_renormalised(cases, kind, data):
    case = cases.pipeline(data.draw(problems(kind), label="problem"), causal=True)
    with judged(case):
        _check_renormalised(case)


def _check_renormalised(case: Case) -> None:
    """Rows sum to 1, and on the visible keys the weights are the non-causal weights renormalised.

    Judged relative to the implementation's own non-causal call on the same inputs, on the visible
    keys it gives weight to: how the scores are computed and scaled, and where the mask hides too
    much or too little (CAUSAL-MASK), are other clauses' business.
    """
    out = case.run_checked()
    weights = out.weights
    expected = case.expected().weights
    try:
        assert_matches(weights, expected)
        return
    except ClauseFailure:
        pass
    if explain(case, out, outputs_check(out)) is not None:
        return  # the reference's masking, seen through another clause's mistake (its own never: readings.py)
    got = weights.detach().to("cpu", torch.float64)
    totals = got.sum(dim=-1)
    assert_rows_stochastic(weights, row_sum_allowance(expected), rows=totals != 0)
    if case.implementation.capabilities.causal_only:
        # no unmasked call to compare with: the reference at the scale the implementation uses
        alpha = case.fitted_scale(out)
        if alpha is not None and matches(weights, case.expected(alpha).weights):
            return
        assert_matches(weights, expected, "a softmax over the visible keys only (causal='only': no unmasked call)")
        return
    full = case.on(case.problem, causal=False)
    unmasked = full.run_checked().weights.detach().to("cpu", torch.float64)
    shown = ~future_keys(case.problem.n_q, case.problem.n_kv) & (got != 0)
    share = torch.where(shown, unmasked, torch.zeros_like(unmasked))
    mass = share.sum(dim=-1, keepdim=True)
    renormalised = torch.where(mass > 0, share / mass.clamp_min(1e-300), share)
    mine = torch.where(shown, got, torch.zeros_like(got))
    mine = mine / mine.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    seen = mass[mass > 0]
    # renormalising divides the non-causal weights' error by their visible mass
    allowed = expected.allowed + full.expected().weights.allowed / (seen.min().item() if seen.numel() else 1.0)
    error = (mine - renormalised).abs()
    if error.numel() and error.max().item() > allowed:
        flat = int(error.flatten().argmax())
        fail(
            f"causal weights on the visible keys differ by {error.max().item():.3g} (allowed {allowed:.2g}, flat index "
            f"{flat}) from your non-causal weights on those keys renormalised: the causal weights must be a softmax "
            f"over the visible keys only (mask with -inf before the softmax)"
        )


@clause("CAUSAL-FUTURE")
@needs("self_attention.causal")
@given(problem=problems("self"), data=st.data())
def test_future_tokens_do_not_change_the_past(cases, problem, data):
    case = cases.pipeline(problem, causal=True)
    n = case.problem.n_q
    cut = data.draw(st.integers(0, n - 1), label="last unchanged position")
    i = case.inputs
    generator = torch.Generator().manual_seed(problem.seed + 4)
    noise = torch.randn(i.x_q.shape, generator=generator, dtype=torch.float64).to(i.x_q)
    changed_x = torch.cat([i.x_q[..., : cut + 1, :], noise[..., cut + 1 :, :]], dim=-2)
    changed = case.with_inputs(Inputs(changed_x, changed_x, i.w_q, i.w_k, i.w_v, i.w_o))
    relation = f"tokens after position {cut} changed; outputs at positions 0..{cut} must not"
    with judged(case, changed):
        before, after = case.run_checked(), changed.run_checked()
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
@given(problem=score_problems(masked=True))
def test_explicit_mask_true_means_may_attend(cases, problem):
    step = cases.step(problem)
    weights = step.run()
    with judged(step):
        assert_exactly_zero(weights, ~step.mask.cpu(), "a weight where the mask is False")
        _check_visible(step, "True = may attend")


@clause("MASK-EMPTY-ROW")
@needs("attention_weights.mask")
@given(problem=score_problems(empty_rows=True))
def test_fully_masked_row_is_zero(cases, problem):
    step = cases.step(problem)
    weights = step.run()
    empty = ~step.mask.cpu().any(dim=-1, keepdim=True)
    with judged(step):
        if not torch.isfinite(weights.detach().cpu()).all():
            fail("weights contain NaN or inf for a mask with fully masked rows; such rows must be all zeros")
        assert_exactly_zero(weights, empty.expand(weights.shape), "every weight of a row whose mask is all False")
        _check_visible(step, "rows with a visible key")


def _check_visible(step: StepCase, where: str) -> None:
    """The step's weights are the masked softmax of the scores, at 1/√d_k or at the scale the implementation uses.

    When they are not, the same call without the mask shows whether the softmax itself is broken
    (WEIGHTS-SOFTMAX's business) or only its masking (this clause's).
    """
    weights, scores, d_k, dtype, mask = step.run(), step.scores, step.problem.d_k, step.dtype, step.mask
    expected = step.expected()
    try:
        assert_matches(weights, expected, where)
    except ClauseFailure:
        alpha = fitted_weights_scale(weights, scores, d_k, mask=mask) if weights.shape == scores.shape else None
        if alpha is None:
            raise
        try:
            assert_matches(weights, expect_weights(scores, d_k, dtype, mask=mask, alpha=alpha), where)
        except ClauseFailure:
            pass
        else:
            return  # the scale is WEIGHTS-SCALE's business
        plain = step.unmasked().run()
        alpha = fitted_weights_scale(plain, scores, d_k) if plain.shape == scores.shape else None
        fits = alpha is not None and matches(plain, expect_weights(scores, d_k, dtype, alpha=alpha))
        if not fits:
            prerequisite(step, "WEIGHTS-SOFTMAX", "without a mask the same call's weights are no softmax of the "
                                                  "scores for any scale α")
        raise

