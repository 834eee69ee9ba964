"""A teacher's first hour (issue 18), once and end to end through the teacher's commands: a rubric scoped to
causal self-attention with SDPA forbidden and NUM-ACCURACY hidden, a class of five written as students write
them (plain functions, no CAPABILITIES), graded with `python -m conformance.teaching.batch`; then the correct
student through the Gradescope autograder zip in a fake Gradescope root, and through `check()`.

Correct code scores 100 %; one mistake costs its own clauses, the clauses the spec says it truly breaks and the
end-to-end ones, not what lies upstream of it; a course rule applies; the hidden clause stays hidden; the
terminal, summary.csv, feedback.md and results.json tell the same grade. One batch run, one autograder run,
one check() run (module-scoped fixtures)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spec
from tests.conftest import REPO
from tests.test_autograder import gradescope_root
from tests.test_capabilities_by_trying import HOMEWORK
from tests.test_hidden_from_students import for_students, names_of
from tests.test_rubric import check_gradescope

RUBRIC = """\
title = "CS 123, homework 4: causal self-attention"
functions = ["self_attention"]
forbid = ["torch.nn.functional.scaled_dot_product_attention"]
[points]
WEIGHTS-SCALE = 5
[hidden]
clauses = ["NUM-ACCURACY"]
"""
HIDDEN = ("NUM-ACCURACY",)

CORRECT = HOMEWORK.lstrip("\n")  # plain, correct, no CAPABILITIES: the homework issue 18 starts from

SDPA = """\
import math
import torch
import torch.nn.functional as F


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T
    context = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if causal:
        n = scores.shape[-1]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return context, torch.softmax(scores, dim=-1)
"""

MASKED_AFTER = """\
import math
import torch


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    if causal:
        n = scores.shape[-1]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        weights = weights.masked_fill(future, 0.0)  # after the softmax, and not renormalised
    return weights @ v, weights
"""


def mistake(old: str, new: str) -> str:
    assert CORRECT.count(old) == 1, old
    return CORRECT.replace(old, new)


CLASS = {  # student -> (source, the mistake in words: the README's table)
    "correct": (CORRECT, "none"),
    "queries": (mistake("dim=-1)", "dim=-2)"), "softmax over the queries (dim=-2)"),
    "noscale": (mistake(" / math.sqrt(k.shape[-1])", ""), "no √d_k scale"),
    "sdpa": (SDPA, "calls the forbidden SDPA"),
    "after": (MASKED_AFTER, "causal mask after the softmax, not renormalised"),
}

# what lies upstream of each mistake (or beside it) and must keep all its points
UPSTREAM = ("PROJ-LAYOUT", "PROJ-ROLES", "WEIGHTS-SCALE", "WEIGHTS-STABLE", "CONTEXT-MIX", "CONTEXT-LINEAR",
            "API-SHAPES", "API-BATCH", "SYM-EQUIVARIANT")
END_TO_END = frozenset(c.id for c in spec.load().clauses if c.end_to_end)
# what each diagnosed mistake may cost besides the end-to-end and hidden clauses: its own clause and what the
# spec says that mistake truly breaks
MAY_LOSE = {
    # rows no longer sum to 1 (WEIGHTS-PROBABILITY, WEIGHTS-SHIFT), so the context leaves the values' hull
    # (CONTEXT-HULL: "because the weights are a probability distribution"); each column is normalised over the
    # later queries too, so the future changes the past (CAUSAL-FUTURE: "leaking information through a global
    # statistic"). The causal mask itself is applied right (-inf before the softmax): CAUSAL-MASK and
    # CAUSAL-RENORM are judged through the mistake and keep their points, and so do the gradients.
    "queries": {"WEIGHTS-SOFTMAX", "WEIGHTS-PROBABILITY", "WEIGHTS-SHIFT", "CONTEXT-HULL", "CAUSAL-FUTURE"},
    "noscale": {"WEIGHTS-SCALE"},
    # the reading's owner (readings.py: CAUSAL-RENORM); the row's softmax over every key lets a future key change
    # the past (CAUSAL-FUTURE). The mask itself is right (future weights are exactly 0): CAUSAL-MASK is judged
    # through the mistake and keeps its points (issue 26)
    "after": {"CAUSAL-RENORM", "CAUSAL-FUTURE"},
}
MUST_LOSE = {"queries": "WEIGHTS-SOFTMAX", "noscale": "WEIGHTS-SCALE", "after": "CAUSAL-RENORM"}


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    environment = {**os.environ, **kwargs.pop("env", {})}
    environment.pop("ATTENTION_IMPL", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, **kwargs)


@pytest.fixture(scope="module")
def homework(tmp_path_factory) -> Path:
    """The teacher's folder: the rubric (course.toml) and the class (class/<student>.py)."""
    root = tmp_path_factory.mktemp("first_hour")
    (root / "course.toml").write_text(RUBRIC)
    (root / "class").mkdir()
    for student, (source, _) in CLASS.items():
        (root / "class" / f"{student}.py").write_text(source)
    return root


