"""Spec section "kernel", clause QKV-EMPTY-ROWS: a query that sees no key gets what the kernel declares.

Each source of such a query is tried where the kernel has it: a boolean mask row all False (a kernel that takes
masks), a window past every key (local_window), causal attention aligned bottom-right with more queries than keys.
The rows of those queries must be exactly 0 (masked_rows "zeros") or all NaN ("nan"), in the context and in the
weights if returned; the other rows of the same call must match the reference.

Every other kernel test zeroes these rows on both sides (KernelCase.run_checked), so they are judged here only.
A failure is first offered to QKV-ATTEND (plain attention on the same q, k, v is wrong), then to the clause of
the feature that empties the rows (the mask, the window, causal alignment): that block stands only while the
feature's own clause fails, so a kernel whose only mistake is its empty rows fails here. The sizes are small: what
is judged is a row's policy, not a long reduction.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.adapter import Implementation
from conformance.judge.assertions import ClauseFailure, assert_empty_rows
from conformance.judge.blocking import prerequisite
from conformance.judge.cases import Cases, KernelCase
from conformance.judge.strategies import MAGNITUDES, KernelProblem, alignment_problem
from conformance.tests.test_kernel import _check, _holds


@st.composite
def row_problems(draw: st.DrawFn) -> KernelProblem:
    """Small q, k, v with 3-6 more queries than keys, so that whichever the causal alignment some queries lie
    before or past every key (and some see keys)."""
    n_kv = draw(st.integers(1, 6))
    heads = draw(st.integers(1, 3))
    return KernelProblem(batch=draw(st.sampled_from(((), (2,)))), heads=heads, kv_heads=heads,
                         n_q=n_kv + draw(st.integers(3, 6)), n_kv=n_kv, d_k=draw(st.integers(1, 16)),
                         d_v=draw(st.integers(1, 16)), magnitude=draw(st.sampled_from(MAGNITUDES[:3])), mask="none",
                         mask_shape=draw(st.sampled_from(("full", "shared"))), seed=draw(st.integers(0, 2**32 - 1)))


def sources(implementation: Implementation) -> list[str]:
    """The clauses of the features through which this kernel can leave a query no key."""
    found = []
    if implementation.claims("masks"):
        found.append("QKV-MASK")
    if implementation.claims("local_window"):
        found.append("QKV-WINDOW")
    if implementation.capabilities.causal_alignment == "bottom_right":  # top-left, every query sees key 0
        found.append("QKV-CAUSAL")
    return found


def _mask_call(cases: Cases, problem: KernelProblem) -> tuple[KernelCase, str]:
    """A drawn boolean mask with some rows (per head, for a full mask) all False, one at least."""
    call = cases.kernel(replace(problem, mask="bool"))
    mask = call.mask
    generator = torch.Generator().manual_seed(problem.seed)
    rows = torch.rand(mask.shape[:-1], generator=generator) < 0.4
    rows.view(-1)[torch.randint(rows.numel(), (1,), generator=generator)] = True
    where = f"a boolean mask of shape {tuple(mask.shape)} with {int(rows.sum())} rows all False"
    return call.with_mask(mask & ~rows.to(mask.device)[..., None]), where


def _judge(call: KernelCase, source: str, where: str) -> bool:
    """The rows of the queries that see no key are as declared; the other rows match the reference. False when
    every query sees a key after all (lengths cut to a declared max_length): nothing to judge."""
    empty = call.empty_rows()
    if empty is None:
        return False
    policy = call.implementation.capabilities.masked_rows
    try:
        out = _check(call, where)  # the other rows (run_checked zeroes the empty ones on both sides)
        what = f"the row of a query that sees no key ({where})"
        assert_empty_rows("context", call.run().context, empty, policy, what)
        if out.weights is not None:
            assert_empty_rows("weights", call.run().weights, empty, policy, what)
    except ClauseFailure as error:
        if not _holds(call.plain()):
            prerequisite(call, "QKV-ATTEND", "without mask, causal or window, its context is not "
                         "softmax(q kᵀ/√d_k) v on the same q, k, v", str(error))
        # kept only while that clause fails in its own tests: else this example fails here
        prerequisite(call, source, f"the rows it empties are where {source} is judged", str(error))
        raise
    return True


@clause("QKV-EMPTY-ROWS")
@needs("attention", "masked_rows")
@example(problem=alignment_problem(7, 3), window=(1, 1), causal=False)
@given(problem=row_problems(), window=st.tuples(st.integers(0, 2), st.integers(0, 2)), causal=st.booleans())
@settings(max_examples=max(3, settings().max_examples // 3))  # each example judges every source: a few suffice
def test_a_query_that_sees_no_key_gets_what_is_declared(cases, problem, window, causal):
    found = sources(cases.implementation)
    if not found:
        pytest.skip("not claimed: masks, local_window, causal_alignment bottom_right (no query can see no key)")
    judged = False
    for source in found:
        if source == "QKV-MASK":
            call, where = _mask_call(cases, problem)
        elif source == "QKV-WINDOW":
            # n_q > n_kv + max(left, right): top-left, the last queries' windows lie past the last key;
            # bottom-right, the first queries' windows end before key 0
            call = cases.kernel(problem, causal=causal, window=window)
            where = (f"window={window} over {problem.n_q} queries and {problem.n_kv} keys ({call.alignment} aligned)"
                     f"{', causal=True' if causal else ''}")
        else:
            call = cases.kernel(problem, causal=True)
            where = (f"causal=True, bottom-right aligned, {problem.n_q} queries over {problem.n_kv} keys (the first "
                     f"{problem.n_q - problem.n_kv} see none)")
        judged = _judge(call, source, where) or judged
    if not judged:
        reject()  # a declared max_length left every query a key: another example
