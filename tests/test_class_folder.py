"""Every entry of a class folder gets a fair row: a submission is graded whatever its file is named, and
everything else (a link, a .txt, a folder without __init__.py, a FIFO) gets a row saying why it is not."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conformance.teaching.batch import CANNOT_GRADE, _printable, discover
from tests.conftest import REPO
from tests.test_rubric import check_gradescope

ALICE = REPO / "tests" / "submissions" / "alice.py"
ALICE_SCORE = tomllib.loads((REPO / "tests" / "submissions" / "EXPECTED.toml").read_text())["alice"]["score"]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="unavailable: no named pipes on this system")


def odd_class(folder: Path) -> Path:
    """A class folder as an LMS download and a careless zip leave it: one real submission with a downloaded
    name, and entries that are no submission."""
    folder.mkdir()
    shutil.copy(ALICE, folder / "hw3 (1).py")
    (folder / "hw3 (1)").mkdir()  # the same student name as the file: neither may overwrite the other's reports
    (folder / "hw3 (1)" / "attention.py").write_text("def self_attention(x, w_q, w_k, w_v):\n    pass\n")
    (folder / "notes.txt").write_text("I did my best\n")
    if NOT_UTF8 in WHY:  # a name from a Windows zip: not UTF-8 (Linux keeps such names; macOS refuses them)
        (folder / os.fsdecode(b"r\xe9sum\xe9.txt")).write_text("")
    (folder / "link.py").symlink_to(REPO / "impl" / "attention.py")  # the reference: it would conform if followed
    os.mkfifo(folder / "pipe.py")  # opening it would block whoever tried
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "__pycache__").mkdir()
    return folder


WHY = {  # student -> (entry, words its reason must hold); hw3_1.py is graded
    "hw3_1": ("hw3 (1)", "folder without an __init__.py file (it holds attention.py)"),
    "notes.txt": ("notes.txt", "a .txt file"),
    "link.py": ("link.py", "symbolic link, and links are never followed"),
    "pipe.py": ("pipe.py", "named pipe (FIFO)"),
}
NOT_UTF8 = "r_sum.txt"
if sys.platform.startswith("linux"):
    WHY[NOT_UTF8] = ("r\ufffdsum\ufffd.txt", "a .txt file")


@needs_fifo
def test_every_entry_is_found_under_a_safe_unique_name_with_why_it_cannot_be_graded(tmp_path):
    entries, skipped = discover(odd_class(tmp_path / "class"))
    assert skipped == [".DS_Store", "__pycache__"]
    found = {e.student: (e.path.name, e.problem) for e in entries}
    assert found.pop("hw3_1.py") == ("hw3 (1).py", "")
    assert set(found) == set(WHY)
    for student, (entry, why) in WHY.items():
        assert _printable(found[student][0], None) == entry and why in found[student][1], found[student]


@pytest.mark.parametrize("names, students", [
    (["élève.py", "homework-3.py", "a\nb\x1b[2J.py"], ["a_b_2J", "homework-3", "élève"]),  # sorted by entry name
    (["alice.py", "Alice.ipynb"], ["Alice.ipynb", "alice.py"]),  # one folder where case does not count
    (["summary.csv.py", "-rf.py", "..py"], ["rf", "summary.csv-2"]),  # summary.csv is the batch's; ..py: hidden
])
def test_student_names_are_safe_folder_names_and_never_shared(tmp_path, names, students):
    for name in names:
        (tmp_path / name).write_text("")
    entries, _ = discover(tmp_path)
    assert [e.student for e in entries] == students


@needs_fifo
def test_a_batch_grades_a_downloaded_name_and_gives_every_other_entry_a_row(tmp_path):
    folder = odd_class(tmp_path / "class")
    out = tmp_path / "grades"
    done = subprocess.run(
        [sys.executable, "-m", "conformance.teaching.batch", str(folder), "--out", str(out), "--profile", "fast",
         "--no-pictures", "--jobs", "1", "--call-timeout", "10", "--timeout", "300"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "skipping 2 entries" in done.stdout and ".DS_Store, __pycache__" in done.stdout
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"hw3_1.py", *WHY}
    graded = rows["hw3_1.py"]
    assert (graded["verdict"], float(graded["score"]), graded["file"]) == ("conforms", ALICE_SCORE, "hw3 (1).py")
    for student, (entry, why) in WHY.items():
        row = rows[student]
        assert (row["verdict"], row["file"], float(row["score"])) == (CANNOT_GRADE, entry, 0) and why in row["note"]
        assert row["max_score"] == graded["max_score"]  # out of the same maximum as the class
        check_gradescope(json.loads((out / student / "results.json").read_text()))
        assert why in (out / student / "feedback.md").read_text()
    assert not list((out / "link.py").glob("*.xml"))  # no judge ran for it: nothing of the link was opened


def test_a_judge_killed_at_the_time_limit_leaves_no_temporary_files(tmp_path):
    """A judge past the batch's --timeout dies with its process group before its own cleanup runs: the
    temporary folder it was given (where its worker's scratch dir lies) is removed all the same."""
    from conformance.judge.forking import Judge, run_all

    hang = tmp_path / "test_hang.py"
    hang.write_text("import os, tempfile, time\n\n\ndef test_hang():\n"
                    "    open(os.path.join(tempfile.gettempdir(), 'scratch-file'), 'w').close()\n"
                    "    time.sleep(60)\n")
    scratch = tmp_path / "judge-tmp"
    scratch.mkdir()
    seen: list[bool] = []

    def poll() -> None:
        seen.append((scratch / "scratch-file").exists())

    judge = Judge(["-q", "-p", "no:cacheprovider", str(hang)], tmp_path / "log.txt", scratch=scratch)
    ended: list[Judge] = []
    run_all([judge], jobs=1, timeout=4, finished=ended.append, tick=poll)
    assert ended == [judge] and judge.timed_out
    assert any(seen), "the judge wrote no file into its temporary folder: the test proves nothing"
    assert not scratch.exists()
