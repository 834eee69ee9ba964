"""A course secret seeds the grading examples (conformance.judge.secret): the lookup-table attack on the
public examples, reproducibility, where the secret comes from, and that it never shows.

The attack: a recording implementation run once under the public `grade` profile logs every input of two
property clauses with the reference's answer; a submission generated from that log answers exactly the
recorded inputs and returns garbage for any other. It passes those clauses on the public examples and must
fail them under a secret.
"""

from __future__ import annotations

import json
import tomllib
import zipfile
from pathlib import Path

import pytest

from conformance.judge.secret import ENV_SEED, FROM_SECRET, MIN_LENGTH, PUBLIC, SecretError, course_secret, seed_of_test
from conformance.teaching.rubric import RubricError, load_rubric
from tests.conftest import run_suite

CLAUSES = ("SCORE-DOT", "PROJ-LAYOUT")
# one property test of each clause: their inputs are the ones recorded (plain functions, few calls)
SELECTED = ["-k", "test_scores_are_queries_times_keys_transposed or test_project_is_x_times_w_transposed"]
GRADE = ["--profile", "grade", *SELECTED]
SECRET_A = "course secret A: 7d1f0c9e5b2a4f86"
SECRET_B = "course secret B: 2b8e61d40c9f7a35"

# how both files name one call's inputs: a digest of the function name and each argument's dtype, shape
# and bytes (the same inputs give the same key in any process)
KEY = '''
def _key(name, args):
    digest = hashlib.sha256(name.encode())
    for arg in args:
        if isinstance(arg, torch.Tensor):
            tensor = arg.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(arg).encode())
    return digest.hexdigest()
'''

RECORDER = f'''"""The reference, logging each call's inputs (a key) and answer to LOG."""
import base64, hashlib, io, json, os
import torch
import impl

LOG = __LOG__
with open(LOG, "a") as log:  # what the worker's environment holds of the course secret
    log.write(json.dumps({{"secret_in_environment": {ENV_SEED!r} in os.environ}}) + "\\n")
{KEY}

def _recorded(name, args, answer):
    buffer = io.BytesIO()
    torch.save(answer, buffer)
    line = {{"key": _key(name, args), "answer": base64.b64encode(buffer.getvalue()).decode()}}
    with open(LOG, "a") as log:
        log.write(json.dumps(line) + "\\n")
    return answer

def project(x, w):
    return _recorded("project", (x, w), impl.project(x, w))

def attention_scores(queries, keys):
    return _recorded("attention_scores", (queries, keys), impl.attention_scores(queries, keys))
'''

LOOKUP = '''"""Answers from a table of recorded inputs; garbage (zeros) for any input it has not seen."""
import base64, hashlib, io
import torch

TABLE = __TABLE__
''' + KEY + '''

def _answer(name, args, shape):
    found = TABLE.get(_key(name, args))
    if found is None:
        return torch.zeros(shape, dtype=args[0].dtype)
    return torch.load(io.BytesIO(base64.b64decode(found)), weights_only=True)

def project(x, w):
    return _answer("project", (x, w), (*x.shape[:-1], w.shape[0]))

def attention_scores(queries, keys):
    return _answer("attention_scores", (queries, keys), (*queries.shape[:-1], keys.shape[-2]))
'''


def record(tmp_path: Path, *extra: str, env: dict | None = None, template: str | None = None
           ) -> tuple[list[dict], dict]:
    """Run the recorder in a plain worker (started afresh it inherits the judge's environment, less the
    secret; forked from `template`, the template's); returns its log lines and the run's report."""
    log = tmp_path / "calls.jsonl"
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER.replace("__LOG__", repr(str(log))))
    run = run_suite(tmp_path, str(recorder), *GRADE, *extra, env=env, template=template)
    assert run.report is not None, run.output[-3000:]
    assert {run.verdict(c) for c in CLAUSES} == {"passed"}, run.output[-3000:]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return lines, run.report


def inputs(lines: list[dict]) -> set[str]:
    return {line["key"] for line in lines if "key" in line}


