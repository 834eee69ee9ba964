"""The detectors of the blocking mechanism (blocking.py), one per prerequisite clause, in pipeline order.

Each looks at one case, after a check of another clause failed on it, for its own clause's property
only, and returns a sentence when that property is broken there (else None): the implementation
raised or returned the wrong shape (API-SHAPES), NaN (WEIGHTS-STABLE), a different answer twice
(API-DETERMINISTIC), batch examples mixed (API-BATCH), future keys seen (CAUSAL-MASK), no more
accuracy than bfloat16 (NUM-ACCURACY), a wrong projection step or roles (PROJ-LAYOUT, PROJ-ROLES), a
wrong scores step (SCORE-DOT), no softmax for any scale (WEIGHTS-SOFTMAX), rows that are no
probabilities (WEIGHTS-PROBABILITY), another scale (WEIGHTS-SCALE), a context that is no mix of the
values (CONTEXT-MIX), a result that depends on position (SYM-EQUIVARIANT). Detectors run only after a
failure, so a correct implementation costs nothing extra.

Where a clause's tests check its property with a shared function (assertions.py: the row sums of
WEIGHTS-PROBABILITY, the zeros of CAUSAL-MASK, the tolerance policy of WEIGHTS-SCALE), its detector
makes that very check, so a block is claimed on the clause's own criterion. A detector looks at
pipeline cases (cases.Case) and, for the properties visible in a step's output alone, at
attention_weights cases (cases.StepCase); kernel cases are judged by their own QKV-ATTEND check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from conformance.judge.adapter import ImplementationError
from conformance.judge.assertions import (
    ClauseFailure,
    assert_agree,
    assert_every_query_sees_a_key,
    assert_matches,
    assert_no_future_weight,
    assert_weights_are_probabilities,
    holds,
    matches,
)
from conformance.judge.cases import BaseCase, Case, StepCase, expect_projection, expect_scores, shapes
from conformance.judge.strategies import Inputs
from conformance.judge.tolerance import max_abs_error

LOW_PRECISION = "bfloat16"  # the loosest policy of the spec: "right, but not accurate enough" below this


# ---------------------------------------------------------------- detectors
# Each returns a sentence when its clause's property is broken on the case, else None.


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t.detach().cpu()).all()) for t in tensors)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit the same result, NaN where the other has NaN."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def _weights(case: Case) -> torch.Tensor | None:
    out = case.run()
    return None if out.weights is None else out.weights.detach().to("cpu", torch.float64)


def _shapes(case: Case) -> str | None:
    out = case.run()  # ImplementationError: handled by find_blocker as "raised on a valid input"
    context_shape, weights_shape = shapes(case.problem)
    if tuple(out.context.shape) != context_shape:
        return f"{case.function} returned a context of shape {tuple(out.context.shape)} for {_sizes(case)}; expected {context_shape}"
    if out.weights is not None and tuple(out.weights.shape) != weights_shape:
        return f"{case.function} returned weights of shape {tuple(out.weights.shape)} for {_sizes(case)}; expected {weights_shape}"
    return None


def _stable(case: Case) -> str | None:
    out = case.run()
    for name, value in (("context", out.context), ("weights", out.weights)):
        if value is not None and not torch.isfinite(value.detach().cpu()).all():
            target = case.problem.logit_target
            size = f" (largest scaled score ≈ {target:g})" if target else ""
            return f"{case.function} returned NaN or inf in its {name} for finite inputs{size}"
    return None


# A randomness that is not API-DETERMINISTIC's clause to find may still be what failed another check: dropout
# left on. Its calls repeat each other by chance when the outputs are small (one weight, p = 0.1: 9 calls in 10),
# so the detector repeats a call until a dropout of p >= 0.1 over its outputs would have shown with probability
# at least 1 - 1e-4 (0.9^(elements · repeats) <= 1e-4), 3 repeats at least and 64 at most: a deterministic
# implementation pays this only where a check already failed, and a large output needs only 3.
DROPOUT_RATE, MISSED = 0.1, 1e-4


def _repeats(*outputs: torch.Tensor | None) -> int:
    elements = max((o.numel() for o in outputs if o is not None), default=1)
    needed = math.log(MISSED) / (max(elements, 1) * math.log(1 - DROPOUT_RATE))
    return int(min(64, max(3, math.ceil(needed))))


def _deterministic(case: Case) -> str | None:
    if case.device != "cpu":
        return None
    first = case.run()
    for _ in range(_repeats(first.context, first.weights)):
        again = case.call()
        for a, b in ((first.context, again.context), (first.weights, again.weights)):
            if a is not None and b is not None and not same(a, b):
                return f"{case.function} returned different results for the same inputs"
    return None


def _batch(case: Case) -> str | None:
    batch = case.problem.batch
    if not batch:
        return None
    out = case.run()
    for index in itertools.islice(itertools.product(*(range(n) for n in batch)), 8):
        alone = case.example(index)
        single = alone.run()
        for name, a, b in (("context", out.context, single.context), ("weights", out.weights, single.weights)):
            if a is None or b is None or not _finite(a, b):
                continue
            bound = getattr(case.expected(), name).allowed + getattr(alone.expected(), name).allowed
            if not holds(assert_agree, name, a[index], b, bound, ""):  # API-BATCH's own check
                return f"batch example {list(index)} computed alone differs from its slice of the batched {name}"
    return None


def _project(case: Case) -> str | None:
    if not case.implementation.has("project") or case.problem.kind not in ("self", "cross"):
        return None
    i = case.inputs
    for role, x, w in (("W_Q", i.x_q, i.w_q), ("W_K", i.x_kv, i.w_k), ("W_V", i.x_kv, i.w_v)):
        try:
            assert_matches(case.implementation.tensor("project", x, w), expect_projection(x, w, case.dtype))
        except ClauseFailure:
            return f"project(x, {role}) is not x {role}ᵀ on these inputs"
    return None


def _scores(case: Case) -> str | None:
    if not case.implementation.has("attention_scores"):
        return None
    i = case.inputs
    w_q, w_k = (i.w_q[0], i.w_k[0]) if i.w_q.dim() == 3 else (i.w_q, i.w_k)  # multi-head: the first head's
    queries, keys = i.x_q @ w_q.transpose(-2, -1), i.x_kv @ w_k.transpose(-2, -1)
    try:
        assert_matches(case.implementation.tensor("attention_scores", queries, keys), expect_scores(queries, keys, case.dtype))
    except ClauseFailure:
        return "attention_scores(Q, K) is not Q Kᵀ on these inputs"
    return None


def _roles(case: Case) -> str | None:
    """W_V must shape the values and nothing else: the weights must not follow it, the context must."""
    out = case.run()
    weights = _weights(case)
    i = case.inputs
    generator = torch.Generator().manual_seed(case.problem.seed + 7)
    other_w_v = torch.randn(i.w_v.shape, generator=generator, dtype=torch.float64).to(i.w_v)
    other = case.with_inputs(Inputs(i.x_q, i.x_kv, i.w_q, i.w_k, other_w_v, i.w_o))
    changed = other.run()
    if weights is not None and changed.weights is not None and _finite(weights, changed.weights):
        bound = case.expected().weights.allowed + other.expected().weights.allowed
        if changed.weights.shape == weights.shape and max_abs_error(changed.weights, weights) > bound:
            return f"{case.function}'s weights change when only W_V changes: W_V must shape the values only"
    if _finite(out.context, changed.context) and out.context.shape == changed.context.shape:
        # the reference moves by far more than the bounds when W_V changes; the implementation must too
        moved = max_abs_error(other.expected().context.reference, case.expected().context.reference)
        bound = case.expected().context.allowed + other.expected().context.allowed
        if moved > 10 * bound and max_abs_error(changed.context, out.context.detach().to("cpu", torch.float64)) <= bound:
            return f"{case.function}'s context does not change when W_V changes: the values must come from W_V"
    return _query_key_roles(case)


def _query_key_roles(case: Case) -> str | None:
    """The weights are softmax(α·ω′) for scores ω′ built from the given weights in other roles (W_Q and W_K
    swapped, which for self-attention is the transposed ω; keys or queries projected with another weight),
    and not from W_Q and W_K: the roles are wrong, the softmax is not."""
    weights = _weights(case)
    if weights is None or not _finite(weights) or case.problem.kind not in ("self", "cross", "multihead"):
        return None
    out = case.run()
    alpha = case.fitted_scale(out)
    if alpha is not None and matches(out.weights, case.expected(alpha).weights):
        return None  # W_Q and W_K in their roles explain the weights
    i = case.inputs
    named = {"W_Q": i.w_q, "W_K": i.w_k, "W_V": i.w_v}
    for (q_name, w_q), (k_name, w_k) in itertools.product(named.items(), repeat=2):
        if (q_name, k_name) == ("W_Q", "W_K") or w_q.shape[-1] != i.x_q.shape[-1] or w_k.shape[-1] != i.x_kv.shape[-1]:
            continue
        if w_q.shape[-2] != w_k.shape[-2]:
            continue  # no scores from projections of different widths
        other = case.with_inputs(Inputs(i.x_q, i.x_kv, w_q, w_k, i.w_v, i.w_o))
        alpha = other.fitted_scale(out)
        if alpha is not None and matches(out.weights, other.expected(alpha).weights):
            return (f"{case.function}'s weights are softmax(α·ω) for queries projected with {q_name} and keys with "
                    f"{k_name}, instead of W_Q and W_K")
    return None


def _matches(case: Case, expected) -> bool:
    out = case.run()
    return (out.weights is None or matches(out.weights, expected.weights)) and matches(out.context, expected.context)


def _softmax(case: Case) -> str | None:
    """The weights (not the context: mixing is CONTEXT-MIX's) are no softmax(α·ω) over the keys for any α.

    Not judged on multi-head calls, where ω depends on using each head's own weights (MH-HEADS').
    """
    weights = _weights(case)
    if weights is None or case.problem.kind not in ("self", "cross") or not _finite(weights):
        return None  # NaN or inf for finite inputs is WEIGHTS-STABLE's business, not a wrong softmax
    alpha = case.fitted_scale()
    if alpha is not None and matches(case.run().weights, case.expected(alpha).weights):
        return None
    return f"{case.function}'s weights are not softmax(α·ω) over the keys for any scale α on these inputs"


def _probability(case: Case) -> str | None:
    weights = _weights(case)
    if weights is None or not _finite(weights):
        return None  # NaN or inf: WEIGHTS-STABLE's
    rows = weights.sum(dim=-1) != 0 if case.causal else None
    try:
        assert_weights_are_probabilities(weights, case.expected().weights, rows)
    except ClauseFailure as error:
        return str(error)
    return None


def _scale(case: Case) -> str | None:
    """Some scale α explains the outputs and 1/√d_k does not, by the tolerance policy (WEIGHTS-SCALE's check)."""
    alpha = case.fitted_scale()
    if alpha is None or not _matches(case, case.expected(alpha)) or _matches(case, case.expected()):
        return None
    return f"{case.function} scales the scores by 1/{1 / alpha:.4g} instead of 1/√d_k = 1/{math.sqrt(case.problem.d_k):.4g}"


def _mix(case: Case) -> str | None:
    """The context is no mix of the tokens' values by the returned weights, for any value projection.

    Fitted by least squares (context ≈ weights · x_kv · M for one matrix M per head), so a wrong value
    projection, which is another clause's business, does not look like a wrong mix. Where the weights are
    nearly uniform, or there are fewer queries than input features, any context fits some M; the fit is
    then tried again on a sibling case that can tell (see _sharper).
    """
    fit = _mix_misfit(case)
    if fit is None:
        return None
    misfit, allowed = fit
    if misfit > allowed:
        return f"{case.function}'s context is no mix of the values by its own weights (off by {misfit:.3g} for any value projection)"
    sibling = _sharper(case)
    fit = _mix_misfit(sibling) if sibling is not None else None
    if fit is not None and fit[0] > fit[1]:
        return (f"{case.function}'s context is no mix of the values by its own weights (off by {fit[0]:.3g} for any "
                f"value projection, on the same sizes with {sibling.problem.n_q} queries and sharper weights)")
    return None


def _mix_misfit(case: Case) -> tuple[float, float] | None:
    """How far the context is from weights · x_kv · M for the best M, and what the policy allows; None where
    it cannot be told (no weights, other shapes, NaN, an underdetermined fit)."""
    weights = _weights(case)
    if weights is None or case.problem.kind not in ("self", "cross", "multihead"):
        return None
    exact = case.exact
    x_kv = exact.x_kv.unsqueeze(-3) if case.problem.kind == "multihead" else exact.x_kv
    context = case.run().context.detach().to("cpu", torch.float64)
    if weights.shape[-1] != x_kv.shape[-2] or not _finite(weights, context):
        return None
    mixed = weights @ x_kv  # (..., [h,] n_q, d_in)
    if mixed.shape[:-1] != context.shape[:-1]:
        return None
    per_head = case.problem.kind == "multihead"
    a = mixed.movedim(-3, 0).reshape(case.problem.heads, -1, mixed.shape[-1]) if per_head else mixed.reshape(1, -1, mixed.shape[-1])
    c = context.movedim(-3, 0).reshape(case.problem.heads, -1, context.shape[-1]) if per_head else context.reshape(1, -1, context.shape[-1])
    if a.shape[-2] <= a.shape[-1]:  # no more equations than unknowns: any context fits some M
        return None
    solution = torch.linalg.lstsq(a, c).solution
    return (a @ solution - c).abs().max().item() if c.numel() else 0.0, case.expected().context.allowed


SHARP_LOGITS = 4.0  # largest |ω|/√d_k of the sibling case: weights far from uniform, far from one-hot


def _sharper(case: Case) -> Case | None:
    """The same sizes (the keys and values the mix runs over keep their number) with weights far from
    uniform and, for cross-attention, more queries than input features: a case on which the least-squares
    fit of the value projection is determined. None where it cannot be made or called."""
    problem = replace(case.problem, logit_target=SHARP_LOGITS)
    if problem.kind == "cross":
        examples = max(1, math.prod(problem.batch))
        problem = replace(problem, n_q=max(problem.n_q, -(-(problem.d_in_kv + 8) // examples)))
    try:
        sibling = case.on(problem, case.causal)
        sibling.run()
    except Exception:  # noqa: BLE001 - a detector only claims what it saw; this call is not the test's
        return None
    return sibling


def _equivariant(case: Case) -> str | None:
    if case.problem.kind not in ("self", "multihead") or case.causal:
        return None
    n = case.problem.n_q
    order = torch.arange(n - 1, -1, -1)
    i = case.inputs
    x = i.x_q.index_select(-2, order.to(i.x_q.device))
    permuted = case.with_inputs(Inputs(x, x, i.w_q, i.w_k, i.w_v, i.w_o))
    out, out_p = case.run(), permuted.run()
    if not _finite(out.context, out_p.context) or out.context.shape != out_p.context.shape:
        return None
    bound = case.expected().context.allowed + permuted.expected().context.allowed
    expected = out.context.detach().to("cpu", torch.float64).index_select(-2, order)
    if not holds(assert_agree, "context", out_p.context, expected, bound, ""):  # SYM-EQUIVARIANT's own check
        return f"{case.function}: reversing the tokens does not reverse the context (the result depends on position)"
    return None


def _accuracy(case: Case) -> str | None:
    """No more accurate than a plain bfloat16 computation: accuracy is NUM-ACCURACY's business.

    Not when the reference at a fitted scale explains the outputs in the case's own precision (a
    scale mistake), and only within the policy factor of bfloat16's own rounding error, without the
    floor: a wrong formula is much further off than rounding.
    """
    if case.dtype == LOW_PRECISION:
        return None
    out = case.run()
    alpha = case.fitted_scale(out)
    if alpha is not None and _matches(case, case.expected(alpha)):
        return None
    for scale in dict.fromkeys([None, alpha]):
        low = case.expected(scale, LOW_PRECISION)
        pairs = [(out.context, low.context)] + ([(out.weights, low.weights)] if out.weights is not None else [])
        if all(max_abs_error(value, e.reference) <= e.factor * e.baseline_error for value, e in pairs):
            return f"{case.function} is no more accurate in {case.dtype} than a plain {LOW_PRECISION} computation"
    return None


def _causal_mask(case: Case) -> str | None:
    """A causal call's weights on keys after their query are not exactly 0, or a query sees no key at all."""
    if not case.causal:
        return None
    weights = case.run().weights
    if weights is None or tuple(weights.shape[-2:]) != (case.problem.n_q, case.problem.n_kv):
        return None  # a wrong shape is API-SHAPES' business
    if not holds(assert_no_future_weight, weights):
        return f"{case.function} gives weight to keys after their query under the causal mask"
    if not holds(assert_every_query_sees_a_key, weights):
        return f"{case.function} leaves a query no weight on any key under the causal mask (it must see keys 0..i)"
    return None


# ------------------------------------------------------- the attention_weights step
# What can be seen from the step's output alone: NaN, a different answer to the same call, rows that are
# no probabilities.


def _stable_step(step: StepCase) -> str | None:
    return None if _finite(step.run()) else "the step returned NaN or inf for finite scores"


def _deterministic_step(step: StepCase) -> str | None:
    first = step.run()
    for _ in range(_repeats(first if isinstance(first, torch.Tensor) else None)):
        try:
            again = step.call()
        except ImplementationError:
            return None
        if not same(again, first):
            return "the step returned different results for the same inputs"
    return None


def _probability_step(step: StepCase) -> str | None:
    weights = step.run().detach().to("cpu", torch.float64)
    if not _finite(weights):
        return None  # NaN or inf: WEIGHTS-STABLE's
    sums = weights.sum(dim=-1)
    if holds(assert_weights_are_probabilities, weights, step.expected(), rows=sums != 0):
        return None  # rows without weight are fully masked ones: MASK-EMPTY-ROW's business
    return "the step's weight rows are not probabilities (≥ 0, summing to 1)"


def _sizes(case: Case) -> str:
    p = case.problem
    return f"n_q={p.n_q}, n_kv={p.n_kv}, d_k={p.d_k}, d_v={p.d_v}" + (f", batch {p.batch}" if p.batch else "")


@dataclass(frozen=True)
class Detector:
    """The detector of one prerequisite clause: what it looks at on a pipeline case and on a step case."""

    clause: str
    on_pipeline: Callable[[Case], str | None]
    on_step: Callable[[StepCase], str | None] | None = None
    # looked at on the very call; the others look at a causal call's unmasked twin (a causal mistake is not theirs)
    of_the_call: bool = False

    def look_for(self, case: BaseCase) -> Callable[[BaseCase], str | None] | None:
        """The detector's look at this kind of case (None: it has nothing to say about it)."""
        if isinstance(case, StepCase):
            return self.on_step
        if isinstance(case, Case):
            return self.on_pipeline
        return None


# in pipeline order: after a failure, the earliest broken step is the blocker
PIPELINE_ORDER: list[Detector] = [
    Detector("API-SHAPES", _shapes, of_the_call=True),
    Detector("WEIGHTS-STABLE", _stable, _stable_step, of_the_call=True),
    Detector("API-DETERMINISTIC", _deterministic, _deterministic_step, of_the_call=True),
    Detector("API-BATCH", _batch, of_the_call=True),
    # a prerequisite of every clause only under causal='only' (see blocking.find_blocker)
    Detector("CAUSAL-MASK", _causal_mask, of_the_call=True),
    # early: imprecision would look like a broken softmax or mix to the later ones
    Detector("NUM-ACCURACY", _accuracy),
    Detector("PROJ-LAYOUT", _project),
    Detector("SCORE-DOT", _scores),
    Detector("PROJ-ROLES", _roles),
    Detector("WEIGHTS-SOFTMAX", _softmax),
    Detector("WEIGHTS-PROBABILITY", _probability, _probability_step),
    Detector("WEIGHTS-SCALE", _scale),
    Detector("CONTEXT-MIX", _mix),
    Detector("SYM-EQUIVARIANT", _equivariant),
]
DETECTED = frozenset(d.clause for d in PIPELINE_ORDER)  # the clauses that have a detector
