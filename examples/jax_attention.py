"""Self-attention in JAX, written from spec/SPEC.md alone.

A third, separately written implementation (after the reference in torch and
examples/numpy_attention.py), used as the suite's example of a JAX plug-in:

    python -m conformance --impl examples/jax_attention.py

The suite's worker hands every function jax arrays (CPU) and reads jax arrays
back. It also turns on jax's 64-bit mode before the first call, which this
file relies on for float64 inputs and int64 token ids; run on your own, do
`jax.config.update("jax_enable_x64", True)` first.

Layout (spec, Notation): tokens are rows, x is (..., n, d_in); a projection
weight is (d_out, d_in), applied as x Wᵀ; per-head weights are (h, d_out,
d_in). Outputs keep the floating dtype of the inputs. float16 and bfloat16 are
computed in float32 and rounded once at the end.

Shapes and compilation: XLA compiles a program for every input shape, and the
suite draws some nine hundred different shapes, tiny ones. So the math lives
in a few jitted kernels that only ever see padded shapes: every axis is padded
with zeros up to a power of two (at least 4 for batch and heads, 32 for tokens
and features), on the host with numpy, which needs no compilation, and the
result is cut back to size there too: some 170 programs instead of 900. Zero features add exact zeros to every dot
product; padded keys are hidden like masked ones, so their weight is exactly
0; padded queries and features are cut off. The kernels also ask XLA for a
quick compile: for arrays this small, optimising costs more than it saves.
"""

from __future__ import annotations

import functools
import string

import jax
import jax.numpy as jnp
import numpy as np

CAPABILITIES = {
    "array": "jax",
    "dtypes": ["float64", "float32", "float16", "bfloat16"],
    "devices": ["cpu"],
    "batching": True,
    "autograd": False,
    "returns_weights": True,
}

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NARROW = (jnp.float16, jnp.bfloat16)  # stored in 16 bits, computed in float32
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


# ---------------------------------------------------------------- compiling and padding


@functools.cache
def _compile_options() -> dict[str, object]:
    """XLA's quick-compile options when this jax and XLA take them (older ones do not), else none."""
    try:
        jax.jit(jnp.negative, compiler_options=_QUICK_COMPILE).lower(np.zeros(1, np.float32)).compile()
    except Exception:  # noqa: BLE001 - no such argument or option: compile normally, only slower
        return {}
    return {"compiler_options": _QUICK_COMPILE}


def _kernel(*static: str):
    """jax.jit with these static arguments, set up on first call: probing the compile options compiles,
    which waits until jax is configured (the suite's worker turns on 64-bit mode after the import)."""

    def wrap(function):
        @functools.cache
        def jitted():
            return jax.jit(function, static_argnames=static, **_compile_options())

        @functools.wraps(function)
        def call(*args, **kwargs):
            return jitted()(*args, **kwargs)

        return call

    return wrap


def _tokens(n: int) -> int:
    """Padded length of a token or feature axis: a power of two, at least 32."""
    return max(32, 1 << (n - 1).bit_length())


def _count(n: int) -> int:
    """Padded length of a batch or head axis: a power of two, at least 4."""
    return max(4, 1 << (n - 1).bit_length())


def _padded(a, *sizes: int) -> np.ndarray:
    """a on the host, zero-padded at the end of each axis up to sizes."""
    a = np.asarray(a)
    return np.pad(a, [(0, size - have) for have, size in zip(a.shape, sizes)])


def _batched(a, batch: tuple[int, ...]) -> np.ndarray:
    """a (..., n, d) broadcast to the batch shape and flattened to (B, n, d), on the host."""
    a = np.asarray(a)
    return np.broadcast_to(a, batch + a.shape[-2:]).reshape(-1, *a.shape[-2:])


def _to_jax(a: np.ndarray) -> jnp.ndarray:
    """A host array as a jax array. device_put, not jnp.asarray: that one compiles a copy for every shape."""
    return jax.device_put(np.ascontiguousarray(a))


