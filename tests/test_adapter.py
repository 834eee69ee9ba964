"""Guarded calls through the worker: a misbehaving implementation produces a clear failure, never a broken run."""

from __future__ import annotations

import builtins
import io
import os
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import conformance.judge.adapter as adapter
from conformance.judge.adapter import PRINT_LIMIT, Implementation, ImplementationError
from conformance.worker import wire
from conformance.worker.loader import LoadError, discarded_output
from tests.conftest import REPO

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


# ---------------------------------------------------------------------------------- the worker's socket
GARBAGE = """
        import stat, struct

        def garbage(document):
            for fd in range(3, 256):  # the worker's socket, found as an attacker would
                try:
                    if stat.S_ISSOCK(os.fstat(fd).st_mode):
                        os.write(fd, struct.pack("<II", len(document), 0) + document)
                except OSError:
                    pass
"""  # indented as the sources below: make() dedents the whole


def test_a_malformed_frame_fails_its_call_at_once_and_a_fresh_worker_serves_the_next(make):
    implementation = make(GARBAGE + """
        def self_attention(x, w_q, w_k, w_v):
            garbage(b"[1, 2, 3]")  # a frame, but no message: every message is a JSON object
            time.sleep(60)  # the judge must not wait for this call's time limit

        def project(x, w):
            return x @ w.T
    """, call_timeout=30.0)
    for _ in range(2):  # not "hung": each call gets a fresh worker, and the same verdict
        with pytest.raises(ImplementationError, match=r"self_attention: the worker sent a malformed message "
                                                      r"\(frame holds a JSON list, not an object\); it was ended"):
            implementation.attention("self_attention", *inputs())
        assert implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3)).shape == (2, 4)


def test_the_garbage_frames_sample_ends_its_load_at_once(template, monkeypatch):
    """tests/submissions/adversarial/garbage_frames.py starts a frame at import and never finishes it (it does
    nothing else, so it may run outside the sandbox). Were that not seen, the load would end with "no
    answer within 30 s" instead."""
    monkeypatch.setattr(adapter, "START_TIMEOUT", 30.0)
    with pytest.raises(LoadError, match=r"while loading .*garbage_frames\.py, the worker sent a malformed message "
                                        r"\(a frame stopped after \d+ bytes; none came for 2 s\); it was ended"):
        Implementation.load(str(REPO / "tests" / "submissions" / "adversarial" / "garbage_frames.py"),
                            template=template)


@pytest.mark.parametrize("data, message", [
    (b"\xff\xff\xff\xff\x00\x00\x00\x00", "frame header announces 4294967295 bytes of JSON"),
    (b"\x03\x00\x00\x00\x00\x00\x00\x00abc", "frame is not JSON"),
    (b"\x01\x00\x00\x00\x00\x00\x00\x007", "frame holds a JSON int, not an object"),
    (len(b"[" * 200_000).to_bytes(4, "little") + b"\x00" * 4 + b"[" * 200_000, "frame is not JSON"),  # too deep
])
def test_a_malformed_frame_is_a_frame_error(data, message):
    reader = wire.Reader()
    reader.feed(data)
    with pytest.raises(wire.FrameError, match=message):
        reader.frame()


def test_a_started_frame_is_pending():
    reader = wire.Reader()
    reader.feed(b"\x02\x00\x00\x00\x00\x00\x00\x00{}" + b"\x09\x00")
    assert reader.frame() == ({}, []) and reader.pending == 2 and reader.frame() is None


# ---------------------------------------------------------------------------------- floods
def test_a_function_that_flooded_is_charged_its_flood_on_later_calls(make):
    """After one call past PRINT_LIMIT the judge asks the worker to discard the function's output (formatting
    it was most of a flooding submission's grading time) and charges each later call the flood it counted."""
    implementation = make("""
        calls = []

        def self_attention(x, w_q, w_k, w_v):
            calls.append(1)
            if len(calls) == 1:
                os.write(1, b"y" * 300_000)
            return torch.ones(1), torch.ones(1)
    """)
    implementation.attention("self_attention", *inputs())
    flood = implementation.last_call.printed_bytes
    implementation.attention("self_attention", *inputs())
    assert flood >= 300_000 and implementation.last_call.printed_bytes == flood


def test_discarded_output_formats_nothing_and_restores_everything(capfd):
    """What the worker runs a flooded function's later calls in (conformance/worker/loader.py)."""
    class Loud:
        formatted = 0

        def __str__(self) -> str:
            Loud.formatted += 1
            return "loud"

    kept = io.StringIO()
    printer, streams = builtins.print, (sys.stdout, sys.stderr)
    print("before", flush=True)
    with discarded_output():
        print(Loud(), [Loud()] * 3)
        print(Loud(), file=sys.stderr)
        sys.stdout.write("written\n")
        os.write(1, b"raw\n")
        os.write(2, b"raw error\n")
        print("kept", file=kept)  # a file of its own is not the output
    print("after", flush=True)
    assert Loud.formatted == 0 and kept.getvalue() == "kept\n"
    assert (builtins.print, sys.stdout, sys.stderr) == (printer, *streams)
    assert capfd.readouterr() == ("before\nafter\n", "")
