"""Points per clause and partial credit, for teaching.

Points live with the clauses in spec/clauses.toml. A course can override them,
scope the assignment to some functions, and hide clauses from students until
after the deadline, with a rubric file:

    title = "CS 123, homework 4"
    functions = ["self_attention", "cross_attention", "multihead_attention"]   # the assignment's scope
    forbid = ["torch.nn.functional.scaled_dot_product_attention"]   # helpers the course rules out
    seed = "3f9c0a..."     # the course secret: --profile grade draws its examples from it
    [points]               # any clause id; 0 takes a clause out of the grade
    WEIGHTS-SCALE = 5
    GOLD-MULTIHEAD = 0
    [hidden]               # shown to students only after the deadline
    clauses = ["NUM-ACCURACY", "API-BATCH"]

A clause earns points × (its tests that passed) / (its tests that were judged).
Judged are the tests that passed, failed or were blocked (they could not judge
their clause because another clause failed: fix that one first), and the tests
of something the submission does not provide (a function, causal masking,
batching, autograd): those count as not passed, so a missing capability scores
zero and says so.

Left out of the grade, the same way on every machine:
- options the submission does not claim (float16 when it claims float32, a device);
- checks that depend on the grading machine: every check on a device other than
  the CPU (the CUDA copy of each test, CPU/GPU agreement), whether this machine
  has that device or not, so a file scores the same on a laptop and on a GPU
  server (they still decide the verdict where they run);
- with `functions`, what lies outside the assignment: a test that needs a
  function outside the scope, or exercised none inside it. A clause with no
  test left is "out of scope" and not part of the maximum, so a correct
  submission of exactly the scoped functions scores 100%.

Which functions a test needs comes from its @needs markers (the suite's own
test modules), the "not claimed: ..." message of a skipped test, and the
functions a test that ran called.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import spec
from conformance.judge.report import BLOCKED, NOT_CLAIMED, UNAVAILABLE, ClauseVerdict, TestRecord
from conformance.judge.secret import SecretError, check_secret

JUDGED = ("passed", "failed", BLOCKED)
CPU = "cpu"
OTHER_DEVICES = ("cuda",)  # device ids of the suite's `device` fixture besides the CPU
# what a test skipped with "not claimed: no attention function" would have drawn from (cases.FUNCTION_OF;
# not imported: this module stays light, the CLI reads rubrics before it starts a worker)
ATTENTION_FUNCTIONS = ("self_attention", "cross_attention", "multihead_attention", "multihead_attention_concat")

# why a test or a clause is not part of the grade
OUT_OF_SCOPE = "out of scope"
MACHINE = "depends on the grading machine"
OPTION = "option not claimed"
NOT_JUDGED = "not judged"


class RubricError(ValueError):
    """The rubric file is malformed; the message names the key."""


@dataclass(frozen=True)
class Rubric:
    title: str = ""
    points: dict[str, float] = field(default_factory=dict)  # overrides of the spec's points
    hidden: frozenset[str] = frozenset()
    forbid: frozenset[str] = frozenset()  # dotted names of callables a submission may not use
    functions: frozenset[str] = frozenset()  # the assignment's functions; empty: the whole spec
    # the course secret (conformance.judge.secret); '' for none. Out of repr: a rubric may be printed
    seed: str = field(default="", repr=False)

    def points_of(self, clause_id: str) -> float:
        return self.points.get(clause_id, spec.load().clause(clause_id).points)


def load_rubric(path: Path | None) -> Rubric:
    """The rubric in `path`, validated against the spec; the spec's own points when path is None."""
    if path is None:
        return Rubric()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RubricError(f"rubric file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise RubricError(f"rubric file {path} is not valid TOML: {error}") from None
    known = {c.id for c in spec.load().clauses}
    unknown_keys = sorted(set(data) - {"title", "points", "hidden", "forbid", "functions", "seed"})
    if unknown_keys:
        raise RubricError(f"rubric {path}: unknown keys {unknown_keys}; "
                          f"use title, functions, forbid, seed, [points], [hidden]")
    try:
        seed = check_secret(data["seed"], f"rubric {path}: seed") if "seed" in data else ""
    except SecretError as error:
        raise RubricError(str(error)) from None
    forbid = data.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(n, str) and "." in n for n in forbid):
        raise RubricError(f"rubric {path}: forbid must be a list of dotted names like "
                          f"'torch.nn.functional.scaled_dot_product_attention', got {forbid!r}")
    functions = data.get("functions", [])
    names = spec.load().function_names
    if not isinstance(functions, list) or not all(isinstance(n, str) for n in functions) or (
        "functions" in data and not functions
    ):
        raise RubricError(f"rubric {path}: functions must be a non-empty list of function names from the spec "
                          f"({', '.join(names)}), got {functions!r}")
    unknown_functions = [n for n in functions if n not in names]
    if unknown_functions:
        raise RubricError(f"rubric {path}: functions {unknown_functions} are not functions of the spec; "
                          f"choose from {', '.join(names)}")
    points = data.get("points", {})
    hidden = data.get("hidden", {}).get("clauses", [])
    for clause_id in [*points, *hidden]:
        if clause_id not in known:
            raise RubricError(f"rubric {path}: no clause {clause_id!r} in the spec (see spec/SPEC.md)")
    for clause_id, value in points.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise RubricError(f"rubric {path}: points for {clause_id} must be a number >= 0, got {value!r}")
    return Rubric(str(data.get("title", "")), {k: float(v) for k, v in points.items()}, frozenset(hidden),
                  frozenset(forbid), frozenset(functions), seed)


