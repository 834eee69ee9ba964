"""Scope and fair credit: a rubric's `functions`, scores that do not depend on the grading machine,
blocked checks, and the reports a student reads (table, feedback heading, Gradescope)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import spec
from conformance.judge.report import BLOCKED, NOT_CLAIMED, UNAVAILABLE, ClauseVerdict, TestRecord
from conformance.teaching.batch import _diagnosis_in_words
from conformance.teaching.diagnosis import Diagnosis
from conformance.teaching.feedback import Outcome, student_name
from conformance.teaching.rubric import MACHINE, OUT_OF_SCOPE, Rubric, RubricError, load_rubric, score_clause
from tests.conftest import REPO, run_suite
from tests.test_rubric import check_gradescope

HOMEWORK = REPO / "tests" / "submissions" / "homework_three.py"
SCOPE = ("self_attention", "cross_attention", "multihead_attention")
SCOPED = Rubric(title="HW 4", functions=frozenset(SCOPE))
NO_CUDA = "unavailable: no CUDA device on this machine"


def clause_verdict(clause_id: str, *tests: TestRecord) -> ClauseVerdict:
    """A clause's verdict from its tests, aggregated as the report does."""
    clause = spec.load().clause(clause_id)
    outcomes = [t.outcome for t in tests]
    verdict = next((o for o in ("failed", BLOCKED, "passed", NOT_CLAIMED, UNAVAILABLE) if o in outcomes), "not run")
    reason = next((t.message for t in tests if t.outcome == verdict), "")
    return ClauseVerdict(clause.id, clause.section, clause.level, clause.title, clause.points, verdict, reason, list(tests))


def record(name: str, outcome: str, message: str = "", functions: tuple[str, ...] = (), **extra) -> TestRecord:
    return TestRecord(f"test_made_up.py::{name}", outcome, message, 0.0, functions, **extra)


# ------------------------------------------------------------------------------------------------ the rubric key


def test_rubric_reads_and_checks_the_scope(tmp_path):
    path = tmp_path / "rubric.toml"
    path.write_text('functions = ["self_attention", "cross_attention"]\n')
    assert load_rubric(path).functions == {"self_attention", "cross_attention"}
    for text, message in [
        ('functions = ["self_attention", "selfattention"]\n', r"\['selfattention'\] are not functions of the spec"),
        ("functions = []\n", "non-empty list"),
        ('functions = "self_attention"\n', "non-empty list"),
    ]:
        path.write_text(text)
        with pytest.raises(RubricError, match=message):
            load_rubric(path)


# ------------------------------------------------------------------------------------------------ scope


def test_not_claimed_outside_the_scope_does_not_count():
    verdict = clause_verdict(
        "WEIGHTS-SCALE",
        record("step[cpu]", NOT_CLAIMED, "not claimed: attention_weights"),
        record("attention[cpu]", "passed", functions=("self_attention",)),
    )
    scoped = score_clause(verdict, SCOPED)
    assert scoped.counted and scoped.earned == scoped.points and scoped.note == ""
    whole = score_clause(verdict, Rubric())  # without a scope the missing step costs half
    assert whole.earned == whole.points / 2 and whole.note == "not provided: attention_weights"


def test_a_clause_no_scoped_function_exercises_is_out_of_scope_and_shown_so():
    mask = clause_verdict("MASK-EXPLICIT", record("mask[cpu]", NOT_CLAIMED, "not claimed: attention_weights.mask"))
    concat = clause_verdict("MH-CONCAT", record("concat[cpu]", "passed", functions=("multihead_attention_concat",)))
    heads = clause_verdict("MH-HEADS", record("heads[cpu]", "passed", functions=("multihead_attention",)))
    result = Outcome("homework.py", "", [mask, concat, heads], rubric=SCOPED)
    scores = {s.clause.id: s for s in result.scores}
    assert scores["MASK-EXPLICIT"].excluded == OUT_OF_SCOPE and not scores["MASK-EXPLICIT"].counted
    assert scores["MH-CONCAT"].out_of_scope  # provided and passing, but not part of the assignment
    assert result.score() == (3, 3)
    table = result.table()
    assert "MASK-EXPLICIT        MUST   out of scope     -       -  out of scope (checks attention_weights)" in table
    gradescope = result.to_gradescope()
    check_gradescope(gradescope)
    assert [t["name"].split(":")[0] for t in gradescope["tests"]] == ["MH-HEADS"]  # not listed as failed
    assert "out of scope" in gradescope["output"] and "MASK-EXPLICIT" in gradescope["output"]
    assert "Out of this assignment's scope: MASK-EXPLICIT, MH-CONCAT." in result.to_markdown()


