"""Spec section "interface": shapes, batching, dtype, device, purity, determinism, quiet."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.adapter import PRINT_LIMIT
from conformance.judge.assertions import assert_agree, check_shape, fail
from conformance.judge.capabilities import DTYPES
from conformance.judge.blocking import judged, returned_or_set_aside
from conformance.judge.cases import FUNCTION_OF, Case, draw_kind, exercise, returned, shapes
from conformance.judge.strategies import problems


@clause("API-SHAPES")
@given(data=st.data())
def test_attention_outputs_have_the_spec_shapes(implementation, cases, data):
    kind = draw_kind(data, implementation)
    # a function that raises under causal masking fails here: it does not return the spec's shapes
    causal = kind != "concat" and implementation.claims(f"{FUNCTION_OF[kind]}.causal") and data.draw(
        st.booleans(), label="causal"
    )
    case = cases.pipeline(data.draw(problems(kind), label="problem"), causal=causal)
    out = case.run()
    context_shape, weights_shape = shapes(case.problem)
    check_shape(f"{case.function} context", out.context, context_shape)
    if out.weights is not None:
        check_shape(f"{case.function} weights", out.weights, weights_shape)


@clause("API-SHAPES")
@given(problem=problems("cross"))
def test_step_outputs_have_the_spec_shapes(implementation, device, dtype, problem):
    calls = {c.function: c for c in returned(exercise(implementation, problem, dtype, device))}
    p = Case(implementation, problem, dtype, device).problem
    expected = {
        "project": (*p.batch, p.n_q, p.d_k),
        "attention_scores": (*p.batch, p.n_q, p.n_kv),
        "attention_weights": (*p.batch, p.n_q, p.n_kv),
    }
    steps = [f for f in expected if f in calls]
    if not steps:
        pytest.skip("not claimed: project, attention_scores, attention_weights")
    for function in steps:
        check_shape(f"{function} output", calls[function].outputs[0], expected[function])


@clause("API-BATCH")
@needs("batching")
@given(data=st.data())
def test_batch_equals_examples_one_by_one(implementation, cases, data):
    kind = draw_kind(data, implementation)
    problem = data.draw(problems(kind).filter(lambda p: len(p.batch) > 0), label="problem")
    batched = cases.pipeline(problem)
    examples = {index: batched.example(index) for index in itertools.product(*(range(n) for n in problem.batch))}
    with judged(batched, *examples.values()):
        out = batched.run_checked()
        for index, example in examples.items():
            single = example.run_checked()
            relation = f"batch example {list(index)} computed alone must equal its slice of the batched result"
            assert_agree("context", out.context[index], single.context,
                         batched.expected().context.allowed + example.expected().context.allowed, relation)
            if out.weights is not None:
                assert_agree("weights", out.weights[index], single.weights,
                             batched.expected().weights.allowed + example.expected().weights.allowed, relation)


@clause("API-DTYPE")
@pytest.mark.parametrize("dtype_name", [pytest.param(d, marks=needs(f"dtype:{d}")) for d in DTYPES])
@given(problem=problems("self"))
def test_outputs_keep_the_input_dtype(implementation, device, dtype_name, problem):
    for call in returned_or_set_aside(exercise(implementation, problem, dtype_name, device)):
        for output in call.outputs:
            if output is not None and output.dtype != DTYPES[dtype_name]:
                fail(f"{call.function} returned {output.dtype} for {dtype_name} inputs")


@clause("API-DEVICE")
@given(problem=problems("self"))
def test_outputs_stay_on_the_input_device(implementation, device, dtype, problem):
    for call in returned_or_set_aside(exercise(implementation, problem, dtype, device)):
        for output in call.outputs:
            if output is not None and output.device.type != torch.device(device).type:
                fail(f"{call.function} returned a tensor on {output.device} for inputs on {device}")


@clause("API-PURE")
@given(problem=problems("cross"))
def test_inputs_are_never_modified(implementation, device, dtype, problem):
    calls = exercise(implementation, problem, dtype, device)
    for call in calls:  # a function that raised may have modified its inputs too: every call is checked
        if call.record.mutated:
            fail(f"{call.function} modified its {', '.join(call.record.mutated)} in place")
    returned_or_set_aside(calls)


@clause("API-DETERMINISTIC")
@given(problem=problems("self"))
def test_same_inputs_same_outputs_on_cpu(implementation, dtype, problem):
    first = {c.function: c for c in returned_or_set_aside(exercise(implementation, problem, dtype, "cpu"))}
    second = {c.function: c for c in exercise(implementation, problem, dtype, "cpu")}
    for function, a in first.items():
        b = second[function]
        if b.error:
            fail(f"{function} returned a result the first time and failed the second: {b.error}")
        for x, y in zip(a.outputs, b.outputs):
            # NaN where the other has NaN is the same result (a NaN is WEIGHTS-STABLE's business, not this one's)
            if x is not None and not (x.shape == y.shape and torch.equal(x.isnan(), y.isnan())
                                      and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0))):
                differ = int(((x != y) & ~(x.isnan() & y.isnan())).sum()) if x.shape == y.shape else "all"
                fail(f"{function} returned different results for the same inputs ({differ} elements differ)")


@clause("API-QUIET")
@given(problem=problems("self"))
def test_calls_do_not_flood_the_output(implementation, device, dtype, problem):
    calls = exercise(implementation, problem, dtype, device)
    for call in calls:
        if call.record.printed_bytes > PRINT_LIMIT:
            fail(f"{call.function} printed {call.record.printed_bytes:,} bytes in one call (limit {PRINT_LIMIT:,})")
    returned_or_set_aside(calls)