@dataclass(frozen=True)
class ClauseScore:
    clause: ClauseVerdict
    points: float  # what the clause is worth
    earned: float
    counted: bool  # False: not part of the grade (see excluded); not part of the maximum
    hidden: bool
    note: str  # one line for the student: why points were lost, or why the clause is not graded
    excluded: str = ""  # why it is not counted: OUT_OF_SCOPE, MACHINE, OPTION or NOT_JUDGED
    blockers: tuple[str, ...] = ()  # clauses whose failure kept some of its tests from judging it

    @property
    def out_of_scope(self) -> bool:
        return self.excluded == OUT_OF_SCOPE


# ------------------------------------------------------------------------------------------------
# What a test needs: its @needs markers, its skip message, the device it ran on


@cache
def _marked(module: str, test: str) -> tuple[frozenset[str], tuple[tuple[str, frozenset[str]], ...]] | None:
    """(@needs of the test function, ((parameter id, @needs of that parameter), ...)) of a suite test,
    or None when `module`.`test` is not one of the suite's tests."""
    if not module.startswith("test_") or not module.isidentifier():
        return None
    try:
        function = getattr(importlib.import_module(f"conformance.tests.{module}"), test)
    except Exception:  # noqa: BLE001 - not a test of the suite: its needs are read from its record alone
        return None
    needs: set[str] = set()
    parameters: list[tuple[str, frozenset[str]]] = []
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "needs":
            needs.update(mark.args)
        elif mark.name == "parametrize" and len(mark.args) > 1:
            for value in mark.args[1]:
                values, marks = getattr(value, "values", None), getattr(value, "marks", ())
                ident = getattr(value, "id", None)
                if ident is None and values and len(values) == 1 and isinstance(values[0], str):
                    ident = values[0]  # pytest's id of a plain string parameter
                if ident is not None:
                    wanted = {r for m in marks for r in getattr(m, "args", ()) if getattr(m, "name", "") == "needs"}
                    parameters.append((ident, frozenset(wanted)))
    return frozenset(needs), tuple(parameters)


def _parameters(nodeid: str) -> tuple[str, str, list[str]]:
    """(module stem, test name, parameter ids) of a pytest node id such as 'test_x.py::test_y[cpu-self]'."""
    path, _, rest = nodeid.partition("::")
    name, _, ids = rest.partition("[")
    return Path(path).stem, name, ids.removesuffix("]").split("-") if ids else []


def requirements(test: TestRecord) -> frozenset[str]:
    """What the test needs ('self_attention.causal', 'weights', 'dtype:float16', 'device:cuda', ...):
    its @needs markers, its 'not claimed: ...' message, and the device of its `device` parameter."""
    module, name, ids = _parameters(test.nodeid)
    needs: set[str] = {f"device:{i}" for i in ids if i in OTHER_DEVICES or i == CPU}
    marked = _marked(module, name) if name else None
    if marked is not None:
        needs |= marked[0]
        needs.update(r for ident, wanted in marked[1] if ident in ids for r in wanted)
    if test.outcome == NOT_CLAIMED:
        needs.update(_missing(test))
    return frozenset(needs)


