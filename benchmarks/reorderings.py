"""Correct attention summed in other orders, for benchmarks/tolerance_sweep.py: each must pass.

Each is the teaching Pipeline (one overridable method per step) with its sums done another way:
- ReversedSums: every reduction accumulated one term at a time, last term first;
- BlockedSums: every reduction in blocks of 5, the block sums then added pairwise (a tree);
  (both accumulate half precision in float32, as the spec's model says half-precision implementations do,
  and store each step's result in the input's dtype)
- Float32Accumulation: half-precision inputs computed step by step in float32, each step's result stored
  back in the input's dtype (what a half-precision kernel with float32 accumulators does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from conformance.teaching.mistakes import Pipeline

BLOCK = 5


def _accumulator(terms: Tensor) -> Tensor:
    return terms.float() if terms.dtype in (torch.float16, torch.bfloat16) else terms


def _sequential(terms: Tensor, dim: int) -> Tensor:
    """Σ along `dim`, one term at a time, last first."""
    wide = _accumulator(terms)
    total = torch.zeros_like(wide.select(dim, 0))
    for index in reversed(range(wide.shape[dim])):
        total = total + wide.select(dim, index)
    return total.to(terms.dtype)


def _pairwise(terms: Tensor, dim: int) -> Tensor:
    """Σ along `dim` in blocks of BLOCK, the block sums added pairwise."""
    wide = _accumulator(terms)
    parts = [chunk.sum(dim) for chunk in wide.split(BLOCK, dim)]
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return (parts[0] if parts else torch.zeros_like(wide.sum(dim))).to(terms.dtype)


class _Reordered(Pipeline):
    """The pipeline with every matrix product and the softmax's row sum done by `reduce`."""

    @staticmethod
    def reduce(terms: Tensor, dim: int) -> Tensor:
        raise NotImplementedError

    def project(self, x: Tensor, weight: Tensor) -> Tensor:  # (..., n, d_in) · (..., d_out, d_in)
        return self.reduce(x.unsqueeze(-2) * weight.unsqueeze(-3), -1)

    def attention_scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        return self.reduce(queries.unsqueeze(-2) * keys.unsqueeze(-3), -1)

    def softmax(self, scaled: Tensor) -> Tensor:
        top = scaled.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        exp = torch.exp(scaled - top)
        total = self.reduce(exp, -1).unsqueeze(-1)
        return exp / total.clamp_min(torch.finfo(exp.dtype).tiny)

    def mix(self, weights: Tensor, values: Tensor, keys: Tensor) -> Tensor:  # Σ_j w_ij v_jd
        return self.reduce(weights.unsqueeze(-1) * values.unsqueeze(-3), -2)

    def multihead_attention_concat(self, x, w_q, w_k, w_v, w_o=None, causal: bool = False):
        per_head, weights = self.multihead_attention(x, w_q, w_k, w_v, causal)
        joined = self.concat(per_head)
        return (joined if w_o is None else self.project(joined, w_o)), weights


class ReversedSums(_Reordered):
    reduce = staticmethod(_sequential)


class BlockedSums(_Reordered):
    reduce = staticmethod(_pairwise)


class Float32Accumulation(Pipeline):
    """Half precision stored, float32 accumulated: each step computes in float32 and rounds its result."""

    @staticmethod
    def _wide(*tensors: Tensor) -> tuple[torch.dtype, list[Tensor]]:
        dtype = tensors[0].dtype
        wide = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        return dtype, [t.to(wide) for t in tensors]

    def project(self, x: Tensor, weight: Tensor) -> Tensor:
        dtype, (x, weight) = self._wide(x, weight)
        return (x @ weight.transpose(-2, -1)).to(dtype)

    def attention_scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        dtype, (queries, keys) = self._wide(queries, keys)
        return (queries @ keys.transpose(-2, -1)).to(dtype)

    def scale(self, scores: Tensor, d_k: int, d_v: int, d_in: int) -> Tensor:
        return (scores.float() / math.sqrt(d_k)).to(scores.dtype) if scores.dtype != torch.float64 else \
            scores / math.sqrt(d_k)

    def softmax(self, scaled: Tensor) -> Tensor:
        dtype, (wide,) = self._wide(scaled)
        return super().softmax(wide).to(dtype)

    def mix(self, weights: Tensor, values: Tensor, keys: Tensor) -> Tensor:
        dtype, (weights, values) = self._wide(weights, values)
        return (weights @ values).to(dtype)

    def multihead_attention_concat(self, x, w_q, w_k, w_v, w_o=None, causal: bool = False):
        per_head, weights = self.multihead_attention(x, w_q, w_k, w_v, causal)
        joined = self.concat(per_head)
        return (joined if w_o is None else self.project(joined, w_o)), weights


def sdpa_kernel(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """torch's scaled_dot_product_attention under its own signature (in-process, a builtin's cannot be read)."""
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                                            dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                                                            enable_gqa=enable_gqa)