@pytest.fixture(scope="module")
def graded(homework) -> dict:
    """The class graded once, as the README's batch command does (pictures on by default)."""
    out = homework / "grades"
    done = run([sys.executable, "-m", "conformance.teaching.batch", "class", "--out", out.name, "--rubric",
                "course.toml", "--call-timeout", "3", "--timeout", "120", "--memory-mb", "6144", "--jobs", "2"],
               timeout=600, cwd=homework)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    reports = {s: json.loads((out / s / "report.json").read_text(encoding="utf-8")) for s in CLASS}
    return {"out": out, "rows": rows, "reports": reports, "stdout": done.stdout, "stderr": done.stderr}


def lost(report: dict) -> dict[str, float]:
    """The counted clauses that did not earn all their points: clause -> points lost."""
    return {c["id"]: c["points"] - c["earned"] for c in report["clauses"]
            if c["counted"] and c["earned"] < c["points"]}


def earned(report: dict, clause_id: str) -> tuple[float, float]:
    clause = next(c for c in report["clauses"] if c["id"] == clause_id)
    return clause["earned"], clause["points"]


# ------------------------------------------------------------------------------------------------ the class


def test_the_correct_homework_scores_100_percent(graded):
    row, report = graded["rows"]["correct"], graded["reports"]["correct"]
    assert float(row["score"]) == float(row["max_score"]) > 0 and row["verdict"] == "conforms", row
    assert not lost(report), lost(report)
    assert earned(report, "NUM-GRADIENTS") == (2, 2)  # found by trying: no CAPABILITIES written
    assert "autograd=True (tried)" in report["description"]


def test_every_student_of_the_class_is_out_of_the_same_maximum(graded):
    rows = graded["rows"]
    assert set(rows) == set(CLASS)
    assert {row["max_score"] for row in rows.values()} == {rows["correct"]["max_score"]}


@pytest.mark.parametrize("student", ["queries", "noscale", "after"])
def test_one_mistake_costs_its_own_clauses_and_not_what_lies_upstream(graded, student):
    report, row = graded["reports"][student], graded["rows"][student]
    costs = lost(report)
    assert MUST_LOSE[student] in costs and MUST_LOSE[student] in row["failed_clauses"].split(), costs
    for clause_id in UPSTREAM:
        if clause_id != MUST_LOSE[student]:
            assert earned(report, clause_id)[0] == earned(report, clause_id)[1], (clause_id, costs)
    assert [d["clauses"] for d in report["diagnoses"]] == [[MUST_LOSE[student]]]  # diagnosed, one mistake
    if student == "after":  # the projections, the scale and the softmax keep their points
        for clause_id in ("WEIGHTS-SOFTMAX", "WEIGHTS-PROBABILITY", "NUM-GRADIENTS", "CAUSAL-MASK"):
            assert earned(report, clause_id)[0] == earned(report, clause_id)[1], (clause_id, costs)


