"""What one run found, rendered for the terminal (the verdict table) and for tools (JSON).

The judge's report knows verdicts, integrity violations, the sandbox and what the run could not
exercise; scores under a course rubric, diagnoses and the student's renderings are added above it
(conformance.teaching.feedback.Outcome extends it), through the hook pytest_conformance_report.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import spec
from conformance.judge.report import BLOCKED, ClauseVerdict, counts, overall

INTEGRITY = "integrity violation"
# lines of the table's reason column per clause at most: a failure's numbers are in the details below the
# table; what is missing or why a clause is not graded is never cut
FAILURE_LINES, NOTE_LINES = 2, 8


@dataclass(frozen=True)
class Row:
    """One clause's line of the verdict table."""

    verdict: ClauseVerdict
    label: str  # the verdict column
    reason: str
    score: str | None = None  # the score column; None: the table has none


@dataclass
class RunReport:
    implementation: str
    description: str
    verdicts: list[ClauseVerdict]
    violations: list[str] = field(default_factory=list)
    sandbox: dict[str, str] = field(default_factory=dict)  # layer -> "active ..." / "inactive (why)"
    not_exercised: list[str] = field(default_factory=list)  # what the declared restrictions leave unchecked
    load_notes: list[str] = field(default_factory=list)  # what loading set aside (a notebook's failing cells)
    examples: str = ""  # where the property tests' examples came from (conformance.judge.secret), never the secret
    refused: list[str] = field(default_factory=list)  # helpers the worker refused (a course forbids them), by name
    callers_of_refused: frozenset[str] = frozenset()  # the implementation's functions seen calling one

    @property
    def verdict(self) -> str:
        return INTEGRITY if self.violations else overall(self.verdicts)

    # ------------------------------------------------------------------ what a report above adds
    def rows(self) -> list[Row]:
        return [Row(v, v.verdict.upper() if v.verdict == "failed" else v.verdict, v.reason) for v in self.verdicts]

    def leading_notes(self) -> list[str]:
        """Lines between the table and the integrity lines (footnotes, diagnoses)."""
        return []

    def rule_notes(self) -> list[str]:
        """Lines after the integrity lines (a course's rules)."""
        return []

    def closing_lines(self) -> list[str]:
        """Lines just before the verdict (a score)."""
        return []

    def tally(self) -> dict[str, int]:
        """Clauses per verdict, for the verdict line; a report above that labels rows otherwise counts its labels."""
        return counts(self.verdicts)

    # ------------------------------------------------------------------ renderings
    def table(self, width: int = 120) -> str:
        rows = self.rows()
        scored = any(r.score is not None for r in rows)
        header = f"{'clause':<20} {'level':<6} {'verdict':<12} {'tests':>5} " + (f"{'score':>7}  " if scored else " ")
        lines = [header + "reason"]
        for row in rows:
            v = row.verdict
            passed = sum(t.outcome == "passed" for t in v.tests)
            judged = sum(t.outcome in ("passed", "failed", BLOCKED) for t in v.tests)  # skips are not tests of the clause
            tests = f"{passed}/{judged}" if judged else "-"
            score = f"{row.score or '-':>7}  " if scored else " "
            most = FAILURE_LINES if v.verdict == "failed" else NOTE_LINES
            reason = _wrap(row.reason, max(20, width - len(header)), most)
            lines.append(f"{v.id:<20} {v.level:<6} {row.label:<12} {tests:>5} {score}{reason[0]}".rstrip())
            lines += [" " * len(header) + line for line in reason[1:]]
        tally = ", ".join(f"{n} {name}" for name, n in self.tally().items() if n)
        lines.append("")
        lines += self.leading_notes()
        lines += [f"INTEGRITY: {v}" for v in self.violations]
        lines += self.rule_notes()
        if self.not_exercised:
            lines.append("not exercised, as declared in CAPABILITIES: " + "; ".join(self.not_exercised))
        lines += [f"LOADING: {note}" for note in self.load_notes]
        if self.sandbox:
            lines.append("sandbox: " + "; ".join(f"{layer} {state}" for layer, state in self.sandbox.items()))
        if self.examples:
            lines.append(f"examples: {self.examples}")
        lines += self.closing_lines()
        lines.append(f"VERDICT for {self.implementation}: {self.verdict.upper()} ({tally})")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "implementation": self.implementation,
            "description": self.description,
            "spec_version": spec.load().version,
            "verdict": self.verdict,
            "counts": counts(self.verdicts),
            "integrity_violations": self.violations,
            "sandbox": self.sandbox,
            "examples": self.examples,
            "not_exercised": self.not_exercised,
            "load_notes": self.load_notes,
            "clauses": [asdict(v) for v in self.verdicts],
        }


def _wrap(text: str, width: int, most: int) -> list[str]:
    """The first line of text wrapped onto lines of `width`, at most `most` of them."""
    lines = textwrap.wrap(first_line(text, 10**6), width, break_on_hyphens=False, break_long_words=False) or [""]
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def first_line(text: str, width: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def write(path: Path, content: str | dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=1, ensure_ascii=False) + "\n" if isinstance(content, dict) else content
    path.write_text(text, encoding="utf-8")
