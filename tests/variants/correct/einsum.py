"""Attention written with torch.einsum and explicit subscripts throughout.

What makes it different: no matmul / @ / transpose anywhere.  Every linear
algebra step (projection, scores, row sums of the softmax, context, heads,
concatenation, output projection) is an einsum whose subscripts spell out the
axes, and the embedding lookup is a one-hot contraction (done in float64,
where 1·x + 0·y + ... is exactly x, and cast back, so it is bit-exact for
finite tables in every dtype and immune to TF32 or half-precision matmuls).
"""

from __future__ import annotations

import math
import string

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.variants.correct import CAPABILITIES  # noqa: F401  (the claims every variant here shares)

_STRIP = str.maketrans("", "", string.punctuation)


def _words(sentence: str) -> list[str]:
    return sentence.translate(_STRIP).split()


def build_vocab(sentence: str) -> dict[str, int]:
    return {word: i for i, word in enumerate(sorted(set(_words(sentence))))}


def token_ids(sentence: str, vocab: dict[str, int]) -> Tensor:
    ids = []
    for word in _words(sentence):
        if word not in vocab:
            raise KeyError(f"word {word!r} is not in the vocabulary")
        ids.append(vocab[word])
    return torch.tensor(ids, dtype=torch.int64)


def embed(ids: Tensor, table: Tensor) -> Tensor:
    one_hot = F.one_hot(ids.long(), table.shape[0]).to(torch.float64)
    rows = torch.einsum("...v,vd->...d", one_hot, table.to(torch.float64))
    return rows.to(table.dtype)


def project(x: Tensor, weight: Tensor) -> Tensor:
    return torch.einsum("...ni,oi->...no", x, weight)


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    return torch.einsum("...qd,...kd->...qk", queries, keys)


def _allowed(n_q: int, n_kv: int, device: torch.device, causal: bool, mask: Tensor | None) -> Tensor | None:
    allowed = None
    if causal:
        # top-left: key j is visible to query i when j <= i
        allowed = torch.arange(n_kv, device=device) <= torch.arange(n_q, device=device).unsqueeze(-1)
    if mask is not None:
        mask = mask.to(device=device, dtype=torch.bool)
        allowed = mask if allowed is None else allowed & mask
    return allowed


def attention_weights(scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
    scaled = scores / math.sqrt(d_k)
    allowed = _allowed(scores.shape[-2], scores.shape[-1], scores.device, causal, mask)
    if allowed is not None:
        scaled = scaled.masked_fill(~allowed, float("-inf"))
    row_max = scaled.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    e = torch.exp(scaled - row_max)
    total = torch.einsum("...qk->...q", e).unsqueeze(-1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return e / safe


def _mix(weights: Tensor, values: Tensor) -> Tensor:
    return torch.einsum("...qk,...kd->...qd", weights, values)


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    q, k, v = project(x_q, w_q), project(x_kv, w_k), project(x_kv, w_v)
    weights = attention_weights(attention_scores(q, k), w_q.shape[-2], causal=causal)
    return _mix(weights, v), weights


def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    q = torch.einsum("...ni,hdi->...hnd", x, w_q)
    k = torch.einsum("...ni,hdi->...hnd", x, w_k)
    v = torch.einsum("...ni,hdi->...hnd", x, w_v)
    weights = attention_weights(torch.einsum("...hqd,...hkd->...hqk", q, k), w_q.shape[-2], causal=causal)
    return torch.einsum("...hqk,...hkd->...hqd", weights, v), weights


def multihead_attention_concat(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    context, weights = multihead_attention(x, w_q, w_k, w_v, causal)
    h, n, d_v = context.shape[-3:]
    concat = torch.einsum("...hnd->...nhd", context).reshape(*context.shape[:-3], n, h * d_v)
    if w_o is not None:
        concat = torch.einsum("...nc,oc->...no", concat, w_o)
    return concat, weights