def _cut(a, sizes: tuple[int, ...], shape: tuple[int, ...]) -> jnp.ndarray:
    """The leading sizes of each axis of a padded result, reshaped, back as a jax array."""
    return _to_jax(np.asarray(a)[tuple(slice(0, n) for n in sizes)].reshape(shape))


def _floating(*arrays: jnp.ndarray) -> tuple[jnp.dtype, jnp.dtype]:
    """(dtype to return, dtype to compute in) for floating inputs."""
    out = jnp.result_type(*arrays)
    if not jnp.issubdtype(out, jnp.floating):
        out = jnp.dtype(jnp.float32)
    return out, (jnp.dtype(jnp.float32) if out in _NARROW else out)


def _t(a: jnp.ndarray) -> jnp.ndarray:
    return jnp.swapaxes(a, -1, -2)


# ---------------------------------------------------------------- tokens


def _split(sentence: str) -> list[str]:
    return sentence.translate(_NO_PUNCTUATION).split()


def build_vocab(sentence: str) -> dict[str, int]:
    """Each distinct word, in code-point order, numbered from 0."""
    return {word: i for i, word in enumerate(sorted(set(_split(sentence))))}


def token_ids(sentence: str, vocab: dict[str, int]) -> jnp.ndarray:
    """The sentence's words as vocabulary ids, int64, in order; an unknown word is a KeyError naming it."""
    missing = [w for w in _split(sentence) if w not in vocab]
    if missing:
        raise KeyError(f"{missing[0]!r} is not in the vocabulary")
    return _to_jax(np.array([vocab[w] for w in _split(sentence)], dtype=np.int64))


def embed(ids: jnp.ndarray, table: jnp.ndarray) -> jnp.ndarray:
    """table[ids]: one exact row of the table per id, ids of any shape."""
    return jnp.take(table, ids, axis=0)


# ---------------------------------------------------------------- kernels (padded shapes only)


def _softmax(scores: jnp.ndarray, d_k: jnp.ndarray, allowed: jnp.ndarray, causal: bool) -> jnp.ndarray:
    """softmax(scores / √d_k) over the keys where allowed; hidden keys get exactly 0, a row with none all 0."""
    scaled = scores / jnp.sqrt(d_k).astype(scores.dtype)  # √d_k rounded once to the scores' dtype
    if causal:  # top-left aligned: query i sees keys 0..i (padding at the end does not move that)
        allowed = allowed & jnp.tri(scores.shape[-2], scores.shape[-1], dtype=bool)
    scaled = jnp.where(allowed, scaled, -jnp.inf)
    top = jnp.max(scaled, axis=-1, keepdims=True)
    top = jnp.where(jnp.isneginf(top), 0.0, top)  # an empty row: shift by 0, not -inf (no inf - inf)
    e = jnp.exp(scaled - top)  # exp(-inf) = 0 exactly
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total == 0, 1.0, total)


def _attend(q, k, v, n_kv, d_k, causal: bool):
    """(weights · V, weights) for projected queries, keys and values; keys from n_kv on are padding."""
    real_keys = jnp.arange(k.shape[-2]) < n_kv
    weights = _softmax(q @ _t(k), d_k, real_keys, causal)
    return weights @ v, weights


@_kernel()
def _products(a, b):
    """a bᵀ on the last two axes, in a's dtype (float16 and bfloat16 accumulated in float32)."""
    out, work = _floating(a, b)
    return (a.astype(work) @ _t(b.astype(work))).astype(out)


@_kernel("causal")
def _weights(scores, allowed, d_k, causal: bool):
    out, work = _floating(scores)
    return _softmax(scores.astype(work), d_k, allowed, causal).astype(out)


