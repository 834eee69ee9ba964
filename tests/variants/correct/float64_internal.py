"""Attention that computes everything in float64, whatever the input dtype.

What makes it different: every function upcasts its floating inputs to
float64 on entry, does all the arithmetic (projections, scores, a hand-written
max-subtracted softmax, context) in float64, and casts the results back to
the input dtype on exit.  Results are therefore "more accurate than needed":
in float16/bfloat16/float32 they carry only the final rounding to the output
dtype, not the rounding of every intermediate step.  The casts are ordinary
differentiable ops, so autograd works in every dtype.
"""

from __future__ import annotations

import math
import re
import string

import torch
from torch import Tensor

from tests.variants.correct import CAPABILITIES  # noqa: F401  (the claims every variant here shares)

_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")


def _words(sentence: str) -> list[str]:
    return _PUNCTUATION.sub("", sentence).split()


def _f64(t: Tensor) -> Tensor:
    return t.to(torch.float64)


def build_vocab(sentence: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for word in sorted(set(_words(sentence))):
        vocab[word] = len(vocab)
    return vocab


def token_ids(sentence: str, vocab: dict[str, int]) -> Tensor:
    missing = [word for word in _words(sentence) if word not in vocab]
    if missing:
        raise KeyError(f"{missing[0]!r} is not in the vocabulary")
    return torch.tensor([vocab[word] for word in _words(sentence)], dtype=torch.long)


def embed(ids: Tensor, table: Tensor) -> Tensor:
    # widening to float64 and narrowing back is exact, so the rows are copied bit for bit
    return torch.index_select(_f64(table), 0, ids.reshape(-1).long()).reshape(*ids.shape, table.shape[-1]).to(table.dtype)


def _project64(x: Tensor, weight: Tensor) -> Tensor:
    return torch.matmul(x, weight.transpose(-1, -2))


def project(x: Tensor, weight: Tensor) -> Tensor:
    return _project64(_f64(x), _f64(weight)).to(x.dtype)


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    return torch.matmul(_f64(queries), _f64(keys).transpose(-1, -2)).to(queries.dtype)


def _weights64(scores: Tensor, d_k: int, causal: bool, mask: Tensor | None) -> Tensor:
    """Masked, max-subtracted softmax of scores / sqrt(d_k); scores already float64."""
    s = scores / math.sqrt(d_k)
    visible = torch.ones_like(s, dtype=torch.bool)
    if causal:
        n_q, n_kv = s.shape[-2:]
        visible = visible & torch.tril(torch.ones(n_q, n_kv, dtype=torch.bool, device=s.device))
    if mask is not None:
        visible = visible & mask.to(device=s.device, dtype=torch.bool)
    s = torch.where(visible, s, torch.full_like(s, -math.inf))
    top = s.max(dim=-1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.where(visible, torch.exp(s - top), torch.zeros_like(s))
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def attention_weights(scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    return _weights64(_f64(scores), d_k, causal, mask).to(scores.dtype)


def _attend64(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
    weights = _weights64(torch.matmul(q, k.transpose(-1, -2)), q.shape[-1], causal, None)
    return torch.matmul(weights, v), weights


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    xq, xkv = _f64(x_q), _f64(x_kv)
    context, weights = _attend64(_project64(xq, _f64(w_q)), _project64(xkv, _f64(w_k)), _project64(xkv, _f64(w_v)), causal)
    return context.to(x_q.dtype), weights.to(x_q.dtype)


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def _multihead64(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
    """All in float64: per-head context (..., h, n, d_v) and weights (..., h, n, n)."""
    heads = [
        _attend64(_project64(x, _f64(w_q[t])), _project64(x, _f64(w_k[t])), _project64(x, _f64(w_v[t])), causal)
        for t in range(w_q.shape[0])
    ]
    return torch.stack([c for c, _ in heads], dim=-3), torch.stack([w for _, w in heads], dim=-3)


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    context, weights = _multihead64(_f64(x), w_q, w_k, w_v, causal)
    return context.to(x.dtype), weights.to(x.dtype)


def multihead_attention_concat(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    context, weights = _multihead64(_f64(x), w_q, w_k, w_v, causal)
    concat = torch.cat(context.unbind(dim=-3), dim=-1)
    if w_o is not None:
        concat = _project64(concat, _f64(w_o))
    return concat.to(x.dtype), weights.to(x.dtype)