def comparable(report: dict) -> dict:
    """The report without what differs from run to run whatever the examples: timings, and the sandbox's
    layers (each run's worker gets a uid of its own)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "sandbox")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(report)


@pytest.fixture(scope="module")
def public(tmp_path_factory, template) -> dict:
    """The public examples, recorded, and a lookup-table submission made from them."""
    folder = tmp_path_factory.mktemp("public")
    lines, report = record(folder, template=template)
    table = {line["key"]: line["answer"] for line in lines if "key" in line}
    lookup = folder / "lookup.py"
    lookup.write_text(LOOKUP.replace("__TABLE__", repr(table)))
    return {"lines": lines, "report": report, "lookup": lookup, "folder": folder}


def test_a_lookup_table_of_the_public_examples_passes_them(public, tmp_path):
    assert public["report"]["examples"] == PUBLIC
    run = run_suite(tmp_path, str(public["lookup"]), *GRADE, "--grading")
    assert run.report is not None, run.output[-3000:]
    assert {c: run.verdict(c) for c in CLAUSES} == dict.fromkeys(CLAUSES, "passed"), run.output[-3000:]
    assert run.report["examples"] == PUBLIC and not run.report["integrity_violations"]


def test_a_secret_draws_other_examples_and_keeps_them(public, tmp_path):
    """Under a secret the table fails; the same secret grades alike from the rubric or the environment,
    and names itself nowhere."""
    rubric = tmp_path / "course.toml"
    rubric.write_text(f'seed = "{SECRET_A}"\n')
    out = tmp_path / "out"
    outputs = ["--gradescope", str(out / "results.json"), "--feedback", str(out / "feedback.md"),
               f"--junitxml={out / 'junit.xml'}"]
    lookup = str(public["lookup"])
    first = run_suite(tmp_path, lookup, *GRADE, "--grading", "--rubric", str(rubric), *outputs)
    assert first.report is not None, first.output[-3000:]
    assert {c: first.verdict(c) for c in CLAUSES} == dict.fromkeys(CLAUSES, "failed"), first.output[-3000:]
    assert first.report["examples"] == FROM_SECRET
    # the same secret from the environment, in another process: the same report, failures and all (their
    # shrinking ends with nothing left to do in a few tenths of a second, before grade's 1 s bound: the
    # counterexamples do not depend on the machine's speed)
    again = run_suite(tmp_path, lookup, *GRADE, "--grading", env={ENV_SEED: SECRET_A})
    assert comparable(again.report) == comparable(first.report)
    written = {path.name: path.read_text(errors="replace") for path in out.rglob("*") if path.is_file()}
    assert {"results.json", "feedback.md", "junit.xml"} <= set(written)
    written["output"] = first.output
    written["report.json"] = json.dumps(first.report)
    leaks = [name for name, text in written.items() if SECRET_A in text or SECRET_A.split(": ")[1] in text]
    assert not leaks, f"the course secret shows in {leaks}"


def test_another_secret_draws_other_examples_and_the_environment_wins(public, tmp_path, template):
    """Recorded inputs under secret A (environment) and under rubric A overridden by environment B: each
    differs from the public examples and from the other, and the worker started afresh (it inherits the
    judge's environment) did not see the secret."""
    rubric = tmp_path / "course.toml"
    rubric.write_text(f'seed = "{SECRET_A}"\n')
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lines_a, report_a = record(tmp_path / "a", env={ENV_SEED: SECRET_A}, template=template)
    lines_b, report_b = record(tmp_path / "b", "--rubric", str(rubric), env={ENV_SEED: SECRET_B})
    assert report_a["examples"] == report_b["examples"] == FROM_SECRET
    public_inputs, a, b = inputs(public["lines"]), inputs(lines_a), inputs(lines_b)
    assert a and b and public_inputs
    # hypothesis tries its simplest example first under any seed: most, not all, inputs differ
    for name, drawn, other in (("A", a, public_inputs), ("B", b, public_inputs), ("B", b, a)):
        assert len(drawn & other) <= len(drawn) // 4, f"secret {name} drew {len(drawn & other)} of {len(drawn)} again"
    seen = [line["secret_in_environment"] for line in lines_b if "secret_in_environment" in line]
    assert seen and not any(seen), "a worker's environment held the course secret"


def test_only_the_documented_tests_draw_without_hypothesis():
    """README: the secret reaches every property test; the golden checks (the public seed run) and TOK-IDS'
    unknown-word check use fixed inputs. A new fixed-input test must be added there (and here)."""
    import importlib
    import pkgutil

    import conformance.tests

    fixed = set()
    for module in pkgutil.iter_modules(conformance.tests.__path__):
        tests = vars(importlib.import_module(f"conformance.tests.{module.name}"))
        fixed |= {f"{module.name}::{name}" for name, test in tests.items()
                  if name.startswith("test_") and callable(test) and not getattr(test, "is_hypothesis_test", False)}
        explicit = [name for name, test in tests.items()
                    if getattr(getattr(getattr(test, "hypothesis", None), "inner_test", None),
                               "hypothesis_explicit_examples", None)]
        assert not explicit, f"@example cases are public whatever the secret: {explicit}"
    assert {name for name in fixed if not name.startswith("test_golden::")} == {
        "test_tokens::test_unknown_word_is_an_error_naming_it"}
    assert any(name.startswith("test_golden::") for name in fixed)


# ------------------------------------------------------------------------- where the secret comes from
def test_the_environment_overrides_the_rubric_and_neither_means_public():
    assert course_secret(SECRET_A, {ENV_SEED: SECRET_B}) == SECRET_B
    assert course_secret(SECRET_A, {}) == SECRET_A
    assert course_secret("", {}) == ""
    with pytest.raises(SecretError, match=ENV_SEED):
        course_secret(SECRET_A, {ENV_SEED: ""})
    # each test draws its own examples, and another secret others
    assert seed_of_test(SECRET_A, "m::t[cpu]") != seed_of_test(SECRET_A, "m::t[cuda]")
    assert seed_of_test(SECRET_A, "m::t[cpu]") != seed_of_test(SECRET_B, "m::t[cpu]")
    assert seed_of_test(SECRET_A, "m::t[cpu]") == seed_of_test(SECRET_A, "m::t[cpu]")


@pytest.mark.parametrize("line, words", [
    ("seed = 12345678901234567890", "must be a string"),
    ('seed = ""', "is empty"),
    ('seed = "   "', "is empty"),
    ('seed = "short"', f"shorter than {MIN_LENGTH}"),
    ("seed = [\"a list of words, long enough\"]", "must be a string"),
])
def test_a_rubric_seed_that_is_no_secret_is_refused(tmp_path, line, words):
    rubric = tmp_path / "course.toml"
    rubric.write_text(line + "\n")
    with pytest.raises(RubricError, match=words) as error:
        load_rubric(rubric)
    assert "seed" in str(error.value)


def test_the_rubric_keeps_its_seed_out_of_its_repr(tmp_path):
    rubric = tmp_path / "course.toml"
    rubric.write_text(f'title = "hw"\nseed = "{SECRET_A}"\n')
    loaded = load_rubric(rubric)
    assert loaded.seed == SECRET_A and SECRET_A not in repr(loaded)


def test_a_bad_secret_in_the_environment_stops_the_run_with_a_message(tmp_path):
    run = run_suite(tmp_path, "impl", *GRADE, "--in-process", env={ENV_SEED: "short"})  # no worker to wait for
    assert run.returncode == int(pytest.ExitCode.USAGE_ERROR) and f"${ENV_SEED}" in run.output, run.output[-2000:]
    assert f"shorter than {MIN_LENGTH}" in run.output


def test_the_autograder_carries_the_seed_in_its_rubric_only(tmp_path, capsys):
    from conformance.teaching.autograder import main

    rubric = tmp_path / "course.toml"
    rubric.write_text(f'title = "hw"\nseed = "{SECRET_A}"\n')
    bundle = tmp_path / "autograder.zip"
    assert main(["--rubric", str(rubric), "-o", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as archive:
        assert tomllib.loads(archive.read("course.toml").decode())["seed"] == SECRET_A
        # the grading command reads it from course.toml: never on a command line (/proc/PID/cmdline)
        assert SECRET_A not in archive.read("run_autograder").decode()
    said = capsys.readouterr().out
    assert "keep the zip private" in said and SECRET_A not in said