def test_a_capability_of_a_scoped_function_still_counts_as_not_provided():
    causal = clause_verdict(
        "CAUSAL-MASK",
        record("mask[cpu-self]", NOT_CLAIMED, "not claimed: self_attention.causal, weights"),
        record("mask[cpu-multihead]", "passed", functions=("multihead_attention",)),
    )
    score = score_clause(causal, SCOPED)
    assert score.counted and score.earned == score.points / 2
    assert score.note == "not provided: self_attention.causal, weights"
    gold = clause_verdict("GOLD-CROSS", record("cross[cpu]", NOT_CLAIMED, "not claimed: cross_attention"),
                          record("causal[cpu]", NOT_CLAIMED, "not claimed: cross_attention.causal"))
    assert score_clause(gold, SCOPED).note == "not provided: cross_attention"  # not also its causal mask


def test_a_test_needing_a_function_outside_the_scope_is_left_out():
    one_head = record("one_head[cpu]", NOT_CLAIMED, "not claimed: self_attention")
    each_head = record("each_head[cpu]", "passed", functions=("multihead_attention",))
    multihead_only = Rubric(functions=frozenset({"multihead_attention"}))
    score = score_clause(clause_verdict("MH-HEADS", one_head, each_head), multihead_only)
    assert score.counted and score.earned == score.points


def cpu_gpu_check() -> str:
    """The node id of the suite's CPU/GPU agreement test (NUM-DEVICES), found by its marker."""
    import importlib
    import inspect

    for module in sorted((REPO / "conformance" / "tests").glob("test_*.py")):
        for name, test in inspect.getmembers(importlib.import_module(f"conformance.tests.{module.stem}"), callable):
            marks = getattr(test, "pytestmark", [])
            if name.startswith("test_") and any(m.name == "clause" and m.args == ("NUM-DEVICES",) for m in marks):
                return f"{module.name}::{name}"
    raise AssertionError("no NUM-DEVICES test in conformance/tests")


def test_needs_come_from_the_suites_markers():
    """A CPU/GPU agreement check that passed on a CUDA machine has no device in its node id: its @needs
    marker says it needs CUDA, so it is left out like its unavailable copy on a CPU machine."""
    from conformance.teaching.rubric import requirements

    passed = TestRecord(cpu_gpu_check(), "passed", "", 0.0, ("self_attention",))
    assert "device:cuda" in requirements(passed)
    score = score_clause(clause_verdict("NUM-DEVICES", passed), Rubric())
    assert not score.counted and score.excluded == MACHINE


# ------------------------------------------------------------------------------------------------ the machine


def test_device_copies_and_unavailable_checks_count_the_same_everywhere():
    """What a CPU machine and a CUDA machine record for the same submission scores the same."""
    def clauses(cuda: bool) -> list[ClauseVerdict]:
        on_cuda = "passed" if cuda else UNAVAILABLE
        message = "" if cuda else NO_CUDA
        return [
            clause_verdict("CONTEXT-MIX",
                           record("mix[cpu-self]", "passed", functions=("self_attention",)),
                           record("mix[cpu-cross]", "failed", "context[0] is 2", ("cross_attention",)),
                           record("mix[cuda-self]", on_cuda, message, ("self_attention",) if cuda else ()),
                           record("mix[cuda-cross]", on_cuda, message, ("cross_attention",) if cuda else ())),
            clause_verdict("WEIGHTS-SHIFT",
                           record("shift[cpu]", NOT_CLAIMED, "not claimed: attention_weights"),
                           record("shift[cuda]", NOT_CLAIMED, "not claimed: attention_weights")),
            clause_verdict("NUM-DEVICES",
                           TestRecord(cpu_gpu_check(), on_cuda, message, 0.0, ("self_attention",) if cuda else ())),
            clause_verdict("API-DTYPE",
                           record("dtype[cpu-float32]", "passed", functions=("self_attention",)),
                           record("dtype[cpu-float16]", NOT_CLAIMED, "not claimed: dtype:float16"),
                           record("dtype[cuda-float32]", on_cuda, message),
                           record("dtype[cuda-float16]", NOT_CLAIMED, "not claimed: dtype:float16")),
        ]

    for rubric in (Rubric(), SCOPED):
        cpu, gpu = Outcome("h.py", "", clauses(cuda=False), rubric=rubric), Outcome("h.py", "", clauses(cuda=True), rubric=rubric)
        assert cpu.score() == gpu.score(), rubric
    assert Outcome("h.py", "", clauses(cuda=True)).score() == (1.5 + 0 + 1, 3 + 1 + 1)
    devices = next(s for s in Outcome("h.py", "", clauses(cuda=True)).scores if s.clause.id == "NUM-DEVICES")
    assert devices.excluded == MACHINE and "depends on the grading machine" in devices.note


