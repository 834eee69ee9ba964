"""A class of adversarial submissions, graded in batch next to honest students, as a teacher would.

Every sample in tests/submissions/adversarial/ is one attack that worked against the old
in-process grader (see its docstring). Graded together with honest classmates, with a rubric that
forbids the fused helpers, none may earn more than its honest content deserves, none may change a
file outside its scratch directory, and none may leave a process behind.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conformance.worker.sandbox import landlock_abi
from tests.conftest import REPO

SAMPLES = REPO / "tests" / "submissions" / "adversarial"
ATTACKS = tomllib.loads((SAMPLES / "EXPECTED.toml").read_text())
HONEST = ("alice", "bob", "carol_numpy")
RUBRIC = """title = "Attention homework"
forbid = ["torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention"]
"""

pytestmark = [pytest.mark.skipif(
    landlock_abi() < 1 or not sys.platform.startswith("linux"),
    reason="unavailable: the grading sandbox's file rules need Linux with Landlock",
)]


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder (caches excluded)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".pytest_cache" not in path.parts
    }


def protected() -> dict[str, dict[str, str]]:
    return {name: digest(REPO / name) for name in ("golden", "conformance", "impl", "spec")}


def batch(folder: Path, out: Path, rubric: Path, scratch: Path) -> subprocess.CompletedProcess:
    """Grade a folder; the batch's scratch dirs go under `scratch` (TMPDIR), to tell its processes apart."""
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "conformance.teaching.batch", str(folder), "--out", str(out), "--rubric", str(rubric),
         "--call-timeout", "3", "--timeout", "150", "--jobs", "2", "--profile", "fast",  # attacks: no shrinking
         "--no-pictures"],  # the sample class's feedback has them (tests/test_grading.py)
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "TMPDIR": str(scratch)},
    )


