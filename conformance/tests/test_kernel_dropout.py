"""Spec section "kernel", clause QKV-DROPOUT: attention(..., dropout_p=p) keeps each weight with probability 1 − p
and scales it by 1/(1 − p), drawing from its array library's generator, which the suite seeds before the call.

Judged as the clause says: p = 0 is plain attention; the same seed gives the same result bit for bit; another
seed another result; the mean of S draws (S copies of q, k, v in one batch, or S seeded calls without batching)
lies within the Hoeffding bound of the dropout-free context (conformance/judge/dropout.py); returned weights are
each 0 or w/(1 − p), and the ones applied to v; one keep per weight, shared by all of v's columns (v's
columns equal in pairs give equal pairs of context columns)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, reject, settings

from conformance import clause, needs
from conformance.judge import dropout
from conformance.judge.adapter import Attention, ImplementationError
from conformance.judge.assertions import ClauseFailure, assert_agree, fail
from conformance.judge.blocking import prerequisite
from conformance.judge.cases import KernelCase, KernelInputs
from conformance.judge.strategies import KernelProblem, dropout_problems, kernel_problems
from conformance.judge.tolerance import Expected, OutOfRange
from conformance.tests.test_kernel import _check, _holds

RATES = (0.2, 0.7)  # not 0.5, where keeping with probability p instead of 1 − p is the very same draw
DRAWS = 128  # S: enough for a missing 1/(1 − p) to leave the Hoeffding bound (conformance.judge.strategies)


def _seed(problem: KernelProblem) -> int:
    """The seed of a problem's first draw (its later draws take the next ones)."""
    return problem.seed % 2**31


