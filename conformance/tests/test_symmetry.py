"""Spec section "symmetry": permutation equivariance and key/value permutation invariance."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.assertions import assert_agree
from conformance.judge.blocking import judged
from conformance.judge.strategies import Inputs, permutations, problems


@clause("SYM-EQUIVARIANT")
@pytest.mark.parametrize("kind", [pytest.param("self", marks=needs("self_attention")),
                                  pytest.param("multihead", marks=needs("multihead_attention"))])
@given(data=st.data())
def test_permuting_tokens_permutes_outputs(cases, kind, data):
    case = cases.pipeline(data.draw(problems(kind), label="problem"))
    n = case.problem.n_q
    first = 0  # the first query judged
    if case.causal:
        # causal form (causal='only'): a query's result does not depend on the order of the tokens before it,
        # so permuting tokens 0..first-1 leaves rows first.. as they were, their weights' columns permuted
        first = data.draw(st.integers(0, n - 1), label="first query judged")
        order = data.draw(permutations(first), label="permutation of the tokens before it") + list(range(first, n))
        relation = f"permuting tokens 0..{first - 1} must not change the causal outputs of queries {first}..{n - 1}"
    else:
        order = data.draw(permutations(n), label="permutation")
        relation = "f(P x) must equal P f(x) without a causal mask"
    order = torch.tensor(order, device=case.device, dtype=torch.long)
    i = case.inputs
    x = i.x_q.index_select(-2, order)
    permuted = case.with_inputs(Inputs(x, x, i.w_q, i.w_k, i.w_v, i.w_o))
    order_cpu = order.cpu()
    with judged(case, permuted):
        out, out_p = case.run_checked(), permuted.run_checked()
        expected_context = out.context.detach().cpu().index_select(-2, order_cpu)
        assert_agree("context", out_p.context[..., first:, :], expected_context[..., first:, :],
                     case.expected().context.allowed + permuted.expected().context.allowed, relation)
        if out.weights is not None:
            expected_weights = out.weights.detach().cpu().index_select(-2, order_cpu).index_select(-1, order_cpu)
            assert_agree("weights", out_p.weights[..., first:, :], expected_weights[..., first:, :],
                         case.expected().weights.allowed + permuted.expected().weights.allowed, relation)


@clause("SYM-KV-INVARIANT")
@needs("cross_attention", "noncausal")
@given(problem=problems("cross"), data=st.data())
def test_permuting_keys_and_values_together_changes_nothing(cases, problem, data):
    case = cases.pipeline(problem)
    n_kv = case.problem.n_kv
    order = torch.tensor(data.draw(permutations(n_kv), label="permutation of x_kv"), device=case.device)
    i = case.inputs
    permuted = case.with_inputs(Inputs(i.x_q, i.x_kv.index_select(-2, order), i.w_q, i.w_k, i.w_v, i.w_o))
    relation = "permuting the tokens of x_kv must leave the context unchanged and permute the weights' columns"
    with judged(case, permuted):
        out, out_p = case.run_checked(), permuted.run_checked()
        assert_agree("context", out_p.context, out.context,
                     case.expected().context.allowed + permuted.expected().context.allowed, relation)
        if out.weights is not None:
            assert_agree("weights", out_p.weights, out.weights.detach().cpu().index_select(-1, order.cpu()),
                         case.expected().weights.allowed + permuted.expected().weights.allowed, relation)
