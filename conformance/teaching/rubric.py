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

import difflib
import importlib
import re
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


TOP_KEYS = ("title", "functions", "forbid", "seed")  # keys of the top of the file, before the first [table]
TABLES = ("points", "hidden")
HIDDEN_KEY = "clauses"  # [hidden]'s one key
LAYOUT = ("a rubric has title, functions, forbid and seed at the top of the file, then the tables [points] "
          "(CLAUSE-ID = points) and [hidden] (clauses = [\"CLAUSE-ID\", ...])")


def load_rubric(path: Path | None) -> Rubric:
    """The rubric in `path`, validated against the spec; the spec's own points when path is None.

    Strict: an unknown key or table, a known key in the wrong table (a line pasted at the end of the file
    lands in the last table), a clause id the spec does not have, or a value of the wrong type is refused
    with a RubricError naming the line, the key and what was meant; a rule that silently vanished would
    grade a class by rules the teacher did not write."""
    if path is None:
        return Rubric()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RubricError(f"rubric file {path} does not exist") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RubricError(f"rubric file {path} is not valid TOML: {error}") from None
    return _Checker(path, text).rubric(data)


_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
_KEY_PATH = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_KEY_PATH})\s*\]\]?")
_ASSIGNMENT = re.compile(rf"^\s*({_KEY_PATH})\s*=")


