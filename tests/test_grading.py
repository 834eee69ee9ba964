"""Batch grading end to end: the sample class in tests/submissions, graded as a teacher would."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_rubric import check_gradescope

pytestmark = pytest.mark.xdist_group("sample-batch")  # one worker grades the class once (module fixture)

SUBMISSIONS = REPO / "tests" / "submissions"
EXPECTED = tomllib.loads((SUBMISSIONS / "EXPECTED.toml").read_text())
VERDICTS = {
    "full": {"conforms"},
    "partial-correct": {"conforms"},
    "mistake": {"does not conform"},
    "load-error": {"cannot load"},
    "timeout": {"does not conform"},
    "flood": {"does not conform"},
    "crash": {"does not conform"},  # the worker dies, its clauses fail, the judge goes on
    "integrity": {"integrity violation"},
    "memory": {"does not conform"},
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[Path, dict[str, dict], str]:
    out = tmp_path_factory.mktemp("grades")
    rubric = out / "rubric.toml"
    rubric.write_text('title = "Attention homework"\n[hidden]\nclauses = ["NUM-ACCURACY"]\n')
    # a relative --out, as the README writes it: the reports land beside the working directory
    done = subprocess.run(
        [sys.executable, "-m", "conformance.teaching.batch", str(SUBMISSIONS), "--out", out.name, "--rubric", str(rubric),
         "--call-timeout", "3", "--timeout", "120", "--memory-mb", "6144"],
        cwd=out.parent, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    return out, rows, done.stdout


def test_every_student_gets_a_row_and_reports(graded):
    out, rows, _ = graded
    assert set(rows) == set(EXPECTED)
    for student in EXPECTED:
        check_gradescope(json.loads((out / student / "results.json").read_text()))
        assert (out / student / "feedback.md").read_text().startswith("# ")


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_verdict_matches_what_the_submission_does(graded, student):
    _, rows, _ = graded
    expected, row = EXPECTED[student], rows[student]
    assert row["verdict"] in VERDICTS[expected["outcome"]], (student, row)
    failed = set(row["failed_clauses"].split())
    if expected["outcome"] in ("full", "partial-correct"):
        assert not failed and float(row["score"]) > 0
    if expected["outcome"] == "mistake":
        assert set(expected["failing"]) <= failed
        assert expected["mistake"] in row["diagnosis"].split(), f"{student}: diagnosed {row['diagnosis']!r}"
    if expected["outcome"] in ("load-error", "integrity"):
        assert float(row["score"]) == 0 and row["note"]


def test_partial_submission_scores_less_than_a_full_one(graded):
    _, rows, _ = graded
    assert float(rows["bob"]["score"]) < float(rows["alice"]["score"]) <= float(rows["alice"]["max_score"])


def test_hang_and_flood_are_named_in_the_reports(graded):
    out, _, _ = graded
    rupert = json.loads((out / "rupert" / "report.json").read_text())
    assert any("did not return within 3 s" in c["reason"] for c in rupert["clauses"])
    sybil = json.loads((out / "sybil" / "report.json").read_text())
    quiet = next(c for c in sybil["clauses"] if c["id"] == "API-QUIET")
    assert quiet["verdict"] == "failed" and "printed" in quiet["reason"]
    assert (out / "sybil" / "log.txt").stat().st_size < 20 * 2**20


def test_exit_and_os_exit_fail_their_clauses_and_the_run_goes_on(graded):
    out, rows, _ = graded
    trent = json.loads((out / "trent" / "report.json").read_text())
    reasons = " ".join(c["reason"] for c in trent["clauses"])
    assert "called exit(0)" in reasons and "ended the worker process (exit status 3)" in reasons
    assert float(rows["trent"]["score"]) < float(rows["alice"]["score"])


def test_memory_hog_fails_its_calls_without_stopping_the_batch(graded):
    out, _, _ = graded
    ursula = json.loads((out / "ursula" / "report.json").read_text())
    gold = next(c for c in ursula["clauses"] if c["id"] == "GOLD-SELF")
    assert gold["verdict"] == "failed" and "allocate" in gold["reason"]


def test_cheating_is_refused_and_named(graded):
    _, rows, _ = graded
    assert "not allowed while grading" in rows["victor"]["note"]
    assert "imported impl" in rows["walter"]["note"]


def test_hidden_clause_stays_hidden_from_students(graded):
    out, _, _ = graded
    results = json.loads((out / "erin" / "results.json").read_text())
    hidden = [t for t in results["tests"] if t["name"].startswith("NUM-ACCURACY")]
    assert hidden and hidden[0]["visibility"] == "after_due_date"
    assert "NUM-ACCURACY" not in (out / "erin" / "feedback.md").read_text()


def test_feedback_names_the_mistake_in_words(graded):
    out, _, _ = graded
    feedback = (out / "frank" / "feedback.md").read_text()
    assert "runs over the queries instead of over the keys" in feedback and "Hint: see WEIGHTS-SOFTMAX" in feedback
