"""Issue 19 (second part): the kernel spellings people ship plug in as they are. FlashAttention's and JAX's
are recognised by their parameter names and bring their conventions (layout, causal alignment, claims); a
declared (b, n, h, d) layout is folded to one batch axis and back; CAPABILITIES overrides a spelling."""

from __future__ import annotations

import pytest
import torch

from conformance.judge import oracle
from conformance.judge.adapter import Implementation
from conformance.judge.capabilities import CapabilityError, parse, spelled

FLASH_PARAMETERS = ["q", "k", "v", "dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
                    "deterministic", "return_attn_probs"]
JAX_PARAMETERS = ["query", "key", "value", "bias", "mask", "scale", "is_causal", "query_seq_lengths",
                  "key_value_seq_lengths", "local_window_size", "implementation", "return_residual"]
SDPA_PARAMETERS = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]


def test_each_spelling_claims_what_its_interface_documents():
    name, flash = spelled(FLASH_PARAMETERS)
    assert name == "FlashAttention"
    assert flash["layout"] == "bnhd" and flash["causal_alignment"] == "bottom_right"
    assert flash["masked_rows"] == "zeros" and flash["grouped_kv_heads"] and flash["equal_head_dims"]
    assert all(flash[key] for key in ("local_window", "softcap", "alibi", "dropout"))
    # an older FlashAttention (no softcap, no window) claims only what its parameters show
    assert "softcap" not in spelled(["q", "k", "v", "dropout_p", "softmax_scale", "causal"])[1]

    name, jax = spelled(JAX_PARAMETERS)
    assert name == "JAX" and jax["layout"] == "bnhd" and jax["local_window"]
    assert "causal_alignment" not in jax and "float64" not in jax["dtypes"]  # top-left; a float32 softmax
    # value must have key's shape (d_v = d_k); a query with no key is uniform, not a declared policy
    assert jax["equal_head_dims"] and "masked_rows" not in jax

    name, sdpa = spelled(SDPA_PARAMETERS)
    assert name == "SDPA" and sdpa["grouped_kv_heads"] and sdpa["dropout"] and "layout" not in sdpa
    assert spelled(["q", "k", "v", "causal", "mask", "scale"]) == ("", {})  # the spec's own names
    assert spelled(None) == ("", {})  # a signature that cannot be read claims nothing by it


def test_layout_and_row_policy_are_validated():
    assert parse({"layout": "bnhd"}).layout == "bnhd" and parse({}).layout == "bhnd"
    assert parse({"masked_rows": "nan"}).masked_rows == "nan" and parse({}).masked_rows is None
    with pytest.raises(CapabilityError, match=r"layout.*'bhnd' or 'bnhd'"):
        parse({"layout": "BNHD"})
    with pytest.raises(CapabilityError, match=r"masked_rows.*'zeros' or 'nan'"):
        parse({"masked_rows": 0})


# a (b, n, h, d) kernel with FlashAttention's names that records the shapes it was given
BNHD = '''
import math, torch
SEEN = []

def attention(q, k, v, softmax_scale=None, causal=False):
    SEEN.append(tuple(q.shape))
    assert q.dim() == 4, "FlashAttention takes (batch, seq, heads, dim)"
    s = torch.einsum("bihd,bjhd->bhij", q, k) * (softmax_scale or 1 / math.sqrt(q.shape[-1]))
    if causal:
        n_q, n_kv = q.shape[1], k.shape[1]
        keep = torch.arange(n_kv) <= torch.arange(n_q)[:, None] + n_kv - n_q
        s = s.masked_fill(~keep, -math.inf)
    return torch.einsum("bhij,bjhd->bihd", torch.softmax(s, -1).nan_to_num(0.0), v)
'''


def _load(tmp_path, text: str, name: str = "kernel.py") -> Implementation:
    path = tmp_path / name
    path.write_text(text)
    return Implementation.load(str(path), in_process=True)


def test_a_bnhd_kernel_gets_one_batch_axis_and_its_context_comes_back_in_the_suites_layout(tmp_path):
    implementation = _load(tmp_path, BNHD)
    assert implementation.spelling == "FlashAttention" and implementation.capabilities.layout == "bnhd"
    g = torch.Generator().manual_seed(3)
    for batch in ((), (2,), (2, 3)):
        q = torch.randn(*batch, 2, 4, 5, generator=g, dtype=torch.float64)  # (..., h, n_q, d)
        k, v = (torch.randn(*batch, 2, 6, 5, generator=g, dtype=torch.float64) for _ in range(2))
        out = implementation.kernel(q, k, v, causal=True, scale=0.3)
        expected, _ = oracle.attention(q, k, v, causal=True, scale=0.3, alignment="bottom_right")
        assert out.context.shape == expected.shape
        torch.testing.assert_close(out.context, expected)
    module = implementation.backend.namespace  # the kernel saw (b, n, h, d), the suite's batch axes folded into b
    assert [s[:3] for s in module.SEEN[-3:]] == [(1, 4, 2), (2, 4, 2), (6, 4, 2)]


JAX_LIKE = '''
import torch
CALLS = []

def attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False, local_window_size=None):
    CALLS.append({"bias": None if bias is None else bias.dtype, "mask": None if mask is None else mask.dtype,
                  "window": local_window_size, "shape": tuple(query.shape)})
    return query
'''


def test_jax_spelling_takes_a_float_mask_as_bias_and_an_unbounded_side_as_a_reach_past_every_key(tmp_path):
    implementation = _load(tmp_path, JAX_LIKE)
    assert implementation.spelling == "JAX"
    q = torch.randn(3, 4, 5)  # (h, n, d): unbatched
    implementation.kernel(q, q, q, mask=torch.zeros(4, 4, dtype=torch.bool), window=(-1, 2))
    implementation.kernel(q, q, q, mask=torch.zeros(4, 4))
    calls = implementation.backend.namespace.CALLS
    assert calls[0]["mask"] == torch.bool and calls[0]["bias"] is None
    assert calls[0]["window"] == (8, 2)  # -1 (unbounded) becomes n_q + n_kv: no key is out of reach
    assert calls[1]["bias"] == torch.float32 and calls[1]["mask"] is None
    assert calls[0]["shape"] == (1, 4, 3, 5)


def test_capabilities_override_what_a_spelling_claims(tmp_path):
    implementation = _load(tmp_path, BNHD + '\nCAPABILITIES = {"causal_alignment": "top_left", "layout": "bnhd"}\n')
    assert implementation.capabilities.causal_alignment == "top_left"
    assert implementation.capabilities.layout == "bnhd" and implementation.claims("grouped_kv_heads")