def _key_path(text: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in re.findall(_BARE_OR_QUOTED, text))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Where each key and table of a TOML text is defined: (table..., key...) -> line number (from 1).
    A light scan, enough to point at a line; the file's meaning is tomllib's."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = _key_path(header.group(1))
            lines.setdefault(table, number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment:
            lines.setdefault(table + _key_path(assignment.group(1)), number)
    return lines


class _Checker:
    """Reads a parsed rubric key by key, refusing what does not belong where it is."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, key_lines(text)
        self.clauses = [c.id for c in spec.load().clauses]
        self.functions = list(spec.load().function_names)
        first_table = [n for key, n in self.lines.items() if len(key) == 1 and key[0] in TABLES]
        self.first_table = min(first_table, default=0)

    def refuse(self, where: tuple[str, ...], message: str) -> RubricError:
        line = self.lines.get(where) or (self.lines.get(where[:1]) if where else None)
        return RubricError(f"rubric {self.path}, line {line}: {message}" if line else f"rubric {self.path}: {message}")

    def _move_up(self) -> str:
        return f" (line {self.first_table})" if self.first_table else ""

    def _misplaced(self, table: str, key: str) -> RubricError:
        """A key of another part of the rubric found in [table]."""
        if key in TOP_KEYS:
            return self.refuse((table, key), f"`{key}` belongs at the top of the file, before the first [table]; "
                                             f"here it is inside [{table}] (TOML puts every line after a [table] "
                                             f"header into that table). Move it above the first [table]"
                                             f"{self._move_up()}")
        if key == HIDDEN_KEY:
            return self.refuse((table, key), f"`{HIDDEN_KEY}` belongs in [hidden]; here it is inside [{table}]")
        return self.refuse((table, key), f"`{key}` is a table of its own ([{key}] on a line of its own, its keys "
                                         f"below it); here it is a key inside [{table}]")

    def _clause(self, where: tuple[str, ...], name: object, what: str) -> str:
        if isinstance(name, str) and name in self.clauses:
            return name
        close = [c for c in self.clauses if isinstance(name, str) and c.lower() == name.strip().lower()]
        close = close or difflib.get_close_matches(str(name).upper(), self.clauses, n=3, cutoff=0.75)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise self.refuse(where, f"{what}: no clause {name!r} in the spec{hint}. Clause ids (spec/SPEC.md): "
                                 f"{', '.join(self.clauses)}")

    def rubric(self, data: dict) -> Rubric:
        for key, value in data.items():
            if key in TOP_KEYS:
                continue
            if key in TABLES:
                if not isinstance(value, dict):
                    example = ("[hidden]\nclauses = [\"NUM-ACCURACY\"]" if key == "hidden"
                               else "[points]\nWEIGHTS-SCALE = 5")
                    raise self.refuse((key,), f"`{key}` must be a table, written as a header on its own line "
                                              f"with its keys below it:\n{example}")
                continue
            if key == HIDDEN_KEY:
                raise self.refuse((key,), f"`{HIDDEN_KEY}` belongs in [hidden]: put a line [hidden] above it")
            if isinstance(key, str) and key.upper() in self.clauses:
                raise self.refuse((key,), f"`{key}` is a clause outside any table: a clause's points go in "
                                          f"[points] (a line [points] above it); hidden clauses are listed in "
                                          f"[hidden] as clauses = [\"{key.upper()}\"]")
            close = difflib.get_close_matches(key.lower(), [*TOP_KEYS, *TABLES], n=1, cutoff=0.6)
            kind = f"table [{key}]" if isinstance(value, dict) else f"key `{key}`"
            hint = f" (did you mean {close[0] if close[0] in TOP_KEYS else f'[{close[0]}]'}?)" if close else ""
            raise self.refuse((key,), f"unknown {kind}{hint}; {LAYOUT}")
        title = data.get("title", "")
        if not isinstance(title, str):
            raise self.refuse(("title",), f"title must be a string (the course's name), got {title!r}")
        try:
            seed = check_secret(data["seed"], f"rubric {self.path}: seed") if "seed" in data else ""
        except SecretError as error:  # the value is never repeated: it is (meant to be) a secret
            line = self.lines.get(("seed",))
            raise RubricError(str(error).replace(f"rubric {self.path}:", f"rubric {self.path}, line {line}:")
                              if line else str(error)) from None
        forbid = data.get("forbid", [])
        if not isinstance(forbid, list) or not all(isinstance(n, str) and "." in n for n in forbid):
            raise self.refuse(("forbid",), f"forbid must be a list of dotted names like "
                                           f"[\"torch.nn.functional.scaled_dot_product_attention\"], got {forbid!r}")
        functions = data.get("functions", [])
        if not isinstance(functions, list) or not all(isinstance(n, str) for n in functions) or (
            "functions" in data and not functions
        ):
            raise self.refuse(("functions",), f"functions must be a non-empty list of function names from the spec "
                                              f"({', '.join(self.functions)}), got {functions!r}")
        unknown_functions = [n for n in functions if n not in self.functions]
        if unknown_functions:
            raise self.refuse(("functions",), f"functions {unknown_functions} are not functions of the spec; "
                                              f"choose from {', '.join(self.functions)}")
        return Rubric(title, self._points(data.get("points", {})), frozenset(self._hidden(data.get("hidden", {}))),
                      frozenset(forbid), frozenset(functions), seed)

    def _points(self, table: dict) -> dict[str, float]:
        points = {}
        for key, value in table.items():
            if key in TOP_KEYS or key in TABLES or key == HIDDEN_KEY:
                raise self._misplaced("points", key)
            clause_id = self._clause(("points", key), key, "[points]")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or value != value:
                raise self.refuse(("points", key), f"points for {clause_id} must be a number >= 0 "
                                                   f"(0 takes it out of the grade), got {value!r}")
            points[clause_id] = float(value)
        return points

    def _hidden(self, table: dict) -> list[str]:
        for key in table:
            if key == HIDDEN_KEY:
                continue
            if key in TOP_KEYS or key in TABLES:
                raise self._misplaced("hidden", key)
            if isinstance(key, str) and key.upper() in self.clauses:
                raise self.refuse(("hidden", key), f"[hidden] lists the hidden clauses in one key, "
                                                   f"clauses = [\"{key.upper()}\", ...], not one key per clause")
            raise self.refuse(("hidden", key), f"unknown key `{key}` in [hidden]; its one key is "
                                               f"clauses = [\"CLAUSE-ID\", ...]")
        clauses = table.get(HIDDEN_KEY, [])
        if not isinstance(clauses, list) or not all(isinstance(c, str) for c in clauses):
            raise self.refuse(("hidden", HIDDEN_KEY), f"[hidden] clauses must be a list of clause ids like "
                                                      f"[\"NUM-ACCURACY\"], got {clauses!r}")
        return [self._clause(("hidden", HIDDEN_KEY), c, "[hidden] clauses") for c in clauses]


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
    """What a 'not claimed: a, b — a: why' skip names as missing."""
    items = test.message.removeprefix(NOT_CLAIMED).lstrip(": ").split(" — ")[0].split(", ")
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
        tried = list(dict.fromkeys(t.message.partition(" — ")[2] for t in judged
                                   if t.outcome == NOT_CLAIMED and " — " in t.message))
        note = f"not provided: {', '.join(missing)}" + (f" ({'; '.join(tried)})" if tried else "")
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