@_kernel("causal")
def _cross(x_q, x_kv, w_q, w_k, w_v, n_kv, d_k, causal: bool):
    out, work = _floating(x_q, x_kv, w_q, w_k, w_v)
    x_q, x_kv = x_q.astype(work), x_kv.astype(work)
    q, k, v = x_q @ _t(w_q.astype(work)), x_kv @ _t(w_k.astype(work)), x_kv @ _t(w_v.astype(work))
    context, weights = _attend(q, k, v, n_kv, d_k, causal)
    return context.astype(out), weights.astype(out)


@_kernel("causal")
def _heads(x, w_q, w_k, w_v, w_o, n, d_k, causal: bool):
    """All heads at once: context (B, H, N, DV) and weights (B, H, N, N); with w_o (DO, H, DV) the
    heads' concatenation times W_oᵀ, (B, N, DO), as context."""
    out, work = _floating(x, w_q, w_k, w_v)
    x = x.astype(work)[:, None]  # (B, 1, N, DIN) meets (H, DIN, D): the head axis broadcasts in
    q, k, v = (x @ _t(w.astype(work)) for w in (w_q, w_k, w_v))
    context, weights = _attend(q, k, v, n, d_k, causal)
    if w_o is not None:  # concat · W_oᵀ summed head by head, so the padding between heads never meets W_o
        context = jnp.einsum("bhnv,ohv->bno", context, w_o.astype(work))
    return context.astype(out), weights.astype(out)


# ---------------------------------------------------------------- the spec's functions
# Outside the kernels arrays are handled as numpy arrays (np.asarray of a CPU jax array copies nothing): an
# eager jax operation would itself be compiled for every shape it meets.


