"""A run's report scored under a course rubric, and rendered for each reader.

An Outcome extends the judge's report (conformance.judge.run_report) with the
scores under a rubric, the diagnoses and the uses of forbidden helpers, and
renders them as the terminal table, JSON for tools, Gradescope's results.json
and a Markdown feedback file for the student. Hidden clauses appear in the
student renderings only with reveal_hidden (after the deadline); the terminal
and JSON are for the teacher. Before the deadline nothing a student reads names a hidden clause: not its
row, nor a block, a diagnosis or a failure message that mentions it ("a hidden check" instead), and the
student's score is the score on the visible checks, with what the hidden ones are worth said beside it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import spec
from conformance.judge.report import BLOCKED, NOT_CLAIMED, VERDICT_ORDER, overall
from conformance.judge.run_report import INTEGRITY, Row, RunReport, first_line
from conformance.judge.run_report import write  # noqa: F401  (the teaching modules write through it)
from conformance.teaching.diagnosis import Diagnosis
from conformance.teaching.rubric import MACHINE, OUT_OF_SCOPE, ClauseScore, Rubric, score_clause, total
from conformance.worker.loader import LoadError, parse_target

__all__ = ["INTEGRITY", "Outcome", "Redaction", "student_name", "write"]

HIDDEN_CHECK = "a hidden check"
SHOWN_LATER = "hidden checks are shown after the deadline"


class Redaction:
    """Takes the names of hidden clauses (ids and titles) out of a text a student reads before the deadline."""

    def __init__(self, hidden: frozenset[str] | set[str] = frozenset()) -> None:
        self.hidden = frozenset(hidden)
        known = {c.id: c for c in spec.load().clauses}
        self.clauses = [known[c] for c in sorted(self.hidden, key=len, reverse=True) if c in known]
        ids = "|".join(re.escape(c) for c in sorted(self.hidden, key=len, reverse=True))
        self._ids = re.compile(rf"(?<![\w-])(?:{ids})(?![\w-])") if ids else None
        # the judge's note on a block that turned back into a failure names the blocking clause twice:
        # for a student it explains nothing without that name, so it goes as a whole
        self._looked_like = re.compile(rf"\s*\(this looked like an? (?:{ids}) problem, but .*?, so it counts "
                                       rf"against this clause\)", re.DOTALL) if ids else None

    def __call__(self, text: str) -> str:
        if not self.hidden or not text:
            return text
        text = self._looked_like.sub("", text)
        for clause in self.clauses:
            text = text.replace(f"{clause.id}: {clause.title}", HIDDEN_CHECK).replace(clause.title, HIDDEN_CHECK)
        return self._ids.sub(HIDDEN_CHECK, text)


def _blocked(blockers: tuple[str, ...], hidden: frozenset[str], gradescope: bool) -> str:
    """What a student reads about a check that other clauses' failures kept from being judged."""
    visible = [b for b in blockers if b not in hidden]
    unseen = len(blockers) - len(visible)
    if gradescope:
        names = " and ".join(visible + ([HIDDEN_CHECK] if unseen == 1 else ["hidden checks"] if unseen else []))
        first = f"fix {' and '.join(visible)} first" if visible else SHOWN_LATER
        return f"not judged: {names} failed on the inputs of this check, so it could not be judged; " + (
            "fix that first" if not unseen else first)
    if not unseen:
        return f"blocked by {', '.join(visible)}: fix that first"
    if not visible:
        return f"blocked by {HIDDEN_CHECK if unseen == 1 else 'hidden checks'} ({SHOWN_LATER})"
    return f"blocked by {', '.join(visible)} and {HIDDEN_CHECK if unseen == 1 else 'hidden checks'}: " \
           f"fix {', '.join(visible)} first"