@pytest.mark.parametrize("student", [
    "noscale",
    "after",
    "queries",
])
def test_one_mistake_costs_nothing_else(graded, student):
    costs = lost(graded["reports"][student])
    others = set(costs) - MAY_LOSE[student] - END_TO_END - set(HIDDEN)
    assert not others, {c: costs[c] for c in sorted(others)}


def test_a_forbidden_helper_earns_nothing_and_the_feedback_says_why(graded):
    out, row, report = graded["out"], graded["rows"]["sdpa"], graded["reports"]["sdpa"]
    assert float(row["score"]) == 0 and row["verdict"] == "does not conform", row
    assert "scaled_dot_product_attention is not allowed in this course (rubric: forbid)" in row["diagnosis"]
    feedback = (out / "sdpa" / "feedback.md").read_text(encoding="utf-8")
    assert ("**Course rule:** sdpa.py:8 (in self_attention) uses torch.nn.functional.scaled_dot_product_attention, "
            "which this course forbids; the checks that call it earn no points.") in feedback
    assert any("was called and refused" in line for line in report["forbidden"]), report["forbidden"]
    results = json.loads((out / "sdpa" / "results.json").read_text(encoding="utf-8"))
    assert "Course rule: sdpa.py:8 (in self_attention) uses torch.nn.functional" in results["output"]
    # a refused call points at the student's line, never at the grader's wrapper that refused it
    assert "shim.py" not in feedback and "sdpa.py:8" in report["clauses"][0]["reason"] + feedback, feedback


def test_no_student_visible_file_names_the_hidden_clause(graded):
    out = graded["out"]
    names = names_of(HIDDEN)
    for student in CLASS:
        text = for_students(out / student)
        leaked = [name for name in names if name in text]
        assert not leaked, (student, leaked)
        results = json.loads((out / student / "results.json").read_text(encoding="utf-8"))
        hidden = [t for t in results["tests"] if t["name"].startswith("NUM-ACCURACY")]
        assert hidden and all(t["visibility"] == "after_due_date" for t in hidden)


@pytest.mark.parametrize("student", sorted(CLASS))
def test_summary_feedback_and_results_tell_the_same_grade(graded, student):
    out, row, report = graded["out"], graded["rows"][student], graded["reports"][student]
    score, maximum = float(row["score"]), float(row["max_score"])
    assert (report["score"], report["max_score"]) == (score, maximum)
    assert float(row["percent"]) == round(100 * score / maximum, 1)
    results = json.loads((out / student / "results.json").read_text(encoding="utf-8"))
    check_gradescope(results)
    assert results["score"] == score == sum(t["score"] for t in results["tests"])
    assert sum(t["max_score"] for t in results["tests"]) == maximum
    by_clause = {t["name"].split(":")[0]: t for t in results["tests"]}
    hidden_earned = hidden_points = 0.0
    for clause in report["clauses"]:
        if not clause["counted"]:
            assert clause["id"] not in by_clause
            continue
        assert (by_clause[clause["id"]]["score"], by_clause[clause["id"]]["max_score"]) == (
            clause["earned"], clause["points"])
        if clause["id"] in HIDDEN:
            hidden_earned, hidden_points = hidden_earned + clause["earned"], hidden_points + clause["points"]
    feedback = (out / student / "feedback.md").read_text(encoding="utf-8")
    assert (f"**Score on the visible checks: {score - hidden_earned:g} / {maximum - hidden_points:g}**\n\n"
            f"1 more check ({hidden_points:g} points) is hidden until after the deadline; it is part of the grade, "
            f"which is out of {maximum:g}.") in feedback
    for clause in report["clauses"]:  # each visible clause's row shows the points the teacher's report gives
        if clause["counted"] and clause["id"] not in HIDDEN:
            assert f"| {clause['id']}: " in feedback and f"| {clause['earned']:g} / {clause['points']:g} |" in (
                next(line for line in feedback.splitlines() if line.startswith(f"| {clause['id']}: "))), clause["id"]
    failed = {c["id"] for c in report["clauses"] if c["verdict"] == "failed"}
    assert set(row["failed_clauses"].split()) == failed


