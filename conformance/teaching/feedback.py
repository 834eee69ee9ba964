"""Everything a run produced, scored, and rendered for each reader.

An Outcome gathers the clause verdicts, their scores under a rubric, the
diagnoses and any integrity violation, and renders them as the terminal
table, JSON for tools, Gradescope's results.json and a Markdown feedback file
for the student. Hidden clauses appear in the student renderings only with
reveal_hidden (after the deadline); the terminal and JSON are for the teacher.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import spec
from conformance.judge.report import BLOCKED, ClauseVerdict, counts, overall
from conformance.teaching.diagnosis import Diagnosis
from conformance.teaching.rubric import MACHINE, OUT_OF_SCOPE, ClauseScore, Rubric, score_clause, total
from conformance.worker.loader import LoadError, parse_target

INTEGRITY = "integrity violation"
# lines of the table's reason column per clause at most: a failure's numbers are in the details below the
# table; what is missing or why a clause is not graded is never cut
FAILURE_LINES, NOTE_LINES = 2, 8


def student_name(target: str) -> str:
    """Who a submission is, for the student's own reports: the stem of a file, the name of a folder
    (alice.py, /grading/submissions/alice.py -> alice), else the module or object as given."""
    try:
        parsed = parse_target(target)
    except LoadError:
        return target
    if parsed.path is None or not parsed.path.name:
        return target.strip()
    name = parsed.path.stem if parsed.path.suffix == ".py" else parsed.path.name
    return name + (f":{parsed.attribute}" if parsed.attribute else "")


@dataclass
class Outcome:
    implementation: str
    description: str
    verdicts: list[ClauseVerdict]
    rubric: Rubric = field(default_factory=Rubric)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    sandbox: dict[str, str] = field(default_factory=dict)  # layer -> "active ..." / "inactive (why)"
    forbidden: list[str] = field(default_factory=list)  # uses of helpers the course forbids, in words
    tainted: frozenset[str] = frozenset()  # functions whose tests earn nothing because of them
    not_exercised: list[str] = field(default_factory=list)  # what the declared restrictions leave unchecked
    load_notes: list[str] = field(default_factory=list)  # what loading set aside (a notebook's failing cells)
    pictures: list[str] = field(default_factory=list)  # feedback.md's section on the weight heatmaps (pictures.py)
    examples: str = ""  # where the property tests' examples came from (conformance.judge.secret), never the secret

    def __post_init__(self) -> None:
        self.scores = [score_clause(v, self.rubric, self.tainted) for v in self.verdicts]

    @property
    def verdict(self) -> str:
        return INTEGRITY if self.violations else overall(self.verdicts)

    def score(self, include_hidden: bool = True) -> tuple[float, float]:
        earned, maximum = total(self.scores, include_hidden)
        return (0.0 if self.violations else earned), maximum

    def hints_for(self, clause_id: str) -> list[str]:
        return [d.sentence() for d in self.diagnoses if clause_id in d.clauses]

    # ------------------------------------------------------------------ renderings
    def table(self, width: int = 120) -> str:
        header = f"{'clause':<20} {'level':<6} {'verdict':<12} {'tests':>5} {'score':>7}  "
        rows = [header + "reason"]
        for s in self.scores:
            v = s.clause
            passed = sum(t.outcome == "passed" for t in v.tests)
            judged = sum(t.outcome in ("passed", "failed", BLOCKED) for t in v.tests)  # skips are not tests of the clause
            tests = f"{passed}/{judged}" if judged else "-"
            score = f"{s.earned:g}/{s.points:g}" if s.counted else "-"
            shown = OUT_OF_SCOPE if s.out_of_scope and v.verdict not in ("failed", BLOCKED, "passed") else v.verdict
            label = (shown.upper() if shown == "failed" else shown) + ("*" if s.hidden else "")
            most = FAILURE_LINES if v.verdict == "failed" else NOTE_LINES
            lines = _wrap(_table_reason(s), max(20, width - len(header)), most)
            rows.append(f"{v.id:<20} {v.level:<6} {label:<12} {tests:>5} {score:>7}  {lines[0]}".rstrip())
            rows += [" " * len(header) + line for line in lines[1:]]
        earned, maximum = self.score()
        tally = ", ".join(f"{n} {name}" for name, n in counts(self.verdicts).items() if n)
        rows.append("")
        if any(s.hidden for s in self.scores):
            rows.append("* hidden from students until after the deadline")
        if self.diagnoses:
            rows.append("What the failures look like:")
            rows += [f"  - {d.sentence()}" for d in self.diagnoses]
        rows += [f"INTEGRITY: {v}" for v in self.violations]
        rows += [f"FORBIDDEN: {f}" for f in self.forbidden]
        if self.not_exercised:
            rows.append("not exercised, as declared in CAPABILITIES: " + "; ".join(self.not_exercised))
        rows += [f"LOADING: {note}" for note in self.load_notes]
        if self.sandbox:
            rows.append("sandbox: " + "; ".join(f"{layer} {state}" for layer, state in self.sandbox.items()))
        if self.examples:
            rows.append(f"examples: {self.examples}")
        rows.append(f"SCORE {earned:g} / {maximum:g}")
        rows.append(f"VERDICT for {self.implementation}: {self.verdict.upper()} ({tally})")
        return "\n".join(rows)

    def to_json(self) -> dict:
        earned, maximum = self.score()
        return {
            "implementation": self.implementation,
            "description": self.description,
            "spec_version": spec.load().version,
            "rubric": self.rubric.title,
            "verdict": self.verdict,
            "score": earned,
            "max_score": maximum,
            "counts": counts(self.verdicts),
            "integrity_violations": self.violations,
            "forbidden": self.forbidden,
            "sandbox": self.sandbox,
            "examples": self.examples,
            "not_exercised": self.not_exercised,
            "load_notes": self.load_notes,
            "diagnoses": [asdict(d) | {"sentence": d.sentence()} for d in self.diagnoses],
            "functions": sorted(self.rubric.functions),  # the rubric's scope; empty: the whole spec
            "clauses": [
                asdict(s.clause) | {"points": s.points, "earned": s.earned, "counted": s.counted, "hidden": s.hidden,
                                    "excluded": s.excluded, "note": s.note}
                for s in self.scores
            ],
        }

    def _student_scores(self, reveal_hidden: bool) -> list[ClauseScore]:
        return [s for s in self.scores if s.counted and (reveal_hidden or not s.hidden)]

    def to_gradescope(self, reveal_hidden: bool = False) -> dict:
        """Gradescope's autograder results.json; hidden clauses become after_due_date tests."""
        tests = []
        for s in self.scores:
            if not s.counted:
                continue
            clause = spec.load().clause(s.clause.id)
            blocked = bool(s.blockers) and s.clause.verdict != "failed" and s.earned < s.points
            if blocked:  # not judged: no status, so Gradescope does not call it a failure of this check
                output = (f"not judged: {' and '.join(s.blockers)} failed on the inputs of this check, so it could "
                          f"not be judged; fix that first")
            else:
                output = s.note or "passed"
            hints = self.hints_for(s.clause.id)
            if hints and s.earned < s.points:
                output += "\n" + "\n".join(hints)
            test = {
                "name": f"{clause.id}: {clause.title}",
                "score": round(s.earned, 4),
                "max_score": s.points,
                "status": "passed" if s.earned >= s.points else "failed",
                "output": output,
                "visibility": "after_due_date" if s.hidden and not reveal_hidden else "visible",
            }
            if blocked:
                del test["status"]
            tests.append(test)
        earned, maximum = self.score()
        summary = [f"Score {earned:g} / {maximum:g}. Verdict: {self.verdict}."]
        outside = [s.clause.id for s in self.scores if s.out_of_scope and (reveal_hidden or not s.hidden)]
        if outside:
            summary.append(f"Not part of this assignment (out of scope): {', '.join(outside)}.")
        if self.not_exercised:
            summary.append("Not exercised, as declared: " + "; ".join(self.not_exercised) + ".")
        summary += [f"Loading: {note}." for note in self.load_notes]
        summary += [f"Integrity: {v}" for v in self.violations]
        summary += [f"Course rule: {f}" for f in self.forbidden]
        summary += [d.sentence() for d in self.diagnoses]
        return {"score": round(earned, 4), "output": "\n".join(summary), "tests": tests}

    def to_markdown(self, reveal_hidden: bool = False) -> str:
        shown = self._student_scores(reveal_hidden)
        earned = sum(s.earned for s in shown) if not self.violations else 0.0
        maximum = sum(s.points for s in shown)
        hidden = [s for s in self.scores if s.counted and s.hidden and not reveal_hidden]
        title = f"{self.rubric.title}: " if self.rubric.title else ""
        student = student_name(self.implementation)  # not the grader's path to the file
        lines = [f"# {title}feedback for {student}", "", f"**Score: {earned:g} / {maximum:g}**", ""]
        if hidden:
            lines += [f"{len(hidden)} more checks are hidden until after the deadline.", ""]
        for violation in self.violations:
            lines += [f"**Integrity:** {violation}. The score is 0.", ""]
        for use in self.forbidden:
            lines += [f"**Course rule:** {use}; the checks that call it earn no points.", ""]
        for note in self.load_notes:
            lines += [f"**Loading:** {note}.", ""]
        if self.diagnoses:
            lines += ["## What went wrong", ""]
            lines += [f"- {d.sentence()}" for d in self.diagnoses
                      if reveal_hidden or not set(d.clauses) & self.rubric.hidden]
            lines.append("")
        lines += self.pictures
        lines += ["## Checks", "", "| check | points | result |", "|---|---|---|"]
        for s in shown:
            clause = spec.load().clause(s.clause.id)
            result = "passed" if s.earned >= s.points else (s.note or s.clause.verdict)
            lines.append(f"| {clause.id}: {clause.title} | {s.earned:g} / {s.points:g} | {_cell(result)} |")
        ungraded = [s for s in self.scores if not s.counted and (reveal_hidden or not s.hidden)]
        for reason, words in ((OUT_OF_SCOPE, "Out of this assignment's scope"),
                              (MACHINE, "Not graded (they depend on the grading machine)")):
            ids = [s.clause.id for s in ungraded if s.excluded == reason]
            if ids:
                lines += ["", f"{words}: {', '.join(ids)}."]
        failing = [s for s in shown if s.earned < s.points and s.clause.verdict == "failed"]
        if failing:
            lines += ["", "## Details", ""]
            for s in failing:
                clause = spec.load().clause(s.clause.id)
                lines += [f"### {clause.id}: {clause.title}", "", clause.text, "", "What the suite saw:", "",
                          "```", s.clause.reason.strip(), "```", ""]
                if clause.mistakes:
                    lines += [f"Common mistakes: {clause.mistakes}", ""]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return _first_line(text, 160).replace("|", "\\|")


def _table_reason(score: ClauseScore) -> str:
    """What the table says about a clause: the failure, else why it lost points or is not graded."""
    verdict = score.clause
    if verdict.verdict == "failed":
        reason = _first_line(verdict.reason, 10**6)
        return f"{OUT_OF_SCOPE}; {reason}" if score.out_of_scope else reason
    return score.note if score.note and (score.earned < score.points or not score.counted) else verdict.reason


def _wrap(text: str, width: int, most: int) -> list[str]:
    """The first line of text wrapped onto lines of `width`, at most `most` of them."""
    lines = textwrap.wrap(_first_line(text, 10**6), width, break_on_hyphens=False, break_long_words=False) or [""]
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def _first_line(text: str, width: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def write(path: Path, content: str | dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=1, ensure_ascii=False) + "\n" if isinstance(content, dict) else content
    path.write_text(text, encoding="utf-8")
