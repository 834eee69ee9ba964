"""Spec section "weights": softmax(ω / √d_k) over the keys, probabilities, shift invariance, stability."""

from __future__ import annotations

import math

import torch
from hypothesis import given

from conformance import clause, needs
from conformance.judge import oracle, readings
from conformance.judge.assertions import (
    ClauseFailure,
    assert_agree,
    assert_matches,
    assert_weights_are_probabilities,
    fail,
    matches,
)
from conformance.judge.blocking import judged, prerequisite
from conformance.judge.cases import (
    BaseCase,
    Case,
    StepCase,
    assert_outputs_match,
    expect_weights,
    fitted_weights_scale,
    scale_through_a_reading,
)
from conformance.judge.fitting import scale_hint
from conformance.judge.readings import Reading
from conformance.judge.strategies import LARGE_LOGITS, problems, score_problems
from conformance.judge.tolerance import Expected


def _self_attention_scores(case: Case) -> torch.Tensor:
    """float64 ω of a self-attention case, from its inputs."""
    x, w_q, w_k = oracle.upcast(case.inputs.x_q, case.inputs.w_q, case.inputs.w_k)
    return oracle.scores(oracle.project(x, w_q), oracle.project(x, w_k))


def _dims(problem) -> dict[str, int]:
    return {"d_k": problem.d_k, "d_v": problem.d_v, "d_in": problem.d_in}


def _fitted(case: BaseCase, weights: torch.Tensor, scores: torch.Tensor, d_k: int, dtype: str,
            causal: bool = False) -> Expected | None:
    """The reference at the scale α that best explains the weights, or None when nothing can be fitted. For a
    pipeline case, the pipeline's at that scale: the rounding of its projections and scores is in the
    allowance (the implementation computed them itself; `scores` are the suite's)."""
    if weights.shape != scores.shape:
        return None
    if isinstance(case, Case):
        alpha = case.fitted_scale()
        return None if alpha is None else case.expected(alpha).weights
    alpha = fitted_weights_scale(weights, scores, d_k, causal)
    return None if alpha is None else expect_weights(scores, d_k, dtype, causal, alpha=alpha)


def _pipeline_reading(case: Case, weights: torch.Tensor) -> tuple[Reading, float | None] | None:
    """The pipeline's weights seen through another clause's diagnosed mistake: (the reading, None) when they
    match it at 1/√d_k, (the reading, α) at another scale α; None when no reading explains them."""
    for reading in readings.usable_by(case.clause):
        through = case.expected_through(reading)
        if through is None:
            continue
        if matches(weights, through.weights):
            return reading, None
        alpha = case.fitted_scale(reading=reading)
        if alpha is not None and matches(weights, case.expected(alpha, reading=reading).weights):
            return reading, alpha
    return None


def _check_scale(case: BaseCase, weights: torch.Tensor, expected: Expected, scores: torch.Tensor, d_k: int,
                 dims: dict[str, int], causal: bool = False) -> None:
    """weights = softmax(ω/√d_k); weights that are no softmax(α ω) at all are WEIGHTS-SOFTMAX's business."""
    try:
        assert_matches(weights, expected, "softmax(ω / √d_k)")
    except ClauseFailure as error:
        if not torch.isfinite(weights.detach().cpu()).all():
            prerequisite(case, "WEIGHTS-STABLE", "the weights contain NaN or inf", str(error))
        masked = isinstance(case, StepCase) and case.mask is not None  # readings know the causal mask only
        if isinstance(case, Case):
            seen = _pipeline_reading(case, weights)
        else:
            seen = None if masked else scale_through_a_reading(case.clause, weights, scores, d_k, case.dtype, causal)
        if seen is not None:
            reading, alpha = seen
            if alpha is None:
                return  # the scale is right: the weights are another clause's mistake at softmax(ω/√d_k)
            raise type(error)(f"{error}\nwith {reading.name} seen through (another clause's mistake), your weights "
                              f"fit softmax(ω · {alpha:.4g}); the spec scales by 1/√d_k = {1 / math.sqrt(d_k):.4g}") from None
        fitted = _fitted(case, weights, scores, d_k, case.dtype, causal)
        if fitted is None or not matches(weights, fitted):
            prerequisite(case, "WEIGHTS-SOFTMAX", "the weights are not softmax(α·ω) over the keys for any scale α, "
                                                  "so their scale cannot be judged", str(error))
        if not _some_scale_fits_smaller_scores(case, d_k):
            prerequisite(case, "WEIGHTS-SOFTMAX", "the weights fit softmax(α·ω) for these large scores, but no scale "
                                                  "fits the same scores made smaller, so their scale cannot be judged",
                         str(error))
        hint = scale_hint(weights, oracle.upcast(scores)[0], dims)
        raise type(error)(f"{error}\n{hint}" if hint else str(error)) from None


