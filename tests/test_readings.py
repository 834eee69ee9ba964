"""Judging through a diagnosed mistake (issue 18): a reading sees its own mistake through for the other
clauses, never for its own, and never takes another mistake for it.

In-process (LocalBackend) on the catalogue's single-mistake implementations; the mutation matrix
checks the same end to end.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings

from conformance.judge import readings
from conformance.judge.adapter import Implementation, LocalBackend
from conformance.judge.assertions import assert_matches
from conformance.judge.cases import Case, explain, outputs_check
from conformance.judge.strategies import problems

DRAWS = settings(max_examples=15, deadline=None, database=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))
# mistake -> (the reading that sees it through, the problems it shows on)
SEEN_THROUGH = {
    "SoftmaxOverQueries": ("the softmax over the queries", "cross", False),
    "ScoresTransposed": ("the scores transposed (K Qᵀ)", "self", False),
    "MaskAfterSoftmax": ("the causal mask applied after the softmax", "self", True),
}


def mistake(name: str) -> Implementation:
    return Implementation(LocalBackend(f"conformance.teaching.mistakes:{name}"))


def explanation(case: Case) -> str | None:
    """What the outputs match once the reference has failed: a reading, a scale, or None."""
    out = case.run()
    seen = explain(case, out, outputs_check(out))
    return None if seen is None else str(seen)


@pytest.mark.parametrize("name", sorted(SEEN_THROUGH))
def test_a_reading_sees_its_mistake_through_for_another_clause_only(name):
    reading, kind, causal = SEEN_THROUGH[name]
    implementation = mistake(name)
    owners = next(r.owners for r in readings.READINGS if r.name == reading)

    @DRAWS
    @given(problems(kind))
    def check(problem):
        if problem.n_q < 2:
            return  # one query: the mistake does not show
        case = Case(implementation, problem, "float32", "cpu", causal=causal, clause="PROJ-LAYOUT")
        try:
            assert_matches(case.run().weights, case.expected().weights)
            return  # the mistake does not show on this problem (symmetric scores, one key)
        except Exception:  # noqa: BLE001 - the reference fails: the reading must explain it
            pass
        assert explanation(case) == reading, problem
        for owner in owners:  # its own clauses are never judged through it
            assert explanation(replace(case, clause=owner, _memo={})) != reading

    check()


def test_another_mistake_is_not_taken_for_a_reading():
    """Keys from x_q in cross-attention (n_q = n_kv, so the shapes fit): no reading explains it. A reading's
    tolerance once came from summation orders that do not apply to it, and let this one through."""
    implementation = mistake("CrossKeysFromQueries")

    @DRAWS
    @given(problems("cross"))
    def check(problem):
        problem = replace(problem, n_kv=problem.n_q, d_in_kv=problem.d_in)
        case = Case(implementation, problem, "float32", "cpu", clause="CROSS-SOURCES")
        try:
            assert_matches(case.run().weights, case.expected().weights)
            return  # one token: x_q and x_kv give the same keys up to the scale
        except Exception:  # noqa: BLE001
            pass
        assert explanation(case) in (None,) or explanation(case).startswith("a scale of"), problem

    check()


def test_the_tolerance_of_a_reading_is_that_of_the_reference():
    """A reading is judged by the same policy: its allowance is of the reference's size, not inflated."""
    implementation = mistake("ScoresTransposed")

    @DRAWS
    @given(problems("self"))
    def check(problem):
        case = Case(implementation, problem, "float32", "cpu", clause="PROJ-LAYOUT")
        for reading in readings.READINGS:
            through = case.expected_through(reading)
            if through is not None:
                assert through.weights.allowed <= 10 * case.expected().weights.allowed, (reading.name, problem)

    check()
