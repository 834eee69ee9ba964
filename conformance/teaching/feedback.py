"""A run's report scored under a course rubric, and rendered for each reader.

An Outcome extends the judge's report (conformance.judge.run_report) with the
scores under a rubric, the diagnoses and the uses of forbidden helpers, and
renders them as the terminal table, JSON for tools, Gradescope's results.json
and a Markdown feedback file for the student. Hidden clauses appear in the
student renderings only with reveal_hidden (after the deadline); the terminal
and JSON are for the teacher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import spec
from conformance.judge.report import BLOCKED
from conformance.judge.run_report import INTEGRITY, Row, RunReport, first_line
from conformance.judge.run_report import write  # noqa: F401  (the teaching modules write through it)
from conformance.teaching.diagnosis import Diagnosis
from conformance.teaching.rubric import MACHINE, OUT_OF_SCOPE, ClauseScore, Rubric, score_clause, total
from conformance.worker.loader import LoadError, parse_target

__all__ = ["INTEGRITY", "Outcome", "student_name", "write"]


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
class Outcome(RunReport):
    rubric: Rubric = field(default_factory=Rubric)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)  # uses of helpers the course forbids, in words
    tainted: frozenset[str] = frozenset()  # functions whose tests earn nothing because of them
    pictures: list[str] = field(default_factory=list)  # feedback.md's section on the weight heatmaps (pictures.py)

    def __post_init__(self) -> None:
        self.scores = [score_clause(v, self.rubric, self.tainted) for v in self.verdicts]

    @classmethod
    def of(cls, report: RunReport, **course) -> Outcome:
        """The judge's report, scored under a course (rubric=, diagnoses=, forbidden=, tainted=)."""
        return cls(**{name: getattr(report, name) for name in RunReport.__dataclass_fields__}, **course)

    def score(self, include_hidden: bool = True) -> tuple[float, float]:
        earned, maximum = total(self.scores, include_hidden)
        return (0.0 if self.violations else earned), maximum

    def hints_for(self, clause_id: str) -> list[str]:
        return [d.sentence() for d in self.diagnoses if clause_id in d.clauses]

    # ------------------------------------------------------------------ the verdict table, scored
    def rows(self) -> list[Row]:
        rows = []
        for s in self.scores:
            v = s.clause
            shown = OUT_OF_SCOPE if s.out_of_scope and v.verdict not in ("failed", BLOCKED, "passed") else v.verdict
            label = (shown.upper() if shown == "failed" else shown) + ("*" if s.hidden else "")
            rows.append(Row(v, label, _table_reason(s), f"{s.earned:g}/{s.points:g}" if s.counted else "-"))
        return rows

    def leading_notes(self) -> list[str]:
        lines = ["* hidden from students until after the deadline"] if any(s.hidden for s in self.scores) else []
        if self.diagnoses:
            lines.append("What the failures look like:")
            lines += [f"  - {d.sentence()}" for d in self.diagnoses]
        return lines

    def rule_notes(self) -> list[str]:
        return [f"FORBIDDEN: {f}" for f in self.forbidden]

    def closing_lines(self) -> list[str]:
        earned, maximum = self.score()
        return [f"SCORE {earned:g} / {maximum:g}"]

    def to_json(self) -> dict:
        earned, maximum = self.score()
        return super().to_json() | {
            "rubric": self.rubric.title,
            "score": earned,
            "max_score": maximum,
            "forbidden": self.forbidden,
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
    return first_line(text, 160).replace("|", "\\|")


def _table_reason(score: ClauseScore) -> str:
    """What the table says about a clause: the failure, else why it lost points or is not graded."""
    verdict = score.clause
    if verdict.verdict == "failed":
        reason = first_line(verdict.reason, 10**6)
        return f"{OUT_OF_SCOPE}; {reason}" if score.out_of_scope else reason
    return score.note if score.note and (score.earned < score.points or not score.counted) else verdict.reason
