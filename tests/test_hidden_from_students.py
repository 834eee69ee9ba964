"""Hidden clauses stay hidden: before the deadline nothing a student reads (results.json's visible parts,
feedback.md, its pictures) names a clause the rubric hides, not in a block, a diagnosis or a failure message
that mentions it; the student's score and the teacher's summary add up to the same grade; the verdict line
counts what the table shows. Made-up verdicts first, then a small class graded as a teacher would."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spec
from conformance.judge.report import BLOCKED, NOT_CLAIMED, ClauseVerdict, TestRecord
from conformance.judge.run_report import RunReport
from conformance.teaching.diagnosis import Diagnosis
from conformance.teaching.feedback import Outcome
from conformance.teaching.rubric import Rubric
from tests.conftest import REPO
from tests.test_rubric import check_gradescope

SUBMISSIONS = REPO / "tests" / "submissions"


def verdict(clause_id: str, *tests: TestRecord) -> ClauseVerdict:
    clause = spec.load().clause(clause_id)
    outcomes = [t.outcome for t in tests]
    overall = next((o for o in ("failed", BLOCKED, "passed", NOT_CLAIMED) if o in outcomes), "not run")
    reason = next((t.message for t in tests if t.outcome == overall), "")
    return ClauseVerdict(clause.id, clause.section, clause.level, clause.title, clause.points, overall, reason,
                         list(tests))


def record(name: str, outcome: str, message: str = "", blocker: str = "") -> TestRecord:
    return TestRecord(f"test_made_up.py::{name}[cpu]", outcome, message, 0.0, ("self_attention",), blocker=blocker)


def names_of(clause_ids) -> list[str]:
    """Every way a student could read a clause's name: its id and its title."""
    return [n for c in clause_ids for n in (c, spec.load().clause(c).title)]


def student_texts(result: Outcome, reveal: bool = False) -> str:
    """Everything of a rendering a student reads before the deadline (after_due_date tests are not shown)."""
    gradescope = result.to_gradescope(reveal)
    check_gradescope(gradescope)
    visible = [f"{t['name']}\n{t['output']}" for t in gradescope["tests"] if t["visibility"] == "visible"]
    return "\n".join([gradescope["output"], *visible, result.to_markdown(reveal)])


LOOKED_LIKE = ("weights[0, 0] is nan; the float64 reference is 1\n(this looked like a WEIGHTS-SOFTMAX problem, but "
               "WEIGHTS-SOFTMAX was not run (its tests were deselected), so it counts against this clause)")
HIDDEN = frozenset({"WEIGHTS-SOFTMAX", "NUM-ACCURACY"})


def made_up(hidden: frozenset[str] = HIDDEN) -> Outcome:
    verdicts = [
        verdict("WEIGHTS-SOFTMAX", record("softmax", "failed", "weights are not a softmax of the scores")),
        verdict("WEIGHTS-SCALE", record("scale", BLOCKED, "blocked by WEIGHTS-SOFTMAX: rows do not sum to 1",
                                        "WEIGHTS-SOFTMAX"), record("scale2", "passed")),
        verdict("CAUSAL-MASK", record("mask", BLOCKED, "blocked by API-SHAPES: shape (2,)", "API-SHAPES"),
                record("mask2", BLOCKED, "blocked by NUM-ACCURACY: off", "NUM-ACCURACY")),
        verdict("API-SHAPES", record("shapes", "failed", "context has shape (2,)")),
        verdict("WEIGHTS-STABLE", record("stable", "failed", LOOKED_LIKE)),
        verdict("NUM-ACCURACY", record("accuracy", "failed", "context differs by 0.3")),
        verdict("CONTEXT-MIX", record("mix", "passed")),
    ]
    diagnoses = [
        # about a visible and a hidden clause: shown, its hint naming the visible one only
        Diagnosis("mistake", "Made", "The weights are exp(s) / Σ exp(s)", ("WEIGHTS-STABLE", "WEIGHTS-SOFTMAX"),
                  ("self-attention",), ("self_attention",)),
        # about hidden clauses only: it would tell what a hidden check found
        Diagnosis("mistake", "Up", "The softmax runs over the queries", ("WEIGHTS-SOFTMAX",), ("self-attention",)),
    ]
    return Outcome("frank.py", "", verdicts, rubric=Rubric(title="HW", hidden=hidden), diagnoses=diagnoses)


def test_no_student_rendering_names_a_hidden_clause():
    result = made_up()
    text = student_texts(result)
    leaked = [name for name in names_of(HIDDEN) if name in text]
    assert not leaked, leaked
    # the teacher's table and JSON keep everything
    assert "blocked by WEIGHTS-SOFTMAX" in result.table() and "NUM-ACCURACY" in json.dumps(result.to_json())


