"""Capabilities found by trying (issue 18): what a plain function can do (autograd, batching, dtypes, CUDA)
is found out with a few small calls; a CAPABILITIES declaration only narrows and is then not tried."""

from __future__ import annotations

import json
import textwrap

import pytest

from conformance.judge.adapter import Implementation
from conformance.judge.capabilities import parse

HOMEWORK = """
import math
import torch


def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if causal:
        n = scores.shape[-1]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights
"""

# the same through numpy: the results come back as torch tensors, but without a graph
DETACHED = """
import math
import numpy as np
import torch


def self_attention(x, w_q, w_k, w_v, causal=False):
    xn, q, k, v = (t.detach().numpy() for t in (x, w_q, w_k, w_v))
    q, k, v = xn @ q.T, xn @ k.T, xn @ v.T
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(k.shape[-1])
    if causal:
        n = scores.shape[-1]
        scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)
    return torch.from_numpy(weights @ v).to(x.dtype), torch.from_numpy(weights).to(x.dtype)
"""

RUBRIC = 'title = "homework"\nfunctions = ["self_attention"]\n[hidden]\nclauses = ["NUM-ACCURACY"]\n'


def write(tmp_path, name: str, source: str, header: str = "") -> str:
    path = tmp_path / name
    path.write_text(header + textwrap.dedent(source))
    return str(path)


@pytest.fixture
def loaded():
    opened = []

    def load(path: str, **kwargs) -> Implementation:
        implementation = Implementation.load(path, **kwargs)
        opened.append(implementation)
        return implementation

    yield load
    for implementation in opened:
        implementation.close()


# ------------------------------------------------------------------ through the suite, as a teacher grades
def test_a_plain_correct_homework_scores_full_marks(tmp_path, suite):
    rubric = tmp_path / "course.toml"
    rubric.write_text(RUBRIC)
    run = suite(write(tmp_path, "homework.py", HOMEWORK), "--rubric", str(rubric))
    assert run.report is not None, run.output
    assert run.verdict("NUM-GRADIENTS") == "passed", run.output
    assert run.report["score"] == run.report["max_score"], run.output  # was 44/46: "not provided: autograd"
    assert "autograd=True (tried)" in run.report["description"]
    assert "batching=True (default; the spec requires it)" in run.report["description"]  # trying only widens


def test_a_non_differentiable_homework_has_autograd_not_claimed_with_the_reason(tmp_path, suite):
    run = suite(write(tmp_path, "homework.py", DETACHED), "-k", "gradient or dtype")
    assert run.report is not None, run.output
    assert run.verdict("NUM-GRADIENTS") == "not claimed", run.output  # not failed: the clause judges claims
    assert "autograd=False (tried: no output of self_attention carries a gradient" in run.report["description"]


def test_a_function_that_crashes_in_float16_has_it_not_claimed_not_failed(tmp_path, suite):
    path = write(tmp_path, "homework.py", HOMEWORK.replace(
        "    q, k, v =", "    if x.dtype == torch.float16:\n        raise TypeError('no half here')\n    q, k, v =", 1))
    run = suite(path, "-k", "dtype")
    assert run.report is not None, run.output
    assert run.verdict("API-DTYPE") == "passed", run.output
    tests = next(c["tests"] for c in run.report["clauses"] if c["id"] == "API-DTYPE")
    outcomes = {t["nodeid"].split("-")[-1].rstrip("]"): t["outcome"] for t in tests if "[cpu-" in t["nodeid"]}
    assert outcomes["float16"] == "not claimed" and outcomes["bfloat16"] == "passed", outcomes
    assert "float16 not claimed: self_attention raised TypeError: no half here" in run.report["description"]


# ------------------------------------------------------------------ what is tried, and what it finds
def test_a_plain_function_is_tried_for_each_capability(tmp_path, loaded):
    implementation = loaded(write(tmp_path, "homework.py", HOMEWORK))
    assert implementation.trials.calls == 0  # nothing is tried before a check asks
    assert implementation.claims("autograd") and implementation.claims("batching")
    assert implementation.capabilities.dtypes == ("float64", "float32", "float16", "bfloat16")
    assert implementation.claims("device:cpu")
    assert implementation.called == set()  # the trials are no test's calls
    calls = implementation.trials.calls
    assert implementation.claims("autograd") and implementation.trials.calls == calls  # once per run, cached
    assert implementation.trials.seconds < 10


def test_trying_in_process_finds_the_same(tmp_path, loaded):
    implementation = loaded(write(tmp_path, "homework.py", HOMEWORK), in_process=True)
    assert implementation.claims("autograd") and implementation.claims("batching")
    implementation = loaded(write(tmp_path, "detached.py", DETACHED), in_process=True)
    assert not implementation.claims("autograd")


def test_a_non_differentiable_function_says_why(tmp_path, loaded):
    implementation = loaded(write(tmp_path, "detached.py", DETACHED))
    assert not implementation.claims("autograd")
    assert implementation.why_not("autograd").startswith("tried: no output of self_attention carries a gradient")
    assert implementation.claims("batching") and implementation.claims("dtype:float64")


