"""One mistake, one verdict: a check that fails because another clause's property is broken is blocked.

A test names its clause; the clause lists its prerequisites in spec/clauses.toml.
When a check of the test fails inside `judged(...)`, each prerequisite's
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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

import pytest
import torch
from hypothesis import reject

import spec
from conformance.judge.adapter import ImplementationError
from conformance.judge.assertions import ClauseFailure
from conformance.judge.cases import Call, Case
from conformance.judge.detectors import DETECTORS, OF_THE_CALL, same

BLOCKED_PREFIX = "blocked by "
MAX_BLOCKED = 5  # examples set aside as blocked before the whole test is reported blocked


@dataclass
class _State:
    clause: str = ""
    failed: bool = False  # an example of this test failed on its own property
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (blocking clause, the failure it explains)


_state = _State()


def begin(clause_id: str) -> None:
    """A test of clause_id starts (called by the plugin before each test)."""
    global _state
    _state = _State(clause=clause_id)


def blocks() -> tuple[tuple[str, str], ...]:
    """(blocking clause, failure message) of every example of the current test that was set aside."""
    return tuple(dict.fromkeys(_state.blocks))


def note_failure() -> None:
    _state.failed = True


def blocked(by: str, why: str, failure: str = "") -> NoReturn:
    """This example cannot be judged because clause `by` is broken on it.

    The example is set aside and others are drawn: the clause is judged on the examples that can
    judge it. After MAX_BLOCKED such examples, with none failing for this clause, the whole test is
    reported blocked. Every block is recorded with the failure it explains; the report turns it back
    into that failure unless clause `by` fails in its own tests.
    """
    _state.blocks.append((by, failure or why))
    if _state.failed or len(_state.blocks) < MAX_BLOCKED:
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


@contextmanager
def judged(*cases: Case) -> Iterator[None]:
    """Checks of the current clause on these cases; a failure is first offered to the prerequisites."""
    try:
        yield
    except (ClauseFailure, ImplementationError) as error:
        find_blocker(cases, str(error))
        note_failure()
        raise


@contextmanager
def judged_step(output: torch.Tensor | None, call_again: Callable[[], torch.Tensor]) -> Iterator[None]:
    """Checks of attention_weights' output: judged() for calls without a Case.

    The step's own prerequisites that can be seen from its output alone are looked at, in pipeline
    order: NaN or inf (WEIGHTS-STABLE), a different answer to the same call (API-DETERMINISTIC) and
    weight rows that are no probabilities (WEIGHTS-PROBABILITY).
    """
    try:
        yield
    except (ClauseFailure, ImplementationError) as error:
        failure = str(error)
        prerequisites = spec.load().clause(_state.clause).prerequisites if _state.clause else ()
        if "WEIGHTS-STABLE" in prerequisites and output is not None and not torch.isfinite(output.detach().cpu()).all():
            blocked("WEIGHTS-STABLE", "the step returned NaN or inf for finite scores", failure)
        if "API-DETERMINISTIC" in prerequisites and output is not None:
            for _ in range(3):  # a dropout of small outputs can repeat itself once
                try:
                    again = call_again()
                except ImplementationError:
                    break
                if not same(again, output):
                    blocked("API-DETERMINISTIC", "the step returned different results for the same inputs", failure)
        if "WEIGHTS-PROBABILITY" in prerequisites and output is not None:
            w = output.detach().to("cpu", torch.float64)
            sums = w.sum(dim=-1)
            judged_rows = torch.isfinite(sums) & (sums != 0)  # empty rows and NaN are other clauses' business
            if ((sums - 1).abs() > 1e-3)[judged_rows].any() or (w < 0).any():
                blocked("WEIGHTS-PROBABILITY", "the step's weight rows are not probabilities (≥ 0, summing to 1)", failure)
        note_failure()
        raise


def prerequisite(clause_id: str, why: str, failure: str = "") -> None:
    """Block on clause_id if the current clause lists it as a prerequisite (a check made by the test itself)."""
    if _state.clause and clause_id in spec.load().clause(_state.clause).prerequisites:
        blocked(clause_id, why, failure)


def find_blocker(cases: tuple[Case, ...], failure: str = "") -> None:
    """Block the test if a prerequisite of the current clause is broken on one of the cases."""
    if not _state.clause:
        return
    prerequisites = set(spec.load().clause(_state.clause).prerequisites)
    if _state.clause != "CAUSAL-MASK" and any(c.implementation.capabilities.causal_only for c in cases):
        prerequisites.add("CAUSAL-MASK")  # causal='only': every call is masked, so a wrong mask shows everywhere
    # in pipeline order, whatever order the spec lists them in: the earliest broken step is the blocker
    for prerequisite, detector in DETECTORS.items():
        if prerequisite not in prerequisites:
            continue
        for case in cases:
            # a property of unmasked attention is looked at without the mask: a causal mistake is not a softmax's
            subject = case if prerequisite in OF_THE_CALL or not case.causal else case.uncausal()
            try:
                why = detector(subject)
            except ImplementationError as error:
                why = f"{case.function} raised on a valid input: {error}" if prerequisite == "API-SHAPES" else None
            except Exception:  # a detector that cannot look (odd outputs) sees nothing
                why = None
            if why:
                blocked(prerequisite, why, failure)