def project(x: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """x Wᵀ: (..., n, d_in) with (d_out, d_in) gives (..., n, d_out)."""
    x, (d_out, d_in) = np.asarray(x), weight.shape
    rows = x.reshape(-1, d_in)
    result = _products(_padded(rows, _tokens(len(rows)), _tokens(d_in)), _padded(weight, _tokens(d_out), _tokens(d_in)))
    return _cut(result, (len(rows), d_out), (*x.shape[:-1], d_out))


def attention_scores(queries: jnp.ndarray, keys: jnp.ndarray) -> jnp.ndarray:
    """ω = Q Kᵀ, unscaled: (..., n_q, n_kv)."""
    batch = np.broadcast_shapes(queries.shape[:-2], keys.shape[:-2])
    q, k = _batched(queries, batch), _batched(keys, batch)
    (b, n_q, d), n_kv = q.shape, k.shape[1]
    B, D = _count(b), _tokens(d)
    result = _products(_padded(q, B, _tokens(n_q), D), _padded(k, B, _tokens(n_kv), D))
    return _cut(result, (b, n_q, n_kv), (*batch, n_q, n_kv))


def attention_weights(
    scores: jnp.ndarray, d_k: int, causal: bool = False, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """softmax(ω / √d_k) along the last axis; causal and a boolean mask (True = may attend) both hide keys."""
    shape = scores.shape
    allowed = np.ones(shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), shape)
    s, allowed = _batched(scores, shape[:-2]), _batched(allowed, shape[:-2])
    b, n_q, n_kv = s.shape
    padded = (_count(b), _tokens(n_q), _tokens(n_kv))
    result = _weights(_padded(s, *padded), _padded(allowed, *padded), d_k, causal=bool(causal))  # padding: False
    return _cut(result, (b, n_q, n_kv), shape)


def cross_attention(
    x_q: jnp.ndarray,
    x_kv: jnp.ndarray,
    w_q: jnp.ndarray,
    w_k: jnp.ndarray,
    w_v: jnp.ndarray,
    causal: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Queries from x_q, keys and values from x_kv: context (..., n_q, d_v), weights (..., n_q, n_kv)."""
    batch = np.broadcast_shapes(x_q.shape[:-2], x_kv.shape[:-2])
    xq, xkv = _batched(x_q, batch), _batched(x_kv, batch)
    (b, n_q, d_q), (n_kv, d_kv) = xq.shape, xkv.shape[1:]
    d_k, d_v = w_q.shape[0], w_v.shape[0]
    B, DQ, DKV, DK = _count(b), _tokens(d_q), _tokens(d_kv), _tokens(d_k)
    context, weights = _cross(
        _padded(xq, B, _tokens(n_q), DQ), _padded(xkv, B, _tokens(n_kv), DKV),
        _padded(w_q, DK, DQ), _padded(w_k, DK, DKV), _padded(w_v, _tokens(d_v), DKV),
        n_kv, d_k, causal=bool(causal),
    )
    return _cut(context, (b, n_q, d_v), (*batch, n_q, d_v)), _cut(weights, (b, n_q, n_kv), (*batch, n_q, n_kv))


def self_attention(
    x: jnp.ndarray, w_q: jnp.ndarray, w_k: jnp.ndarray, w_v: jnp.ndarray, causal: bool = False
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Attention of x to itself: context (..., n, d_v), weights (..., n, n)."""
    return cross_attention(x, x, w_q, w_k, w_v, causal)


def _multihead(x, w_q, w_k, w_v, w_o, causal: bool) -> tuple[np.ndarray, jnp.ndarray, tuple[int, ...]]:
    """The padded per-head context (or concat · W_oᵀ with w_o), the weights cut to size, the sizes."""
    batch, (n, d_in) = x.shape[:-2], x.shape[-2:]
    xs = _batched(x, batch)
    b, (h, d_k, _), d_v = xs.shape[0], w_q.shape, w_v.shape[1]
    B, H, N, DIN, DK, DV = _count(b), _count(h), _tokens(n), _tokens(d_in), _tokens(d_k), _tokens(d_v)
    if w_o is not None:  # (d_o, h·d_v): its columns are head-major, so they split into (d_o, h, d_v)
        w_o = _padded(np.asarray(w_o).reshape(-1, h, d_v), _tokens(w_o.shape[0]), H, DV)
    context, weights = _heads(
        _padded(xs, B, N, DIN), _padded(w_q, H, DK, DIN), _padded(w_k, H, DK, DIN), _padded(w_v, H, DV, DIN),
        w_o, n, d_k, causal=bool(causal),
    )
    return np.asarray(context), _cut(weights, (b, h, n, n), (*batch, h, n, n)), (b, h, n, d_v)


def multihead_attention(
    x: jnp.ndarray, w_q: jnp.ndarray, w_k: jnp.ndarray, w_v: jnp.ndarray, causal: bool = False
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """h independent heads (weights (h, d_out, d_in)): context (..., h, n, d_v), weights (..., h, n, n)."""
    context, weights, (b, h, n, d_v) = _multihead(x, w_q, w_k, w_v, None, causal)
    return _cut(context, (b, h, n, d_v), (*x.shape[:-2], h, n, d_v)), weights


def multihead_attention_concat(
    x: jnp.ndarray,
    w_q: jnp.ndarray,
    w_k: jnp.ndarray,
    w_v: jnp.ndarray,
    w_o: jnp.ndarray | None = None,
    causal: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Heads side by side, [head_0 | head_1 | ...] (..., n, h·d_v), then · W_oᵀ if w_o (d_o, h·d_v) is given."""
    context, weights, (b, h, n, d_v) = _multihead(x, w_q, w_k, w_v, w_o, causal)
    if w_o is not None:
        d_o = w_o.shape[0]
        return _cut(context, (b, n, d_o), (*x.shape[:-2], n, d_o)), weights
    # (b, h, n, d_v) -> (b, n, h, d_v) -> (b, n, h·d_v): head-major features
    heads = context[:b, :h, :n, :d_v].transpose(0, 2, 1, 3)
    return _to_jax(heads.reshape(*x.shape[:-2], n, h * d_v)), weights
