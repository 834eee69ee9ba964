"""The calls of the implementation under test that the tests judge, and what they should return.

One family shares the interface of BaseCase: call() makes the call afresh, run() makes it once per case
(later runs return the same result, or raise the same error), expected() says what it should return,
and `clause` names the clause the test verifies (its prerequisites decide which detectors a failure is
offered to, see blocking.py):

- Case: a pipeline function (self_attention, cross_attention, multihead_attention[_concat]) on a drawn
  Problem, with the float64 reference and plain same-dtype baseline of both outputs;
- KernelCase: attention(q, k, v, causal, mask, scale) in SDPA's layout on a drawn KernelProblem;
- StepCase: the attention_weights step on drawn scores (and a mask).

A test makes its cases with Cases (the `cases` fixture of conformance/tests/conftest.py), which binds the
implementation, device, dtype and the test's clause.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
from hypothesis import reject

from conformance.judge import oracle, readings, rounding
from conformance.judge.adapter import Attention, Implementation, ImplementationError
from conformance.judge.assertions import ClauseFailure, assert_matches, check_shape, holds, matches
from conformance.judge.capabilities import DTYPES
from conformance.judge.fitting import fit_scale, implied_scale
from conformance.judge.readings import Reading
from conformance.judge.strategies import Inputs, KernelProblem, Problem, ScoresProblem
from conformance.judge.tolerance import (
    Expected,
    OutOfRange,
    expected,
    permute_tokens,
    restore_tokens,
    token_orders,
)

FUNCTION_OF = {
    "self": "self_attention",
    "cross": "cross_attention",
    "multihead": "multihead_attention",
    "concat": "multihead_attention_concat",
}


def fit_problem(problem, implementation: Implementation):
    """A drawn problem within what the implementation declares: without batch dimensions when it does not
    claim batching, and within its shape constraints (equal head widths, d_in = h·d_k, a longest sequence).
    Fitted after drawing, so hypothesis still shrinks the drawn sizes."""
    caps = implementation.capabilities
    if problem.batch and not implementation.claims("batching"):
        problem = problem.unbatched()
    if caps.max_length is not None:
        problem = replace(problem, n_q=min(problem.n_q, caps.max_length), n_kv=min(problem.n_kv, caps.max_length))
    if caps.equal_head_dims and isinstance(problem, (Problem, KernelProblem)):
        problem = replace(problem, d_v=problem.d_k)
    if isinstance(problem, Problem):
        if caps.width_is_heads_times_head_dim:
            width = problem.heads * problem.d_k
            same = problem.kind != "cross" or problem.d_in_kv == problem.d_in
            # the output projection of such a module maps back to the model width (d_o = d_in)
            problem = replace(problem, d_in=width, d_in_kv=width if same else problem.d_in_kv,
                              d_o=None if problem.d_o is None else width)
    return problem


@dataclass(frozen=True)
class Outputs:
    context: Expected
    weights: Expected


class BaseCase(ABC):
    """One call of the implementation under test in a test of `clause` ('' outside a test: nothing blocks)."""

    implementation: Implementation
    dtype: str
    device: str
    clause: str
    causal: bool = False  # a causal call (its detectors look at the unmasked twin, see uncausal())
    _memo: dict

    def __post_init__(self) -> None:
        """Every kind of case draws within what the implementation declares (fit_problem)."""
        self.problem = fit_problem(self.problem, self.implementation)

    @property
    @abstractmethod
    def function(self) -> str:
        """The spec function called."""

    @abstractmethod
    def call(self) -> Any:
        """One fresh call of the implementation on this case (not memoised)."""

    @abstractmethod
    def expected(self) -> Any:
        """What the call should return: the float64 reference and plain same-dtype baseline (tolerance.py)."""

    def run(self) -> Any:
        """Call the implementation (once per case; later calls return the same result)."""
        if "run" not in self._memo:
            try:
                self._memo["run"] = self.call()
            except ImplementationError as error:
                self._memo["run"] = error  # asked again (by a blocker's detector), it raises again without a call
        if isinstance(self._memo["run"], ImplementationError):
            raise self._memo["run"]
        return self._memo["run"]

    def uncausal(self) -> BaseCase:
        """The same call without a causal mask (itself when it has none)."""
        return self


@dataclass
class Case(BaseCase):
    """A call of a pipeline attention function on a drawn Problem."""

    implementation: Implementation
    problem: Problem
    dtype: str
    device: str = "cpu"
    causal: bool = False
    clause: str = ""
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.implementation.capabilities.causal_only:
            self.causal = True  # every property is checked in its causal form (issue 10)
        # W_O only goes to a concatenation that takes it: a signature without w_o would receive it in `causal`
        if self.problem.d_o is not None and not self.implementation.claims("multihead_attention_concat.w_o"):
            self.problem = replace(self.problem, d_o=None)

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

    def uncausal(self) -> Case:
        """The same call without the causal mask."""
        twin = replace(self, causal=False, _memo={})
        twin.__dict__["inputs"] = self.inputs
        return twin

    def on(self, problem: Problem, causal: bool = False) -> Case:
        """Another call in the same test (implementation, dtype, device, clause) on another problem."""
        return replace(self, problem=problem, causal=causal, _memo={})

    def example(self, index: tuple[int, ...]) -> Case:
        """One example of a batched case, as its own unbatched call."""
        i = self.inputs
        alone = replace(self, problem=self.problem.unbatched(), _memo={})
        alone.__dict__["inputs"] = Inputs(i.x_q[index], i.x_kv[index], i.w_q, i.w_k, i.w_v, i.w_o)
        return alone

    def arguments(self) -> list:
        i = self.inputs
        if self.problem.kind == "cross":
            return [i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v]
        return [i.x_q, i.w_q, i.w_k, i.w_v]

    def keywords(self) -> dict:
        """W_O by name, so it reaches the parameter called w_o wherever the signature puts it."""
        i = self.inputs
        return {"w_o": i.w_o} if self.problem.kind == "concat" and i.w_o is not None else {}

    def call(self) -> Attention:
        return self.implementation.attention(self.function, *self.arguments(), causal=self.causal, **self.keywords())

    def run(self) -> Attention:  # BaseCase.run, with this call's result type
        return super().run()

    def run_checked(self) -> Attention:
        """run(), failing the test at once if the outputs do not have the spec's shapes."""
        out = self.run()
        context_shape, weights_shape = shapes(self.problem)
        check_shape(f"{self.function} context", out.context, context_shape)
        if out.weights is not None:
            check_shape(f"{self.function} weights", out.weights, weights_shape)
        return out

    def _oracle(self, i: Inputs, alpha: float | None = None,
                reading: Reading | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if reading is None:
            context, weights = oracle.cross_attention(i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v, self.causal, alpha)
        else:  # the caller made sure it applies (expected_through)
            context, weights = readings.cross_attention(reading, i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v, self.causal, alpha)
        if self.problem.kind == "concat":
            context = oracle.concat_heads(context, i.w_o)
        return context, weights

    def _plain_orders(self, plain: Inputs, alpha: float | None,
                      reading: Reading | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The plain reference's outputs in several summation orders (tokens permuted, results put back), so
        that the baseline is not one order's luck on a long reduction."""
        p = self.problem
        orders = token_orders(p.n_q, p.n_kv, p.seed, same=p.kind != "cross", causal=self.causal)
        if reading is not None:  # a reading need not be equivariant (K Qᵀ has a row per key): as given only
            orders = [None]
        contexts, weights = [], []
        for order in orders:
            if order is None:
                context, weight = self._oracle(plain, alpha, reading)
            else:
                q, kv = order
                moved = replace(plain, x_q=permute_tokens(plain.x_q, q), x_kv=permute_tokens(plain.x_kv, kv))
                context, weight = self._oracle(moved, alpha, reading)
                context = restore_tokens(context, q)
                weight = restore_tokens(restore_tokens(weight, q), kv, dim=-1)
            contexts.append(context)
            weights.append(weight)
        return contexts, weights

    @property
    def exact(self) -> Inputs:
        i = self.inputs
        return Inputs(*oracle.upcast(i.x_q, i.x_kv, i.w_q, i.w_k, i.w_v, i.w_o))

    def expected(self, alpha: float | None = None, dtype: str | None = None,
                 reading: Reading | None = None) -> Outputs:
        """float64 reference and plain same-dtype baseline of both outputs.

        alpha: the scale of the scores (default 1/√d_k; a fitted scale for clauses other than
        WEIGHTS-SCALE); dtype: judge as if computed in another dtype (default the case's); reading: the
        pipeline with one diagnosed mistake (readings.py; see expected_through).
        """
        key = ("expected", alpha, dtype, reading)
        if key not in self._memo:
            dtype = dtype or self.dtype
            exact = self.exact
            plain = self.inputs.to(device="cpu", dtype=DTYPES[dtype])
            ref_context, ref_weights = self._oracle(exact, alpha, reading)
            base_context, base_weights = self._plain_orders(plain, alpha, reading)
            bound_context, bound_weights = self.bounds(alpha, dtype, reading)
            self._memo[key] = Outputs(
                context=expect_output("context", ref_context, base_context, dtype, bound_context),
                weights=expect_output("weights", ref_weights, base_weights, dtype, bound_weights),
            )
        return self._memo[key]

    def bounds(self, alpha: float | None = None, dtype: str | None = None,
               reading: Reading | None = None) -> tuple[rounding.Bounded, rounding.Bounded]:
        """The error analysis of (context, weights) in `dtype` (default the case's): rounding.py."""
        e, p = self.exact, self.problem
        keep = oracle.allowed(p.n_q, p.n_kv, self.causal, None, torch.device("cpu"))
        alpha_ = 1 / math.sqrt(p.d_k) if alpha is None else alpha
        form = rounding.REFERENCE_FORM if reading is None else reading.form
        forward = rounding.pipeline(e.x_q, e.x_kv, e.w_q, e.w_k, e.w_v, keep, alpha_, dtype or self.dtype, form)
        context = forward.context
        if p.kind == "concat":
            context = rounding.concat(context, e.w_o, dtype or self.dtype)
        return context, forward.weights

    def expected_through(self, reading: Reading, alpha: float | None = None) -> Outputs | None:
        """The reference with the reading's mistake, or None where the reading does not apply here."""
        exact = self.exact
        if readings.cross_attention(reading, exact.x_q, exact.x_kv, exact.w_q, exact.w_k, exact.w_v, self.causal,
                                    alpha) is None:
            return None
        return self.expected(alpha, reading=reading)

    def fitted_scale(self, out: Attention | None = None, reading: Reading | None = None) -> float | None:
        """The α for which the reference at softmax(α·ω) (with the reading's mistake, if given) best explains
        the outputs (weights if returned)."""
        out = out or self.run()
        exact = self.exact
        use_weights = out.weights is not None
        observed = (out.weights if use_weights else out.context).detach().to("cpu", torch.float64)
        # the projections and scores do not depend on α: computed once, only the softmax is repeated
        x_q, x_kv = exact.x_q, exact.x_kv
        if exact.w_q.dim() == 3:
            x_q, x_kv = x_q.unsqueeze(-3), x_kv.unsqueeze(-3)
        omega = oracle.scores(oracle.project(x_q, exact.w_q), oracle.project(x_kv, exact.w_k))
        values = oracle.project(x_kv, exact.w_v)

        def model(alpha: float) -> torch.Tensor:
            if reading is None:
                weights = oracle.weights(omega, self.problem.d_k, self.causal, alpha=alpha)
            else:
                weights = reading.weights(omega, self.problem.d_k, self.causal, alpha)
            if use_weights:
                return weights
            context = weights @ values
            return oracle.concat_heads(context, exact.w_o) if self.problem.kind == "concat" else context

        if reading is not None and model(1 / math.sqrt(self.problem.d_k)) is None:
            return None
        implied = implied_scale(observed, omega) if use_weights and reading is None else None

        def allowance(alpha: float) -> torch.Tensor:
            context, weights = self.bounds(alpha, reading=reading)
            return (weights if use_weights else context).error

        fit = fit_scale(model, observed, 1 / math.sqrt(self.problem.d_k), (implied,), allowance)
        return None if fit is None else fit[0]


@dataclass(frozen=True)
class KernelInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class KernelCase(BaseCase):
    """A call of attention(q, k, v, causal, mask, scale) on a drawn KernelProblem, and the reference for it."""

    implementation: Implementation
    problem: KernelProblem
    dtype: str
    device: str = "cpu"
    causal: bool = False
    scale: float | None = None
    masked: bool = True  # pass the problem's mask (if it draws one)
    clause: str = ""
    window: tuple[int, int] | None = None  # (left, right), -1 unbounded
    softcap: float | None = None
    alibi: tuple[float, ...] | None = None  # slopes; the first `heads` are passed, one per query head
    # dropout_p (None: not passed) and the seed of the generator before the call; expected() stays the
    # dropout-free reference, which is what a draw with p > 0 equals only on average (QKV-DROPOUT)
    dropout_p: float | None = None
    seed: int | None = None
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def function(self) -> str:
        return "attention"

    @property
    def alignment(self) -> str:
        return self.implementation.capabilities.causal_alignment

    @property
    def slopes(self) -> torch.Tensor | None:
        """The ALiBi slopes passed: float32 (FlashAttention's dtype; exact in every other), one per query head."""
        if self.alibi is None:
            return None
        return torch.tensor(self.alibi[: self.problem.heads], dtype=torch.float32, device=self.device)

    @property
    def features(self) -> str:
        """The optional features of this call in words ('' for none)."""
        parts = [f"window={self.window}" if self.window is not None else "",
                 f"softcap={self.softcap:g}" if self.softcap is not None else "",
                 f"alibi_slopes={[round(x, 4) for x in self.alibi[: self.problem.heads]]}" if self.alibi else "",
                 f"dropout_p={self.dropout_p:g} (seed {self.seed})" if self.dropout_p is not None else ""]
        return ", ".join(p for p in parts if p)

    def empty_rows(self) -> torch.Tensor | None:
        """(n_q,), or (..., h, n_q) under a boolean mask, True for the queries that see no key at all (causal
        bottom-right with n_q > n_kv, a window past the keys, a mask row all False): their outputs are not
        judged (the fully-masked-row policy is a clause of its own, QKV-EMPTY-ROWS)."""
        p = self.problem
        keep = oracle.visible(p.n_q, p.n_kv, self.causal, self.window, self.alignment, torch.device("cpu"))
        mask = self.mask
        if mask is not None and mask.dtype == torch.bool:
            keep = mask.cpu() if keep is None else mask.cpu() & keep
        if keep is None:
            return None
        empty = ~keep.any(dim=-1)
        return empty if bool(empty.any()) else None

    @cached_property
    def inputs(self) -> KernelInputs:
        q, k, v, mask = self.problem.tensors(DTYPES[self.dtype], self.device)
        return KernelInputs(q, k, v, mask if self.masked else None)

    @property
    def mask(self) -> torch.Tensor | None:
        return self.inputs.mask

    @property
    def grouped(self) -> bool:
        return self.problem.kv_heads != self.problem.heads

    def call(self) -> Attention:
        i = self.inputs
        return self.implementation.kernel(i.q, i.k, i.v, causal=self.causal, mask=i.mask, scale=self.scale,
                                          grouped=self.grouped, window=self.window, softcap=self.softcap,
                                          alibi_slopes=self.slopes, dropout_p=self.dropout_p, seed=self.seed)

    def run(self) -> Attention:  # BaseCase.run, with this call's result type
        return super().run()

    def run_checked(self) -> Attention:
        """run(), failing the test at once if the outputs do not have the spec's shapes."""
        out = self.run()
        p = self.problem
        check_shape("attention context", out.context, (*p.batch, p.heads, p.n_q, p.d_v), "(..., h, n_q, d_v)")
        if out.weights is not None:
            check_shape("attention weights", out.weights, (*p.batch, p.heads, p.n_q, p.n_kv), "(..., h, n_q, n_kv)")
        empty = self.empty_rows()
        if empty is not None:  # rows with no visible key are not judged here: zero on both sides
            empty = empty.to(out.context.device)
            out = Attention(out.context.masked_fill(empty[..., None], 0),
                            None if out.weights is None else out.weights.masked_fill(empty[..., None], 0))
        return out

    def expected(self) -> Outputs:
        if "expected" not in self._memo:
            self._memo["expected"] = self._expected()
        return self._memo["expected"]

    def _expected(self) -> Outputs:
        i = self.inputs
        exact = oracle.upcast(i.q, i.k, i.v)
        plain = [t.detach().cpu() for t in (i.q, i.k, i.v)]
        exact_mask = plain_mask = None if i.mask is None else i.mask.cpu()
        if i.mask is not None and i.mask.dtype != torch.bool:
            exact_mask = oracle.upcast(i.mask)[0]
        features = dict(window=self.window, softcap=self.softcap, alignment=self.alignment)
        slopes = None if self.slopes is None else self.slopes.cpu()
        exact_slopes = None if slopes is None else slopes.double()
        ref_context, ref_weights = oracle.attention(*exact, self.causal, exact_mask, self.scale,
                                                    alibi_slopes=exact_slopes, **features)
        base_context, base_weights = oracle.attention(*plain, self.causal, plain_mask, self.scale,
                                                      alibi_slopes=slopes, **features)
        bound = self.bounds(exact, exact_mask, exact_slopes)
        return Outputs(
            context=expect_output("context", ref_context, base_context, self.dtype, bound.context),
            weights=expect_output("weights", ref_weights, base_weights, self.dtype, bound.weights),
        )

    def bounds(self, exact: tuple[torch.Tensor, ...], mask: torch.Tensor | None,
               slopes: torch.Tensor | None) -> rounding.Forward:
        """The error analysis of this call (rounding.py) on its exact q, k, v, mask and ALiBi slopes."""
        q, k, v = exact
        p = self.problem
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
        alpha = 1 / math.sqrt(q.shape[-1]) if self.scale is None else self.scale
        keep = oracle.visible(p.n_q, p.n_kv, self.causal, self.window, self.alignment, torch.device("cpu"))
        biases: list[tuple[torch.Tensor, bool]] = []
        if slopes is not None:  # made by the implementation from the slopes: it rounds
            biases.append((oracle.alibi_bias(slopes, q.shape[-2], k.shape[-2], self.alignment), True))
        if mask is not None and mask.dtype == torch.bool:
            keep = mask if keep is None else mask & keep
        elif mask is not None:
            biases.append((mask, False))
        a = rounding.arithmetic(self.dtype)
        return rounding.attend(rounding.given(q), rounding.given(k), rounding.given(v), alpha, keep, a,
                               cap=self.softcap, biases=tuple(biases))

    def twin(self, inputs: KernelInputs | None = None, **changes: object) -> KernelCase:
        """This call with some fields changed, on the given inputs (these inputs when none are given): nothing
        is drawn again, and the twin computes its own reference."""
        twin = replace(self, _memo={}, **changes)
        twin.__dict__["inputs"] = self.inputs if inputs is None else inputs
        return twin

    def plain(self) -> KernelCase:
        """The same q, k, v with neither mask, causal, scale nor dropout, and every query head's own key/value head."""
        group = self.problem.heads // self.problem.kv_heads
        i = self.inputs
        return self.twin(KernelInputs(i.q, i.k.repeat_interleave(group, dim=-3), i.v.repeat_interleave(group, dim=-3),
                                      None),
                         problem=replace(self.problem, kv_heads=self.problem.heads), causal=False, scale=None,
                         masked=False, window=None, softcap=None, alibi=None, dropout_p=None, seed=None)

    def bare_causal(self) -> KernelCase:
        """The same q, k, v, causal, with neither mask, scale, window, softcap nor ALiBi."""
        i = self.inputs
        return self.twin(KernelInputs(i.q, i.k, i.v, None), scale=None, masked=False, window=None, softcap=None,
                         alibi=None)

    def queries(self, rows: slice) -> KernelCase:
        """The same call on some of the queries (the same keys and values): decoding with a KV cache."""
        i = self.inputs
        q = i.q[..., rows, :]
        return self.twin(KernelInputs(q, i.k, i.v, None), problem=replace(self.problem, n_q=q.shape[-2]), masked=False)

    def with_mask(self, mask: torch.Tensor) -> KernelCase:
        """The same q, k, v under another mask (of a shape the problem's mask broadcasts like)."""
        i = self.inputs
        return self.twin(KernelInputs(i.q, i.k, i.v, mask), masked=True)


@dataclass
class StepCase(BaseCase):
    """A call of the attention_weights step on drawn scores (with the problem's mask, if it draws one)."""

    implementation: Implementation
    problem: ScoresProblem
    dtype: str
    device: str = "cpu"
    clause: str = ""
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def function(self) -> str:
        return "attention_weights"

    @cached_property
    def scores(self) -> torch.Tensor:
        return self.problem.scores(DTYPES[self.dtype], self.device)

    @cached_property
    def mask(self) -> torch.Tensor | None:
        return self.problem.mask(self.device)

    def call(self) -> torch.Tensor:
        mask = {} if self.mask is None else {"mask": self.mask}
        return self.implementation.tensor("attention_weights", self.scores, self.problem.d_k, **mask)

    def run(self) -> torch.Tensor:  # BaseCase.run, with this call's result type
        return super().run()

    def expected(self) -> Expected:
        if "expected" not in self._memo:
            self._memo["expected"] = expect_weights(self.scores, self.problem.d_k, self.dtype, mask=self.mask)
        return self._memo["expected"]

    def with_scores(self, scores: torch.Tensor) -> StepCase:
        """The same call on other scores (a shifted copy), with the same mask."""
        other = replace(self, _memo={})
        other.__dict__["scores"], other.__dict__["mask"] = scores, self.mask
        return other

    def unmasked(self) -> StepCase:
        """The same call on the same scores without the mask."""
        other = replace(self, problem=replace(self.problem, masked=False, empty_rows=False), _memo={})
        other.__dict__["scores"] = self.scores
        return other


@dataclass(frozen=True)
class Cases:
    """Makes the cases of one test: the implementation under test, the device and the property dtype the
    test runs on, and the clause it verifies (its cases carry it to the blocking mechanism)."""

    implementation: Implementation
    device: str
    dtype: str
    clause: str = ""

    def pipeline(self, problem: Problem, causal: bool = False, dtype: str | None = None) -> Case:
        return Case(self.implementation, problem, dtype or self.dtype, self.device, causal=causal, clause=self.clause)

    def kernel(self, problem: KernelProblem, dtype: str | None = None, causal: bool = False,
               scale: float | None = None, masked: bool = True, window: tuple[int, int] | None = None,
               softcap: float | None = None, alibi: tuple[float, ...] | None = None,
               dropout_p: float | None = None, seed: int | None = None) -> KernelCase:
        return KernelCase(self.implementation, problem, dtype or self.dtype, self.device, causal=causal, scale=scale,
                          masked=masked, clause=self.clause, window=window, softcap=softcap, alibi=alibi,
                          dropout_p=dropout_p, seed=seed)

    def step(self, problem: ScoresProblem, dtype: str | None = None) -> StepCase:
        return StepCase(self.implementation, problem, dtype or self.dtype, self.device, clause=self.clause)


def _plain(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.detach().cpu() for t in tensors]


def expect_output(name: str, exact: torch.Tensor, plain: torch.Tensor | list[torch.Tensor], dtype: str,
                  bound: rounding.Bounded) -> Expected:
    """The policy's expectation of one output (float64 reference, its derived bound, plain same-dtype
    baseline); an input the dtype cannot compute at all is not a fair example and is discarded."""
    try:
        return expected(name, exact, plain, dtype, bound)
    except OutOfRange:
        reject()  # the dtype cannot compute this input at all: not a fair example


def expect_projection(x: torch.Tensor, weight: torch.Tensor, dtype: str) -> Expected:
    x64, w64 = oracle.upcast(x, weight)
    x_, w_ = _plain(x, weight)
    bound = rounding.contract("...nd,...od->...no", rounding.given(x64), rounding.given(w64), w64.shape[-1],
                              rounding.arithmetic(dtype))
    return expect_output("projection", oracle.project(x64, w64), oracle.project(x_, w_), dtype, bound)


def expect_scores(queries: torch.Tensor, keys: torch.Tensor, dtype: str) -> Expected:
    q64, k64 = oracle.upcast(queries, keys)
    q_, k_ = _plain(queries, keys)
    bound = rounding.contract("...id,...jd->...ij", rounding.given(q64), rounding.given(k64), q64.shape[-1],
                              rounding.arithmetic(dtype))
    return expect_output("scores", oracle.scores(q64, k64), oracle.scores(q_, k_), dtype, bound)


def expect_weights(
    scores: torch.Tensor, d_k: int, dtype: str, causal: bool = False, mask: torch.Tensor | None = None,
    alpha: float | None = None,
) -> Expected:
    (s64,) = oracle.upcast(scores)
    s_, m_ = _plain(scores, mask)
    return expect_output(
        "weights",
        oracle.weights(s64, d_k, causal, m_, alpha),
        oracle.weights(s_, d_k, causal, m_, alpha),
        dtype,
        weights_bound(s64, d_k, dtype, causal, m_, alpha),
    )


def weights_bound(scores: torch.Tensor, d_k: int, dtype: str, causal: bool = False, mask: torch.Tensor | None = None,
                  alpha: float | None = None, form: rounding.Form = rounding.REFERENCE_FORM) -> rounding.Bounded:
    """The error analysis of attention_weights on exact scores (rounding.py), with a reading's mistake (form)."""
    n_q, n_kv = scores.shape[-2:]
    if form[1]:  # transposed: the mask applies to the transposed scores, which are n_kv × n_q
        n_q, n_kv = n_kv, n_q
    keep = oracle.allowed(n_q, n_kv, causal, mask, torch.device("cpu"))
    alpha_ = 1 / math.sqrt(d_k) if alpha is None else alpha
    _, weights = rounding.weights_of(rounding.given(scores), alpha_, keep, rounding.arithmetic(dtype), form)
    return weights


def expect_weights_through(
    reading: Reading, scores: torch.Tensor, d_k: int, dtype: str, causal: bool = False, alpha: float | None = None,
) -> Expected | None:
    """expect_weights (without an explicit mask) with the reading's mistake; None where it does not apply."""
    (s64,) = oracle.upcast(scores)
    (s_,) = _plain(scores)
    exact, plain = reading.weights(s64, d_k, causal, alpha), reading.weights(s_, d_k, causal, alpha)
    if exact is None or plain is None:
        return None
    return expect_output("weights", exact, plain, dtype, weights_bound(s64, d_k, dtype, causal, None, alpha, reading.form))


def scale_through_a_reading(
    clause_id: str, weights: torch.Tensor, scores: torch.Tensor, d_k: int, dtype: str, causal: bool = False,
) -> tuple[Reading, float | None] | None:
    """The weights seen through another clause's diagnosed mistake: (the reading, None) when they match it at
    1/√d_k, (the reading, α) when at another scale α; None when no reading explains them."""
    observed = weights.detach().to("cpu", torch.float64)
    (s64,) = oracle.upcast(scores)
    for reading in readings.usable_by(clause_id):
        expected = expect_weights_through(reading, scores, d_k, dtype, causal)
        if expected is None or observed.shape != expected.reference.shape:
            continue
        if matches(weights, expected):
            return reading, None
        fit = fit_scale(lambda a: reading.weights(s64, d_k, causal, a), observed, 1 / math.sqrt(d_k), (),
                        lambda a: weights_bound(s64, d_k, dtype, causal, None, a, reading.form).error)
        if fit is not None:
            at_fit = expect_weights_through(reading, scores, d_k, dtype, causal, fit[0])
            if at_fit is not None and matches(weights, at_fit):
                return reading, fit[0]
    return None


def fitted_weights_scale(
    weights: torch.Tensor, scores: torch.Tensor, d_k: int, causal: bool = False, mask: torch.Tensor | None = None
) -> float | None:
    """The α for which softmax(α·ω) (masked like the call) best explains weights returned for scores."""
    (s64,) = oracle.upcast(scores)
    m_ = None if mask is None else mask.cpu()
    observed = weights.detach().to("cpu", torch.float64)
    implied = implied_scale(observed, s64)  # masked weights are 0 and do not enter
    dtype = str(scores.dtype).removeprefix("torch.")
    bound = (lambda a: weights_bound(s64, d_k, dtype, causal, m_, a).error) if dtype in DTYPES else None
    fit = fit_scale(lambda a: oracle.weights(s64, d_k, causal, m_, a), observed, 1 / math.sqrt(d_k), (implied,),
                    bound)
    return None if fit is None else fit[0]


def assert_outputs_match(case: Case, out: Attention, where: str, any_scale: bool = True) -> None:
    """The outputs (weights if returned, and context) match the reference.

    With any_scale, the reference at a fitted scale α is accepted too: how the scores are scaled is
    WEIGHTS-SCALE's business, not the calling clause's; and so is the reference with one diagnosed mistake
    of another clause (readings.py: a softmax over the queries, transposed scores, a mask after the
    softmax), at the usual or a fitted scale. The usual 1/√d_k without any mistake is tried first, so a
    correct implementation is judged exactly as without fitting.
    """
    check = outputs_check(out, where)
    try:
        check(case.expected())
    except ClauseFailure:
        if not any_scale or explain(case, out, check) is None:
            raise


@dataclass(frozen=True)
class Explanation:
    """What a failing example's outputs match instead of the reference: the reference at a fitted scale α
    (None: 1/√d_k), and with a reading's mistake (None: without one)."""

    alpha: float | None = None
    reading: Reading | None = None

    def __str__(self) -> str:
        scale = "" if self.alpha is None else f"a scale of {self.alpha:.4g}"
        if self.reading is None:
            return scale
        return self.reading.name + (f", at {scale}" if scale else "")


def explain(case: Case, out: Attention, check: Callable[[Outputs], None]) -> Explanation | None:
    """Under which explanation the outputs pass `check`: a fitted scale, a reading of another clause's
    mistake at the usual or a fitted scale; None when none does. Tried after the reference itself failed."""
    context_shape, weights_shape = shapes(case.problem)
    if tuple(out.context.shape) != context_shape or (out.weights is not None and tuple(out.weights.shape) != weights_shape):
        return None  # outputs of another shape: API-SHAPES' business, nothing to see through
    alpha = case.fitted_scale(out)
    if alpha is not None and holds(check, case.expected(alpha)):
        return Explanation(alpha)
    for reading in readings.usable_by(case.clause):
        expected = case.expected_through(reading)
        if expected is None:
            continue
        if holds(check, expected):
            return Explanation(None, reading)
        alpha = case.fitted_scale(out, reading)
        if alpha is not None and holds(check, case.expected(alpha, reading=reading)):
            return Explanation(alpha, reading)
    return None


def outputs_check(out: Attention, where: str = "") -> Callable[[Outputs], None]:
    """The check of both outputs (weights if returned, and context) against an expectation."""

    def check(expected: Outputs) -> None:
        if out.weights is not None:
            assert_matches(out.weights, expected.weights, where)
        assert_matches(out.context, expected.context, where)

    return check


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
    problem = fit_problem(problem, implementation)
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