@clause("QKV-DROPOUT")
@needs("attention", "dropout")
@given(problem=kernel_problems())
@settings(max_examples=max(3, settings().max_examples // 3))
def test_dropout_zero_is_plain_attention(cases, problem):
    call = cases.kernel(problem, dropout_p=0.0, seed=_seed(problem))
    _check(call, f"dropout_p=0 (seed {call.seed}): nothing is dropped, softmax(q kᵀ/√d_k) v")


@clause("QKV-DROPOUT")
@needs("attention", "dropout")
@pytest.mark.parametrize("p", RATES)
@given(problem=dropout_problems())
# each example makes three calls of 128 copies (or 130 calls without batching): a third of the profile's examples
@settings(max_examples=max(2, settings().max_examples // 3))
def test_dropout_draws_are_seeded_and_unbiased(cases, p, problem):
    call = cases.kernel(problem, dropout_p=p, seed=_seed(problem))
    try:
        _judge_draws(call, p)
    except (ClauseFailure, ImplementationError) as error:
        plain = call.plain()
        try:
            broken = not _holds(plain)
        except ImplementationError:
            broken = True
        if broken:
            prerequisite(call, "QKV-ATTEND", "without dropout_p, its context is not softmax(q kᵀ/√d_k) v on the "
                         "same q, k, v", str(error))
        raise


def _judge_draws(call: KernelCase, p: float) -> None:
    implementation = call.implementation
    expected = call.expected()  # dropout-free: what the draws equal on average
    weights, context = expected.weights.reference, expected.context.reference
    i = call.inputs
    values = dropout.per_query_head(i.v.detach().to("cpu", torch.float64), call.problem.heads)
    try:
        allowed_context, allowed_weights = dropout.draw_expectations(
            i.q, i.k, i.v, call.scale, call.dtype, p, (expected.context, expected.weights), seed=call.problem.seed)
    except OutOfRange:
        reject()  # the dtype cannot compute this input at all: not a fair example
    batched = implementation.claims("batching")
    first = _copies(call, DRAWS) if batched else call
    seed = first.seed
    where = f"dropout_p={p:g}, seed {seed}" + (f", {DRAWS} copies of q, k, v in one batch" if batched else "")

    out = first.run_checked()
    if not (torch.isfinite(out.context).all() and (out.weights is None or torch.isfinite(out.weights).all())):
        fail(f"with {where} the outputs hold NaN or inf; the dropout-free context is finite")
    again = first.call()
    if not _identical(out, again):
        fail(f"two calls with {where} gave different results: with torch.manual_seed({seed}) before each, a "
             f"dropout draw must repeat bit for bit (draw from the global generator the suite seeds, not one of "
             f"the implementation's own)")
    count = dropout.influential(weights, values, p, 2 * allowed_context.allowed) * (DRAWS if batched else 1)
    chance = dropout.same_draw_probability(p, count)
    if chance <= dropout.ALPHA:  # else too few weights matter for another seed to show surely
        other = first.twin(seed=seed + DRAWS).call()
        if _identical(out, other):
            fail(f"with dropout_p={p:g}, seeds {seed} and {seed + DRAWS} gave the same result bit for bit: the draw "
                 f"does not depend on the seed (a correct kernel repeats itself with probability {chance:.2g}: "
                 f"{count} weights each matter)")
    if out.weights is not None:
        _judge_weights(out, weights, values, p, where, allowed_context, allowed_weights)
    _judge_one_keep_per_weight(call, p, allowed_context)

    if batched:
        mean, samples = out.context.detach().to("cpu", torch.float64).mean(dim=0), DRAWS
    else:
        draws = [out.context] + [call.twin(seed=seed + s).run_checked().context for s in range(1, DRAWS)]
        mean, samples = torch.stack([d.detach().to("cpu", torch.float64) for d in draws]).mean(dim=0), DRAWS
    for check in dropout.mean_checks(mean, context, weights, values, p, samples, allowed_context.allowed):
        if not check.holds:
            fail(f"with {where}, the mean of {samples} draws is not the dropout-free context: {check.explain()}. "
                 f"The mean is {_factor(mean, context):.3g} × the dropout-free context (1 required: kept weights "
                 f"scaled by 1/(1 − p); without the rescale it would be 1 − p = {1 - p:g}; keeping with "
                 f"probability p instead of 1 − p, p/(1 − p) = {p / (1 - p):.3g})")


def _judge_weights(out: Attention, weights: torch.Tensor, values: torch.Tensor, p: float, where: str,
                   allowed_context: Expected, allowed_weights: Expected) -> None:
    """Each returned weight is 0 (dropped) or w/(1 − p) (kept), and the context is those weights times v."""
    returned = out.weights.detach().to("cpu", torch.float64)  # its shape was checked (run_checked)
    kept = (weights / (1 - p)).expand(returned.shape)
    tolerance = allowed_weights.allowed
    wrong = ~(returned.abs() <= tolerance) & ~((returned - kept).abs() <= tolerance)
    if wrong.any():
        index = tuple(int(x) for x in wrong.nonzero()[0])
        w = weights[index[-3:]].item()
        fail(f"weights{list(index)} is {returned[index].item():.6g} with {where}: a weight must be 0 (dropped) or "
             f"w/(1 − p) = {w / (1 - p):.6g} (kept), w = {w:.6g} its dropout-free value; within {tolerance:.2g} "
             f"({allowed_weights.explain()}); {int(wrong.sum())} of {wrong.numel()} weights are neither")
    # |context − returned·v| ≤ the context's own allowance + each returned weight's, carried by v
    allowed = allowed_context.allowed + tolerance * values.abs().sum(dim=-2).max().item()
    applied = torch.einsum("...ij,...jd->...id", returned, values)
    assert_agree("attention context", out.context, applied, allowed,
                 f"with {where} the context must be the returned weights times v: the weights returned are the "
                 f"ones applied")


def _judge_one_keep_per_weight(call: KernelCase, p: float, allowed_context: Expected) -> None:
    """A weight is dropped or kept for all of v's columns at once: with v's columns made equal in pairs (column
    2c + 1 a copy of column 2c; the shapes unchanged, so a kernel that takes d_v = d_k only is asked nothing
    new), the paired columns of the context are the same draw, equal within rounding. Dropping v's entries, or
    the context's, one by one leaves the mean unbiased (the mean check cannot see it) but splits the pairs."""
    i = call.inputs
    pairs = i.v.shape[-1] // 2
    if pairs == 0:
        return  # one column of v: nothing to pair
    v = i.v.clone()
    v[..., 1:2 * pairs:2] = i.v[..., 0:2 * pairs:2]
    twin = call.twin(KernelInputs(i.q, i.k, v, None))
    context = twin.run_checked().context.detach().to("cpu", torch.float64)
    # each column of a pair is within the allowance of the same exact draw
    assert_agree("attention context", context[..., 1:2 * pairs:2], context[..., 0:2 * pairs:2],
                 2 * allowed_context.allowed,
                 f"with dropout_p={p:g}, seed {twin.seed}, and v's columns equal in pairs (column 2c + 1 a copy of "
                 f"column 2c), the context's paired columns must be equal: a dropped weight is dropped for every "
                 f"column of v at once (one keep per query and key), not v's entries or the context's one by one "
                 f"(the context's columns 2c + 1 are shown against columns 2c)")


def _identical(a: Attention, b: Attention) -> bool:
    same = a.context.shape == b.context.shape and torch.equal(a.context, b.context)
    if a.weights is None or b.weights is None:
        return same and a.weights is None and b.weights is None
    return same and a.weights.shape == b.weights.shape and torch.equal(a.weights, b.weights)


def _factor(mean: torch.Tensor, context: torch.Tensor) -> float:
    """c minimising ‖mean − c·context‖: how much the mean is scaled against the dropout-free context."""
    norm = (context * context).sum().item()
    return (mean * context).sum().item() / norm if norm > 0 else float("nan")


def _copies(call: KernelCase, count: int) -> KernelCase:
    """The same call on `count` copies of q, k, v stacked along a new leading batch axis: `count` independent draws."""
    i = call.inputs
    return call.twin(KernelInputs(*(t.expand(count, *t.shape).contiguous() for t in (i.q, i.k, i.v)), None),
                     problem=replace(call.problem, batch=(count, *call.problem.batch)))
