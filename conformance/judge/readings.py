"""Readings: what the pipeline computes with one step done in a known wrong way, so that the other
clauses can be judged through that mistake.

One mistake should cost its own clause (and the end-to-end ones), not everything downstream of it. A
softmax over the queries, transposed scores or a causal mask applied after the softmax can be seen
through: when an implementation's outputs match the float64 pipeline with that one step done the wrong
way (within the same tolerance policy), every other step of its pipeline is the reference's. A clause
whose check fails against the reference is then judged against the reading instead, exactly as the
scale is seen through today (fitting.py); the reading's own clauses (its `owners`) never are, so their
tests still fail. A correct implementation matches the reference first and never reaches a reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from conformance.judge import oracle

Weights = Callable[[Tensor, int, bool, "float | None"], "Tensor | None"]


@dataclass(frozen=True)
class Reading:
    name: str  # the mistake, in words ("the softmax over the queries")
    owners: frozenset[str]  # the clauses whose mistake it is: their own tests never judge through it
    weights: Weights  # (ω, d_k, causal, α) -> the weights with this mistake; None where it cannot apply
    # the same mistake for the error analysis (rounding.py): (softmax axis, scores transposed, mask after)
    form: tuple[int, bool, bool] = (-1, False, False)

    def usable_by(self, clause_id: str) -> bool:
        return clause_id not in self.owners


def _scaled(omega: Tensor, d_k: int, alpha: float | None) -> Tensor:
    return omega / math.sqrt(d_k) if alpha is None else omega * alpha


def _over_the_queries(omega: Tensor, d_k: int, causal: bool, alpha: float | None) -> Tensor | None:
    """The causal mask as the reference applies it (-inf before the softmax), then a softmax down each column."""
    if omega.shape[-2] < 2:  # one query: a softmax over the queries is all ones, nothing to see through
        return None
    scaled = _scaled(omega, d_k, alpha)
    keep = oracle.allowed(omega.shape[-2], omega.shape[-1], causal, None, omega.device)
    if keep is not None:
        scaled = scaled.masked_fill(~keep, -math.inf)
    return torch.softmax(scaled, dim=-2).nan_to_num(0.0)


def _transposed(omega: Tensor, d_k: int, causal: bool, alpha: float | None) -> Tensor | None:
    """Row i built from key i's scores (K Qᵀ): only where the scores are square, and not all symmetric."""
    if omega.shape[-1] != omega.shape[-2] or omega.shape[-1] < 2:
        return None
    return oracle.weights(omega.transpose(-2, -1), d_k, causal, alpha=alpha)


def _masked_after(omega: Tensor, d_k: int, causal: bool, alpha: float | None) -> Tensor | None:
    """A softmax over every key, then the future keys' weights set to 0 (rows no longer sum to 1)."""
    if not causal:
        return None
    keep = oracle.allowed(omega.shape[-2], omega.shape[-1], True, None, omega.device)
    return oracle.weights(omega, d_k, False, alpha=alpha).masked_fill(~keep, 0.0)


READINGS: tuple[Reading, ...] = (
    Reading("the softmax over the queries", frozenset({"WEIGHTS-SOFTMAX"}), _over_the_queries, (-2, False, False)),
    # for self-attention K Qᵀ is also W_Q and W_K in each other's roles: neither clause judges through it
    Reading("the scores transposed (K Qᵀ)", frozenset({"SCORE-DOT", "PROJ-ROLES"}), _transposed, (-1, True, False)),
    # masking after the softmax masks right (future weights are 0) and renormalises wrong: CAUSAL-RENORM's alone,
    # so CAUSAL-MASK sees it through (a row whose visible weights all underflowed is that mistake's, not the mask's)
    Reading("the causal mask applied after the softmax", frozenset({"CAUSAL-RENORM"}), _masked_after,
            (-1, False, True)),
)


def usable_by(clause_id: str) -> list[Reading]:
    """The readings a clause's tests may judge through (all but its own mistakes); none for an unnamed one."""
    return [r for r in READINGS if r.usable_by(clause_id)] if clause_id else []


def cross_attention(reading: Reading, x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor,
                    causal: bool = False, alpha: float | None = None) -> tuple[Tensor, Tensor] | None:
    """oracle.cross_attention with the reading's weights; None where the reading does not apply."""
    if w_q.dim() == 3:  # multi-head: one copy of the tokens per head
        x_q, x_kv = x_q.unsqueeze(-3), x_kv.unsqueeze(-3)
    q, k, v = oracle.project(x_q, w_q), oracle.project(x_kv, w_k), oracle.project(x_kv, w_v)
    w = reading.weights(oracle.scores(q, k), k.shape[-1], causal, alpha)
    if w is None:
        return None
    return torch.einsum("...ij,...jd->...id", w, v), w
