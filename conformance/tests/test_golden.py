"""Spec section "golden": the seeded reference run.

Each step the implementation provides is fed the seed's own inputs from
golden/ and must reproduce the recorded output within the tolerance policy
(the float32 golden file is the reference; the baseline is a plain
computation in the dtype the implementation is fed).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

import golden
from conformance import clause, needs
from conformance.judge import oracle, rounding
from conformance.judge.assertions import assert_matches, fail
from conformance.judge.capabilities import DTYPES
from conformance.judge.tolerance import expected


def tensor(name: str, dtype: str | torch.dtype, device: str) -> Tensor:
    """A golden tensor on the device, in the dtype the implementation is checked in."""
    target = DTYPES[dtype] if isinstance(dtype, str) else dtype
    return torch.from_numpy(golden.load(name).copy()).to(device=device, dtype=target)


def check(actual: Tensor, name: str, baseline: Tensor, dtype: str, bound: rounding.Bounded, what: str) -> None:
    """The golden file is the reference: float32, correctly rounded, so its own rounding (u₃₂ of each value)
    is added to the analysis' allowance."""
    reference = torch.from_numpy(golden.load(name).copy()).double()
    target = expected(what, reference, baseline, dtype, bound)
    target = replace(target, derived=target.derived + 2.0 ** -24 * reference.abs())
    assert_matches(actual, target, where=f"golden/{name}")


def inputs(dtype: str, device: str, *names: str) -> list[Tensor]:
    return [tensor(n, dtype, device) for n in names]


def bounded(dtype: str, *names: str) -> list[rounding.Bounded]:
    """The golden inputs as the analysis sees them: the float32 values the golden run used, off by their
    rounding to the dtype the implementation is fed."""
    made = []
    for name in names:
        exact = torch.from_numpy(golden.load(name).copy()).double()
        made.append(rounding.given(exact, (exact.to(DTYPES[dtype]).double() - exact).abs()))
    return made


# ------------------------------------------------------------------ tokens
@clause("GOLD-TOKENS")
@needs("build_vocab")
def test_vocabulary(implementation):
    vocab = implementation.call("build_vocab", golden.manifest()["sentence"])
    expected_vocab = golden.load_json("tokens/vocab")
    if vocab != expected_vocab:
        fail(f"build_vocab returned {vocab!r}; the seed's vocabulary is {expected_vocab!r}")


@clause("GOLD-TOKENS")
@needs("token_ids")
def test_token_ids(implementation):
    ids = implementation.tensor("token_ids", golden.manifest()["sentence"], golden.load_json("tokens/vocab"))
    expected_ids = golden.load("tokens/ids").tolist()
    if ids.tolist() != expected_ids:
        fail(f"token_ids returned {ids.tolist()}; the seed's ids are {expected_ids}")


@clause("GOLD-TOKENS")
@needs("embed")
def test_embedding(implementation, device, dtype):
    ids = torch.from_numpy(golden.load("tokens/ids").copy()).to(device)
    table = tensor("embedding/table", dtype, device)
    x = implementation.tensor("embed", ids, table)
    expected_x = torch.from_numpy(golden.load("embedding/x").copy()).to(DTYPES[dtype])
    if tuple(x.shape) != tuple(expected_x.shape) or not torch.equal(x.detach().cpu(), expected_x):
        fail(f"embed(ids, table) is not the seed's embedded sentence (rows table[ids], bit for bit); got shape {tuple(x.shape)}")


# -------------------------------------------------------------- projection
@clause("GOLD-PROJECTION")
@needs("project")
def test_projections(implementation, device, dtype):
    (x,) = inputs(dtype, device, "embedding/x")
    for role in ("queries", "keys", "values"):
        (w,) = inputs(dtype, device, f"projection/w_{role[0]}")
        result = implementation.tensor("project", x, w)
        base = oracle.project(x.cpu(), w.cpu())
        x_, w_ = bounded(dtype, "embedding/x", f"projection/w_{role[0]}")
        bound = rounding.contract("nd,od->no", x_, w_, w_.value.shape[-1], rounding.arithmetic(dtype))
        check(result, f"projection/{role}", base, dtype, bound, role)


# ----------------------------------------------------------------- scores
@clause("GOLD-SCORES")
@needs("attention_scores")
def test_scores(implementation, device, dtype):
    q, k = inputs(dtype, device, "projection/queries", "projection/keys")
    omega = implementation.tensor("attention_scores", q, k)
    q_, k_ = bounded(dtype, "projection/queries", "projection/keys")
    bound = rounding.contract("id,jd->ij", q_, k_, q_.value.shape[-1], rounding.arithmetic(dtype))
    check(omega, "scores/omega", oracle.scores(q.cpu(), k.cpu()), dtype, bound, "scores")