def _some_scale_fits_smaller_scores(case: BaseCase, d_k: int) -> bool:
    """A scale is one number for every input. On large scores a softmax is nearly one-hot, and something
    added to the scores (a position bias) can pass for a slightly other scale; on the same scores brought
    to order √d_k it cannot. Tried on the weights step (the pipeline's scores cannot be set directly);
    True where there is nothing to try."""
    if not isinstance(case, StepCase):
        return True
    peak = case.scores.detach().abs().max().item()
    if not math.isfinite(peak) or peak <= 2 * math.sqrt(d_k):
        return True  # already small: the fit above was the test
    factor = 2.0 ** -math.ceil(math.log2(peak / math.sqrt(d_k)))  # a power of two: the smaller scores are exact
    smaller = case.with_scores(case.scores * factor)
    weights = smaller.run()
    fitted = _fitted(smaller, weights, smaller.scores, d_k, case.dtype)
    return fitted is not None and matches(weights, fitted)


def _check_softmax_form(case: BaseCase, weights: torch.Tensor, expected: Expected, scores: torch.Tensor, d_k: int,
                        dtype: str, causal: bool = False) -> None:
    """weights are softmax(α ω) along the keys for some α > 0 (whether α = 1/√d_k is WEIGHTS-SCALE's business)."""
    if weights.shape != scores.shape:
        fail(f"weights have shape {tuple(weights.shape)}; the scores have {tuple(scores.shape)} (one row per query)")
    if matches(weights, expected):
        return
    fitted = _fitted(case, weights, scores, d_k, dtype, causal)
    if fitted is not None and matches(weights, fitted):
        return
    got = weights.detach().to("cpu", torch.float64)
    error = (got - expected.reference).abs().max().item()
    columns = got.sum(dim=-2)
    by_columns = weights.shape[-2] > 1 and torch.allclose(columns, torch.ones_like(columns), atol=1e-3)
    axis = " (columns sum to 1: the softmax ran over the queries)" if by_columns else ""
    fail(
        f"weights are not a softmax of the scores along the keys for any scale: "
        f"max difference {error:.3g} from softmax(ω/√d_k){axis}"
    )


# ---------------------------------------------------------------- scale
@clause("WEIGHTS-SCALE")
@needs("attention_weights")
@given(problem=score_problems())
def test_weights_step_divides_by_sqrt_dk(cases, problem):
    step = cases.step(problem)
    weights = step.run()
    with judged(step):
        d_k = step.problem.d_k
        _check_scale(step, weights, step.expected(), step.scores, d_k, {"d_k": d_k})


@clause("WEIGHTS-SCALE")
@needs("self_attention", "weights")
@given(problem=problems("self"))
def test_attention_divides_by_sqrt_dk(cases, problem):
    case = cases.pipeline(problem)
    with judged(case):
        weights = case.run_checked().weights
        _check_scale(case, weights, case.expected().weights, _self_attention_scores(case), case.problem.d_k,
                     _dims(case.problem), case.causal)


# -------------------------------------------------------------- softmax
@clause("WEIGHTS-SOFTMAX")
@needs("attention_weights")
@given(problem=score_problems())
def test_weights_step_is_softmax_over_keys(cases, problem):
    step = cases.step(problem)
    weights = step.run()
    with judged(step):
        _check_softmax_form(step, weights, step.expected(), step.scores, step.problem.d_k, step.dtype)


