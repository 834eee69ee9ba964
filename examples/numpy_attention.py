"""An independent NumPy implementation of the self-attention pipeline.

Written from spec/SPEC.md alone, without looking at the reference
implementation, and used as the suite's plug-in example: it shows that a second,
separately written implementation (in another array library) conforms.

Run the suite against it with

    python -m conformance --impl examples/numpy_attention.py

Conventions (see the spec's Notation): tokens are rows, x has shape
(..., n, d_in); a projection weight is (d_out, d_in), so a projection is x Wᵀ;
multi-head weights are (h, d_out, d_in). Every function returns arrays of its
floating input's dtype; float16 is computed in float32 and rounded once at the
end, which is more accurate than rounding after every step.
"""

from __future__ import annotations

import string

import numpy as np

CAPABILITIES = {
    "array": "numpy",
    "dtypes": ["float64", "float32", "float16"],
    "devices": ["cpu"],
    "batching": True,
    "autograd": False,
    "returns_weights": True,
    "grouped_kv_heads": True,
}

# Removes every ASCII punctuation character in one pass of str.translate.
_STRIP_PUNCTUATION = str.maketrans("", "", string.punctuation)


# --------------------------------------------------------------------------
# dtype helpers
# --------------------------------------------------------------------------


def _result_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype the caller gets back: that of the (floating) inputs."""
    dtype = np.result_type(*arrays)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute in: float16 is widened to float32 for accuracy."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _widen(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # astype copies, so nothing downstream can touch the caller's array
    return np.asarray(array).astype(dtype)


# --------------------------------------------------------------------------
# Tokens and embedding
# --------------------------------------------------------------------------


def _words(sentence: str) -> list[str]:
    """The sentence's words, punctuation removed, in sentence order."""
    return sentence.translate(_STRIP_PUNCTUATION).split()


def build_vocab(sentence: str) -> dict[str, int]:
    """Distinct words sorted by code point, numbered 0, 1, 2, ..."""
    # sorted() on str compares code points, so capitalised words come first
    return {word: index for index, word in enumerate(sorted(set(_words(sentence))))}


def token_ids(sentence: str, vocab: dict[str, int]) -> np.ndarray:
    """The id of every word of the sentence, in order, as an int64 array."""
    ids = []
    for word in _words(sentence):
        if word not in vocab:
            raise KeyError(f"word {word!r} is not in the vocabulary")
        ids.append(vocab[word])
    return np.array(ids, dtype=np.int64)


