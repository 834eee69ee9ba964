"""Spec section "context": context = weights · V, inside the values' hull, linear in the values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge import oracle
from conformance.judge.assertions import assert_agree, fail
from conformance.judge.blocking import judged
from conformance.judge.cases import Case
from conformance.judge.strategies import Inputs, problems


def _values(case: Case) -> torch.Tensor:
    """float64 values of a case: x_kv W_Vᵀ."""
    x_kv, w_v = oracle.upcast(case.inputs.x_kv, case.inputs.w_v)
    return oracle.project(x_kv, w_v)


@clause("CONTEXT-MIX")
@pytest.mark.parametrize("kind", [pytest.param("self", marks=needs("self_attention", "weights")),
                                  pytest.param("cross", marks=needs("cross_attention", "weights"))])
@given(data=st.data())
def test_context_is_weights_times_values(cases, kind, data):
    case = cases.pipeline(data.draw(problems(kind), label="problem"))
    with judged(case):
        out = case.run_checked()
        # the implementation's own weights: this clause is about the last step only
        mixed = out.weights.detach().to("cpu", torch.float64) @ _values(case)
        assert_agree(
            "context", out.context, mixed, case.expected().context.allowed,
            "context must be your weights times the values (x_kv W_Vᵀ)",
        )


@clause("CONTEXT-HULL")
@needs("self_attention")
@given(problem=problems("self"))
def test_context_lies_within_the_values(cases, problem):
    case = cases.pipeline(problem)
    with judged(case):
        _check_hull(case)


def _check_hull(case: Case) -> None:
    context = case.run_checked().context.detach().to("cpu", torch.float64)
    values = _values(case)
    if context.shape[:-2] != values.shape[:-2] or context.shape[-1] != values.shape[-1]:
        fail(f"context has shape {tuple(context.shape)}, values {tuple(values.shape)}: cannot be a mix of the values")
    low = values.amin(dim=-2, keepdim=True)
    high = values.amax(dim=-2, keepdim=True)
    slack = case.expected().context.allowed
    outside = torch.maximum(low - context, context - high)
    if outside.max().item() > slack:
        flat = int(outside.flatten().argmax())
        fail(
            f"context element {flat} lies {outside.flatten()[flat].item():.3g} outside the range of the values "
            f"in its feature (allowed {slack:.2g}): a weighted average of the values cannot leave their range"
        )


@clause("CONTEXT-LINEAR")
@needs("self_attention")
@given(problem=problems("self"), factor=st.sampled_from([2.0, 0.5, -1.0]))
def test_context_is_linear_in_the_value_weights(cases, problem, factor):
    case = cases.pipeline(problem)
    i = case.inputs
    generator = torch.Generator().manual_seed(problem.seed + 3)
    other = (torch.randn(i.w_v.shape, generator=generator, dtype=torch.float64) / problem.d_in**0.5).to(i.w_v)
    # the sum W_V1 + W_V2 is rounded in the dtype, so each relation allows the bounds of all results involved
    cases = {
        "W_V1": case,
        "W_V2": case.with_inputs(Inputs(i.x_q, i.x_kv, i.w_q, i.w_k, other, i.w_o)),
        "W_V1 + W_V2": case.with_inputs(Inputs(i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v + other, i.w_o)),
        "a W_V1": case.with_inputs(Inputs(i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v * factor, i.w_o)),
    }
    with judged(*cases.values()):
        for c in cases.values():
            c.run_checked()
        out = {name: c.run().context.detach().to("cpu", torch.float64) for name, c in cases.items()}
        bound = {name: c.expected().context.allowed for name, c in cases.items()}
        assert_agree(
            "context", out["W_V1 + W_V2"], out["W_V1"] + out["W_V2"],
            bound["W_V1 + W_V2"] + bound["W_V1"] + bound["W_V2"],
            "context(W_V1 + W_V2) must equal context(W_V1) + context(W_V2)",
        )
        assert_agree(
            "context", out["a W_V1"], factor * out["W_V1"], bound["a W_V1"] + abs(factor) * bound["W_V1"],
            f"context({factor:g} W_V) must equal {factor:g} context(W_V)",
        )