def _missing(test: TestRecord) -> list[str]:
    """What a 'not claimed: a, b' skip names as missing."""
    items = test.message.removeprefix(NOT_CLAIMED).lstrip(": ").split(", ")
    return [i.replace("device ", "device:") for i in items if i]


def _is_option(requirement: str) -> bool:
    return requirement.startswith(("dtype:", "device:"))


def _functions_of(requirements_: frozenset[str] | list[str]) -> set[str]:
    names = spec.load().function_names
    return {r.split(".")[0] for r in requirements_ if r.split(".")[0] in names}


def exclusion(test: TestRecord, scope: frozenset[str] = frozenset()) -> str:
    """Why a test is not part of the grade ('' when it is): OUT_OF_SCOPE, MACHINE, OPTION or NOT_JUDGED."""
    needs = requirements(test)
    if scope:
        needed = _functions_of(needs)
        if test.outcome == NOT_CLAIMED and "no attention function" in test.message and not scope & set(ATTENTION_FUNCTIONS):
            return OUT_OF_SCOPE  # it would exercise whichever attention function there is: none is in scope
        if needed - scope or (test.functions and not scope & set(test.functions)):
            return OUT_OF_SCOPE
    if test.outcome == UNAVAILABLE or any(r.startswith("device:") and r != f"device:{CPU}" for r in needs):
        return MACHINE
    if test.outcome == NOT_CLAIMED:
        return OPTION if all(_is_option(m) for m in _missing(test)) else ""
    return "" if test.outcome in JUDGED else NOT_JUDGED


def _blocker(test: TestRecord) -> str:
    return getattr(test, "blocker", "") or test.message.removeprefix("blocked by ").partition(":")[0]


def score_clause(verdict: ClauseVerdict, rubric: Rubric, tainted: frozenset[str] = frozenset()) -> ClauseScore:
    """Points earned by a clause; `tainted` functions used a forbidden helper, and tests that called
    them earn nothing."""
    points = rubric.points_of(verdict.id)
    hidden = verdict.id in rubric.hidden
    why = {id(t): exclusion(t, rubric.functions) for t in verdict.tests}
    judged = [t for t in verdict.tests if not why[id(t)]]
    if not judged:
        excluded = next((r for r in (OUT_OF_SCOPE, MACHINE, OPTION) if r in why.values()), NOT_JUDGED)
        return ClauseScore(verdict, points, 0.0, False, hidden, _excluded_note(verdict, excluded, rubric), excluded)
    barred = [t for t in judged if t.outcome == "passed" and set(t.functions) & tainted]
    passed = sum(t.outcome == "passed" for t in judged) - len(barred)
    earned = round(points * passed / len(judged), 2)
    missing = list(dict.fromkeys(m for t in judged if t.outcome == NOT_CLAIMED for m in _missing(t) if not _is_option(m)))
    missing = [m for m in missing if m.split(".")[0] == m or m.split(".")[0] not in missing]  # f, not also f.causal
    blockers = list(dict.fromkeys(_blocker(t) for t in judged if t.outcome == BLOCKED))
    if any(t.outcome == "failed" for t in judged):
        note = next(t.message for t in judged if t.outcome == "failed")
    elif blockers:
        note = f"blocked by {', '.join(blockers)}: fix that first"
    elif barred:
        note = f"uses a helper the course forbids ({', '.join(sorted(set().union(*(t.functions for t in barred)) & tainted))})"
    elif missing:
        note = f"not provided: {', '.join(missing)}"
    else:
        note = ""
    return ClauseScore(verdict, points, earned, True, hidden, note, blockers=tuple(blockers))


def _excluded_note(verdict: ClauseVerdict, excluded: str, rubric: Rubric) -> str:
    if excluded == OUT_OF_SCOPE:
        outside = sorted(set().union(*(_functions_of(requirements(t)) | set(t.functions) for t in verdict.tests))
                         - rubric.functions)
        return OUT_OF_SCOPE + (f" (checks {', '.join(outside)})" if outside else "")
    if excluded == MACHINE and verdict.verdict in JUDGED:
        return f"not graded: {MACHINE} (it runs only where a CUDA device is present)"
    return verdict.reason or verdict.verdict


def total(scores: list[ClauseScore], include_hidden: bool = True) -> tuple[float, float]:
    """(earned, maximum) over the counted clauses."""
    chosen = [s for s in scores if s.counted and (include_hidden or not s.hidden)]
    return sum(s.earned for s in chosen), sum(s.points for s in chosen)
