"""JAX implementations (CAPABILITIES array="jax"): the declaration, the transport, and the example through the worker.

The tests that run jax are skipped where it is not installed (pip install -e '.[jax]'). They check for it
with find_spec rather than pytest.importorskip: importing jax into this process would start its threads in
a process that later forks (coverage's forked graders), which jax warns can deadlock. jax only ever runs in
the workers.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch

import spec
from conformance.judge.adapter import Implementation, ImplementationError
from conformance.judge.capabilities import CapabilityError, parse
from conformance.judge.workers import plain_config
from conformance.worker import wire
from conformance.worker.loader import LoadError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jax_attention.py"
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed (pip install -e '.[jax]')")


# ---------------------------------------------------------------- the declaration


def test_jax_is_declared_like_numpy_but_with_bfloat16():
    caps = parse({"array": "jax"})
    assert caps.array == "jax" and caps.devices == ("cpu",) and caps.dtypes == ("float32", "float64")
    assert parse({"array": "jax", "dtypes": ["bfloat16", "float16"]}).dtypes == ("bfloat16", "float16")


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"array": "jax", "devices": ["cpu", "cuda"]}, r"unknown entries \['cuda'\]; allowed for array='jax': \['cpu'\]"),
        ({"array": "jax", "autograd": True}, "cannot be True for a jax implementation: gradients are checked through torch"),
        ({"array": "jax", "dtypes": ["int8"]}, r"unknown entries \['int8'\]; allowed for array='jax'"),
        ({"array": "jax", "dtypes": "bfloat16"}, "must be a non-empty list of names from .* for array='jax'"),
        ({"array": "Jax"}, r"must be one of \['torch', 'numpy', 'jax'\], got 'Jax'"),
    ],
)
def test_bad_jax_declarations_are_explained(declared, message):
    with pytest.raises(CapabilityError, match=message):
        parse(declared)


def test_the_judge_keeps_the_kind_of_a_jax_array_and_names_it():
    document, buffers = wire.encode(torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))
    document["kind"] = "jax"  # as a worker sends a jax result
    received = wire.decode(document, buffers)
    assert isinstance(received, wire.JaxArray) and received.tensor.dtype == torch.bfloat16
    assert torch.equal(received.tensor, torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))
    assert wire.describe(received) == "jax array (2, 3) bfloat16"
    assert isinstance(wire.decode(document, buffers, "torch"), torch.Tensor)  # asked for torch: torch


# ---------------------------------------------------------------- through the worker


@pytest.fixture
def load(tmp_path, template):
    """Load a submission (source text, or a path) in a worker forked from the session's template."""
    made: list[Implementation] = []

    def start(source: str | Path, path: list[str] = ()) -> Implementation:
        if isinstance(source, str):
            target = tmp_path / f"submission{len(made)}.py"
            target.write_text(textwrap.dedent(source))
        else:
            target = source
        config = plain_config(str(target), list(spec.load().function_names))
        config.path = list(path)
        made.append(Implementation.load(str(target), 5.0, config=config, template=template))
        return made[-1]

    yield start
    for implementation in made:
        implementation.close()


def test_a_missing_jax_is_named_with_what_to_install(load, tmp_path):
    # a jax that cannot be imported, first on the worker's path: as where jax is not installed
    fake = tmp_path / "nojax" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'jax'\", name='jax')\n")
    declared_only = """
        CAPABILITIES = {"array": "jax"}

        def project(x, weight):
            return x
    """
    with pytest.raises(LoadError, match=r"CAPABILITIES says array='jax' but jax is not installed: pip install jax"):
        load(declared_only, path=[str(fake.parent)])
    with pytest.raises(LoadError, match=r"No module named 'jax'.*jax is not installed in this environment: pip install jax"):
        load("import jax\n" + textwrap.dedent(declared_only), path=[str(fake.parent)])


@needs_jax
def test_the_jax_example_computes_through_the_worker(load):
    implementation = load(EXAMPLE)
    assert implementation.capabilities.array == "jax" and "bfloat16" in implementation.capabilities.dtypes
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, generator=generator)
    w_q, w_k, w_v = (torch.randn(3, 4, generator=generator) for _ in range(3))

    assert torch.allclose(implementation.tensor("project", x, w_q), x @ w_q.T, atol=1e-5)
    half = implementation.tensor("project", x.bfloat16(), w_q.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), x @ w_q.T, atol=0.1)

    context, weights = implementation.attention("self_attention", x, w_q, w_k, w_v, causal=True)
    expected = torch.softmax(((x @ w_q.T) @ (x @ w_k.T).transpose(-1, -2) / 3**0.5).masked_fill(
        torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf")), dim=-1)
    assert torch.allclose(weights, expected, atol=1e-6) and torch.equal(weights.triu(1), torch.zeros_like(weights))
    assert torch.allclose(context, expected @ (x @ w_v.T), atol=1e-5)

    ids = implementation.tensor("token_ids", "b a b", {"a": 0, "b": 1})
    assert ids.dtype == torch.int64 and ids.tolist() == [1, 0, 1]  # int64: the worker turned on 64-bit mode


@needs_jax
def test_a_jax_implementation_gets_jax_arrays_and_must_give_jax_arrays_back(load):
    implementation = load("""
        import jax
        import numpy as np

        CAPABILITIES = {"array": "jax", "dtypes": ["float32"]}

        def project(x, weight):
            assert isinstance(x, jax.Array) and isinstance(weight, jax.Array), (type(x), type(weight))
            return x @ weight.T

        def attention_scores(queries, keys):
            return np.asarray(queries @ keys.T)  # a numpy array: not what was declared
    """)
    assert implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3)).tolist() == [[3.0] * 4] * 2
    with pytest.raises(ImplementationError,
                       match=r"attention_scores returned a numpy array \(2, 2\) float32, expected a jax array"):
        implementation.tensor("attention_scores", torch.ones(2, 3), torch.ones(2, 3))


@needs_jax
def test_jax_nn_dot_product_attention_plugs_in_by_name(suite):
    """jax's own kernel, no adapter code: its spelling (is_causal, local_window_size; (b, n, h, d); top-left) is
    understood. The core clauses here, three examples each; `tox -e jax` and `python -m tests.matrix --slow` judge
    it on every clause it claims (about two minutes: XLA compiles every op for every new shape)."""
    run = suite("jax.nn:dot_product_attention", "--profile", "quick", "-k",
                "softmax_of_scaled_scores or causal_queries_see_only or local_window_hides")
    assert run.report is not None, run.output
    for clause_id in ("QKV-ATTEND", "QKV-CAUSAL", "QKV-WINDOW"):
        assert run.verdict(clause_id) == "passed", run.output[-3000:]
    assert run.verdict("QKV-SOFTCAP") in ("not claimed", "not run")  # no softcap in its signature