# ------------------------------------------------------------------------------------------------ blocked


def test_a_blocked_check_earns_nothing_and_is_not_called_a_failure():
    blocked = record("probability[cpu]", BLOCKED, "blocked by API-SHAPES: self_attention returned a context of shape (2,)",
                     ("self_attention",), blocker="API-SHAPES")
    passed = record("probability2[cpu]", "passed", functions=("self_attention",))
    shapes = clause_verdict("API-SHAPES", record("shapes[cpu]", "failed", "context has shape (2,)", ("self_attention",)))
    result = Outcome("h.py", "", [clause_verdict("WEIGHTS-PROBABILITY", blocked, passed), shapes])
    score = result.scores[0]
    assert score.counted and score.earned == score.points / 2 and score.note == "blocked by API-SHAPES: fix that first"
    gradescope = result.to_gradescope()
    check_gradescope(gradescope)
    test = gradescope["tests"][0]
    assert "status" not in test and test["score"] == 1 and test["max_score"] == 2
    assert "not judged" in test["output"] and "API-SHAPES" in test["output"]
    assert gradescope["tests"][1]["status"] == "failed"


# ------------------------------------------------------------------------------------------------ reports


def test_the_table_wraps_what_is_missing_instead_of_cutting_it():
    missing = "not claimed: attention_weights, multihead_attention_concat.w_o, self_attention.causal"
    verdict = clause_verdict("GOLD-MULTIHEAD", record("gold[cpu]", NOT_CLAIMED, missing))
    table = Outcome("h.py", "", [verdict]).table(width=100)
    row = table.splitlines()[1:4]
    assert "…" not in "\n".join(row)
    assert row[0].endswith("not provided: attention_weights,")
    assert row[1].strip() == "multihead_attention_concat.w_o," and row[1].startswith(" " * 56)
    assert row[2].strip() == "self_attention.causal"


@pytest.mark.parametrize("target, name", [
    ("/srv/grading/submissions/alice.py", "alice"),
    ("submissions/dave/", "dave"),
    ("homework.py:Adapter", "homework:Adapter"),
    ("mypackage.attention", "mypackage.attention"),
])
def test_the_feedback_heading_names_the_student(target, name):
    assert student_name(target) == name
    heading = Outcome(target, "", [], rubric=Rubric(title="HW 4")).to_markdown().splitlines()[0]
    assert heading == f"# HW 4: feedback for {name}"


def test_seen_in_names_each_function_once():
    diagnosis = Diagnosis("mistake", "NoScale", "The scores are not divided by √d_k", ("WEIGHTS-SCALE",),
                          ("weights step", "weights step, causal", "self-attention", "causal self-attention"),
                          ("attention_weights", "attention_weights", "self_attention"))
    assert "(seen in: attention_weights, self_attention)." in diagnosis.sentence()