def test_a_backward_that_raises_is_not_claimed_with_the_error(tmp_path, loaded):
    source = HOMEWORK.replace("import torch\n", textwrap.dedent("""
        import torch


        class Cut(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                return t.clone()

            @staticmethod
            def backward(ctx, g):
                raise RuntimeError("no way back")
        """), 1).replace("return weights @ v, weights", "return Cut.apply(weights @ v), weights")
    implementation = loaded(write(tmp_path, "homework.py", source))
    assert not implementation.claims("autograd")
    why = implementation.why_not("autograd")
    assert why.startswith("tried: backward() failed:") and "RuntimeError: no way back" in why, why


def test_a_function_that_takes_no_batch_still_has_batching_claimed(tmp_path, loaded):
    """Trying only widens the spec's defaults: batching is required (API-BATCH judges a function that takes
    no batch); it is not tried, and nothing is taken away."""
    source = HOMEWORK.replace("k.transpose(-2, -1)", "k.t()")  # .t() takes 2-D tensors only
    implementation = loaded(write(tmp_path, "homework.py", source))
    assert implementation.claims("batching")
    assert implementation.claims("autograd")


def test_a_function_that_returns_another_dtype_has_that_optional_dtype_not_claimed(tmp_path, loaded):
    """float16 returned as float32: an optional dtype it does not keep is not claimed; float64, one of the
    spec's defaults, stays claimed, and API-DTYPE judges the float32 it returns for float64 inputs."""
    source = HOMEWORK.replace("return weights @ v, weights", "return (weights @ v).float(), weights.float()")
    implementation = loaded(write(tmp_path, "homework.py", source))
    assert implementation.capabilities.dtypes == ("float64", "float32")
    assert implementation.why_not("dtype:float16") == "tried: self_attention returned float32, float32 for float16 inputs"
    assert implementation.claims("autograd")


def test_when_even_a_plain_call_fails_the_defaults_stand(tmp_path, loaded):
    """Trying tells nothing about a function that never works: the clauses judge it, as before."""
    broken = write(tmp_path, "broken.py", "def self_attention(x, w_q, w_k, w_v, causal=False):\n    return 1 / 0\n")
    implementation = loaded(broken)
    assert implementation.capabilities.dtypes == ("float32", "float64") and implementation.claims("batching")
    assert not implementation.claims("autograd")
    assert "could not try: self_attention on a small float32 input: self_attention raised ZeroDivisionError" in (
        implementation.describe())


def test_a_hang_while_trying_costs_one_call_timeout_and_ends_nothing(tmp_path, loaded):
    hangs = write(tmp_path, "hangs.py", "def self_attention(x, w_q, w_k, w_v, causal=False):\n    while True:\n        pass\n")
    implementation = loaded(hangs, call_timeout=1.0)
    assert implementation.claims("batching") and not implementation.claims("autograd")  # the defaults
    assert implementation.trials.seconds < 8
    assert "did not return within 1 s" in implementation.describe()


def test_step_functions_are_tried_when_there_is_no_attention_function(tmp_path, loaded):
    source = "import torch\n\ndef attention_weights(scores, d_k, causal=False, mask=None):\n" \
             "    return torch.softmax(scores / d_k ** 0.5, dim=-1)\n"
    implementation = loaded(write(tmp_path, "steps.py", source))
    assert implementation.trials.function == "attention_weights"
    assert implementation.claims("autograd") and implementation.claims("batching")


# ------------------------------------------------------------------ declarations narrow, and are not tried
def test_a_declaration_narrows_and_is_not_tried(tmp_path, loaded):
    header = 'CAPABILITIES = {"autograd": False, "dtypes": ["float64"]}\n'
    implementation = loaded(write(tmp_path, "homework.py", HOMEWORK, header))
    assert not implementation.claims("autograd")
    assert implementation.capabilities.dtypes == ("float64",) and implementation.capabilities.property_dtype == "float64"
    assert implementation.trials.calls == 0
    assert implementation.why_not("autograd") == "declared in CAPABILITIES['autograd']"
    assert implementation.claims("batching")
    description = implementation.describe()
    assert "autograd=False (declared)" in description and "dtypes=float64 (declared)" in description
    assert "batching=True (default" in description


def test_numpy_implementations_are_tried_for_batching_and_their_dtypes_only(tmp_path, loaded):
    source = DETACHED.replace("import torch\n", "").replace(
        "xn, q, k, v = (t.detach().numpy() for t in (x, w_q, w_k, w_v))", "xn, q, k, v = x, w_q, w_k, w_v").replace(
        "return torch.from_numpy(weights @ v).to(x.dtype), torch.from_numpy(weights).to(x.dtype)",
        "return (weights @ v).astype(x.dtype), weights.astype(x.dtype)")
    implementation = loaded(write(tmp_path, "numpy_homework.py", source, 'CAPABILITIES = {"array": "numpy"}\n'))
    assert not implementation.claims("autograd") and implementation.trials.calls == 0  # numpy: never claimed
    assert implementation.claims("batching")
    assert implementation.capabilities.dtypes == ("float64", "float32", "float16")  # numpy has no bfloat16
    assert implementation.capabilities.devices == ("cpu",)


def test_without_a_trier_the_defaults_stand():
    caps = parse(None)
    assert caps.dtypes == ("float32", "float64") and caps.batching and not caps.autograd
    assert "autograd=False (default)" in caps.describe()
    assert parse({"autograd": True}).source("autograd") == "declared"
