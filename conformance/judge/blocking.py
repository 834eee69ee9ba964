"""One mistake, one verdict: a check that fails because another clause's property is broken is blocked.

A test names its clause, and its cases carry it (cases.Cases); the clause lists its prerequisites in
spec/clauses.toml. When a check of the test fails inside `judged(case, ...)`, each prerequisite's
detector looks at the same inputs for its own property (the implementation
raised or returned the wrong shape, returned NaN, answered differently twice,
mixed up batch examples, projected wrongly, ...). The first one, in pipeline
order, that sees its property broken blocks the example: it is set aside and
others are drawn, so the clause is judged on the examples that can judge it.
A test with nothing left to judge reports "blocked by <CLAUSE>: why" and
scores nothing either way. The report keeps a block only if that clause is
down (fails in its own tests, or is blocked by one that does); otherwise the
example counts as a failure (report.py), so a block can never hide a mistake.

The detectors themselves, in pipeline order, are in detectors.py. They run only
after a failure, so a correct implementation costs nothing extra, and each calls
the implementation at most a few more times.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

import pytest
from hypothesis import reject

import spec
from conformance.judge.adapter import ImplementationError
from conformance.judge.assertions import ClauseFailure
from conformance.judge.cases import BaseCase, Call
from conformance.judge.detectors import PIPELINE_ORDER

BLOCKED_PREFIX = "blocked by "
MAX_BLOCKED = 5  # examples set aside as blocked before the whole test is reported blocked


@dataclass
class _Record:
    """What the running test's examples did, for its report: the clause under test is not kept here, each
    case carries it."""

    failed: bool = False  # an example of this test failed on its own property
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (blocking clause, the failure it explains)


_record = _Record()


def begin(clause_id: str = "") -> None:
    """A test starts (called by the plugin before each test): its record starts empty.

    clause_id is accepted for the plugin's call and not kept: the checks take the clause from their cases.
    """
    global _record
    _record = _Record()


def blocks() -> tuple[tuple[str, str], ...]:
    """(blocking clause, failure message) of every example of the current test that was set aside."""
    return tuple(dict.fromkeys(_record.blocks))


def note_failure() -> None:
    _record.failed = True


def blocked(by: str, why: str, failure: str = "") -> NoReturn:
    """This example cannot be judged because clause `by` is broken on it.

    The example is set aside and others are drawn: the clause is judged on the examples that can
    judge it. After MAX_BLOCKED such examples, with none failing for this clause, the whole test is
    reported blocked. Every block is recorded with the failure it explains; the report turns it back
    into that failure unless clause `by` fails in its own tests.
    """
    _record.blocks.append((by, failure or why))
    if _record.failed or len(_record.blocks) < MAX_BLOCKED:
        reject()
    pytest.skip(f"{BLOCKED_PREFIX}{by}: {why}")


def returned_or_set_aside(calls: list[Call]) -> list[Call]:
    """The calls that returned. When every function raised on the example, it tells an interface clause
    (dtype, device, purity, determinism, quiet) nothing: it is set aside for API-SHAPES (which checks that
    valid inputs give results) and others are drawn; the test is blocked only when none can be found."""
    good = [c for c in calls if not c.error]
    if calls and not good:
        failure = f"no function returned a result; {calls[0].error}"
        blocked("API-SHAPES", f"every function raised on these inputs ({str(calls[0].error)[:200]})", failure)
    return good


def parse_block(reason: str) -> tuple[str, str] | None:
    """("API-SHAPES", "why") from a skip reason written by blocked(), else None."""
    if not reason.startswith(BLOCKED_PREFIX):
        return None
    by, _, why = reason.removeprefix(BLOCKED_PREFIX).partition(": ")
    return by, why


def clause_of(cases: Sequence[BaseCase]) -> str:
    """The clause the cases are judged for ('' when none: nothing blocks); one test judges one clause."""
    clauses = {case.clause for case in cases}
    if len(clauses) > 1:
        raise ValueError(f"cases of different clauses judged together: {sorted(clauses)}")
    return clauses.pop() if clauses else ""


def prerequisites_of(clause_id: str) -> tuple[str, ...]:
    return spec.load().clause(clause_id).prerequisites if clause_id else ()


@contextmanager
def judged(*cases: BaseCase) -> Iterator[None]:
    """Checks of the cases' clause on these cases; a failure is first offered to the clause's prerequisites."""
    try:
        yield
    except (ClauseFailure, ImplementationError) as error:
        find_blocker(cases, str(error))
        note_failure()
        raise


def prerequisite(case: BaseCase, clause_id: str, why: str, failure: str = "") -> None:
    """Block on clause_id if the case's clause lists it as a prerequisite (a check made by the test itself)."""
    if clause_id in prerequisites_of(case.clause):
        blocked(clause_id, why, failure)


def find_blocker(cases: Sequence[BaseCase], failure: str = "") -> None:
    """Block the test if a prerequisite of the cases' clause is broken on one of the cases."""
    clause_id = clause_of(cases)
    if not clause_id:
        return
    prerequisites = set(prerequisites_of(clause_id))
    if clause_id != "CAUSAL-MASK" and any(c.implementation.capabilities.causal_only for c in cases):
        prerequisites.add("CAUSAL-MASK")  # causal='only': every call is masked, so a wrong mask shows everywhere
    # in pipeline order, whatever order the spec lists them in: the earliest broken step is the blocker
    for detector in PIPELINE_ORDER:
        if detector.clause not in prerequisites:
            continue
        for case in cases:
            look = detector.look_for(case)
            if look is None:
                continue
            # a property of unmasked attention is looked at without the mask: a causal mistake is not a softmax's
            subject = case if detector.of_the_call or not case.causal else case.uncausal()
            try:
                why = look(subject)
            except ImplementationError as error:
                why = f"{case.function} raised on a valid input: {error}" if detector.clause == "API-SHAPES" else None
            except Exception:  # a detector that cannot look (odd outputs) sees nothing
                why = None
            if why:
                blocked(detector.clause, why, failure)
