"""One attention call of the implementation under test, and what it should return.

A Case ties a drawn Problem to the implementation, a dtype and a device: it
knows which spec function the problem exercises, how to call it, and how to
compute the float64 reference and plain same-dtype baseline for its outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch
from hypothesis import reject

from conformance.judge import oracle
from conformance.judge.adapter import Attention, Implementation, ImplementationError
from conformance.judge.assertions import check_shape
from conformance.judge.capabilities import DTYPES
from conformance.judge.strategies import Inputs, Problem
from conformance.judge.tolerance import Expected, OutOfRange, dot_scale, expected, scales

FUNCTION_OF = {
    "self": "self_attention",
    "cross": "cross_attention",
    "multihead": "multihead_attention",
    "concat": "multihead_attention_concat",
}


def fit_batch(problem, implementation: Implementation):
    """Drop the batch dimensions of a drawn problem when the implementation does not claim batching."""
    return problem.unbatched() if problem.batch and not implementation.claims("batching") else problem


@dataclass(frozen=True)
class Outputs:
    context: Expected
    weights: Expected


@dataclass
class Case:
    implementation: Implementation
    problem: Problem
    dtype: str
    device: str = "cpu"
    causal: bool = False
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.problem = fit_batch(self.problem, self.implementation)

    @property
    def function(self) -> str:
        return FUNCTION_OF[self.problem.kind]

    @cached_property
    def inputs(self) -> Inputs:
        return self.problem.tensors(DTYPES[self.dtype], self.device)

    def with_inputs(self, inputs: Inputs) -> Case:
        """The same call on other inputs (a permuted or perturbed copy)."""
        other = replace(self, _memo={})
        other.__dict__["inputs"] = inputs
        return other

    def arguments(self) -> list:
        i = self.inputs
        if self.problem.kind == "cross":
            return [i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v]
        if self.problem.kind == "concat" and i.w_o is not None:
            return [i.x_q, i.w_q, i.w_k, i.w_v, i.w_o]
        return [i.x_q, i.w_q, i.w_k, i.w_v]

    def run(self) -> Attention:
        """Call the implementation (once per case; later calls return the same result)."""
        if "run" not in self._memo:
            self._memo["run"] = self.implementation.attention(self.function, *self.arguments(), causal=self.causal)
        return self._memo["run"]

    def run_checked(self) -> Attention:
        """run(), failing the test at once if the outputs do not have the spec's shapes."""
        out = self.run()
        context_shape, weights_shape = shapes(self.problem)
        check_shape(f"{self.function} context", out.context, context_shape)
        if out.weights is not None:
            check_shape(f"{self.function} weights", out.weights, weights_shape)
        return out

    def _oracle(self, i: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        context, weights = oracle.cross_attention(i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v, self.causal)
        if self.problem.kind == "concat":
            context = oracle.concat_heads(context, i.w_o)
        return context, weights

    def expected(self) -> Outputs:
        """float64 reference and plain same-dtype baseline of both outputs."""
        if "expected" not in self._memo:
            i = self.inputs
            exact = Inputs(*oracle.upcast(i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v, i.w_o))
            plain = i.to(device="cpu")
            ref_context, ref_weights = self._oracle(exact)
            base_context, base_weights = self._oracle(plain)
            s = scales(exact.x_q, exact.x_kv, exact.w_q, exact.w_k, exact.w_v)
            context_scale = s.context
            if self.problem.kind == "concat" and exact.w_o is not None:
                context_scale *= exact.w_o.abs().sum(dim=-1).max().item()
            self._memo["expected"] = Outputs(
                context=_expect("context", ref_context, base_context, self.dtype, context_scale),
                weights=_expect("weights", ref_weights, base_weights, self.dtype, s.weights),
            )
        return self._memo["expected"]


def _plain(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.detach().cpu() for t in tensors]


def _expect(name: str, exact: torch.Tensor, plain: torch.Tensor, dtype: str, scale: float) -> Expected:
    try:
        return expected(name, exact, plain, dtype, scale)
    except OutOfRange:
        reject()  # the dtype cannot compute this input at all: not a fair example


def expect_projection(x: torch.Tensor, weight: torch.Tensor, dtype: str) -> Expected:
    x64, w64 = oracle.upcast(x, weight)
    x_, w_ = _plain(x, weight)
    return _expect("projection", oracle.project(x64, w64), oracle.project(x_, w_), dtype, dot_scale(x64, w64))


def expect_scores(queries: torch.Tensor, keys: torch.Tensor, dtype: str) -> Expected:
    q64, k64 = oracle.upcast(queries, keys)
    q_, k_ = _plain(queries, keys)
    return _expect("scores", oracle.scores(q64, k64), oracle.scores(q_, k_), dtype, dot_scale(q64, k64))


def expect_weights(
    scores: torch.Tensor, d_k: int, dtype: str, causal: bool = False, mask: torch.Tensor | None = None
) -> Expected:
    (s64,) = oracle.upcast(scores)
    s_, m_ = _plain(scores, mask)
    scale = 1.0 + (s64.abs().max().item() if s64.numel() else 0.0) / math.sqrt(d_k)
    return _expect(
        "weights", oracle.weights(s64, d_k, causal, m_), oracle.weights(s_, d_k, causal, m_), dtype, scale
    )


def claimed_kinds(implementation: Implementation) -> list[str]:
    """Problem kinds whose attention function the implementation provides."""
    return [kind for kind, function in FUNCTION_OF.items() if implementation.has(function)]


def draw_kind(data, implementation: Implementation, allowed: tuple[str, ...] | None = None) -> str:
    """Draw one of the problem kinds the implementation provides (a skip when it provides none)."""
    import pytest
    from hypothesis import strategies as st

    kinds = [k for k in claimed_kinds(implementation) if allowed is None or k in allowed]
    if not kinds:
        pytest.skip("not claimed: no attention function")
    return data.draw(st.sampled_from(kinds), label="kind")


def shapes(problem: Problem) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes the spec requires of (context, weights) for a problem."""
    p = problem
    if p.kind == "multihead":
        return (*p.batch, p.heads, p.n_q, p.d_v), (*p.batch, p.heads, p.n_q, p.n_kv)
    if p.kind == "concat":
        width = p.d_o if p.d_o is not None else p.heads * p.d_v
        return (*p.batch, p.n_q, width), (*p.batch, p.heads, p.n_q, p.n_kv)
    return (*p.batch, p.n_q, p.d_v), (*p.batch, p.n_q, p.n_kv)


@dataclass(frozen=True)
class Call:
    """One call made by exercise(): which function, what it returned (or the error), what else it did."""

    function: str
    outputs: tuple[torch.Tensor | None, ...]
    record: object
    error: str = ""


def exercise(implementation: Implementation, problem: Problem, dtype: str, device: str) -> list[Call]:
    """Call every claimed computing function once on inputs derived from one problem.

    Used by the interface clauses (shapes, dtype, device, purity, determinism,
    quiet), which hold for every function alike. A function that raises is
    recorded with its error and the others still run: its failure belongs to
    its own clauses.
    """
    problem = fit_batch(problem, implementation)
    single = replace(problem, kind="self", n_kv=problem.n_q, d_in_kv=problem.d_in)
    kinds = {
        "self": single,
        "cross": problem if problem.kind == "cross" else replace(single, kind="cross"),
        "multihead": replace(single, kind="multihead"),
        "concat": replace(single, kind="concat"),
    }
    i = kinds["cross"].tensors(DTYPES[dtype], device)
    queries, keys = i.x_q @ i.w_q.transpose(-2, -1), i.x_kv @ i.w_k.transpose(-2, -1)
    steps = {
        "project": lambda: (implementation.tensor("project", i.x_q, i.w_q),),
        "attention_scores": lambda: (implementation.tensor("attention_scores", queries, keys),),
        "attention_weights": lambda: (
            implementation.tensor("attention_weights", queries @ keys.transpose(-2, -1), problem.d_k),
        ),
    }
    for kind in claimed_kinds(implementation):
        steps[FUNCTION_OF[kind]] = lambda kind=kind: tuple(Case(implementation, kinds[kind], dtype, device).run())
    calls: list[Call] = []
    for function, call in steps.items():
        if not implementation.has(function):
            continue
        try:
            calls.append(Call(function, call(), implementation.last_call))
        except ImplementationError as error:
            calls.append(Call(function, (), implementation.last_call, str(error)))
    return calls


def returned(calls: list[Call]) -> list[Call]:
    """The calls that returned; fails the test when none did (there is nothing to check then)."""
    good = [c for c in calls if not c.error]
    if calls and not good:
        raise ImplementationError(f"no function returned a result; {calls[0].error}")
    return good