def test_summary_diagnosis_is_in_words():
    diagnoses = [
        {"kind": "mistake", "title": "NoScale", "text": "The scores are not divided by √d_k before the softmax"},
        {"kind": "observation", "title": "observed", "text": "row 2 of your weights sums to 0.71, expected 1"},
    ]
    assert _diagnosis_in_words(diagnoses) == "The scores are not divided by √d_k before the softmax"
    assert _diagnosis_in_words(diagnoses[1:]) == "row 2 of your weights sums to 0.71, expected 1"


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def homework(tmp_path_factory, template):
    """The three-function homework graded once, as a teacher would, with a rubric scoped to it."""
    folder = tmp_path_factory.mktemp("homework")
    rubric = folder / "rubric.toml"
    rubric.write_text('title = "HW 4"\nfunctions = ["self_attention", "cross_attention", "multihead_attention"]\n')
    run = run_suite(folder, str(HOMEWORK), "--rubric", str(rubric), "--gradescope", str(folder / "results.json"),
                    "--feedback", str(folder / "feedback.md"), template=template)
    assert run.report is not None, run.output[-3000:]
    return run, folder


def test_a_correct_three_function_homework_scores_full_marks_in_its_scope(homework):
    run, folder = homework
    assert run.returncode == 0, run.output[-3000:]
    assert run.report["score"] == run.report["max_score"] > 0
    out = {c["id"] for c in run.report["clauses"] if c["excluded"] == OUT_OF_SCOPE}
    assert {"TOK-VOCAB", "SCORE-DOT", "MH-CONCAT", "MASK-EXPLICIT"} <= out
    assert not out & {"MH-HEADS", "CROSS-SOURCES", "CAUSAL-MASK", "WEIGHTS-SCALE"}
    gradescope = json.loads((folder / "results.json").read_text())
    check_gradescope(gradescope)
    assert gradescope["score"] == run.report["max_score"]
    assert all(t["status"] == "passed" for t in gradescope["tests"])
    assert not any(t["name"].split(":")[0] in out for t in gradescope["tests"])
    feedback = (folder / "feedback.md").read_text()
    assert feedback.startswith("# HW 4: feedback for homework_three\n") and str(REPO) not in feedback


def _verdicts(report: dict) -> list[ClauseVerdict]:
    names = {f.name for f in dataclasses.fields(ClauseVerdict)} - {"tests"}
    record_names = {f.name for f in dataclasses.fields(TestRecord)}
    return [
        ClauseVerdict(**{k: v for k, v in c.items() if k in names},
                      tests=[TestRecord(**({k: v for k, v in t.items() if k in record_names} |
                                           {"functions": tuple(t["functions"])})) for t in c["tests"]])
        for c in report["clauses"]
    ]


def _as_on_a_cuda_machine(verdicts: list[ClauseVerdict]) -> list[ClauseVerdict]:
    """What a machine with CUDA records: each CUDA copy runs like its CPU twin; the CPU/GPU check passes."""
    result = []
    for v in verdicts:
        twins = {t.nodeid: t for t in v.tests}
        tests = []
        for t in v.tests:
            if t.outcome == UNAVAILABLE:
                twin = twins.get(t.nodeid.replace("[cuda", "[cpu"))
                t = dataclasses.replace(twin, nodeid=t.nodeid) if twin and twin is not t else (
                    dataclasses.replace(t, outcome="passed", message="", functions=tuple(SCOPE)))
            tests.append(t)
        result.append(dataclasses.replace(v, tests=tests, verdict="passed" if v.verdict == UNAVAILABLE else v.verdict))
    return result


def test_the_same_homework_scores_the_same_with_and_without_cuda(homework):
    run, _ = homework
    on_cpu = _verdicts(run.report)
    assert any(t.outcome == UNAVAILABLE and "[cuda" in t.nodeid for v in on_cpu for t in v.tests)  # a CPU machine's run
    on_cuda = _as_on_a_cuda_machine(on_cpu)
    assert not any(t.outcome == UNAVAILABLE for v in on_cuda for t in v.tests)
    for rubric in (Rubric(), SCOPED):
        cpu, cuda = Outcome("h.py", "", on_cpu, rubric=rubric).score(), Outcome("h.py", "", on_cuda, rubric=rubric).score()
        assert cpu == cuda, (rubric.functions, cpu, cuda)
    assert Outcome("h.py", "", on_cuda, rubric=SCOPED).score()[0] == run.report["max_score"]
