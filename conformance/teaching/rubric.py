"""Points per clause and partial credit, for teaching.

Points live with the clauses in spec/clauses.toml. A course can override them,
and hide clauses from students until after the deadline, with a rubric file:

    title = "CS 123, homework 4"
    [points]               # any clause id; 0 takes a clause out of the grade
    WEIGHTS-SCALE = 5
    GOLD-MULTIHEAD = 0
    [hidden]               # shown to students only after the deadline
    clauses = ["NUM-ACCURACY", "API-BATCH"]
    forbid = ["torch.nn.functional.scaled_dot_product_attention"]   # helpers the course rules out

A clause earns points × (its tests that passed) / (its tests that were judged),
where a test of something the submission does not provide (a function,
causal masking, batching, autograd) counts as judged and not passed, so a
missing capability scores zero and says so. Tests that could not run on this
machine (no CUDA), were deselected, or only exercise an optional dtype or
device the submission does not claim (float16 when it claims float32) do not
count.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import spec
from conformance.judge.report import NOT_CLAIMED, ClauseVerdict, TestRecord


class RubricError(ValueError):
    """The rubric file is malformed; the message names the key."""


@dataclass(frozen=True)
class Rubric:
    title: str = ""
    points: dict[str, float] = field(default_factory=dict)  # overrides of the spec's points
    hidden: frozenset[str] = frozenset()
    forbid: frozenset[str] = frozenset()  # dotted names of callables a submission may not use

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
    unknown_keys = sorted(set(data) - {"title", "points", "hidden", "forbid"})
    if unknown_keys:
        raise RubricError(f"rubric {path}: unknown keys {unknown_keys}; use title, forbid, [points], [hidden]")
    forbid = data.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(n, str) and "." in n for n in forbid):
        raise RubricError(f"rubric {path}: forbid must be a list of dotted names like "
                          f"'torch.nn.functional.scaled_dot_product_attention', got {forbid!r}")
    points = data.get("points", {})
    hidden = data.get("hidden", {}).get("clauses", [])
    for clause_id in [*points, *hidden]:
        if clause_id not in known:
            raise RubricError(f"rubric {path}: no clause {clause_id!r} in the spec (see spec/SPEC.md)")
    for clause_id, value in points.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise RubricError(f"rubric {path}: points for {clause_id} must be a number >= 0, got {value!r}")
    return Rubric(str(data.get("title", "")), {k: float(v) for k, v in points.items()}, frozenset(hidden),
                  frozenset(forbid))


@dataclass(frozen=True)
class ClauseScore:
    clause: ClauseVerdict
    points: float  # what the clause is worth
    earned: float
    counted: bool  # False: could not be judged here (unavailable, not run); not part of the maximum
    hidden: bool
    note: str  # one line for the student: why points were lost


def _optional(test: TestRecord) -> bool:
    """A test skipped only for an unclaimed dtype or device: an option, not part of the homework."""
    missing = test.message.removeprefix("not claimed: ").split(", ")
    return all(m.startswith(("dtype:", "device ", "device:")) for m in missing)


def score_clause(verdict: ClauseVerdict, rubric: Rubric, tainted: frozenset[str] = frozenset()) -> ClauseScore:
    """Points earned by a clause; `tainted` functions used a forbidden helper, and tests that called
    them earn nothing."""
    points = rubric.points_of(verdict.id)
    hidden = verdict.id in rubric.hidden
    judged = [
        t for t in verdict.tests if t.outcome in ("passed", "failed") or (t.outcome == NOT_CLAIMED and not _optional(t))
    ]
    if not judged:
        return ClauseScore(verdict, points, 0.0, False, hidden, verdict.reason or verdict.verdict)
    barred = [t for t in judged if t.outcome == "passed" and set(t.functions) & tainted]
    passed = sum(t.outcome == "passed" for t in judged) - len(barred)
    earned = points * passed / len(judged)
    missing = sorted({t.message.removeprefix("not claimed: ") for t in judged if t.outcome == NOT_CLAIMED})
    earned = round(earned, 2)
    if verdict.verdict == "failed":
        note = verdict.reason
    elif barred:
        note = f"uses a helper the course forbids ({', '.join(sorted(set().union(*(t.functions for t in barred)) & tainted))})"
    elif missing:
        note = f"not provided: {', '.join(missing)}"
    else:
        note = ""
    return ClauseScore(verdict, points, earned, True, hidden, note)


def total(scores: list[ClauseScore], include_hidden: bool = True) -> tuple[float, float]:
    """(earned, maximum) over the counted clauses."""
    chosen = [s for s in scores if s.counted and (include_hidden or not s.hidden)]
    return sum(s.earned for s in chosen), sum(s.points for s in chosen)
