"""Clause-level verdicts from test outcomes, as a table and as JSON.

Each test verifies one clause. A clause is
- failed       when any of its tests failed,
- passed       when at least one passed and none failed,
- not claimed  when every test was skipped because the implementation does
               not provide what it checks,
- unavailable  when its tests were skipped for want of hardware (no CUDA),
- not run      when none of its tests was selected (-k, a subset of files).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import spec

NOT_CLAIMED = "not claimed"
UNAVAILABLE = "unavailable"
VERDICT_ORDER = ("failed", "passed", NOT_CLAIMED, UNAVAILABLE, "not run")


@dataclass
class TestRecord:
    __test__ = False  # not a pytest test class, whatever its name
    nodeid: str
    outcome: str  # passed, failed, not claimed, unavailable, skipped
    message: str = ""
    seconds: float = 0.0
    functions: tuple[str, ...] = ()  # the implementation's functions the test called


@dataclass
class ClauseVerdict:
    id: str
    section: str
    level: str
    title: str
    points: float
    verdict: str
    reason: str
    tests: list[TestRecord] = field(default_factory=list)


def skip_kind(reason: str) -> str:
    """Classify a skip reason given by the suite ("not claimed: ...", "unavailable: ...")."""
    for kind in (NOT_CLAIMED, UNAVAILABLE):
        if reason.startswith(kind):
            return kind
    return "skipped"


class Collector:
    """Accumulates one outcome per test, keyed by the clause it verifies."""

    def __init__(self) -> None:
        self.clause_of: dict[str, str] = {}
        self.outcomes: dict[str, TestRecord] = {}

    def expect(self, nodeid: str, clause_id: str) -> None:
        self.clause_of[nodeid] = clause_id

    def record(self, outcome: TestRecord) -> None:
        previous = self.outcomes.get(outcome.nodeid)
        # a failure in any phase (setup, call, teardown) is the test's outcome
        if previous is None or previous.outcome != "failed":
            self.outcomes[outcome.nodeid] = outcome

    def __bool__(self) -> bool:
        return bool(self.clause_of)

    def verdicts(self) -> list[ClauseVerdict]:
        by_clause: dict[str, list[TestRecord]] = defaultdict(list)
        for nodeid, clause_id in self.clause_of.items():
            if nodeid in self.outcomes:
                by_clause[clause_id].append(self.outcomes[nodeid])
        result = []
        for clause in spec.load().clauses:
            tests = by_clause.get(clause.id, [])
            verdict, reason = _aggregate(tests)
            result.append(
                ClauseVerdict(clause.id, clause.section, clause.level, clause.title, clause.points, verdict, reason, tests)
            )
        return result


def _aggregate(tests: list[TestRecord]) -> tuple[str, str]:
    outcomes = [t.outcome for t in tests]
    if not tests:
        return "not run", ""
    failed = [t for t in tests if t.outcome == "failed"]
    if failed:
        return "failed", failed[0].message
    if "passed" in outcomes:
        return "passed", ""
    for kind in (NOT_CLAIMED, UNAVAILABLE):
        if kind in outcomes:
            reasons = sorted({t.message for t in tests if t.outcome == kind})
            return kind, "; ".join(reasons)
    return "not run", "; ".join(sorted({t.message for t in tests}))


def overall(verdicts: list[ClauseVerdict]) -> str:
    """'conforms', 'does not conform', or 'nothing checked'."""
    if any(v.verdict == "failed" and v.level == "MUST" for v in verdicts):
        return "does not conform"
    if not any(v.verdict == "passed" for v in verdicts):
        return "nothing checked"
    return "conforms"


def counts(verdicts: list[ClauseVerdict]) -> dict[str, int]:
    tally = {name: 0 for name in VERDICT_ORDER}
    for v in verdicts:
        tally[v.verdict] += 1
    return tally