def _count(n: int, one: str, many: str) -> str:
    return f"{n:g} {one if n == 1 else many}"


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

    def hints_for(self, clause_id: str, hidden: frozenset[str] = frozenset()) -> list[str]:
        return [d.sentence(hidden) for d in self.diagnoses if clause_id in d.clauses]

    # ------------------------------------------------------------------ what a student may see
    def hidden_from_students(self, reveal_hidden: bool) -> frozenset[str]:
        """The clauses a student's rendering must not name (none after the deadline)."""
        return frozenset() if reveal_hidden else self.rubric.hidden

    def student_diagnoses(self, reveal_hidden: bool) -> list[str]:
        """The diagnoses a student reads: none that is only about hidden clauses, no hint naming one."""
        hidden = self.hidden_from_students(reveal_hidden)
        redact = Redaction(hidden)
        return [redact(d.sentence(hidden)) for d in self.diagnoses if not d.clauses or set(d.clauses) - hidden]

    def student_score(self, reveal_hidden: bool) -> tuple[float, float, int, float]:
        """(earned, maximum) on the checks the student sees, and (how many, points) of the counted checks
        hidden from them; earned + the hidden ones' points is what score() counts, maximum + points its
        maximum: the teacher's summary and the student's feedback add up to the same grade."""
        shown = self._student_scores(reveal_hidden)
        unseen = [s for s in self.scores if s.counted and s.hidden and not reveal_hidden]
        earned = sum(s.earned for s in shown) if not self.violations else 0.0
        return earned, sum(s.points for s in shown), len(unseen), sum(s.points for s in unseen)

    def student_verdict(self, reveal_hidden: bool) -> str:
        """The verdict on the clauses the student sees: a hidden clause's failure does not show through it."""
        hidden = self.hidden_from_students(reveal_hidden)
        return INTEGRITY if self.violations else overall([v for v in self.verdicts if v.id not in hidden])

    def score_lines(self, reveal_hidden: bool, markdown: bool) -> list[str]:
        """The student's score, and when checks are hidden, what they are worth and that they count."""
        earned, maximum, unseen, points = self.student_score(reveal_hidden)
        if not unseen:
            return [f"**Score: {earned:g} / {maximum:g}**" if markdown else f"Score {earned:g} / {maximum:g}."]
        score = f"Score on the visible checks: {earned:g} / {maximum:g}"
        later = (f"{_count(unseen, 'more check', 'more checks')} ({_count(points, 'point', 'points')}) "
                 f"{'is' if unseen == 1 else 'are'} hidden until after the deadline; "
                 f"{'it is' if unseen == 1 else 'they are'} part of the grade, which is out of {maximum + points:g}.")
        return [f"**{score}**", "", later] if markdown else [f"{score}. {later}"]

    # ------------------------------------------------------------------ the verdict table, scored
    def rows(self) -> list[Row]:
        rows = []
        for s in self.scores:
            v = s.clause
            shown = _shown_verdict(s)
            label = (shown.upper() if shown == "failed" else shown) + ("*" if s.hidden else "")
            rows.append(Row(v, label, _table_reason(s), f"{s.earned:g}/{s.points:g}" if s.counted else "-"))
        return rows

    def tally(self) -> dict[str, int]:
        """The verdict line counts what the table's verdict column says ("out of scope", not "not claimed")."""
        order = list(VERDICT_ORDER)
        order.insert(order.index(NOT_CLAIMED) + 1, OUT_OF_SCOPE)
        shown = [_shown_verdict(s) for s in self.scores]
        return {name: shown.count(name) for name in dict.fromkeys([*order, *shown])}

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
        """Gradescope's autograder results.json; hidden clauses become after_due_date tests. The score is the
        whole grade (Gradescope does not show a student the total while some tests are hidden); the texts a
        student sees before the deadline name no hidden clause."""
        hidden = self.hidden_from_students(reveal_hidden)
        redact = Redaction(hidden)
        tests = []
        for s in self.scores:
            if not s.counted:
                continue
            clause = spec.load().clause(s.clause.id)
            later = s.hidden and not reveal_hidden  # shown with everything else after the deadline: not redacted
            blocked = bool(s.blockers) and s.clause.verdict != "failed" and s.earned < s.points
            if blocked:  # not judged: no status, so Gradescope does not call it a failure of this check
                output = _blocked(s.blockers, frozenset() if later else hidden, gradescope=True)
            else:
                output = s.note or "passed"
            hints = self.hints_for(s.clause.id, frozenset() if later else hidden)
            if hints and s.earned < s.points:
                output += "\n" + "\n".join(hints)
            test = {
                "name": f"{clause.id}: {clause.title}",
                "score": round(s.earned, 4),
                "max_score": s.points,
                "status": "passed" if s.earned >= s.points else "failed",
                "output": output if later else redact(output),
                "visibility": "after_due_date" if later else "visible",
            }
            if blocked:
                del test["status"]
            tests.append(test)
        earned, _ = self.score()
        summary = self.score_lines(reveal_hidden, markdown=False)
        summary[-1] += f" Verdict{' on the visible checks' if hidden else ''}: {self.student_verdict(reveal_hidden)}."
        outside = [s.clause.id for s in self.scores if s.out_of_scope and s.clause.id not in hidden]
        if outside:
            summary.append(f"Not part of this assignment (out of scope): {', '.join(outside)}.")
        if self.not_exercised:
            summary.append("Not exercised, as declared: " + "; ".join(self.not_exercised) + ".")
        summary += [f"Loading: {note}." for note in self.load_notes]
        summary += [f"Integrity: {v}" for v in self.violations]
        summary += [f"Course rule: {f}" for f in self.forbidden]
        summary += self.student_diagnoses(reveal_hidden)
        return {"score": round(earned, 4), "output": redact("\n".join(summary)), "tests": tests}

    def to_markdown(self, reveal_hidden: bool = False) -> str:
        hidden = self.hidden_from_students(reveal_hidden)
        redact = Redaction(hidden)
        shown = self._student_scores(reveal_hidden)
        title = f"{self.rubric.title}: " if self.rubric.title else ""
        student = student_name(self.implementation)  # not the grader's path to the file
        lines = [f"# {title}feedback for {student}", "", *self.score_lines(reveal_hidden, markdown=True), ""]
        for violation in self.violations:
            lines += [f"**Integrity:** {violation}. The score is 0.", ""]
        for use in self.forbidden:
            lines += [f"**Course rule:** {use}; the checks that call it earn no points.", ""]
        for note in self.load_notes:
            lines += [f"**Loading:** {note}.", ""]
        diagnoses = self.student_diagnoses(reveal_hidden)
        if diagnoses:
            lines += ["## What went wrong", "", *[f"- {d}" for d in diagnoses], ""]
        lines += self.pictures
        lines += ["## Checks", "", "| check | points | result |", "|---|---|---|"]
        for s in shown:
            clause = spec.load().clause(s.clause.id)
            if s.earned >= s.points:
                result = "passed"
            elif s.note.startswith("blocked by ") and s.blockers:
                result = _blocked(s.blockers, hidden, gradescope=False)
            else:
                result = s.note or s.clause.verdict
            lines.append(f"| {clause.id}: {clause.title} | {s.earned:g} / {s.points:g} | {_cell(redact(result))} |")
        ungraded = [s for s in self.scores if not s.counted and s.clause.id not in hidden]
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
        # a last pass over everything: a hidden clause named anywhere else (a message, the spec's text) goes too
        return redact("\n".join(lines)) + "\n"


def _shown_verdict(score: ClauseScore) -> str:
    """The table's verdict for a clause: its own, or "out of scope" for what the assignment does not ask."""
    verdict = score.clause.verdict
    return OUT_OF_SCOPE if score.out_of_scope and verdict not in ("failed", BLOCKED, "passed") else verdict


def _cell(text: str) -> str:
    return first_line(text, 160).replace("|", "\\|")


def _table_reason(score: ClauseScore) -> str:
    """What the table says about a clause: the failure, else why it lost points or is not graded."""
    verdict = score.clause
    if verdict.verdict == "failed":
        reason = first_line(verdict.reason, 10**6)
        return f"{OUT_OF_SCOPE}; {reason}" if score.out_of_scope else reason
    return score.note if score.note and (score.earned < score.points or not score.counted) else verdict.reason
