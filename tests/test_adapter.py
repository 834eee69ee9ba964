"""Guarded calls through the worker: a misbehaving implementation produces a clear failure, never a broken run."""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
import torch

from conformance.judge.adapter import PRINT_LIMIT, Implementation, ImplementationError

HEADER = "import os, sys, time\nimport numpy as np\nimport torch\n"


@pytest.fixture
def make(tmp_path, template):
    """Write a submission file and load it in a worker; every worker is ended after the test."""
    made: list[Implementation] = []

    def load(source: str, *, in_process: bool = False, call_timeout: float = 2.0) -> Implementation:
        path = tmp_path / f"submission{len(made)}.py"
        path.write_text(HEADER + textwrap.dedent(source))
        made.append(Implementation.load(str(path), call_timeout, in_process=in_process, template=template))
        return made[-1]

    yield load
    for implementation in made:
        implementation.close()


def inputs():
    return torch.ones(3, 2), torch.ones(4, 2), torch.ones(4, 2), torch.ones(5, 2)


def test_exception_is_reported_with_function_type_and_line(make):
    implementation = make("""
        def self_attention(x, w_q, w_k, w_v):
            raise IndexError("index 7 is out of bounds")
    """)
    with pytest.raises(ImplementationError, match=r"self_attention raised IndexError: index 7 is out of bounds \(at submission0\.py:\d+\)") as error:
        implementation.attention("self_attention", *inputs())
    assert error.value.raised[:2] == ("IndexError", "LookupError") and error.value.detail == "index 7 is out of bounds"


def test_hang_is_killed_from_outside_once_and_a_fresh_worker_serves_the_rest(make):
    implementation = make("""
        import signal
        signal.signal(signal.SIGALRM, signal.SIG_IGN)   # an in-process alarm would be defeated

        def self_attention(x, w_q, w_k, w_v):
            while True:
                pass

        def project(x, w):
            return x @ w.T
    """, call_timeout=1.0)
    start = time.perf_counter()
    with pytest.raises(ImplementationError, match="did not return within 1 s"):
        implementation.attention("self_attention", *inputs())
    assert time.perf_counter() - start < 10
    with pytest.raises(ImplementationError, match="earlier; not called again"):
        implementation.attention("self_attention", *inputs())
    assert implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3)).shape == (2, 4)


@pytest.mark.parametrize("exit_call, message", [
    ("sys.exit(2)", r"called exit\(2\)"),
    ("os._exit(3)", r"ended the worker process \(exit status 3\)"),
    ("os.kill(os.getpid(), 40)", r"ended the worker process \(killed by signal 40\)"),
    ("os.kill(os.getpid(), 9)", r"ended the worker process \(killed by SIGKILL\)"),
])
def test_exit_and_death_are_failures_not_the_end_of_the_run(make, exit_call, message):
    implementation = make(f"""
        def self_attention(x, w_q, w_k, w_v):
            {exit_call}

        def project(x, w):
            return x @ w.T
    """)
    with pytest.raises(ImplementationError, match=message):
        implementation.attention("self_attention", *inputs())
    assert implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3)).shape == (2, 4)


@pytest.mark.parametrize(
    "result, message",
    [
        ("None", "returned a NoneType, expected a pair"),
        ("[1, 2, 3]", "returned a list, expected a pair"),
        ("(np.ones(2), torch.ones(2))", r"returned a numpy array \(2,\) float64, expected a torch array"),
        ("(object(), torch.ones(2))", "returned a object, expected a torch array"),
        ("(torch.ones(2, dtype=torch.complex64), torch.ones(2))", "returned a torch array of dtype complex64"),
    ],
)
def test_wrong_return_types_are_named(make, result, message):
    implementation = make(f"""
        def self_attention(x, w_q, w_k, w_v):
            return {result}
    """)
    with pytest.raises(ImplementationError, match=message):
        implementation.attention("self_attention", *inputs())


def test_tensor_subclasses_come_back_as_plain_tensors(make):
    implementation = make("""
        class Liar(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                return True   # every comparison "agrees"

        def project(x, w):
            return torch.zeros(x.shape[0], w.shape[0]).as_subclass(Liar)
    """)
    out = implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3))
    assert type(out) is torch.Tensor and not torch.equal(out, torch.ones(2, 4))


