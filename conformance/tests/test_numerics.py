"""Spec section "numerics": accuracy in every claimed dtype, gradients, CPU/GPU agreement."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge import oracle, readings, rounding
from conformance.judge.assertions import ClauseFailure, assert_agree, assert_matches, fail
from conformance.judge.blocking import find_blocker, judged, prerequisite
from conformance.judge.capabilities import DTYPES
from conformance.judge.cases import FUNCTION_OF, Case, Explanation, draw_kind, explain
from conformance.judge.pytest_plugin import skip_without_cuda
from conformance.judge.strategies import MIXED_LOGITS, problems
from conformance.judge.tolerance import Expected, expected, permute_tokens, restore_tokens, token_orders

GRAD_KINDS = ("self", "cross", "multihead")


@clause("NUM-ACCURACY")
@pytest.mark.parametrize("dtype_name", [pytest.param(d, marks=needs(f"dtype:{d}")) for d in DTYPES])
@given(data=st.data())
def test_results_are_within_the_tolerance_policy(implementation, cases, dtype_name, data):
    kind = draw_kind(data, implementation)
    causal = kind != "concat" and implementation.claims(f"{FUNCTION_OF[kind]}.causal") and data.draw(
        st.booleans(), label="causal"
    )
    problem = data.draw(problems(kind, logit_targets=MIXED_LOGITS), label="problem")
    case = cases.pipeline(problem, causal=causal, dtype=dtype_name)
    out = case.run_checked()
    assert_matches(out.context, case.expected().context, f"{case.function} in {dtype_name}")
    if out.weights is not None:
        assert_matches(out.weights, case.expected().weights, f"{case.function} in {dtype_name}")


def _argument_names(case: Case) -> list[str]:
    return ["x_q", "x_kv", "w_q", "w_k", "w_v"] if case.problem.kind == "cross" else ["x", "w_q", "w_k", "w_v"]


@clause("NUM-GRADIENTS")
@needs("autograd", "dtype:float64")
@given(data=st.data())
# each example differentiates numerically as well: a third of the profile's examples
@settings(max_examples=max(3, settings().max_examples // 3))
def test_gradcheck_in_float64(implementation, cases, data):
    kind = draw_kind(data, implementation, GRAD_KINDS)
    problem = data.draw(problems(kind, batched=False, max_len=4, max_dim=4, max_heads=2), label="problem")
    case = cases.pipeline(problem, dtype="float64")
    arguments = [a.detach().clone().requires_grad_() for a in case.arguments()]

    def function(*args):
        out = implementation.attention(case.function, *args, causal=case.causal)
        return out.context if out.weights is None else (out.context, out.weights)

    with judged(case):
        try:
            # fast mode compares vᵀJu for random u, v numerically and analytically: a wrong gradient shows just
            # the same, with a dozen calls into the implementation instead of two per input element
            torch.autograd.gradcheck(function, arguments, eps=1e-6, atol=1e-5, rtol=1e-4, raise_exception=True,
                                     fast_mode=True)
        except RuntimeError as error:
            fail(f"gradcheck of {case.function} failed: {str(error).splitlines()[0]}")


@clause("NUM-GRADIENTS")
@needs("autograd")
@given(data=st.data())
def test_gradients_match_the_reference(implementation, cases, data):
    kind = draw_kind(data, implementation, GRAD_KINDS)
    check_gradients(cases.pipeline(data.draw(problems(kind), label="problem")))


def check_gradients(case: Case) -> None:
    """NUM-GRADIENTS on one case: the implementation's gradients of context·u (u random) against the float64
    reference's, each element within its allowance (the error analysis of the backward pass, rounding.py, or
    the plain baseline's error in several summation orders)."""
    with judged(case):
        for name, grad, target in gradient_expectations(case):
            assert_matches(grad, target, f"gradient of {case.function}")