@clause("GOLD-SCORES")
@needs("attention_weights")
def test_weights_from_scores(implementation, device, dtype):
    d_k = golden.manifest()["dimensions"]["d_k"]
    (omega,) = inputs(dtype, device, "scores/omega")
    weights = implementation.tensor("attention_weights", omega, d_k)
    (omega_,) = bounded(dtype, "scores/omega")
    _, bound = rounding.weights_of(omega_, 1 / math.sqrt(d_k), None, rounding.arithmetic(dtype))
    check(weights, "scores/weights", oracle.weights(omega.cpu(), d_k), dtype, bound, "weights")


# ---------------------------------------------------------- attention calls
def _check_attention(implementation, function, names, golden_prefix, dtype, device, causal=False, concat_w_o=False):
    """Call an attention function on the golden inputs `names` and compare both outputs with the golden run."""
    args = inputs(dtype, device, *names)
    out = implementation.attention(function, *args, causal=causal)
    plain = [a.cpu() for a in args]
    exact = bounded(dtype, *names)
    if function == "cross_attention":
        x_q, x_kv, w_q, w_k, w_v = plain
        bx_q, bx_kv, bw_q, bw_k, bw_v = exact
    else:
        x_q, w_q, w_k, w_v = plain[:4]
        x_kv = x_q
        bx_q, bw_q, bw_k, bw_v = exact[:4]
        bx_kv = bx_q
    base_context, base_weights = oracle.cross_attention(x_q, x_kv, w_q, w_k, w_v, causal)
    n_q, n_kv, d_k = x_q.shape[-2], x_kv.shape[-2], w_q.shape[-2]
    keep = oracle.allowed(n_q, n_kv, causal, None, torch.device("cpu"))
    forward = rounding.pipeline(bx_q, bx_kv, bw_q, bw_k, bw_v, keep, 1 / math.sqrt(d_k), dtype)
    prefix = "causal_" if causal and golden_prefix != "causal" else ""
    if function == "multihead_attention_concat":
        w_o = plain[4] if concat_w_o else None
        base_context = oracle.concat_heads(base_context, w_o)
        name = "multihead/output" if concat_w_o else "multihead/concat"
        bound = rounding.concat(forward.context, exact[4] if concat_w_o else None, dtype)
        check(out.context, name, base_context, dtype, bound, "context")
    else:
        check(out.context, f"{golden_prefix}/{prefix}context", base_context, dtype, forward.context, "context")
    if out.weights is not None:
        check(out.weights, f"{golden_prefix}/{prefix}weights", base_weights, dtype, forward.weights, "weights")


@clause("GOLD-SELF")
@needs("self_attention", "noncausal", "seed_shapes")
def test_self_attention(implementation, device, dtype):
    names = ("embedding/x", "projection/w_q", "projection/w_k", "projection/w_v")
    _check_attention(implementation, "self_attention", names, "self", dtype, device)


@clause("GOLD-CAUSAL")
@needs("self_attention.causal", "seed_shapes")
def test_causal_self_attention(implementation, device, dtype):
    names = ("embedding/x", "projection/w_q", "projection/w_k", "projection/w_v")
    _check_attention(implementation, "self_attention", names, "causal", dtype, device, causal=True)


MULTIHEAD_INPUTS = ("embedding/x", "multihead/w_q", "multihead/w_k", "multihead/w_v")


@clause("GOLD-MULTIHEAD")
@needs("multihead_attention", "noncausal", "seed_shapes")
def test_multihead_attention(implementation, device, dtype):
    _check_attention(implementation, "multihead_attention", MULTIHEAD_INPUTS, "multihead", dtype, device)


@clause("GOLD-MULTIHEAD")
@needs("multihead_attention.causal", "seed_shapes")
def test_causal_multihead_attention(implementation, device, dtype):
    names = MULTIHEAD_INPUTS
    _check_attention(implementation, "multihead_attention", names, "multihead", dtype, device, causal=True)


@clause("GOLD-MULTIHEAD")
@needs("multihead_attention_concat", "noncausal", "seed_shapes")
def test_multihead_concat(implementation, device, dtype):
    names = MULTIHEAD_INPUTS
    _check_attention(implementation, "multihead_attention_concat", names, "multihead", dtype, device)


@clause("GOLD-MULTIHEAD")
@needs("multihead_attention_concat.w_o", "noncausal", "seed_shapes")
def test_multihead_concat_output_projection(implementation, device, dtype):
    names = (*MULTIHEAD_INPUTS, "multihead/w_o")
    _check_attention(implementation, "multihead_attention_concat", names, "multihead", dtype, device, concat_w_o=True)


CROSS_INPUTS = ("embedding/x", "cross/x_kv", "projection/w_q", "projection/w_k", "projection/w_v")


@clause("GOLD-CROSS")
@needs("cross_attention", "noncausal", "seed_shapes")
def test_cross_attention(implementation, device, dtype):
    _check_attention(implementation, "cross_attention", CROSS_INPUTS, "cross", dtype, device)


@clause("GOLD-CROSS")
@needs("cross_attention.causal", "seed_shapes")
def test_causal_cross_attention(implementation, device, dtype):
    names = CROSS_INPUTS
    _check_attention(implementation, "cross_attention", names, "cross", dtype, device, causal=True)
