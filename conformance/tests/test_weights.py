"""Spec section "weights": softmax(ω / √d_k) over the keys, probabilities, shift invariance, stability."""

from __future__ import annotations

import math

import torch
from hypothesis import given

from conformance import clause, needs
from conformance.judge import oracle
from conformance.judge.assertions import (
    assert_agree,
    assert_matches,
    assert_rows_stochastic,
    fail,
)
from conformance.judge.capabilities import DTYPES
from conformance.judge.cases import Case, expect_weights, fit_batch
from conformance.teaching.diagnosis import implied_inverse_scale, scale_hint
from conformance.judge.strategies import LARGE_LOGITS, problems, score_problems
from conformance.judge.tolerance import Expected


def _self_attention_scores(case: Case) -> torch.Tensor:
    """float64 ω of a self-attention case, from its inputs."""
    x, w_q, w_k = oracle.upcast(case.inputs.x_q, case.inputs.w_q, case.inputs.w_k)
    return oracle.scores(oracle.project(x, w_q), oracle.project(x, w_k))


def _dims(problem) -> dict[str, int]:
    return {"d_k": problem.d_k, "d_v": problem.d_v, "d_in": problem.d_in}


def _check_scale(weights: torch.Tensor, expected: Expected, scores: torch.Tensor, dims: dict[str, int]) -> None:
    try:
        assert_matches(weights, expected, "softmax(ω / √d_k)")
    except AssertionError as error:
        hint = scale_hint(weights, scores, dims)
        raise type(error)(f"{error}\n{hint}" if hint else str(error)) from None


def _check_softmax_form(weights: torch.Tensor, expected: Expected, scores: torch.Tensor) -> None:
    """weights are softmax(α ω) along the keys for some α > 0 (whether α = 1/√d_k is WEIGHTS-SCALE's business)."""
    if weights.shape != scores.shape:
        fail(f"weights have shape {tuple(weights.shape)}; the scores have {tuple(scores.shape)} (one row per query)")
    error = (weights.detach().to("cpu", torch.float64) - expected.reference).abs().max().item()
    if error <= expected.allowed:
        return
    alpha = implied_inverse_scale(weights, scores)
    if alpha is not None and alpha > 0:
        best = oracle.weights(scores, d_k=1 / alpha**2)
        misfit = (weights.detach().to("cpu", torch.float64) - best).abs().max().item()
        if misfit <= expected.allowed + 1e-3:
            return
    columns = weights.detach().to("cpu", torch.float64).sum(dim=-2)
    axis = " (columns sum to 1: the softmax ran over the queries)" if torch.allclose(columns, torch.ones_like(columns), atol=1e-3) and weights.shape[-2] > 1 else ""
    fail(
        f"weights are not a softmax of the scores along the keys for any scale: "
        f"max difference {error:.3g} from softmax(ω/√d_k){axis}"
    )


# ---------------------------------------------------------------- scale
@clause("WEIGHTS-SCALE")
@needs("attention_weights")
@given(problem=score_problems())
def test_weights_step_divides_by_sqrt_dk(implementation, device, dtype, problem):
    problem = fit_batch(problem, implementation)
    scores = problem.scores(DTYPES[dtype], device)
    weights = implementation.tensor("attention_weights", scores, problem.d_k)
    (s64,) = oracle.upcast(scores)
    _check_scale(weights, expect_weights(scores, problem.d_k, dtype), s64, {"d_k": problem.d_k})


@clause("WEIGHTS-SCALE")
@needs("self_attention", "weights")
@given(problem=problems("self"))
def test_attention_divides_by_sqrt_dk(implementation, device, dtype, problem):
    case = Case(implementation, problem, dtype, device)
    _check_scale(case.run().weights, case.expected().weights, _self_attention_scores(case), _dims(case.problem))


