"""Scores, partial credit, hidden clauses and the report formats, on verdicts made up for the purpose."""

from __future__ import annotations

import pytest

import spec
from conformance.teaching.diagnosis import Diagnosis
from conformance.teaching.feedback import INTEGRITY, Outcome
from conformance.judge.report import ClauseVerdict, TestRecord
from conformance.teaching.rubric import Rubric, RubricError, load_rubric

GRADESCOPE_STATUSES = {"passed", "failed"}
GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def check_gradescope(document: dict) -> None:
    """The parts of Gradescope's results.json schema the autograder relies on."""
    assert isinstance(document["score"], (int, float))
    assert isinstance(document["tests"], list)
    for test in document["tests"]:
        assert isinstance(test["name"], str) and test["name"]
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"]
        assert test.get("status", "passed") in GRADESCOPE_STATUSES  # none: shown by score (a blocked check)
        assert isinstance(test["output"], str)
        assert test["visibility"] in GRADESCOPE_VISIBILITY


def verdict(clause_id: str, *outcomes: str, reason: str = "") -> ClauseVerdict:
    clause = spec.load().clause(clause_id)
    tests = [TestRecord(f"t{i}", o, reason if o != "passed" else "") for i, o in enumerate(outcomes)]
    overall = "failed" if "failed" in outcomes else ("passed" if "passed" in outcomes else outcomes[0].split(":")[0])
    return ClauseVerdict(clause.id, clause.section, clause.level, clause.title, clause.points, overall, reason, tests)


def outcome(rubric: Rubric = Rubric(), **kwargs) -> Outcome:
    verdicts = [
        verdict("WEIGHTS-SCALE", "passed", "failed", reason="weights[0, 1] is 0.45"),  # 3 points, half earned
        verdict("CONTEXT-MIX", "passed", "passed"),  # 3 points
        verdict("MH-HEADS", "not claimed", reason="not claimed: multihead_attention"),  # 3 points, none earned
        verdict("API-DTYPE", "passed", "not claimed", reason="not claimed: dtype:float16"),  # option: ignored
        verdict("NUM-DEVICES", "unavailable", reason="unavailable: no CUDA device"),  # not counted
    ]
    return Outcome("student.py", "", verdicts, rubric=rubric, **kwargs)


def test_partial_credit_and_what_counts():
    scores = {s.clause.id: s for s in outcome().scores}
    assert scores["WEIGHTS-SCALE"].earned == 1.5
    assert scores["CONTEXT-MIX"].earned == 3
    assert scores["MH-HEADS"].earned == 0 and "not provided: multihead_attention" in scores["MH-HEADS"].note
    assert scores["API-DTYPE"].earned == 1  # an unclaimed float16 is an option, not lost credit
    assert not scores["NUM-DEVICES"].counted
    assert outcome().score() == (5.5, 10)


def test_rubric_overrides_points_and_hides_clauses(tmp_path):
    path = tmp_path / "rubric.toml"
    path.write_text('title = "HW 4"\n[points]\nWEIGHTS-SCALE = 10\nMH-HEADS = 0\n[hidden]\nclauses = ["CONTEXT-MIX"]\n')
    rubric = load_rubric(path)
    result = outcome(rubric)
    assert result.score() == (5 + 3 + 1, 10 + 3 + 1)
    gradescope = result.to_gradescope()
    check_gradescope(gradescope)
    visibility = {t["name"].split(":")[0]: t["visibility"] for t in gradescope["tests"]}
    assert visibility["CONTEXT-MIX"] == "after_due_date" and visibility["WEIGHTS-SCALE"] == "visible"
    student = result.to_markdown()
    assert "HW 4" in student and "CONTEXT-MIX" not in student
    # the student's score is on what they see, and says what the hidden check is worth: 6 + 3 of 11 + 3 is
    # the teacher's 9 / 14 (summary.csv)
    assert "**Score on the visible checks: 6 / 11**" in student
    assert ("1 more check (3 points) is hidden until after the deadline; it is part of the grade, which is out "
            "of 14.") in student
    revealed = result.to_markdown(reveal_hidden=True)
    assert "CONTEXT-MIX" in revealed and "**Score: 9 / 14**" in revealed and "hidden" not in revealed
    assert all(t["visibility"] == "visible" for t in result.to_gradescope(reveal_hidden=True)["tests"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("[points]\nNO-SUCH = 1\n", "no clause 'NO-SUCH'"),
        ("[points]\nWEIGHTS-SCALE = -1\n", "must be a number >= 0"),
        ("[points]\nWEIGHTS-SCALE = true\n", "must be a number >= 0"),
        ("[hidden]\nclauses = ['NOPE']\n", "no clause 'NOPE'"),
        ("[grading]\nx = 1\n", r"line 1: unknown table \[grading\]"),
        ("points = [", "not valid TOML"),
    ],
)
def test_bad_rubrics_are_explained(tmp_path, text, message):
    path = tmp_path / "rubric.toml"
    path.write_text(text)
    with pytest.raises(RubricError, match=message):
        load_rubric(path)


def test_missing_rubric_file_is_explained(tmp_path):
    with pytest.raises(RubricError, match="does not exist"):
        load_rubric(tmp_path / "nope.toml")


def test_failed_clause_output_carries_the_diagnosis_and_the_reason():
    diagnosis = Diagnosis("mistake", "NoScale", "The scores are not divided by √d_k", ("WEIGHTS-SCALE",), ("self-attention",))
    gradescope = outcome(diagnoses=[diagnosis]).to_gradescope()
    test = next(t for t in gradescope["tests"] if t["name"].startswith("WEIGHTS-SCALE"))
    assert test["status"] == "failed" and test["score"] == 1.5
    assert "weights[0, 1] is 0.45" in test["output"] and "not divided by √d_k" in test["output"]
    assert "Hint: see WEIGHTS-SCALE" in test["output"]


def test_integrity_violation_scores_zero_and_says_why():
    result = outcome(violations=["opened golden/data/self/context.npy: not allowed"])
    assert result.verdict == INTEGRITY and result.score()[0] == 0
    assert "Integrity" in result.to_markdown() and result.to_gradescope()["score"] == 0