def test_missing_weights_contradicting_the_claim_is_named(make):
    implementation = make("""
        def self_attention(x, w_q, w_k, w_v):
            return torch.ones(1), None
    """)
    with pytest.raises(ImplementationError, match="returned no weights"):
        implementation.attention("self_attention", *inputs())


def test_missing_weights_are_fine_when_not_claimed(make):
    implementation = make("""
        CAPABILITIES = {"returns_weights": False}

        def self_attention(x, w_q, w_k, w_v):
            return torch.ones(1), None
    """)
    assert implementation.attention("self_attention", *inputs()).weights is None


@pytest.mark.parametrize("in_process", [False, True])
def test_in_place_modification_is_recorded_and_does_not_reach_the_caller(make, in_process):
    implementation = make("""
        def attention_weights(scores, d_k):
            scores /= 2
            return scores
    """, in_process=in_process)
    scores = torch.ones(2, 2)
    implementation.tensor("attention_weights", scores, 4)
    assert implementation.last_call.mutated == ["argument 1"]
    assert torch.equal(scores, torch.ones(2, 2))


@pytest.mark.parametrize("in_process", [False, True])
def test_flood_of_output_is_counted_not_kept(make, in_process):
    implementation = make("""
        def self_attention(x, w_q, w_k, w_v):
            for _ in range(1000):
                print("x" * 1000)
            return torch.ones(1), torch.ones(1)
    """, in_process=in_process)
    implementation.attention("self_attention", *inputs())
    assert implementation.last_call.printed_bytes > PRINT_LIMIT


def test_output_written_to_the_file_descriptor_is_counted(make):
    implementation = make("""
        def self_attention(x, w_q, w_k, w_v):
            os.write(1, b"y" * 300_000)
            return torch.ones(1), torch.ones(1)
    """)
    implementation.attention("self_attention", *inputs())
    assert implementation.last_call.printed_bytes >= 300_000


def test_numpy_implementations_get_arrays_and_give_tensors(make):
    implementation = make("""
        CAPABILITIES = {"array": "numpy"}

        def project(x, weight):
            assert type(x) is np.ndarray, type(x)
            return x @ weight.T
    """)
    out = implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


def test_plain_data_round_trips(make):
    implementation = make("""
        def build_vocab(sentence):
            return {word: i for i, word in enumerate(sorted(set(sentence.split())))}

        def token_ids(sentence, vocab):
            return torch.tensor([vocab[w] for w in sentence.split()])
    """)
    vocab = implementation.call("build_vocab", "b a b")
    assert vocab == {"a": 0, "b": 1}
    assert implementation.tensor("token_ids", "b a", vocab).tolist() == [1, 0]


def test_gradients_flow_through_the_worker(make):
    implementation = make("""
        CAPABILITIES = {"autograd": True, "dtypes": ["float64"]}

        def project(x, w):
            return x @ w.T
    """)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    out = implementation.tensor("project", x, w)
    upstream = torch.randn(3, 5, dtype=torch.float64)
    grad_x, grad_w = torch.autograd.grad((out * upstream).sum(), [x, w])
    assert torch.allclose(grad_x, upstream @ w.detach()) and torch.allclose(grad_w, upstream.T @ x.detach())
    assert torch.autograd.gradcheck(lambda a, b: implementation.tensor("project", a, b), [x, w])


def test_a_cut_graph_gives_no_gradient(make):
    implementation = make("""
        CAPABILITIES = {"autograd": True, "dtypes": ["float64"]}

        def project(x, w):
            return torch.from_numpy(x.detach().numpy() @ w.detach().numpy().T)
    """)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = implementation.tensor("project", x, torch.randn(5, 4, dtype=torch.float64))
    assert not out.requires_grad


def test_a_call_that_raises_after_writing_into_its_input_is_still_caught(make):
    implementation = make("""
        def attention_weights(scores, d_k):
            scores.zero_()
            raise ValueError("gave up")
    """)
    with pytest.raises(ImplementationError, match="gave up"):
        implementation.tensor("attention_weights", torch.ones(2, 2), 4)
    assert implementation.last_call.mutated == ["argument 1"]