@clause("WEIGHTS-SOFTMAX")
@needs("self_attention", "weights")
@given(problem=problems("self"))
def test_attention_weights_are_softmax_over_keys(cases, problem):
    case = cases.pipeline(problem)
    with judged(case):
        weights = case.run_checked().weights
        _check_softmax_form(case, weights, case.expected().weights, _self_attention_scores(case), case.problem.d_k,
                            case.dtype, case.causal)


# ---------------------------------------------------------- probability
@clause("WEIGHTS-PROBABILITY")
@needs("self_attention", "weights")
@given(problem=problems("self"))
def test_attention_weight_rows_are_probabilities(cases, problem):
    case = cases.pipeline(problem)
    with judged(case):
        assert_weights_are_probabilities(case.run().weights, case.expected().weights)


@clause("WEIGHTS-PROBABILITY")
@needs("attention_weights")
@given(problem=score_problems())
def test_weights_step_rows_are_probabilities(cases, problem):
    step = cases.step(problem)
    weights = step.run()
    with judged(step):
        assert_weights_are_probabilities(weights, step.expected())


# ---------------------------------------------------------------- shift
@clause("WEIGHTS-SHIFT")
@needs("attention_weights")
@given(problem=score_problems())
def test_adding_a_constant_to_a_row_changes_nothing(cases, problem):
    step = cases.step(problem)
    scores = step.scores
    generator = torch.Generator().manual_seed(step.problem.seed + 2)
    # integer shifts are exact in every dtype, so both calls see exactly ω and ω + c
    shift = torch.randint(-50, 51, (*scores.shape[:-1], 1), generator=generator).to(scores)
    shifted = step.with_scores(scores + shift)
    before = step.run()
    after = shifted.run()
    bound = step.expected().allowed + shifted.expected().allowed
    # the rounding of the shifted scores grows with the scale the implementation applies: a scale other than
    # 1/√d_k is WEIGHTS-SCALE's business, so the relation allows what that scale's rounding allows
    alpha = fitted_weights_scale(before, scores, step.problem.d_k, mask=step.mask) \
        if before.shape == scores.shape else None
    if alpha is not None:
        d_k, dtype, mask = step.problem.d_k, step.dtype, step.mask
        bound = max(bound, expect_weights(scores, d_k, dtype, mask=mask, alpha=alpha).allowed
                    + expect_weights(shifted.scores, d_k, dtype, mask=mask, alpha=alpha).allowed)
    with judged(step, shifted):  # the shifted call may be the one whose scores overflow (WEIGHTS-STABLE's)
        assert_agree("weights", before, after, bound,
                     "adding a constant to every score of a row must not change the row's weights")


# ------------------------------------------------------------ stability
@clause("WEIGHTS-STABLE")
@needs("self_attention", "dtype:float32")
@given(problem=problems("self", logit_targets=LARGE_LOGITS))
def test_large_scores_stay_finite_and_right(cases, problem):
    case = cases.pipeline(problem, dtype="float32")
    with judged(case):
        assert_outputs_match(case, case.run(), f"largest scaled score ≈ {problem.logit_target:g}")


@clause("WEIGHTS-STABLE")
@needs("attention_weights", "dtype:float32")
@given(problem=score_problems(large=True))
def test_weights_step_is_stable_for_large_scores(cases, problem):
    step = cases.step(problem, dtype="float32")
    weights = step.run()
    largest = step.problem.magnitude / math.sqrt(step.problem.d_k)
    with judged(step):
        expected = step.expected()
        if matches(weights, expected):
            return
        finite = bool(torch.isfinite(weights.detach().cpu()).all())
        fitted = _fitted(step, weights, step.scores, step.problem.d_k, "float32")
        if fitted is not None and finite and matches(weights, fitted):
            return  # right for its own scale of the scores: the scale is WEIGHTS-SCALE's business
        if finite:
            prerequisite(step, "WEIGHTS-SOFTMAX", "finite weights that are no softmax(α·ω) for any scale α")
        assert_matches(weights, expected, f"scaled scores up to ≈ {largest:.0e}")
