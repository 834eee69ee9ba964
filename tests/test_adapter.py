"""Guarded calls: a misbehaving implementation produces a clear failure, never a broken run."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conformance.judge.adapter import PRINT_LIMIT, Implementation, ImplementationError


def make(**functions) -> Implementation:
    capabilities = functions.pop("CAPABILITIES", None)
    return Implementation(SimpleNamespace(CAPABILITIES=capabilities, **functions), "test-double", call_timeout=1.0)


def inputs():
    return torch.ones(3, 2), torch.ones(4, 2), torch.ones(4, 2), torch.ones(5, 2)


def test_exception_is_reported_with_function_type_and_line():
    def self_attention(x, w_q, w_k, w_v):
        raise IndexError("index 7 is out of bounds")

    with pytest.raises(ImplementationError, match=r"self_attention raised IndexError: index 7 is out of bounds \(at test_adapter\.py:\d+\)"):
        make(self_attention=self_attention).attention("self_attention", *inputs())


def test_hang_hits_the_time_limit_once_then_is_not_retried():
    calls = []

    def self_attention(x, w_q, w_k, w_v):
        calls.append(1)
        while True:
            pass

    implementation = make(self_attention=self_attention)
    with pytest.raises(ImplementationError, match="did not return within 1 s"):
        implementation.attention("self_attention", *inputs())
    with pytest.raises(ImplementationError, match="earlier; not called again"):
        implementation.attention("self_attention", *inputs())
    assert len(calls) == 1


def test_exit_is_a_failure_not_the_end_of_the_run():
    def self_attention(x, w_q, w_k, w_v):
        sys.exit(2)

    with pytest.raises(ImplementationError, match=r"called exit\(2\)"):
        make(self_attention=self_attention).attention("self_attention", *inputs())


@pytest.mark.parametrize(
    "result, message",
    [
        (None, "returned a NoneType, expected a pair"),
        ([1, 2, 3], "returned a list, expected a pair"),
        ((np.ones(2), torch.ones(2)), "returned a numpy array .* expected a torch array"),
    ],
)
def test_wrong_return_types_are_named(result, message):
    with pytest.raises(ImplementationError, match=message):
        make(self_attention=lambda *a: result).attention("self_attention", *inputs())


def test_missing_weights_contradicting_the_claim_is_named():
    with pytest.raises(ImplementationError, match="returned no weights"):
        make(self_attention=lambda *a: (torch.ones(1), None)).attention("self_attention", *inputs())


def test_missing_weights_are_fine_when_not_claimed():
    implementation = make(self_attention=lambda *a: (torch.ones(1), None), CAPABILITIES={"returns_weights": False})
    assert implementation.attention("self_attention", *inputs()).weights is None


def test_in_place_modification_is_recorded_and_does_not_reach_the_caller():
    def attention_weights(scores, d_k):
        scores /= 2
        return scores

    scores = torch.ones(2, 2)
    implementation = make(attention_weights=attention_weights)
    implementation.tensor("attention_weights", scores, 4)
    assert implementation.last_call.mutated == ["argument 1"]
    assert torch.equal(scores, torch.ones(2, 2))


def test_flood_of_output_is_counted_not_kept():
    def self_attention(x, w_q, w_k, w_v):
        for _ in range(1000):
            print("x" * 1000)
        return torch.ones(1), torch.ones(1)

    implementation = make(self_attention=self_attention)
    implementation.attention("self_attention", *inputs())
    assert implementation.last_call.printed_bytes > PRINT_LIMIT


def test_numpy_implementations_get_arrays_and_give_tensors():
    seen = {}

    def project(x, weight):
        seen["type"] = type(x)
        return x @ weight.T

    implementation = make(project=project, CAPABILITIES={"array": "numpy"})
    out = implementation.tensor("project", torch.ones(2, 3), torch.ones(4, 3))
    assert seen["type"] is np.ndarray
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