def test_a_block_by_a_hidden_clause_says_a_hidden_check():
    tests = {t["name"].split(":")[0]: t for t in made_up().to_gradescope()["tests"]}
    assert tests["WEIGHTS-SCALE"]["output"] == ("not judged: a hidden check failed on the inputs of this check, so "
                                                "it could not be judged; hidden checks are shown after the deadline")
    assert tests["CAUSAL-MASK"]["output"].startswith("not judged: API-SHAPES and a hidden check failed on the inputs "
                                                     "of this check, so it could not be judged; fix API-SHAPES first")
    feedback = made_up().to_markdown()
    assert "| blocked by a hidden check (hidden checks are shown after the deadline) |" in feedback
    assert "| blocked by API-SHAPES and a hidden check: fix API-SHAPES first |" in feedback


def test_a_failure_that_looked_like_a_hidden_clauses_problem_keeps_only_the_failure():
    tests = {t["name"].split(":")[0]: t for t in made_up().to_gradescope()["tests"]}
    assert tests["WEIGHTS-STABLE"]["output"].startswith("weights[0, 0] is nan; the float64 reference is 1\n")
    assert "looked like" not in tests["WEIGHTS-STABLE"]["output"]
    details = made_up().to_markdown().split("### WEIGHTS-STABLE")[1]
    assert "weights[0, 0] is nan; the float64 reference is 1\n```" in details


def test_diagnoses_name_only_visible_clauses():
    result = made_up()
    feedback = result.to_markdown()
    assert ("- The weights are exp(s) / Σ exp(s) (seen in: self_attention). Hint: see WEIGHTS-STABLE: No overflow: "
            "finite weights for large scores in spec/SPEC.md.") in feedback
    assert "over the queries" not in student_texts(result)  # a diagnosis of hidden clauses only waits too
    assert "over the queries" in result.to_markdown(reveal_hidden=True)


def test_after_the_deadline_everything_is_named():
    result = made_up()
    text = student_texts(result, reveal=True)
    assert all(name in text for name in names_of(HIDDEN))
    assert "blocked by WEIGHTS-SOFTMAX: fix that first" in result.to_markdown(reveal_hidden=True)
    assert "this looked like a WEIGHTS-SOFTMAX problem" in text
    assert "hidden" not in result.to_markdown(reveal_hidden=True)


def test_the_students_score_and_the_teachers_add_up():
    """The feedback shows the score on the visible checks and what the hidden ones are worth; with them it is
    the teacher's score (summary.csv, results.json's score, which Gradescope shows once nothing is hidden)."""
    result = made_up()
    earned, maximum = result.score()
    visible, visible_max, unseen, points = result.student_score(reveal_hidden=False)
    hidden_earned = sum(s.earned for s in result.scores if s.hidden and s.counted)
    assert (visible + hidden_earned, visible_max + points) == (earned, maximum) and unseen == 2
    feedback = result.to_markdown()
    assert f"**Score on the visible checks: {visible:g} / {visible_max:g}**" in feedback
    assert (f"2 more checks ({points:g} points) are hidden until after the deadline; they are part of the grade, "
            f"which is out of {maximum:g}.") in feedback
    assert f"**Score: {earned:g} / {maximum:g}**" in result.to_markdown(reveal_hidden=True)
    gradescope = result.to_gradescope()
    assert gradescope["score"] == earned and gradescope["output"].startswith(
        f"Score on the visible checks: {visible:g} / {visible_max:g}. 2 more checks")
    one = made_up(frozenset({"NUM-ACCURACY"})).to_markdown()
    assert "1 more check (3 points) is hidden until after the deadline; it is part of the grade" in one
    assert "more checks are" not in one


def test_the_verdict_a_student_reads_is_on_the_visible_checks():
    passing = [verdict("CONTEXT-MIX", record("mix", "passed")),
               verdict("NUM-ACCURACY", record("accuracy", "failed", "context differs by 0.3"))]
    result = Outcome("a.py", "", passing, rubric=Rubric(hidden=frozenset({"NUM-ACCURACY"})))
    assert result.verdict == "does not conform"  # the teacher's
    assert "Verdict on the visible checks: conforms." in result.to_gradescope()["output"]
    assert "Verdict: does not conform." in result.to_gradescope(reveal_hidden=True)["output"]


def test_the_verdict_line_counts_what_the_table_shows():
    """A clause the table calls "out of scope" is not "not claimed" on the VERDICT line below it."""
    verdicts = [verdict("MASK-EXPLICIT", record("mask", NOT_CLAIMED, "not claimed: attention_weights.mask")),
                verdict("TOK-VOCAB", record("vocab", NOT_CLAIMED, "not claimed: build_vocab")),
                verdict("CONTEXT-MIX", record("mix", "passed"))]
    scoped = Outcome("h.py", "", verdicts, rubric=Rubric(functions=frozenset({"self_attention"})))
    table = scoped.table()
    assert "MASK-EXPLICIT        MUST   out of scope" in table
    assert table.splitlines()[-1] == "VERDICT for h.py: CONFORMS (1 passed, 2 out of scope)"
    whole = Outcome("h.py", "", verdicts)  # no scope: nothing is out of it
    assert whole.table().splitlines()[-1] == "VERDICT for h.py: CONFORMS (1 passed, 2 not claimed)"
    judge = RunReport("h.py", "", verdicts)  # the judge's own report counts verdicts as before
    assert judge.table().splitlines()[-1] == "VERDICT for h.py: CONFORMS (1 passed, 2 not claimed)"