def gradient_expectations(case: Case) -> list[tuple[str, torch.Tensor, Expected]]:
    """The implementation's gradients of context·u (u random) on one case, each with its expectation: the
    float64 reference's gradient and its allowance (what check_gradients judges; benchmarks/tolerance_sweep.py
    measures how close they come). Fails where no gradient reaches an input that should have one."""
    implementation, kind = case.implementation, case.problem.kind
    seen = _forward_reading(case)
    alpha, reading = seen.alpha, seen.reading
    arguments = [a.detach().clone().requires_grad_() for a in case.arguments()]
    out = implementation.attention(case.function, *arguments, causal=case.causal)
    generator = torch.Generator().manual_seed(case.problem.seed + 5)
    # the upstream gradient as the implementation receives it (rounded to its dtype), exact in float64
    upstream = torch.randn(out.context.shape, generator=generator, dtype=torch.float64).to(
        DTYPES[case.dtype]).double()
    try:  # backward() into fresh leaves, as training code does (reentrant checkpointing refuses .grad())
        (out.context * upstream.to(out.context)).sum().backward()
    except RuntimeError as error:
        fail(f"backward through {case.function} failed: {error}")
    grads = [a.grad for a in arguments]

    def reference_grads(dtype_: torch.dtype, order=None) -> list[torch.Tensor]:
        inputs = [a.detach().to("cpu", dtype_) for a in case.arguments()]
        seen = upstream
        if order is not None:  # the same gradients, summed over the tokens in another order
            q, kv = order
            inputs = ([permute_tokens(inputs[0], q), permute_tokens(inputs[1], kv), *inputs[2:]] if kind == "cross"
                      else [permute_tokens(inputs[0], q), *inputs[1:]])
            seen = permute_tokens(upstream, q)
        inputs = [i.requires_grad_() for i in inputs]
        x_q, x_kv = (inputs[0], inputs[1]) if kind == "cross" else (inputs[0], inputs[0])
        w_q, w_k, w_v = inputs[-3:]
        if reading is None:
            context, _ = oracle.cross_attention(x_q, x_kv, w_q, w_k, w_v, case.causal, alpha=alpha)
        else:
            context, _ = readings.cross_attention(reading, x_q, x_kv, w_q, w_k, w_v, case.causal, alpha)
        result = list(torch.autograd.grad((context * seen.to(dtype_)).sum(), inputs))
        if order is not None:
            result[0] = restore_tokens(result[0], q)
            if kind == "cross":
                result[1] = restore_tokens(result[1], kv)
        return result

    p = case.problem
    orders = token_orders(p.n_q, p.n_kv, p.seed, same=kind != "cross", causal=case.causal)
    if reading is not None:  # a reading need not be equivariant: as given only
        orders = [None]
    exact = reference_grads(torch.float64)
    plain = [reference_grads(DTYPES[case.dtype], order) for order in orders]
    exact_inputs = oracle.upcast(*case.arguments())
    x_q, x_kv = (exact_inputs[0], exact_inputs[1]) if kind == "cross" else (exact_inputs[0], None)
    keep = oracle.allowed(p.n_q, p.n_kv, case.causal, None, torch.device("cpu"))
    bounds = rounding.gradients(x_q, x_kv, *exact_inputs[-3:], upstream, keep,
                                1 / math.sqrt(p.d_k) if alpha is None else alpha, case.dtype,
                                rounding.REFERENCE_FORM if reading is None else reading.form)
    judged_ = []
    for index, (name, grad, ref) in enumerate(zip(_argument_names(case), grads, exact)):
        if grad is None:
            if not ref.abs().max().item() > 0:
                continue  # nothing should reach it (one key: the weights are constant 1), and nothing does
            fail(f"no gradient reaches {name}: the computation is cut off from it (detach, numpy, .item())")
        baselines = [grads_in_order[index] for grads_in_order in plain]
        judged_.append((name, grad, expected(f"d(context)/d({name})", ref, baselines, case.dtype, bounds[index])))
    return judged_


def _forward_reading(case: Case) -> Explanation:
    """What the forward pass computes (the reference, at a fitted scale, or through another clause's
    diagnosed mistake: cases.explain), so the gradient is judged for what it computes.

    A forward result that nothing explains cannot have its gradient judged against the reference's:
    the test is blocked by whichever clause is broken, and by NUM-ACCURACY when none is named.
    """
    out = case.run_checked()

    def check(expected_) -> None:  # the gradient is of the context: the context is what must be explained
        assert_matches(out.context, expected_.context)

    try:
        check(case.expected())
        return Explanation()
    except ClauseFailure:
        seen = explain(case, out, check)
    if seen is not None:
        return seen
    find_blocker((case,))
    prerequisite(case, "NUM-ACCURACY", f"{case.function}'s forward result is wrong, so its gradient cannot be judged")
    fail(f"{case.function}'s forward result is wrong")


@clause("NUM-DEVICES")
@needs("device:cuda")
@given(data=st.data())
def test_cpu_and_cuda_agree(implementation, dtype, data):
    skip_without_cuda(implementation)
    kind = draw_kind(data, implementation)
    problem = data.draw(problems(kind), label="problem")
    on_cpu = Case(implementation, problem, dtype, "cpu")
    on_cuda = Case(implementation, problem, dtype, "cuda")
    a, b = on_cpu.run_checked(), on_cuda.run_checked()
    relation = "the same inputs on the CPU and on CUDA must give the same results within the policy"
    assert_agree("context", b.context, a.context, 2 * on_cpu.expected().context.allowed, relation)
    if a.weights is not None:
        assert_agree("weights", b.weights, a.weights, 2 * on_cpu.expected().weights.allowed, relation)
