"""Run from a homework folder that holds spec.py, golden.py and impl.py, the suite still imports its own
`spec`, `golden` and `impl` (by every route), and the submission still imports its own (issue 10)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import parts
from conformance.worker.loader import REFERENCE_DIR, LoadError, load_target

# the submission's own spec.py and golden.py: names the suite uses for its own packages
USER_SPEC = '"""My notes on the spec."""\nSCALE_POWER = 0.5  # scores are divided by d_k ** SCALE_POWER\n'
USER_GOLDEN = '"""My expected numbers."""\nSOFTMAX_DIM = -1\n'
# a correct self_attention that needs both siblings: with the suite's spec or golden it would raise
USER_IMPL = '''\
"""My attention."""
import torch

import golden  # my golden.py
import spec  # my spec.py


def self_attention(x, w_q, w_k, w_v):
    q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T
    scores = q @ k.transpose(-2, -1) / k.shape[-1] ** spec.SCALE_POWER
    weights = torch.softmax(scores, dim=golden.SOFTMAX_DIM)
    return weights @ v, weights
'''
# the user's own tests, run by plain pytest in the same folder (where the suite's plugin loads too)
USER_TEST = '''\
import golden
import spec


def test_my_modules():
    assert spec.SCALE_POWER == 0.5 and golden.SOFTMAX_DIM == -1
'''
# a few clauses: the weights section and the golden run (which reads the suite's golden files)
SELECTION = ["-k", "weights or golden"]
TIMEOUT = 300


ROUTES = {
    "python -m conformance": [sys.executable, "-m", "conformance", "--impl", "impl.py", "--profile", "fast",
                              "--json", "{report}", *SELECTION],
    "attention-conformance": ["attention-conformance", "--impl", "./impl.py", "--profile", "fast",
                              "--json", "{report}", *SELECTION],
    "pytest --pyargs": [sys.executable, "-m", "pytest", "--pyargs", "conformance.tests", "--impl", "impl.py",
                        "--conformance-profile", "fast", "--conformance-json", "{report}", "-p", "no:cacheprovider",
                        "-q", *SELECTION],
}


def environment() -> dict[str, str]:
    drop = ("ATTENTION_IMPL", "CONFORMANCE_PROFILE", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k not in drop}


def installed(program: str) -> str | None:
    """A console script of this environment (next to the interpreter), if it is installed."""
    return shutil.which(program, path=os.path.dirname(sys.executable))


@pytest.fixture(scope="module")
def homework(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("homework")
    for name, source in {"spec.py": USER_SPEC, "golden.py": USER_GOLDEN, "impl.py": USER_IMPL}.items():
        (folder / name).write_text(source)
    return folder


@pytest.fixture(scope="module")
def runs(homework, tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Every route run from the homework folder, all at once: (exit status, output, JSON report path)."""
    logs = tmp_path_factory.mktemp("logs")
    started = {}
    for index, (route, command) in enumerate(ROUTES.items()):
        report = logs / f"report-{index}.json"
        command = [part.format(report=report) for part in command]
        if not os.path.isabs(command[0]):
            command[0] = installed(command[0]) or ""
            if not command[0]:
                continue
        log = open(logs / f"log-{index}.txt", "w+")
        started[route] = (subprocess.Popen(command, cwd=homework, env=environment(), stdout=log,
                                           stderr=subprocess.STDOUT, text=True), log, report)
    results = {}
    for route, (process, log, report) in started.items():
        try:
            code = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.seek(0)
        results[route] = (code, log.read(), report)
        log.close()
    return results


def assert_users_verdict(code: int, output: str, report_path: Path) -> None:
    """A verdict without collection or plugin errors, and it is the user's self_attention's: its clauses
    pass (with the suite's spec or golden it would raise), the functions it lacks are not claimed."""
    assert code == 0, output
    for sign in ("ERROR collecting", "Error while loading plugin", "AttributeError", "ImportError"):
        assert sign not in output, output
    assert report_path.is_file(), output
    report = json.loads(report_path.read_text())
    verdicts = {c["id"]: c["verdict"] for c in report["clauses"]}
    assert report["verdict"] == "conforms", output
    assert verdicts["WEIGHTS-SCALE"] == verdicts["WEIGHTS-SOFTMAX"] == verdicts["GOLD-SELF"] == "passed", verdicts
    assert verdicts["GOLD-CROSS"] == "not claimed", verdicts  # the bundled reference would claim it
    assert "functions self_attention;" in report["description"], report["description"]


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_checks_the_users_file_with_the_suites_own_parts(runs, route):
    if route not in runs:
        pytest.skip(f"{route} is not installed next to this interpreter")
    assert_users_verdict(*runs[route])


def test_the_users_own_tests_see_the_users_modules(homework):
    """The suite's plugin loads in every pytest run: it must leave `spec` and `golden` to the user's code."""
    (homework / "test_mine.py").write_text(USER_TEST)
    try:
        # the pytest script: the folder is not on sys.path until pytest puts it there for test_mine.py
        command = [installed("pytest") or "pytest", "test_mine.py", "-p", "no:cacheprovider", "-q"]
        done = subprocess.run(command, cwd=homework, env=environment(), capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        (homework / "test_mine.py").unlink()


# ------------------------------------------------------------------------------ in this process
def test_bare_impl_is_the_reference_and_refused_where_ambiguous(tmp_path, monkeypatch):
    """`impl` (the default target) means the bundled reference; next to a user's impl.py it names both."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "impl.py").write_text(USER_IMPL)
    with pytest.raises(LoadError, match="ambiguous") as refused:
        load_target("impl")
    assert "--impl ./impl.py;" in str(refused.value) and f"--impl {REFERENCE_DIR}" in str(refused.value)
    (tmp_path / "impl.py").unlink()
    namespace, _ = load_target("impl")
    assert Path(namespace.__file__).resolve().parent == REFERENCE_DIR


def test_pinned_names_are_the_suites(tmp_path, monkeypatch):
    import spec

    assert parts.is_own(spec) and parts.pinned()
    # a module of the user's imported under the same name is put aside by pin() (release() would bring it back)
    (tmp_path / "spec.py").write_text(USER_SPEC)
    user = type(sys)("spec")
    user.__file__ = str(tmp_path / "spec.py")
    monkeypatch.setitem(sys.modules, "spec", user)
    parts.pin()
    assert sys.modules["spec"] is spec
    assert parts._displaced.pop("spec") is user
    assert parts.claims_run(["conformance.tests"], tmp_path, pyargs=True)
    assert parts.claims_run([], parts.HOME / "tests", pyargs=False)
    assert not parts.claims_run(["test_mine.py"], tmp_path, pyargs=False)
    assert not parts.claims_run([], tmp_path, pyargs=True)
