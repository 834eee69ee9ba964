"""Batch grading end to end: the sample class in tests/submissions, graded as a teacher would."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import spec
from tests.conftest import REPO
from tests.test_rubric import check_gradescope

INDEX = re.compile(r"\w+\[([0-9, ]+)\] is")  # "weights[0, 3] is 0.45 but ...": the counterexample's element

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
    (out / "progress.txt").write_text(done.stderr)  # the progress lines (stderr; stdout has a line per student)
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    return out, rows, done.stdout


def test_progress_is_plain_lines_in_a_log(graded):
    out, rows, _ = graded
    lines = [line for line in (out / "progress.txt").read_text().splitlines() if line.startswith("progress: ")]
    total = len(EXPECTED)  # the students graded; the folder's other entries take no time
    assert len(lines) == total and lines[-1].startswith(f"progress: [{'#' * 24}] {total}/{total} students")
    assert "left" in lines[0] and "\r" not in "".join(lines)  # an estimate, and nothing redrawn in a log


def test_every_student_gets_a_row_and_reports(graded):
    out, rows, _ = graded
    # the class folder's other entries get a row too, saying why they are not graded
    others = {"README.md": "a .md file", "EXPECTED.toml": "a .toml file",
              "adversarial": "folder without an __init__.py"}
    assert set(rows) == set(EXPECTED) | set(others)
    for entry, why in others.items():
        assert rows[entry]["verdict"] == "cannot grade" and why in rows[entry]["note"], rows[entry]
        assert rows[entry]["file"] == entry and float(rows[entry]["score"]) == 0
    for student in EXPECTED:
        check_gradescope(json.loads((out / student / "results.json").read_text()))
        assert (out / student / "feedback.md").read_text().startswith("# ")


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_verdict_matches_what_the_submission_does(graded, student):
    out, rows, _ = graded
    expected, row = EXPECTED[student], rows[student]
    assert row["verdict"] in VERDICTS[expected["outcome"]], (student, row)
    failed = set(row["failed_clauses"].split())
    if expected["outcome"] in ("full", "partial-correct"):
        assert not failed and float(row["score"]) > 0
    if expected["outcome"] == "mistake":
        assert set(expected["failing"]) <= failed
        # in words, as the student reads it; the class name is for tools, in report.json
        words = mistakes_by_name()[expected["mistake"]].__doc__.strip().rstrip(".")
        assert words in row["diagnosis"] and expected["mistake"] not in row["diagnosis"], (student, row["diagnosis"])
        report = json.loads((out / student / "report.json").read_text())
        assert expected["mistake"] in [d["title"] for d in report["diagnoses"]]
    if expected["outcome"] in ("load-error", "integrity"):
        assert float(row["score"]) == 0 and row["note"]


def test_scores_are_the_ones_recorded_and_explained(graded):
    """EXPECTED.toml records each score with why it is what it is: a change of score is a reviewed change."""
    _, rows, _ = graded
    scored = {student: e["score"] for student, e in EXPECTED.items() if "score" in e}
    assert scored, "EXPECTED.toml records no score"
    got = {student: float(rows[student]["score"]) for student in scored}
    assert got == pytest.approx(scored, abs=0.011), {s: (got[s], scored[s]) for s in scored if abs(got[s] - scored[s]) > 0.011}


def test_a_mistake_fails_only_its_own_clauses_those_it_breaks_and_the_end_to_end_ones(graded):
    from conformance.teaching import mistakes

    _, rows, _ = graded
    end_to_end = {c.id for c in spec.load().clauses if c.end_to_end}
    for student, expected in EXPECTED.items():
        if expected["outcome"] != "mistake":
            continue
        mistake = getattr(mistakes, expected["mistake"])
        allowed = set(mistake.catches) | set(mistake.breaks) | end_to_end
        failed = set(rows[student]["failed_clauses"].split())
        assert failed <= allowed, f"{student}: collateral failures {sorted(failed - allowed)}"


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


def mistakes_by_name() -> dict[str, type]:
    from conformance.teaching import mistakes

    return {m.__name__: m for m in mistakes.MISTAKES}


def test_diagnoses_name_each_place_once_and_add_no_noise(graded):
    out, _, _ = graded
    for student in ("erin", "frank", "peggy"):
        feedback = (out / student / "feedback.md").read_text()
        section = feedback.split("## What went wrong")[1].split("## Checks")[0]
        bullets = [line for line in section.splitlines() if line.startswith("- ")]
        # one named mistake: what it already explains in the same function (peggy's cross_attention cannot
        # multiply values from x_q with 8 keys) is no second bullet
        assert len(bullets) == 1, (student, bullets)
        seen = bullets[0].split("(seen in: ")[1].split(")")[0].split(", ")
        assert len(seen) == len(set(seen)) and all(" " not in place for place in seen), (student, seen)


def test_batch_counterexamples_are_shrunk(graded):
    """The default batch profile shrinks failures: a student reads weights[1, 0], not weights[0, 162, 31]."""
    out, _, _ = graded
    largest = {}
    for student, expected in EXPECTED.items():
        if expected["outcome"] != "mistake":
            continue
        report = json.loads((out / student / "report.json").read_text())
        for clause in report["clauses"]:
            for test in clause["tests"]:
                if test["outcome"] == "failed" and "test_golden" not in test["nodeid"]:  # the seed's fixed inputs
                    for index in INDEX.findall(test["message"]):
                        largest[test["nodeid"]] = max([largest.get(test["nodeid"], 0), *map(int, index.split(", "))])
    assert largest and max(largest.values()) < 32, {k: v for k, v in largest.items() if v >= 32}



def test_a_masked_mistake_is_pictured_in_the_feedback(graded):
    """ivan fills the masked scores with 0 instead of -inf: where a row's scores are not large, its future
    keys keep weight. His feedback shows his causal weights next to the expected ones, with exactly the
    weights that differ outlined (between the tolerance and 1e-3 either may be)."""
    out, _, _ = graded
    pytest.importorskip("matplotlib", reason="unavailable: matplotlib is not installed ([teaching] extra)")
    from PIL import Image

    from conformance.teaching import mistakes
    from tests.test_pictures import outlined, seed_weights

    feedback = (out / "ivan" / "feedback.md").read_text()
    assert "](weights-causal.png)" in feedback and "## Your attention weights on the seed sentence" in feedback
    description, cells = outlined(out / "ivan" / "weights-causal.png")
    ivan = importlib.util.spec_from_file_location("ivan", SUBMISSIONS / "ivan.py")
    module = importlib.util.module_from_spec(ivan)
    ivan.loader.exec_module(module)
    difference = (seed_weights(module, True) - seed_weights(mistakes.Pipeline(), True)).abs()
    clearly = {tuple(c) for c in (difference > 1e-3).nonzero().tolist()}
    at_all = {tuple(c) for c in (difference > 1e-7).nonzero().tolist()}
    assert description.startswith("weights 6x6 of ") and clearly and clearly <= cells <= at_all, description
    # alice is right: her pictures are drawn with nothing outlined
    assert "differing cells: none" in Image.open(out / "alice" / "weights-causal.png").text["Description"]
