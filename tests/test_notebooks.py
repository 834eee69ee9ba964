"""Notebook submissions (issue 11): code cells run in the worker one by one, and what is set aside is said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conformance.judge.adapter import Implementation
from conformance.teaching.forbidden import scan
from conformance.worker.loader import LoadError, notebook_cells, parse_target

SEED_LIKE = Path(__file__).resolve().parent / "submissions" / "yuki_notebook.ipynb"


def _notebook(tmp_path: Path, *sources: str, name: str = "homework.ipynb") -> Path:
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": source.splitlines(keepends=True)} for source in sources]
    path = tmp_path / name
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_a_notebook_is_a_path_target():
    assert parse_target("homework.ipynb").path == Path("homework.ipynb")


def test_ipython_lines_are_set_aside_and_the_line_numbers_kept():
    cells = notebook_cells(SEED_LIKE)
    assert cells[0].number == 1 and cells[0].dropped == ("%matplotlib inline", "!pip install torch")
    assert cells[0].code.splitlines()[:3] == ["", "", "import math"]
    time_cell = next(c for c in cells if c.dropped == ("%%time",))
    assert time_cell.code == ""  # a cell magic's whole cell is IPython's


def test_the_seed_like_notebook_is_graded_and_its_set_asides_are_named():
    implementation = Implementation.load(str(SEED_LIKE))  # in its worker, as grading runs it
    try:
        assert implementation.has("self_attention") and implementation.accepts("self_attention", "causal")
        assert not implementation.has("embed")  # the seed's `embed = nn.Embedding(...)` is a variable
        notes = " | ".join(implementation.load_notes)
        assert "code cell 1: IPython lines not run (%matplotlib inline; !pip install torch)" in notes
        assert "code cell 4 raised FileNotFoundError" in notes and "(line 2); the other cells ran" in notes
        assert "embed is a Embedding in the notebook, not a function" in notes
        x, w = torch.randn(5, 16), torch.randn(24, 16)
        assert tuple(implementation.attention("self_attention", x, w, w, w).context.shape) == (5, 24)
    finally:
        implementation.close()


def test_a_cell_that_does_not_compile_or_exits_is_named_and_the_rest_still_load(tmp_path):
    path = _notebook(tmp_path, "def broken(:\n    pass\n", "raise SystemExit(3)\n",
                     "import torch\ndef self_attention(x, w_q, w_k, w_v):\n    return x, None\n")
    implementation = Implementation.load(str(path))
    try:
        assert implementation.has("self_attention")
        notes = implementation.load_notes
        assert notes[0].startswith("code cell 1 raised SyntaxError") and "(line 1)" in notes[0]
        assert notes[1].startswith("code cell 2 raised SystemExit: 3")
    finally:
        implementation.close()


def test_a_cell_that_runs_too_long_is_stopped(tmp_path, monkeypatch):
    from conformance.worker import loader

    monkeypatch.setattr(loader, "CELL_SECONDS", 0.2)
    path = _notebook(tmp_path, "while True:\n    pass\n", "def self_attention(x, w_q, w_k, w_v):\n    return x, None\n")
    namespace, _ = loader.load_target(str(path))  # here, in-process: the limit is this process's alarm
    assert callable(namespace.self_attention)
    assert loader.notes == ["code cell 1 ran longer than 0.2 s and was stopped; the other cells ran"]


def test_a_cell_is_named_as_jupyter_shows_it(tmp_path):
    """Markdown cells are not counted ("code cell 2" is the second code cell, whatever lies between), and a
    notebook saved after running names the cell by the [n] Jupyter shows beside it too."""
    def cell(kind: str, source: str, count: int | None = None) -> dict:
        return {"cell_type": kind, "metadata": {}, "source": source,
                **({"outputs": [], "execution_count": count} if kind == "code" else {})}

    path = tmp_path / "homework.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        cell("markdown", "# Homework 3"), cell("code", "import math\n", 1), cell("markdown", "## Data"),
        cell("markdown", "(from the lab machines)"), cell("code", "x = 1\nopen('/no/such/file.csv')\n", 7),
        cell("code", "%time y = 2\n"), cell("code", "def self_attention(x, w_q, w_k, w_v):\n    return x, None\n", 3),
    ]}))
    assert [(c.number, c.execution_count) for c in notebook_cells(path)] == [(1, 1), (2, 7), (3, None), (4, 3)]
    implementation = Implementation.load(str(path))
    try:
        assert implementation.has("self_attention")
        assert implementation.load_notes == [
            "code cell 2 (In [7]) raised FileNotFoundError: [Errno 2] No such file or directory: '/no/such/file.csv' "
            "(line 2); the other cells ran",
            "code cell 3: IPython lines not run (%time y = 2)",
        ]
    finally:
        implementation.close()


@pytest.mark.parametrize("text, message", [("not json", "not a readable notebook"), ('{"cells": 3}', "no list of cells")])
def test_a_file_that_is_no_notebook_says_so(tmp_path, text, message):
    path = tmp_path / "odd.ipynb"
    path.write_text(text)
    with pytest.raises(LoadError, match=message):
        notebook_cells(path)


def test_forbidden_helpers_are_found_in_notebook_cells(tmp_path):
    path = _notebook(tmp_path, "%timeit 1\nimport torch.nn.functional as F\n", "def broken(:\n",
                     "def self_attention(x, w_q, w_k, w_v):\n    return F.scaled_dot_product_attention(x, x, x), None\n")
    uses = scan(path, ["torch.nn.functional.scaled_dot_product_attention"], ["self_attention"])
    assert [u.function for u in uses] == ["self_attention"]
