"""What a teacher reads on the terminal while a class is graded (issue 18): each student's reason whole, a
notebook's cells named as Jupyter shows them, and one warning, with the command to run, when the
pictures are left out because matplotlib is missing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from conformance.teaching.batch import _print_row
from tests.conftest import REPO

CORRECT = '''
import torch

def self_attention(x, w_q, w_k, w_v, causal=False):
    queries, keys, values = x @ w_q.T, x @ w_k.T, x @ w_v.T
    scores = queries @ keys.transpose(-2, -1) / keys.shape[-1] ** 0.5
    if causal:
        n = scores.shape[-1]
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=x.device).tril(), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ values, weights
'''
MISSING = "course_helpers_that_only_exist_on_the_students_laptop"
WARNING = "warning: feedback.md will have no pictures of the weights: matplotlib cannot be imported"


def row(**fields) -> dict:
    return {"student": "bob", "verdict": "cannot load", "score": 0, "max_score": 49.0, "seconds": 1.5,
            "diagnosis": "", "note": "", **fields}


def test_a_long_reason_is_printed_whole_below_the_row(capsys):
    note = ("cannot check implementation '/home/teacher/hw3/submissions/bob.py': importing /home/teacher/hw3/"
            "submissions/bob.py failed: ModuleNotFoundError: No module named 'helpers' (at bob.py:2)")
    _print_row(row(note=note), width=80)
    head, *reason = capsys.readouterr().out.splitlines()
    assert head.split() == ["bob", "cannot", "load", "0", "/", "49.0", "1.5", "s"]
    assert all(line.startswith("    ") and (len(line) <= 80 or " " not in line.strip()) for line in reason)
    assert " ".join(" ".join(reason).split()) == note  # every word, a path never cut
    _print_row(row(verdict="conforms", score=49, seconds=2.0, note="short\nnote\x1b[2J"), width=80)
    line = f"{'bob':<16} {'conforms':<20}     49 / 49.0      2.0 s  short note?[2J"  # one line, no escape
    assert capsys.readouterr().out.splitlines() == [line]


def test_a_batch_without_matplotlib_says_so_once_and_prints_every_reason_whole(tmp_path):
    stub = tmp_path / "stub" / "matplotlib"  # matplotlib as a teacher's fresh install has it: not there
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no matplotlib here (a test)')\n")
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "bob.py").write_text(f"import torch\nfrom {MISSING}.attention_utilities import softmax_over_keys\n")
    cells = [("markdown", "# Homework 3", None), ("code", "import torch\n", 1), ("markdown", "## Data", None),
             ("code", "rows = open('/no/such/imdb_train.csv').read()\n", 2), ("code", CORRECT, 3)]
    (folder / "nina.ipynb").write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": kind, "metadata": {}, "source": source,
         **({"outputs": [], "execution_count": count} if kind == "code" else {})} for kind, source, count in cells]}))
    out = tmp_path / "grades"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub.parent), str(REPO)]), "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-m", "conformance.teaching.batch", str(folder), "--out", str(out), "--profile", "fast",
         "--jobs", "2", "--timeout", "300"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # once for the batch, on the terminal, with the command that installs matplotlib for this Python
    assert (done.stdout + done.stderr).count(WARNING) == 1, done.stderr
    assert f"-m pip install 'matplotlib>=3.7'" in done.stderr and "pip install -e '.[teaching]'" in done.stderr
    assert "feedback without pictures" in (out / "nina" / "log.txt").read_text()  # and in each log, as before
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        rows = {r["student"]: r for r in csv.DictReader(handle)}
    note = rows["bob"]["note"]
    assert rows["bob"]["verdict"] == "cannot load" and f"No module named '{MISSING}'" in note
    assert note in " ".join(done.stdout.split())  # the whole reason, however long, not cut at the width
    wrapped = [line for line in done.stdout.splitlines() if line.startswith("    ")]
    assert wrapped and all(len(line) <= 100 or " " not in line.strip() for line in wrapped), wrapped
    # the notebook's failing cell as Jupyter shows it: the second code cell, run as [2]
    assert rows["nina"]["verdict"] == "conforms"
    output = json.loads((out / "nina" / "results.json").read_text())["output"]
    assert "code cell 2 (In [2]) raised FileNotFoundError" in output, output


def test_feedback_without_pictures_does_not_describe_pictures():
    """Without PNGs (no matplotlib, --no-pictures) the section keeps its summaries, not the legend of a
    picture the student does not get."""
    import torch

    from conformance.teaching import pictures

    view = pictures.View("self", "self_attention(x, W_q, W_k, W_v)", ["a", "b"], torch.eye(2, dtype=torch.float64),
                         1e-6, got=torch.eye(2, dtype=torch.float64))
    without = "\n".join(pictures.markdown([view], []))
    with_png = "\n".join(pictures.markdown([view], [(view, "weights-self.png")]))
    assert "red outline" not in without and view.summary() in without
    assert "red outline" in with_png and "](weights-self.png)" in with_png
