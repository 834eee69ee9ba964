"""Clause-level verdicts from test outcomes, as a table and as JSON.

Each test verifies one clause. A clause is
- failed       when any of its tests failed,
- blocked      when a test could not judge it because another clause's property
               is broken on its inputs (that clause failed), and none failed,
- passed       when at least one passed and none failed or was blocked,
- not claimed  when every test was skipped because the implementation does
               not provide what it checks,
- unavailable  when its tests were skipped for want of hardware (no CUDA),
- not run      when none of its tests was selected (-k, a subset of files).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

import spec

NOT_CLAIMED = "not claimed"
UNAVAILABLE = "unavailable"
BLOCKED = "blocked"
VERDICT_ORDER = ("failed", BLOCKED, "passed", NOT_CLAIMED, UNAVAILABLE, "not run")
LOAD_FAILURE = "cannot check implementation"  # how a run that could not load its implementation ends


def load_failure(output: str) -> str:
    """The one-line reason a run gave for not loading its implementation ("cannot check implementation
    'x.py': ..."), from its output; '' if it gave none."""
    lines = [line for line in output.splitlines() if LOAD_FAILURE in line]
    return lines[-1][lines[-1].index(LOAD_FAILURE):].rstrip("! ") if lines else ""


@dataclass
class TestRecord:
    __test__ = False  # not a pytest test class, whatever its name
    nodeid: str
    outcome: str  # passed, failed, blocked, not claimed, unavailable, skipped
    message: str = ""
    seconds: float = 0.0
    functions: tuple[str, ...] = ()  # the implementation's functions the test called
    blocker: str = ""  # blocked: the clause whose broken property kept this test from judging its own
    blocks: tuple[tuple[str, str], ...] = ()  # examples set aside: (blocking clause, the failure it explains)

    def to_json(self, clause_id: str) -> dict:
        """Plain data, with the clause it verifies: what travels on a pytest report (xdist sends it)."""
        return {"clause": clause_id, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> tuple[str, TestRecord]:
        fields = {k: v for k, v in data.items() if k != "clause"}
        fields["functions"] = tuple(fields.get("functions", ()))
        fields["blocks"] = tuple(tuple(block) for block in fields.get("blocks", ()))
        return data["clause"], cls(**fields)


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
    """Classify a skip reason given by the suite ("not claimed: ...", "unavailable: ...", "blocked by ...")."""
    for kind in (NOT_CLAIMED, UNAVAILABLE, BLOCKED):
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
        _unblock(by_clause)
        result = []
        for clause in spec.load().clauses:
            tests = by_clause.get(clause.id, [])
            verdict, reason = _aggregate(tests)
            result.append(
                ClauseVerdict(clause.id, clause.section, clause.level, clause.title, clause.points, verdict, reason, tests)
            )
        return result


def _unblock(by_clause: dict[str, list[TestRecord]]) -> None:
    """A block stands only while its blocker is down: failed, or itself blocked by a clause that is down.

    Blocks are claims made by detectors on single examples; the blocking clause's own tests decide, once
    every test has run. A clause blocked by a clause that is down is down too (weights that are no softmax
    because the projection is wrong). A test that passed on its other examples, or was blocked, with an
    example set aside for a clause that is not down, becomes failed with that example's failure.

    Such a conversion can bring its own clause down, and with it the blocks others made in its name, so a
    block is decided only once its blocker's own fate is: first the blocks on clauses that stay up (no test
    of theirs is waiting), then, where clauses wait only on each other, a cycle of blocks with no failure
    behind it (each claiming the other is the cause), whose members all fail. The result depends on the
    outcomes alone, never on the order the tests ran in. This only adds failures, so it terminates.
    """
    while True:
        down = _down(by_clause)
        pending: dict[str, dict[int, list[tuple[str, str]]]] = {}  # clause -> test -> its unresolved blocks
        for clause_id, tests in by_clause.items():
            for index, test in enumerate(tests):
                unresolved = [(by, failure) for by, failure in test.blocks if by not in down]
                if test.outcome in (BLOCKED, "passed") and unresolved:
                    pending.setdefault(clause_id, {})[index] = unresolved
        if not pending:
            return
        decided: list[tuple[str, int, tuple[str, str]]] = []
        for clause_id, waiting in pending.items():  # blocks on a clause that stays up: decided now
            for index, blocks in waiting.items():
                settled = [(by, failure) for by, failure in blocks if by not in pending]
                if settled:
                    decided.append((clause_id, index, settled[0]))
        if not decided:  # only waits on each other: the cycles that wait on nothing else fail together
            edges = {c: {by for blocks in w.values() for by, _ in blocks} for c, w in pending.items()}
            reach = {c: _reachable(c, edges) for c in edges}
            for clause_id, waiting in pending.items():
                if all(clause_id in reach[other] for other in reach[clause_id]):  # a sink of the graph
                    decided += [(clause_id, index, blocks[0]) for index, blocks in waiting.items()]
        for clause_id, index, (by, failure) in decided:
            why = _why_up(by_clause.get(by, []))
            by_clause[clause_id][index] = replace(
                by_clause[clause_id][index], outcome="failed",
                message=f"{failure}\n(this looked like a {by} problem, but {by} {why}, so it counts against this "
                        f"clause)",
            )


def _why_up(tests: list[TestRecord]) -> str:
    """Why a blocking clause is not down, for the message of the failure its block turns back into."""
    if any(t.outcome == "passed" for t in tests):
        return "passes its own tests"
    if tests:
        return "does not fail its own tests"
    return "was not run (its tests were deselected)"


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for following in edges.get(todo.pop(), ()):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return seen


def _down(by_clause: dict[str, list[TestRecord]]) -> set[str]:
    """The clauses that fail their own tests, and those blocked by one of them (least fixpoint: a cycle of
    blocks with no failure behind it stays up)."""
    down = {c for c, tests in by_clause.items() if any(t.outcome == "failed" for t in tests)}
    growing = True
    while growing:
        growing = False
        for clause_id, tests in by_clause.items():
            if clause_id not in down and any(t.outcome == BLOCKED and t.blocker in down for t in tests):
                down.add(clause_id)
                growing = True
    return down


def _aggregate(tests: list[TestRecord]) -> tuple[str, str]:
    outcomes = [t.outcome for t in tests]
    if not tests:
        return "not run", ""
    failed = [t for t in tests if t.outcome == "failed"]
    if failed:
        return "failed", failed[0].message
    blocked = [t for t in tests if t.outcome == BLOCKED]
    if blocked:
        return BLOCKED, blocked[0].message
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