# ------------------------------------------------------------------------------------------------ a class


CLASS = ("frank", "olivia", "heidi")  # blocks, diagnoses and failures that name the clauses hidden below
HIDDEN_IN_CLASS = ("WEIGHTS-SOFTMAX", "WEIGHTS-PROBABILITY", "NUM-ACCURACY")


def png_descriptions(folder: Path) -> str:
    try:
        from PIL import Image
    except ImportError:
        return ""
    return "\n".join(Image.open(p).text.get("Description", "") for p in sorted(folder.glob("*.png")))


def for_students(folder: Path) -> str:
    """What a student sees of their reports before the deadline: results.json's summary and visible tests,
    feedback.md (and any other Markdown beside it), the pictures' descriptions."""
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    check_gradescope(results)
    visible = [f"{t['name']}\n{t['output']}" for t in results["tests"] if t["visibility"] == "visible"]
    markdown = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.md"))]
    return "\n".join([results["output"], *visible, *markdown, png_descriptions(folder)])


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """Three students graded with a rubric hiding the clauses their blocks and messages name; one of them
    graded again with --reveal-hidden, as after the deadline."""
    root = tmp_path_factory.mktemp("hidden")
    folder = root / "class"
    folder.mkdir()
    for student in CLASS:
        shutil.copy(SUBMISSIONS / f"{student}.py", folder / f"{student}.py")
    rubric = root / "course.toml"
    rubric.write_text(f'title = "HW 4"\n[hidden]\nclauses = {json.dumps(list(HIDDEN_IN_CLASS))}\n')
    out = root / "grades"
    done = subprocess.run(
        [sys.executable, "-m", "conformance.teaching.batch", str(folder), "--out", str(out), "--rubric", str(rubric),
         "--call-timeout", "3", "--timeout", "120", "--memory-mb", "6144", "--jobs", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    revealed = root / "revealed"
    after = subprocess.run(
        [sys.executable, "-m", "conformance", "--impl", str(folder / "olivia.py"), "--rubric", str(rubric),
         "--reveal-hidden", "--gradescope", str(revealed / "results.json"), "--feedback", str(revealed / "feedback.md"),
         "--call-timeout", "3", "--profile", "grade", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=600,
    )
    assert (revealed / "feedback.md").is_file(), after.stdout[-3000:] + after.stderr[-2000:]
    return {"out": out, "rows": rows, "revealed": revealed}


def test_the_class_reports_name_no_hidden_clause(graded):
    out = graded["out"]
    names = names_of(HIDDEN_IN_CLASS)
    mentioned = 0
    for student in CLASS:
        text = for_students(out / student)
        leaked = [name for name in names if name in text]
        assert not leaked, (student, leaked, text)
        # the teacher's report names them where a visible clause's message or block does: what was redacted
        report = json.loads((out / student / "report.json").read_text(encoding="utf-8"))
        visible = [c for c in report["clauses"] if c["id"] not in HIDDEN_IN_CLASS]
        mentioned += sum(any(h in t["message"] or t.get("blocker") == h for h in HIDDEN_IN_CLASS)
                         for c in visible for t in c["tests"])
    assert mentioned, "no visible clause's message names a hidden one: this class no longer tests the redaction"


def test_the_class_feedback_and_summary_agree_on_the_grade(graded):
    out, rows = graded["out"], graded["rows"]
    for student in CLASS:
        feedback = (out / student / "feedback.md").read_text(encoding="utf-8")
        found = re.search(r"\*\*Score on the visible checks: ([\d.]+) / ([\d.]+)\*\*\n\n(\d+) more checks \(([\d.]+) "
                          r"points\) are hidden until after the deadline; they are part of the grade, which is out of "
                          r"([\d.]+)\.", feedback)
        assert found, feedback[:600]
        _, shown_max, count, points, total = map(float, found.groups())
        assert count == len(HIDDEN_IN_CLASS) and shown_max + points == total == float(rows[student]["max_score"])
        results = json.loads((out / student / "results.json").read_text(encoding="utf-8"))
        assert round(results["score"], 2) == float(rows[student]["score"])


def test_after_the_deadline_the_hidden_clauses_are_shown(graded):
    revealed, row = graded["revealed"], graded["rows"]["olivia"]
    feedback = (revealed / "feedback.md").read_text(encoding="utf-8")
    assert all(f"| {c}: " in feedback for c in HIDDEN_IN_CLASS), feedback
    assert f"**Score: {float(row['score']):g} / {float(row['max_score']):g}**" in feedback
    results = json.loads((revealed / "results.json").read_text(encoding="utf-8"))
    assert all(t["visibility"] == "visible" for t in results["tests"])
    assert {t["name"].split(":")[0] for t in results["tests"]} >= set(HIDDEN_IN_CLASS)
