"""Declared restrictions (issue 10): causal-only implementations and shape constraints.

The suite must keep within what an implementation declares, say what that leaves
unchecked, and refuse malformed declarations with a message that names the key.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.judge.adapter import Implementation, seed_shapes_fit
from conformance.judge.capabilities import CapabilityError, parse
from conformance.judge.cases import Case, fit_problem
from conformance.judge.strategies import Problem, problems, score_problems


def _declared(**capabilities) -> SimpleNamespace:
    """A stand-in for an Implementation: what fit_problem and Case read of one."""
    caps = parse(capabilities)
    return SimpleNamespace(capabilities=caps, claims=lambda r: getattr(caps, r))


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"causal": True}, r"CAPABILITIES\['causal'\] must be 'only'"),
        ({"causal": "always"}, r"CAPABILITIES\['causal'\] must be 'only'"),
        ({"max_length": 0}, r"CAPABILITIES\['max_length'\] must be a positive whole number"),
        ({"max_length": 12.5}, r"CAPABILITIES\['max_length'\] must be a positive whole number"),
        ({"max_length": True}, r"CAPABILITIES\['max_length'\] must be a positive whole number"),
        ({"equal_head_dims": "yes"}, r"CAPABILITIES\['equal_head_dims'\] must be True or False"),
        ({"width_is_heads_times_head_dim": 1}, r"must be True or False"),
    ],
)
def test_malformed_declarations_are_explained(declared, message):
    with pytest.raises(CapabilityError, match=message):
        parse(declared)


def test_declarations_say_what_is_not_exercised():
    assert parse(None).constraints == []
    caps = parse({"causal": "only", "equal_head_dims": True, "width_is_heads_times_head_dim": True, "max_length": 64})
    assert caps.causal_only and caps.max_length == 64
    text = "; ".join(caps.constraints)
    for words in ("d_v ≠ d_k", "d_in ≠ h·d_k", "longer than 64 tokens", "without a causal mask"):
        assert words in text
    assert "causal=only" in caps.describe() and "max_length=64" in caps.describe()


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["self", "cross", "multihead", "concat"]), data=st.data())
def test_drawn_problems_are_fitted_within_the_declared_shapes(kind, data):
    implementation = _declared(equal_head_dims=True, width_is_heads_times_head_dim=True, max_length=20, batching=False)
    problem = fit_problem(data.draw(problems(kind)), implementation)
    assert problem.batch == ()
    assert problem.n_q <= 20 and problem.n_kv <= 20
    assert problem.d_v == problem.d_k
    assert problem.d_in == problem.heads * problem.d_k
    if problem.d_o is not None:
        assert problem.d_o == problem.d_in  # the output projection maps back to the model width
    i = problem.tensors()
    assert i.x_q.shape[-1] == problem.heads * i.w_q.shape[-2]


@settings(max_examples=20, deadline=None)
@given(problem=score_problems())
def test_step_problems_keep_the_longest_sequence_too(problem):
    fitted = fit_problem(problem, _declared(max_length=9))
    assert fitted.n_q <= 9 and fitted.n_kv <= 9


def test_every_case_of_a_causal_only_implementation_is_causal():
    implementation = _declared(causal="only")
    problem = Problem("self", (), 5, 5, 3, 3, 2, 2, 1, None, 1.0, None, seed=0)
    assert Case(implementation, problem, "float32").causal
    assert Case(implementation, problem, "float32", causal=False).uncausal().causal
    assert not Case(_declared(), problem, "float32", causal=True).uncausal().causal


def test_the_golden_checks_need_the_seeds_sizes():
    assert seed_shapes_fit(parse(None))
    assert seed_shapes_fit(parse({"max_length": 8}))
    assert not seed_shapes_fit(parse({"max_length": 7}))  # the cross-attention input has 8 tokens
    assert not seed_shapes_fit(parse({"equal_head_dims": True}))  # d_k = 24, d_v = 28
    assert not seed_shapes_fit(parse({"width_is_heads_times_head_dim": True}))  # d_in = 16


def test_a_causal_only_implementation_is_never_called_without_the_mask(tmp_path):
    path = tmp_path / "decoder.py"
    path.write_text(
        "import torch\n"
        "CAPABILITIES = {'causal': 'only'}\n"
        "def self_attention(x, w_q, w_k, w_v):\n"
        "    n = x.shape[-2]\n"
        "    s = (x @ w_q.T) @ (x @ w_k.T).transpose(-2, -1) / w_q.shape[0] ** 0.5\n"
        "    w = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float('-inf')).softmax(-1)\n"
        "    return w @ (x @ w_v.T), w\n"
    )
    implementation = Implementation.load(str(path))
    try:
        assert implementation.claims("self_attention.causal")  # by declaration, without a `causal` parameter
        assert not implementation.claims("noncausal")
        x, w = torch.randn(4, 3), torch.randn(2, 3)
        out = implementation.attention("self_attention", x, w, w, w, causal=True)  # no `causal` argument passed
        assert (out.weights.triu(1) == 0).all()
        with pytest.raises(ValueError, match="causal='only'"):
            implementation.attention("self_attention", x, w, w, w)
    finally:
        implementation.close()


def test_a_causal_only_decoder_is_judged_on_causal_problems_and_says_what_it_left_out(suite):
    run = suite("tests.variants.correct.causal_decoder", "--profile", "fast", "-k", "symmetry or golden or causal")
    assert run.report is not None, run.output
    assert run.verdict("SYM-EQUIVARIANT") == "passed"  # in its causal form
    assert run.verdict("CAUSAL-MASK") == "passed"
    assert run.verdict("SYM-KV-INVARIANT") == "not claimed" and "causal='only'" in run.reason("SYM-KV-INVARIANT")
    assert run.verdict("GOLD-SELF") == "not claimed"
    assert run.verdict("GOLD-CAUSAL") == "not claimed" and "seed's sizes" in run.reason("GOLD-CAUSAL")
    left_out = " ".join(run.report["not_exercised"])
    assert "d_v ≠ d_k" in left_out and "longer than 64" in left_out and "causal" in left_out
    assert "not exercised, as declared in CAPABILITIES" in run.output


def test_sdpa_is_checked_as_it_is(suite):
    run = suite("torch.nn.functional:scaled_dot_product_attention", "--profile", "fast", "-k", "kernel")
    assert run.report is not None, run.output
    for clause_id in ("QKV-ATTEND", "QKV-SCALE", "QKV-CAUSAL", "QKV-MASK"):
        assert run.verdict(clause_id) == "passed", run.output
    # its spelling claims what SDPA documents (enable_gqa: grouped heads) and nothing it lacks (windows)
    assert run.verdict("QKV-GQA") == "passed", run.output
    assert run.verdict("QKV-WINDOW") == "not claimed"


def test_failures_are_remembered_per_implementation(tmp_path):
    """dev/thorough keep their example database per implementation: one's failures are not replayed on the next.
    Also under a CI variable, where hypothesis' own default profile keeps no database (CI failed on that)."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "conformance", "--profile", "dev", "-k", "kernel and scale", "--impl"]
    done = subprocess.run([*command, "conformance.teaching.mistakes:KernelIgnoresScale"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "true"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert [p.name for p in (tmp_path / ".hypothesis" / "conformance").iterdir()] == [
        "conformance.teaching.mistakes_KernelIgnoresScale"
    ]


def test_a_submodule_named_like_a_spec_function_is_not_that_function(tmp_path):
    """A homework package whose code lives in attention.py (tests/submissions/dave) still loads: the submodule
    `attention` is not the kernel function attention(q, k, v)."""
    package = tmp_path / "homework"
    package.mkdir()
    (package / "__init__.py").write_text("from .attention import self_attention\n")
    (package / "attention.py").write_text("def self_attention(x, w_q, w_k, w_v):\n    pass\n")
    implementation = Implementation.load(str(package))
    try:
        assert implementation.has("self_attention") and not implementation.has("attention")
    finally:
        implementation.close()


def test_the_readmes_capabilities_block_lists_every_key():
    """The README's CAPABILITIES example is where authors copy the keys from: every key, nothing else."""
    import re
    from pathlib import Path

    from conformance.judge.capabilities import DEFAULTS

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text[text.index("CAPABILITIES = {"):]
    block = block[: block.index("\n}")]
    assert re.findall(r'^\s+"(\w+)":', block, flags=re.M) == list(DEFAULTS)
