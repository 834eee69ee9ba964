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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from conformance.judge import oracle
from conformance.judge.assertions import ClauseFailure, assert_matches, assert_rows_stochastic, matches
from conformance.judge.cases import Case, expect_projection, expect_scores, shapes
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


def _deterministic(case: Case) -> str | None:
    if case.device != "cpu":
        return None
    first = case.run()
    for _ in range(3):  # a dropout of small outputs can repeat itself once
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
            if tuple(a[index].shape) != tuple(b.shape) or max_abs_error(a[index], b.detach().to("cpu", torch.float64)) > bound:
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


def _fits_some_scale(case: Case) -> tuple[float | None, bool]:
    """(fitted α, whether the reference at α matches the outputs)."""
    alpha = case.fitted_scale()
    if alpha is None:
        return None, False
    return alpha, _matches(case, case.expected(alpha))


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
    eps = torch.finfo(weights.dtype if weights.dtype.is_floating_point else torch.float64).eps
    allowed = case.expected().weights.allowed + case.problem.n_kv * eps
    try:
        assert_rows_stochastic(weights, allowed, rows=weights.sum(dim=-1) != 0 if case.causal else None)
    except ClauseFailure as error:
        return str(error)
    return None


def _scale(case: Case) -> str | None:
    alpha, fits = _fits_some_scale(case)
    right = 1 / math.sqrt(case.problem.d_k)
    if fits and alpha is not None and not math.isclose(alpha, right, rel_tol=1e-3):
        return f"{case.function} scales the scores by 1/{1 / alpha:.4g} instead of 1/√d_k = 1/{math.sqrt(case.problem.d_k):.4g}"
    return None


def _mix(case: Case) -> str | None:
    """The context is no mix of the tokens' values by the returned weights, for any value projection.

    Fitted by least squares (context ≈ weights · x_kv · M for one matrix M per head), so a wrong value
    projection, which is another clause's business, does not look like a wrong mix.
    """
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
    heads = case.problem.heads if case.problem.kind == "multihead" else 1
    a = mixed.movedim(-3, 0).reshape(heads, -1, mixed.shape[-1]) if heads > 1 or case.problem.kind == "multihead" else mixed.reshape(1, -1, mixed.shape[-1])
    c = context.movedim(-3, 0).reshape(heads, -1, context.shape[-1]) if heads > 1 or case.problem.kind == "multihead" else context.reshape(1, -1, context.shape[-1])
    solution = torch.linalg.lstsq(a, c).solution
    residual = (a @ solution - c).abs().max().item() if c.numel() else 0.0
    if residual > case.expected().context.allowed:
        return f"{case.function}'s context is no mix of the values by its own weights (off by {residual:.3g} for any value projection)"
    return None


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
    if max_abs_error(out_p.context, expected) > bound:
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
    if weights is None:
        return None
    got = weights.detach().cpu()
    n_q, n_kv = case.problem.n_q, case.problem.n_kv
    future = ~oracle.allowed(n_q, n_kv, True, None, "cpu")
    if tuple(got.shape[-2:]) != (n_q, n_kv):
        return None
    if ((got != 0) & future).any():
        return f"{case.function} gives weight to keys after their query under the causal mask"
    if not (got.to(torch.float64).sum(dim=-1) > 0).all():
        return f"{case.function} leaves a query no weight on any key under the causal mask (it must see keys 0..i)"
    return None


def _sizes(case: Case) -> str:
    p = case.problem
    return f"n_q={p.n_q}, n_kv={p.n_kv}, d_k={p.d_k}, d_v={p.d_v}" + (f", batch {p.batch}" if p.batch else "")


# looked at on the very call
OF_THE_CALL = frozenset({"API-SHAPES", "WEIGHTS-STABLE", "API-DETERMINISTIC", "API-BATCH", "CAUSAL-MASK"})
DETECTORS: dict[str, Callable[[Case], str | None]] = {
    "API-SHAPES": _shapes,
    "WEIGHTS-STABLE": _stable,
    "API-DETERMINISTIC": _deterministic,
    "API-BATCH": _batch,
    "CAUSAL-MASK": _causal_mask,  # a prerequisite of every clause only under causal='only' (see find_blocker)
    "NUM-ACCURACY": _accuracy,  # early: imprecision would look like a broken softmax or mix to the later ones
    "PROJ-LAYOUT": _project,
    "SCORE-DOT": _scores,
    "PROJ-ROLES": _roles,
    "WEIGHTS-SOFTMAX": _softmax,
    "WEIGHTS-PROBABILITY": _probability,
    "WEIGHTS-SCALE": _scale,
    "CONTEXT-MIX": _mix,
    "SYM-EQUIVARIANT": _equivariant,
}