def rows_of(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


# files the attacks write outside their scratch dir when they get out (see their docstrings)
MARKERS = ("/tmp/adversarial-daemon-alive", "/tmp/adversarial-socket-escape")


def leftover_processes(marker: str) -> list[str]:
    """Processes whose working directory is a grading scratch dir (a submission's, by construction)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in os.readlink(entry / "cwd"):
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    classroom = root / "class"
    classroom.mkdir()
    for sample in SAMPLES.glob("*.py"):
        shutil.copy(sample, classroom / sample.name)
    for student in HONEST:
        shutil.copy(REPO / "tests" / "submissions" / f"{student}.py", classroom / f"{student}.py")
    rubric = root / "course.toml"
    rubric.write_text(RUBRIC)
    before, classroom_before = protected(), digest(classroom)
    for marker in MARKERS:
        Path(marker).unlink(missing_ok=True)
    done = batch(classroom, root / "grades", rubric, root / "tmp")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (root / "grades" / "summary.csv").read_text()
    return {
        "root": root, "out": root / "grades", "rows": rows_of(root / "grades"),
        "before": before, "classroom": classroom,
        "classroom_before": classroom_before, "summary": summary, "ended": time.monotonic(),
    }


def test_the_summary_is_complete(graded):
    assert set(graded["rows"]) == set(ATTACKS) | set(HONEST)
    for student, row in graded["rows"].items():
        assert row["verdict"] and row["score"] != "", (student, row)


@pytest.mark.parametrize("sample", sorted(name for name, a in ATTACKS.items() if not a["honest"]))
def test_an_attack_with_no_attention_code_earns_at_most_half(graded, sample):
    row = graded["rows"][sample]
    assert row["verdict"] != "conforms", row
    assert float(row["score"]) <= 0.5 * float(row["max_score"]), row


@pytest.mark.parametrize("student", HONEST)
def test_honest_classmates_keep_the_score_they_get_alone(graded, student):
    """Next to the attacks, an honest student scores what the sample class records for them
    (tests/submissions/EXPECTED.toml; tests/test_grading.py grades that class and checks it)."""
    alone = tomllib.loads((REPO / "tests" / "submissions" / "EXPECTED.toml").read_text())[student]
    assert float(graded["rows"][student]["score"]) == float(alone["score"])
    assert graded["rows"][student]["verdict"] == "conforms"


@pytest.mark.parametrize("sample", sorted(name for name, a in ATTACKS.items() if a["honest"]))
def test_forbidden_helpers_are_named_and_earn_nothing(graded, sample):
    row = graded["rows"][sample]
    feedback = (graded["out"] / sample / "feedback.md").read_text()
    assert "scaled_dot_product_attention" in feedback and "this course" in feedback
    assert float(row["score"]) == 0, row


def test_the_dodge_is_found_by_the_source_scan(graded):
    report = json.loads((graded["out"] / "forbidden_dodge" / "report.json").read_text())
    assert any("forbidden_dodge.py" in use and "in self_attention" in use for use in report["forbidden"])
    assert any("in cross_attention" in use for use in report["forbidden"])


def test_nothing_outside_the_scratch_dirs_changed(graded):
    assert protected() == graded["before"]
    assert digest(graded["classroom"]) == graded["classroom_before"]


def test_no_process_outlives_its_grading_and_nothing_rewrites_the_summary(graded):
    # the daemon sample sleeps 8 s after its import before it rewrites summary.csv
    time.sleep(max(0.0, 10 - (time.monotonic() - graded["ended"])))
    assert leftover_processes(str(graded["root"] / "tmp")) == []
    assert (graded["out"] / "summary.csv").read_text() == graded["summary"]


def test_no_attack_left_a_mark_or_a_scratch_dir_or_a_group(graded):
    from conformance.worker import cgroups

    assert [m for m in MARKERS if Path(m).exists()] == []
    # every scratch dir is removed, also those of workers killed at their time limit (disk_filler)
    assert sorted(p.name for p in (graded["root"] / "tmp").iterdir() if p.name.startswith("attention-")) == []
    groups = {parent for _, parent in cgroups._hierarchies().values()} if sys.platform.startswith("linux") else set()
    assert [g for parent in groups if os.path.isdir(parent) for g in os.listdir(parent)
            if g.startswith(cgroups.PREFIX)] == []


def test_limits_bound_the_attacks_and_their_classmates_keep_their_scores(graded):
    # the same zeros behind each attack: an attack that gained anything would stand out
    same = {sample: graded["rows"][sample]["score"] for sample in
            ("many_processes", "cpu_spinner", "socket_escape", "proc_snoop", "daemon_rewriter")}
    assert len(set(same.values())) == 1, same
    # the disk filler's hang ended at the call's time limit, not the run's
    report = json.loads((graded["out"] / "disk_filler" / "report.json").read_text())
    assert any("did not return within 3 s" in c["reason"] for c in report["clauses"])


def test_a_classmates_source_never_reaches_the_feedback(graded):
    alice = (REPO / "tests" / "submissions" / "alice.py").read_text()
    secret = "Alice -- I implemented every function of the assignment."
    assert secret in alice
    for student in ATTACKS:
        for report in (graded["out"] / student).glob("*"):
            if report.is_file():
                assert secret not in report.read_text(errors="replace"), report


def test_an_unnamed_signal_and_a_hooked_exit_leave_complete_reports(graded):
    # in its PID namespace the worker is init, which ignores signals it has no handler for; outside one
    # it dies of "signal 40" (tests/test_adapter.py): either way the judge writes its report
    for sample in ("signal40", "exit_hook"):
        report = json.loads((graded["out"] / sample / "report.json").read_text())
        assert report["verdict"] == "does not conform" and report["clauses"], sample


def test_an_ignored_alarm_does_not_defeat_the_time_limit(graded):
    report = json.loads((graded["out"] / "ignore_alarm" / "report.json").read_text())
    assert any("did not return within 3 s" in c["reason"] for c in report["clauses"])
    assert float(graded["rows"]["ignore_alarm"]["seconds"]) < 150


def test_the_report_says_which_sandbox_layers_were_active(graded):
    report = json.loads((graded["out"] / "alice" / "report.json").read_text())
    layers = report["sandbox"]
    assert set(layers) >= {"landlock", "pid namespace", "network namespace", "rlimits", "unprivileged uid",
                           "mount namespace", "disk", "processes", "cpu", "cpu time", "memory"}
    assert layers["landlock"].startswith("active")
    assert all(state.startswith(("active", "inactive (")) for state in layers.values())
    if os.geteuid() == 0:  # a root grader, as on CI: every layer is up
        assert [f"{name}: {state}" for name, state in layers.items() if not state.startswith("active")] == []
