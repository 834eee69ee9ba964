"""Everything a run produced, scored, and rendered for each reader.

An Outcome gathers the clause verdicts, their scores under a rubric, the
diagnoses and any integrity violation, and renders them as the terminal
table, JSON for tools, Gradescope's results.json and a Markdown feedback file
for the student. Hidden clauses appear in the student renderings only with
reveal_hidden (after the deadline); the terminal and JSON are for the teacher.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import spec
from conformance.teaching.diagnosis import Diagnosis
from conformance.judge.report import ClauseVerdict, counts, overall
from conformance.teaching.rubric import ClauseScore, Rubric, score_clause, total

INTEGRITY = "integrity violation"


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
        rows = [f"{'clause':<20} {'level':<6} {'verdict':<12} {'tests':>5} {'score':>7}  reason"]
        for s in self.scores:
            v = s.clause
            passed = sum(t.outcome == "passed" for t in v.tests)
            judged = sum(t.outcome in ("passed", "failed") for t in v.tests)  # skips are not tests of the clause
            tests = f"{passed}/{judged}" if judged else "-"
            score = f"{s.earned:g}/{s.points:g}" if s.counted else "-"
            label = (v.verdict.upper() if v.verdict == "failed" else v.verdict) + ("*" if s.hidden else "")
            reason = _first_line(v.reason, max(20, width - 56))
            rows.append(f"{v.id:<20} {v.level:<6} {label:<12} {tests:>5} {score:>7}  {reason}".rstrip())
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
        if self.sandbox:
            rows.append("sandbox: " + "; ".join(f"{layer} {state}" for layer, state in self.sandbox.items()))
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
            "diagnoses": [asdict(d) | {"sentence": d.sentence()} for d in self.diagnoses],
            "clauses": [
                asdict(s.clause) | {"points": s.points, "earned": s.earned, "counted": s.counted, "hidden": s.hidden}
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
            output = s.note or "passed"
            hints = self.hints_for(s.clause.id)
            if hints and s.earned < s.points:
                output += "\n" + "\n".join(hints)
            tests.append({
                "name": f"{clause.id}: {clause.title}",
                "score": round(s.earned, 4),
                "max_score": s.points,
                "status": "passed" if s.earned >= s.points else "failed",
                "output": output,
                "visibility": "after_due_date" if s.hidden and not reveal_hidden else "visible",
            })
        earned, maximum = self.score()
        summary = [f"Score {earned:g} / {maximum:g}. Verdict: {self.verdict}."]
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
        lines = [f"# {title}feedback for {self.implementation}", "", f"**Score: {earned:g} / {maximum:g}**", ""]
        if hidden:
            lines += [f"{len(hidden)} more checks are hidden until after the deadline.", ""]
        for violation in self.violations:
            lines += [f"**Integrity:** {violation}. The score is 0.", ""]
        for use in self.forbidden:
            lines += [f"**Course rule:** {use}; the checks that call it earn no points.", ""]
        if self.diagnoses:
            lines += ["## What went wrong", ""]
            lines += [f"- {d.sentence()}" for d in self.diagnoses
                      if reveal_hidden or not set(d.clauses) & self.rubric.hidden]
            lines.append("")
        lines += ["## Checks", "", "| check | points | result |", "|---|---|---|"]
        for s in shown:
            clause = spec.load().clause(s.clause.id)
            result = "passed" if s.earned >= s.points else (s.note or s.clause.verdict)
            lines.append(f"| {clause.id}: {clause.title} | {s.earned:g} / {s.points:g} | {_cell(result)} |")
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


def _first_line(text: str, width: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def write(path: Path, content: str | dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=1, ensure_ascii=False) + "\n" if isinstance(content, dict) else content
    path.write_text(text, encoding="utf-8")
