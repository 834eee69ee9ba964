"""Spec section "interface": shapes, batching, dtype, device, purity, determinism, quiet.

The clauses hold for every computing function alike: the pipeline and step functions (exercise()) and, where
the implementation provides it, the kernel attention(q, k, v) of the kernel section, on a small drawn
kernel problem (an implementation may provide the kernel alone, as SDPA does).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.adapter import PRINT_LIMIT, ImplementationError
from conformance.judge.assertions import ClauseFailure, assert_agree, check_shape, fail
from conformance.judge.capabilities import DTYPES
from conformance.judge.blocking import judged, prerequisite, returned_or_set_aside
from conformance.judge.cases import (
    FUNCTION_OF,
    Call,
    Case,
    Cases,
    KernelCase,
    KernelInputs,
    claimed_kinds,
    draw_kind,
    exercise,
    shapes,
)
from conformance.judge.strategies import KernelProblem, kernel_problems, problems

KERNEL_SIZE = 16  # tokens and head width of the kernel problems here: these clauses need a call, not a long sum


def small_kernel_problems(mask: tuple[str, ...] = ("none",)) -> st.SearchStrategy[KernelProblem]:
    """kernel_problems() cut to at most KERNEL_SIZE tokens and head width (heads and batch stay as drawn)."""
    return kernel_problems(mask=mask).map(lambda p: replace(
        p, n_q=min(p.n_q, KERNEL_SIZE), n_kv=min(p.n_kv, KERNEL_SIZE), d_k=min(p.d_k, KERNEL_SIZE),
        d_v=min(p.d_v, KERNEL_SIZE)))


def kernel_case(cases: Cases, problem: KernelProblem, dtype: str | None = None) -> KernelCase:
    """attention(q, k, v) on the problem (causal when the implementation declares causal='only'; the mask
    drawn only for a kernel that takes one)."""
    implementation = cases.implementation
    return cases.kernel(problem, dtype, causal=implementation.capabilities.causal_only,
                        masked=implementation.claims("masks"))


def kernel_example(batched: KernelCase, index: tuple[int, ...]) -> KernelCase:
    """One example of a batched kernel call, as its own unbatched call (a mask of the batch's shape sliced
    with it, a shared one passed as it is)."""
    i = batched.inputs
    alone = replace(batched, problem=batched.problem.unbatched(), _memo={})
    mask = i.mask[index] if i.mask is not None and i.mask.dim() == i.q.dim() else i.mask
    alone.__dict__["inputs"] = KernelInputs(i.q[index], i.k[index], i.v[index], mask)
    return alone


def same_result(x: torch.Tensor, y: torch.Tensor) -> bool:
    """The same tensor, NaN where the other has NaN (a NaN is WEIGHTS-STABLE's business, not determinism's)."""
    return (x.shape == y.shape and torch.equal(x.isnan(), y.isnan())
            and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0)))


def kernel_answers_alike(case: KernelCase, failure: str) -> None:
    """API-BATCH's prerequisite API-DETERMINISTIC on a kernel call (the detectors of blocking.py look at pipeline
    cases only): a kernel that answers the same call differently again blocks the example, as dropout left on."""
    try:
        first, again = case.run(), case.call()
    except ImplementationError:
        return
    if any((x is None) != (y is None) or (x is not None and not same_result(x, y)) for x, y in zip(first, again)):
        prerequisite(case, "API-DETERMINISTIC", "attention returned different results for the same inputs", failure)


def every_call(cases: Cases, problem, kernel: KernelProblem, dtype: str) -> list[Call]:
    """exercise() on the pipeline problem, then one fresh call of the kernel on its own problem (if provided)."""
    implementation = cases.implementation
    calls = exercise(implementation, problem, dtype, cases.device)
    if implementation.has("attention"):
        try:
            calls.append(Call("attention", tuple(kernel_case(cases, kernel, dtype).call()), implementation.last_call))
        except ImplementationError as error:
            calls.append(Call("attention", (), implementation.last_call, str(error)))
    return calls


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
    p = Case(implementation, problem, dtype, device).problem
    expected = {
        "project": (*p.batch, p.n_q, p.d_k),
        "attention_scores": (*p.batch, p.n_q, p.n_kv),
        "attention_weights": (*p.batch, p.n_q, p.n_kv),
    }
    if not any(implementation.has(function) for function in expected):
        pytest.skip("not claimed: project, attention_scores, attention_weights")
    calls = {c.function: c for c in exercise(implementation, problem, dtype, device)}
    for function in (f for f in expected if f in calls):
        if calls[function].error:  # a claimed step that raises returns no shape at all: this clause fails
            fail(f"{function} raised instead of returning its output of shape {expected[function]}: "
                 f"{calls[function].error}")
        check_shape(f"{function} output", calls[function].outputs[0], expected[function])


@clause("API-BATCH")
@needs("batching")
@given(data=st.data())
def test_batch_equals_examples_one_by_one(implementation, cases, data):
    # the kernel where it is the only attention function, else now and then (no extra draw without a kernel)
    if implementation.has("attention") and (not claimed_kinds(implementation) or data.draw(st.booleans(),
                                                                                          label="kernel")):
        masks = ("none", "bool", "float")  # a mask of the batch's shape must go with its example
        batched = kernel_case(cases, data.draw(small_kernel_problems(masks).filter(lambda p: len(p.batch) > 0),
                                               label="problem"))
        example = lambda index: kernel_example(batched, index)  # noqa: E731
    else:
        kind = draw_kind(data, implementation)
        batched = cases.pipeline(data.draw(problems(kind).filter(lambda p: len(p.batch) > 0), label="problem"))
        example = batched.example
    batch = batched.problem.batch
    examples = {index: example(index) for index in itertools.product(*(range(n) for n in batch))}
    with judged(batched, *examples.values()):
        try:
            out = batched.run_checked()
            for index, example in examples.items():
                single = example.run_checked()
                relation = f"batch example {list(index)} computed alone must equal its slice of the batched result"
                assert_agree("context", out.context[index], single.context,
                             batched.expected().context.allowed + example.expected().context.allowed, relation)
                if out.weights is not None:
                    assert_agree("weights", out.weights[index], single.weights,
                                 batched.expected().weights.allowed + example.expected().weights.allowed, relation)
        except ClauseFailure as error:
            if isinstance(batched, KernelCase):
                kernel_answers_alike(batched, str(error))
            raise


@clause("API-DTYPE")
@pytest.mark.parametrize("dtype_name", [pytest.param(d, marks=needs(f"dtype:{d}")) for d in DTYPES])
@given(problem=problems("self"), kernel=small_kernel_problems())
def test_outputs_keep_the_input_dtype(cases, dtype_name, problem, kernel):
    for call in returned_or_set_aside(every_call(cases, problem, kernel, dtype_name)):
        for output in call.outputs:
            if output is not None and output.dtype != DTYPES[dtype_name]:
                fail(f"{call.function} returned {output.dtype} for {dtype_name} inputs")


@clause("API-DEVICE")
@given(problem=problems("self"), kernel=small_kernel_problems())
def test_outputs_stay_on_the_input_device(cases, device, dtype, problem, kernel):
    for call in returned_or_set_aside(every_call(cases, problem, kernel, dtype)):
        for output in call.outputs:
            if output is not None and output.device.type != torch.device(device).type:
                fail(f"{call.function} returned a tensor on {output.device} for inputs on {device}")


@clause("API-PURE")
@given(problem=problems("cross"), kernel=small_kernel_problems(("none", "bool", "float")))
def test_inputs_are_never_modified(cases, dtype, problem, kernel):
    calls = every_call(cases, problem, kernel, dtype)  # the kernel's mask is an input too
    for call in calls:  # a function that raised may have modified its inputs too: every call is checked
        if call.record.mutated:
            fail(f"{call.function} modified its {', '.join(call.record.mutated)} in place")
    returned_or_set_aside(calls)


@clause("API-DETERMINISTIC")
@given(problem=problems("self"), kernel=small_kernel_problems())
def test_same_inputs_same_outputs_on_cpu(implementation, dtype, problem, kernel):
    on_cpu = Cases(implementation, "cpu", dtype, "API-DETERMINISTIC")  # not the `cases` fixture: not per device
    first = {c.function: c for c in returned_or_set_aside(every_call(on_cpu, problem, kernel, dtype))}
    second = {c.function: c for c in every_call(on_cpu, problem, kernel, dtype)}
    for function, a in first.items():
        b = second[function]
        if b.error:
            fail(f"{function} returned a result the first time and failed the second: {b.error}")
        for x, y in zip(a.outputs, b.outputs):
            if x is not None and not same_result(x, y):
                differ = int(((x != y) & ~(x.isnan() & y.isnan())).sum()) if x.shape == y.shape else "all"
                fail(f"{function} returned different results for the same inputs ({differ} elements differ)")


@clause("API-QUIET")
@given(problem=problems("self"), kernel=small_kernel_problems())
def test_calls_do_not_flood_the_output(cases, dtype, problem, kernel):
    calls = every_call(cases, problem, kernel, dtype)
    for call in calls:
        if call.record.printed_bytes > PRINT_LIMIT:
            fail(f"{call.function} printed {call.record.printed_bytes:,} bytes in one call (limit {PRINT_LIMIT:,})")
    returned_or_set_aside(calls)
