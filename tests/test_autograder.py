"""The Gradescope autograder bundle (conformance/teaching/autograder.py): built with
`python -m conformance.autograder`, unzipped into a temporary root laid out like Gradescope's, and run there."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile

import pytest

from conformance.teaching import autograder
from tests.conftest import REPO
from tests.test_rubric import check_gradescope

SUBMISSIONS = REPO / "tests" / "submissions"
RUBRIC = 'title = "Attention homework"\n[hidden]\nclauses = ["NUM-ACCURACY"]\n'


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "course.toml").write_text(RUBRIC)
    done = subprocess.run([sys.executable, "-m", "conformance.autograder", "--rubric", "course.toml", "-o", "autograder.zip"],
                          cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("wrote autograder.zip (")
    return folder / "autograder.zip"


def gradescope_root(tmp_path, bundle):
    """/autograder as Gradescope lays it out: the zip in source/, run_autograder copied to the root."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
        for info in archive.infolist():  # zipfile drops the permission bits
            (root / "source" / info.filename).chmod((info.external_attr >> 16) & 0o777 or 0o644)
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def test_the_bundle_holds_setup_run_pinned_requirements_the_rubric_and_the_suite(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        modes = {info.filename: (info.external_attr >> 16) for info in archive.infolist()}
        pinned = archive.read("requirements.txt").decode()
        assert archive.read("course.toml").decode() == RUBRIC
        archive.extract("setup.sh", tmp_path)
    assert {"setup.sh", "run_autograder", "requirements.txt", "course.toml"} <= names
    assert modes["setup.sh"] & stat.S_IXUSR and modes["run_autograder"] & stat.S_IXUSR
    assert {"suite/conformance/cli.py", "suite/conformance/worker/shim.py", "suite/spec/clauses.toml",
            "suite/golden/manifest.json", "suite/impl/attention.py", "suite/golden/data/self/weights.npy"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for package in autograder.REQUIREMENTS:
        assert f"{package}=={importlib.metadata.version(package).split('+')[0]}" in pinned.splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pinned
    assert subprocess.run(["bash", "-n", str(tmp_path / "setup.sh")]).returncode == 0


def test_run_autograder_grades_a_notebook_in_a_gradescope_root(bundle, tmp_path):
    """The seed-like notebook of the sample class gets the score batch grading gives it, graded by the
    bundle's own copy of the suite; the hidden clause is hidden until the due date."""
    root = gradescope_root(tmp_path, bundle)
    shutil.copy(SUBMISSIONS / "yuki_notebook.ipynb", root / "submission" / "yuki_notebook.ipynb")
    (root / "submission" / "README.md").write_text("my notes")  # not code: ignored
    environment = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    environment.pop("ATTENTION_IMPL", None)
    done = subprocess.run([str(root / "run_autograder")], env=environment, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"suite: {root / 'source' / 'suite' / 'conformance'}" in done.stdout
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    expected = tomllib.loads((SUBMISSIONS / "EXPECTED.toml").read_text())["yuki_notebook"]["score"]
    assert results["score"] == expected
    assert "code cell 4 raised FileNotFoundError" in results["output"]  # the fourth code cell, as Jupyter shows it
    hidden = [t for t in results["tests"] if t["name"].startswith("NUM-ACCURACY")]
    assert hidden and all(t["visibility"] == "after_due_date" for t in hidden)


@pytest.mark.parametrize("files, says", [
    ((), "no .py file, notebook (.ipynb) or package folder was submitted (found: nothing)"),
    (("attention.py", "helpers.py", "notes.md"), "found several: attention.py, helpers.py"),
])
def test_what_cannot_be_graded_gets_a_zero_that_says_why(tmp_path, capsys, files, says):
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    for name in files:
        (root / "submission" / name).write_text("def self_attention(x, w_q, w_k, w_v):\n    pass\n")
    rubric = tmp_path / "course.toml"
    rubric.write_text(RUBRIC)
    assert autograder.run(root, rubric, "grade", None) == 0
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    assert results["score"] == 0 and says in results["output"], results


def test_a_submission_that_does_not_load_gets_a_zero_with_the_loaders_reason(tmp_path, capsys):
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "submission" / "homework.py").write_text("def self_attention(x, w_q, w_k, w_v:\n    pass\n")
    rubric = tmp_path / "course.toml"
    rubric.write_text(RUBRIC)
    assert autograder.run(root, rubric, "grade", None) == 0
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    assert results["score"] == 0 and "cannot check implementation" in results["output"], results
    assert "SyntaxError" in results["output"] and "homework.py" in results["output"], results


def test_a_bad_rubric_is_refused_before_a_bundle_is_written(tmp_path):
    (tmp_path / "course.toml").write_text('[points]\nNO-SUCH-CLAUSE = 3\n')
    done = subprocess.run([sys.executable, "-m", "conformance.autograder", "--rubric", "course.toml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "NO-SUCH-CLAUSE" in done.stderr, done.stderr
    assert not (tmp_path / "autograder.zip").exists()