def test_the_terminal_gives_every_student_a_readable_line_and_the_whole_reason(graded):
    stdout, rows = graded["stdout"], graded["rows"]
    flat = " ".join(stdout.split())
    for student, row in rows.items():
        line = next(line for line in stdout.splitlines() if line.startswith(f"{student} "))
        assert re.search(rf"\b{re.escape(row['verdict'])}\s+{float(row['score']):.1f} / {float(row['max_score']):.1f}\b",
                         line), line
        if row["diagnosis"]:  # the whole reason, on the lines below when it is too long for one
            assert " ".join(row["diagnosis"].split()) in flat, (student, row["diagnosis"])
    assert all(len(line) <= 120 for line in stdout.splitlines()), stdout
    assert "graded 5 submissions" in stdout


def test_the_pictures_are_drawn_or_the_terminal_says_how_to_get_them(graded):
    out = graded["out"]
    if importlib.util.find_spec("matplotlib") is None:
        terminal = graded["stdout"] + graded["stderr"]
        assert "warning: feedback.md will have no pictures of the weights: matplotlib cannot be imported" in terminal
        assert "pip install -e '.[teaching]'" in terminal and "--no-pictures" in terminal
    else:
        assert list((out / "queries").glob("*.png")), "matplotlib is installed but no picture was drawn"


# ------------------------------------------------------------------------------ the autograder and check()


def test_the_autograder_zip_gives_the_correct_homework_full_marks(homework, graded, tmp_path):
    done = run([sys.executable, "-m", "conformance.autograder", "--rubric", "course.toml", "-o", "autograder.zip"],
               timeout=120, cwd=homework)
    assert done.returncode == 0 and done.stdout.startswith("wrote autograder.zip ("), done.stdout + done.stderr
    root = gradescope_root(tmp_path, homework / "autograder.zip")
    shutil.copy(homework / "class" / "correct.py", root / "submission" / "attention.py")
    done = run([str(root / "run_autograder")], timeout=600, cwd=tmp_path,
               env={"AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    check_gradescope(results)
    maximum = float(graded["rows"]["correct"]["max_score"])
    assert results["score"] == sum(t["max_score"] for t in results["tests"]) == maximum, results["output"]
    visible = "\n".join([results["output"], *(f"{t['name']}\n{t['output']}" for t in results["tests"]
                                              if t["visibility"] == "visible")])
    assert not [name for name in names_of(HIDDEN) if name in visible]


def test_check_on_the_correct_homework_gives_full_marks_over_its_functions(homework, tmp_path):
    script = tmp_path / "homework.py"
    script.write_text(CORRECT + "\n\nfrom conformance import check\n\nresult = check()\n"
                      "print('RESULT', result.verdict, result.score, result.max_score)\n")
    done = run([sys.executable, str(script)], timeout=300, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the script runs again in the suite's worker, where its check() call does nothing: the last line is ours
    verdict, score, maximum = re.findall(r"^RESULT (.+) ([\d.]+) ([\d.]+)$", done.stdout, re.M)[-1]
    assert verdict == "conforms" and float(score) == float(maximum) > 0, done.stdout
    assert "not provided" not in done.stdout and "out of scope" in done.stdout  # self_attention's clauses only
    assert done.stdout.count("VERDICT for homework.py: CONFORMS") == 1


# ------------------------------------------------------------------------------------------------ the README


def test_the_readme_shows_this_rubric_and_this_class_grades(graded):
    """The README's teaching section shows this very rubric and the scores this run gave, not other numbers."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Teaching", 1)[1].split("\n## ", 1)[0]
    assert f"```toml\n{RUBRIC}```" in section
    shown = dict(re.findall(r"^\| (\w+) \| [^|]+ \| (\d+ / \d+) \|", section, re.M))
    assert set(shown) == set(CLASS), shown
    for student, row in graded["rows"].items():
        assert shown[student] == f"{float(row['score']):g} / {float(row['max_score']):g}", (student, row)