# -------------------------------------------------------------- softmax
@clause("WEIGHTS-SOFTMAX")
@needs("attention_weights")
@given(problem=score_problems())
def test_weights_step_is_softmax_over_keys(implementation, device, dtype, problem):
    problem = fit_batch(problem, implementation)
    scores = problem.scores(DTYPES[dtype], device)
    weights = implementation.tensor("attention_weights", scores, problem.d_k)
    (s64,) = oracle.upcast(scores)
    _check_softmax_form(weights, expect_weights(scores, problem.d_k, dtype), s64)


@clause("WEIGHTS-SOFTMAX")
@needs("self_attention", "weights")
@given(problem=problems("self"))
def test_attention_weights_are_softmax_over_keys(implementation, device, dtype, problem):
    case = Case(implementation, problem, dtype, device)
    _check_softmax_form(case.run().weights, case.expected().weights, _self_attention_scores(case))


# ---------------------------------------------------------- probability
@clause("WEIGHTS-PROBABILITY")
@needs("self_attention", "weights")
@given(problem=problems("self"))
def test_attention_weight_rows_are_probabilities(implementation, device, dtype, problem):
    case = Case(implementation, problem, dtype, device)
    assert_rows_stochastic(case.run().weights, _row_sum_allowance(case.expected().weights, problem.n_kv))


@clause("WEIGHTS-PROBABILITY")
@needs("attention_weights")
@given(problem=score_problems())
def test_weights_step_rows_are_probabilities(implementation, device, dtype, problem):
    problem = fit_batch(problem, implementation)
    scores = problem.scores(DTYPES[dtype], device)
    weights = implementation.tensor("attention_weights", scores, problem.d_k)
    assert_rows_stochastic(weights, _row_sum_allowance(expect_weights(scores, problem.d_k, dtype), problem.n_kv))


def _row_sum_allowance(expected: Expected, n_kv: int) -> float:
    """A row sum adds n_kv weights, each within the weights' bound of its true value."""
    eps = torch.finfo(DTYPES[expected.dtype]).eps
    return min(n_kv * expected.allowed, expected.allowed + n_kv * eps * expected.factor)


# ---------------------------------------------------------------- shift
@clause("WEIGHTS-SHIFT")
@needs("attention_weights")
@given(problem=score_problems())
def test_adding_a_constant_to_a_row_changes_nothing(implementation, device, dtype, problem):
    problem = fit_batch(problem, implementation)
    scores = problem.scores(DTYPES[dtype], device)
    generator = torch.Generator().manual_seed(problem.seed + 2)
    # integer shifts are exact in every dtype, so both calls see exactly ω and ω + c
    shift = torch.randint(-50, 51, (*scores.shape[:-1], 1), generator=generator).to(scores)
    shifted = scores + shift
    before = implementation.tensor("attention_weights", scores, problem.d_k)
    after = implementation.tensor("attention_weights", shifted, problem.d_k)
    bound = expect_weights(scores, problem.d_k, dtype).allowed + expect_weights(shifted, problem.d_k, dtype).allowed
    assert_agree("weights", before, after, bound, "adding a constant to every score of a row must not change the row's weights")


# ------------------------------------------------------------ stability
@clause("WEIGHTS-STABLE")
@needs("self_attention", "dtype:float32")
@given(problem=problems("self", logit_targets=LARGE_LOGITS))
def test_large_scores_stay_finite_and_right(implementation, device, problem):
    case = Case(implementation, problem, "float32", device)
    out = case.run()
    for name, actual, expected in (("context", out.context, case.expected().context), ("weights", out.weights, case.expected().weights)):
        if actual is None:
            continue
        assert_matches(actual, expected, f"largest scaled score ≈ {problem.logit_target:g}")


@clause("WEIGHTS-STABLE")
@needs("attention_weights", "dtype:float32")
@given(problem=score_problems(large=True))
def test_weights_step_is_stable_for_large_scores(implementation, device, problem):
    problem = fit_batch(problem, implementation)
    scores = problem.scores(torch.float32, device)
    weights = implementation.tensor("attention_weights", scores, problem.d_k)
    largest = problem.magnitude / math.sqrt(problem.d_k)
    assert_matches(weights, expect_weights(scores, problem.d_k, "float32"), f"scaled scores up to ≈ {largest:.0e}")