def embed(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Row lookup: result[..., :] = table[ids[...], :], bit for bit."""
    return np.take(np.asarray(table), np.asarray(ids, dtype=np.int64), axis=0)


# --------------------------------------------------------------------------
# Projections and scores (work-dtype kernels plus dtype-preserving wrappers)
# --------------------------------------------------------------------------


def _project(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    # weight is (d_out, d_in): contract x's features with the weight's columns
    return np.einsum("...ni,oi->...no", x, weight)


def _scores(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    # omega[..., q, k] = queries[..., q, :] . keys[..., k, :]
    return np.einsum("...qd,...kd->...qk", queries, keys)


def project(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x Wᵀ for a weight laid out (d_out, d_in): (..., n, d_in) -> (..., n, d_out)."""
    dtype = _result_dtype(x, weight)
    work = _working_dtype(dtype)
    return _project(_widen(x, work), _widen(weight, work)).astype(dtype)


def attention_scores(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Unscaled scores ω = Q Kᵀ, one row per query: shape (..., n_q, n_kv)."""
    dtype = _result_dtype(queries, keys)
    work = _working_dtype(dtype)
    return _scores(_widen(queries, work), _widen(keys, work)).astype(dtype)


# --------------------------------------------------------------------------
# Attention weights
# --------------------------------------------------------------------------


def _visible(shape: tuple[int, ...], causal: bool, mask: np.ndarray | None) -> np.ndarray | None:
    """Boolean array of the scores' shape, True where a query may attend; None if all may."""
    visible = None
    if causal:
        n_q, n_kv = shape[-2], shape[-1]
        # top-left aligned: query i sees keys 0..i, whatever n_q and n_kv are
        visible = np.tri(n_q, n_kv, dtype=bool)
    if mask is not None:
        explicit = np.asarray(mask, dtype=bool)
        visible = explicit if visible is None else np.logical_and(visible, explicit)
    return None if visible is None else np.broadcast_to(visible, shape)


def _softmax_weights(scores: np.ndarray, d_k: int, causal: bool, mask: np.ndarray | None) -> np.ndarray:
    """softmax(scores / √d_k) over the keys, masked keys excluded (work dtype in and out)."""
    scaled = scores / scores.dtype.type(np.sqrt(d_k))
    visible = _visible(scaled.shape, causal, mask)
    if visible is not None:
        # -inf before the softmax, so the visible keys share all of the weight
        scaled = np.where(visible, scaled, scaled.dtype.type(-np.inf))
    # subtracting the row maximum keeps exp() from overflowing; a fully masked
    # row has maximum -inf, shifted by 0 instead so that no inf - inf = NaN appears
    row_max = scaled.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, scaled.dtype.type(0))
    exps = np.exp(scaled - row_max)  # exp(-inf) is exactly 0: masked weights are 0.0
    totals = exps.sum(axis=-1, keepdims=True)
    # a row with no visible key has total 0: dividing by 1 leaves it all zeros
    totals = np.where(totals > 0, totals, totals.dtype.type(1))
    return exps / totals


def attention_weights(
    scores: np.ndarray, d_k: int, causal: bool = False, mask: np.ndarray | None = None
) -> np.ndarray:
    """Attention weights softmax(ω / √d_k) over the last axis (the keys).

    causal=True lets query i see keys j <= i only; mask (boolean, broadcastable
    to the scores) is True where a query may attend. Both may be given.
    """
    dtype = _result_dtype(scores)
    work = _working_dtype(dtype)
    return _softmax_weights(_widen(scores, work), d_k, causal, mask).astype(dtype)


# --------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------


def _attend(
    x_q: np.ndarray, x_kv: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, causal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Single-head attention in the dtype the arrays already have."""
    queries = _project(x_q, w_q)
    keys = _project(x_kv, w_k)
    values = _project(x_kv, w_v)
    d_k = w_q.shape[-2]  # features of one query (not the model width, not d_v)
    weights = _softmax_weights(_scores(queries, keys), d_k, causal, None)
    # context[..., q, :] = sum over keys of weights[..., q, k] * values[..., k, :]
    context = np.einsum("...qk,...kv->...qv", weights, values)
    return context, weights


def cross_attention(
    x_q: np.ndarray,
    x_kv: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    causal: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Queries from x_q, keys and values from x_kv.

    Returns context (..., n_q, d_v) and weights (..., n_q, n_kv).
    """
    dtype = _result_dtype(x_q, x_kv, w_q, w_k, w_v)
    work = _working_dtype(dtype)
    context, weights = _attend(*(_widen(a, work) for a in (x_q, x_kv, w_q, w_k, w_v)), causal)
    return context.astype(dtype), weights.astype(dtype)


def self_attention(
    x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, causal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Self-attention is cross-attention of x with itself.

    Returns context (..., n, d_v) and weights (..., n, n).
    """
    return cross_attention(x, x, w_q, w_k, w_v, causal=causal)


def _multihead(
    x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, causal: bool
) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Per-head context (..., h, n, d_v) and weights (..., h, n, n), in the work dtype."""
    dtype = _result_dtype(x, w_q, w_k, w_v)
    work = _working_dtype(dtype)
    x, w_q, w_k, w_v = (_widen(a, work) for a in (x, w_q, w_k, w_v))
    # project every head at once; the head axis lands right after the batch axes
    queries = np.einsum("...ni,hoi->...hno", x, w_q)
    keys = np.einsum("...ni,hoi->...hno", x, w_k)
    values = np.einsum("...ni,hoi->...hno", x, w_v)
    d_k = w_q.shape[-2]  # one head's d_k, not h * d_k
    # the head axis is just another batch axis from here on, so heads stay independent
    weights = _softmax_weights(_scores(queries, keys), d_k, causal, None)
    context = np.einsum("...qk,...kv->...qv", weights, values)
    return context, weights, dtype


def multihead_attention(
    x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, causal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """h independent heads; weights are (h, d_out, d_in).

    Returns context (..., h, n, d_v) and weights (..., h, n, n).
    """
    context, weights, dtype = _multihead(x, w_q, w_k, w_v, causal)
    return context.astype(dtype), weights.astype(dtype)


def multihead_attention_concat(
    x: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    w_o: np.ndarray | None = None,
    causal: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Heads concatenated head-major, [head_0 | head_1 | ...], then optionally W_oᵀ.

    Returns context (..., n, h*d_v), or (..., n, d_o) with w_o of shape
    (d_o, h*d_v), and the per-head weights (..., h, n, n).
    """
    context, weights, dtype = _multihead(x, w_q, w_k, w_v, causal)
    heads, d_v = context.shape[-3], context.shape[-1]
    if w_o is None:
        # (..., h, n, d_v) -> (..., n, h, d_v) -> (..., n, h*d_v): head-major features
        tokens_first = np.moveaxis(context, -3, -2)
        output = tokens_first.reshape(tokens_first.shape[:-2] + (heads * d_v,))
    else:
        # W_o's columns are head-major too, so split them per head and contract
        # heads and features together: concat @ W_oᵀ without building concat
        w_o_heads = _widen(w_o, context.dtype).reshape(w_o.shape[0], heads, d_v)
        output = np.einsum("...hnv,ohv->...no", context, w_o_heads)
    return output.astype(dtype), weights.astype(dtype)


# --------------------------------------------------------------------------
# The kernel: attention(q, k, v) on heads already split
# --------------------------------------------------------------------------


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    causal: bool = False,
    mask: np.ndarray | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(q kᵀ · scale + mask) v for q (..., h, n_q, d_k), k (..., h_kv, n_kv, d_k), v (..., h_kv, n_kv, d_v).

    scale defaults to 1/√d_k; a boolean mask is True where a query may attend, a float mask is added to
    the scaled scores. With h_kv < h key/value heads, each serves h / h_kv consecutive query heads.
    """
    dtype = _result_dtype(q, k, v)
    work = _working_dtype(dtype)
    q, k, v = (_widen(a, work) for a in (q, k, v))
    group = q.shape[-3] // k.shape[-3]
    k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    factor = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scaled = _scores(q, k) * work.type(factor)
    boolean = mask is not None and np.asarray(mask).dtype == np.bool_
    if mask is not None and not boolean:
        scaled = scaled + _widen(mask, work)
    # already scaled: the softmax divides by √1
    weights = _softmax_weights(scaled, 1, causal, np.asarray(mask) if boolean else None)
    context = np.einsum("...qk,...kv->...qv", weights, v)
    return context.astype(dtype), weights.astype(dtype)
