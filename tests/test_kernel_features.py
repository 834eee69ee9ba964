"""Issue 19 (first part): causal alignment, local windows, softcapping and ALiBi in the kernel section: the
oracle against hand-made cases, the adapter's spellings, the capabilities, and the diagnosis of the mutants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conformance.judge import oracle
from conformance.judge.adapter import Implementation
from conformance.judge.capabilities import CapabilityError, parse
from conformance.teaching.diagnosis import diagnose


def _qkv(n_q=3, n_kv=5, heads=2, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(heads, n_q, d, generator=g, dtype=torch.float64),
            torch.randn(heads, n_kv, d, generator=g, dtype=torch.float64),
            torch.randn(heads, n_kv, d, generator=g, dtype=torch.float64))


def test_alignments_by_hand():
    top = oracle.visible(2, 4, True, None, "top_left", torch.device("cpu"))
    bottom = oracle.visible(2, 4, True, None, "bottom_right", torch.device("cpu"))
    assert top.tolist() == [[True, False, False, False], [True, True, False, False]]
    assert bottom.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_kv_cache_decoding_is_bottom_right():
    q, k, v = _qkv(n_q=6, n_kv=6)
    full, _ = oracle.attention(q, k, v, causal=True)
    for m in (1, 2, 6):
        tail, _ = oracle.attention(q[:, -m:], k, v, causal=True, alignment="bottom_right")
        torch.testing.assert_close(tail, full[:, -m:])


def test_window_by_hand_and_unbounded_window_is_plain():
    keep = oracle.visible(4, 4, False, (1, 0), "top_left", torch.device("cpu"))
    assert keep.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    q, k, v = _qkv()
    torch.testing.assert_close(oracle.attention(q, k, v, window=(-1, -1))[0], oracle.attention(q, k, v)[0])


def test_softcap_huge_is_plain_and_small_bounds_the_logits():
    q, k, v = _qkv()
    torch.testing.assert_close(oracle.attention(q, k, v, softcap=1e9)[0], oracle.attention(q, k, v)[0])
    _, w = oracle.attention(q * 100, k, v, softcap=0.5)
    spread = (w.log().amax(-1) - w.log().amin(-1)).max().item()
    assert spread <= 2 * 0.5 + 1e-9


def test_alibi_is_a_bias_on_the_scaled_scores():
    q, k, v = _qkv()
    slopes = torch.tensor([0.5, 0.25], dtype=torch.float64)
    bias = -slopes[:, None, None] * (torch.arange(3)[:, None] - torch.arange(5)).abs()
    with_alibi, with_bias = oracle.attention(q, k, v, alibi_slopes=slopes), oracle.attention(q, k, v, mask=bias)
    torch.testing.assert_close(with_alibi[0], with_bias[0])
    zero = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(oracle.attention(q, k, v, alibi_slopes=zero)[0], oracle.attention(q, k, v)[0])


def test_reference_kernel_matches_the_oracle_on_every_feature():
    import impl

    q, k, v = _qkv(n_q=4, n_kv=7)
    slopes = torch.tensor([0.5, 0.125], dtype=torch.float64)
    for kw in ({"window": (2, 1)}, {"softcap": 1.5}, {"alibi_slopes": slopes}, {"causal": True, "window": (3, 0)}):
        mine, theirs = impl.attention(q, k, v, **kw), oracle.attention(q, k, v, **kw)
        torch.testing.assert_close(mine[1], theirs[1])


def test_capabilities_of_the_features():
    caps = parse({"causal_alignment": "bottom_right", "local_window": True, "softcap": True, "alibi": True})
    assert (caps.causal_alignment, caps.local_window, caps.softcap, caps.alibi) == ("bottom_right", True, True, True)
    assert parse({}).causal_alignment == "top_left" and not parse({}).local_window
    with pytest.raises(CapabilityError, match="causal_alignment"):
        parse({"causal_alignment": "bottom-right"})


FLASH = '''
CAPABILITIES = {"causal_alignment": "bottom_right", "local_window": True, "softcap": True, "alibi": True}

def attention(q, k, v, causal=False, softmax_scale=None, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    return q
'''


def test_flash_attention_spellings_are_chosen_by_the_signature(tmp_path):
    path = tmp_path / "flash.py"
    path.write_text(FLASH)
    implementation = Implementation.load(str(path))
    try:
        kwargs = implementation.kernel_keywords(causal=True, scale=0.5, window=(3, 0), softcap=2.0,
                                                alibi_slopes=torch.ones(2))
        assert set(kwargs) == {"causal", "softmax_scale", "window_size", "softcap", "alibi_slopes"}
        assert kwargs["window_size"] == (3, 0)
        assert implementation.claims("local_window") and implementation.claims("alibi")
        q = torch.randn(2, 3, 4)
        out = implementation.kernel(q, q, q, causal=True, scale=0.5, window=(3, 0), softcap=2.0,
                                    alibi_slopes=torch.ones(2))
        assert out.context.shape == q.shape  # the call crossed to the worker with these keywords
    finally:
        implementation.close()


def _diagnoses(target: str):
    implementation = Implementation.load(target)
    try:
        return diagnose(implementation)
    finally:
        implementation.close()


@pytest.mark.parametrize("mistake", ["KernelWindowOffByOne", "KernelSoftcapBeforeScale", "KernelAlibiWrongSign",
                                     "KernelCausalTopLeft", "KernelVarlenLeaks", "KernelVarlenOffsetsOffByOne",
                                     "KernelEmptyRowsUniform", "KernelEmptyRowsNaN"])
def test_feature_mistakes_are_diagnosed(mistake):
    found = _diagnoses(f"conformance.teaching.mistakes:{mistake}")
    assert [d.title for d in found if d.kind == "mistake"] == [mistake], found


@pytest.mark.parametrize("correct", ["KernelFeatures", "KernelBottomRight"])
def test_correct_feature_kernels_get_no_diagnosis(correct):
    assert _diagnoses(f"conformance.teaching.mistakes:{correct}") == []


# ---------------------------------------------------------------- packed variable-length batches (QKV-VARLEN)
def test_reference_kernel_attends_each_packed_sequence_alone():
    import impl
    from conformance.judge.strategies import cu_seqlens

    q, k, v = _qkv(n_q=7, n_kv=9)
    starts_q, starts_k = [0, 3, 4, 7], [0, 4, 6, 9]
    packed, weights = impl.attention(q, k, v, causal=True, cu_seqlens_q=cu_seqlens([3, 1, 3]),
                                     cu_seqlens_k=cu_seqlens([4, 2, 3]))
    assert weights is None
    for q0, q1, k0, k1 in zip(starts_q, starts_q[1:], starts_k, starts_k[1:]):
        alone, _ = oracle.attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], causal=True)
        torch.testing.assert_close(packed[:, q0:q1], alone)


# a packed-only kernel (cu_seqlens_q required, FlashAttention's layout) whose context reads back what it was given:
# each query's sequence, max_seqlen_q and max_seqlen_k
PACKED_ONLY = '''
import torch

def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None, causal=False):
    assert q.dim() == 3 and cu_seqlens_q.dtype == torch.int32 and isinstance(max_seqlen_k, int)
    out = torch.zeros(q.shape[0], q.shape[1], 3, dtype=q.dtype)
    out[..., 0] = torch.bucketize(torch.arange(q.shape[0]), cu_seqlens_q[1:].long(), right=True)[:, None]
    out[..., 1], out[..., 2] = max_seqlen_q, max_seqlen_k
    return out
'''


def test_packed_calls_in_flash_attention_layout(tmp_path):
    from conformance.judge.strategies import cu_seqlens

    path = tmp_path / "varlen.py"
    path.write_text(PACKED_ONLY)
    implementation = Implementation.load(str(path), in_process=True)
    try:
        assert implementation.packed_only and implementation.claims("varlen")
        assert not implementation.claims("masks")  # a pack's examples cannot each get their own mask
        q, k, v = torch.randn(2, 7, 4), torch.randn(2, 9, 4), torch.randn(2, 9, 3)
        out = implementation.kernel(q, k, v, cu_seqlens_q=cu_seqlens([3, 4]), cu_seqlens_k=cu_seqlens([5, 4]))
        assert out.context.shape == (2, 7, 3) and out.weights is None  # back in (h, Σ n_q, d_v)
        assert out.context[1, :, 0].tolist() == [0] * 3 + [1] * 4
        assert out.context[0, 0, 1:].tolist() == [4, 5]
        # an ordinary call on a batch of 3: the examples packed with uniform offsets, the context unpacked
        batched = implementation.kernel(torch.randn(3, 2, 5, 4), torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 3))
        assert batched.context.shape == (3, 2, 5, 3)
        assert batched.context[:, 1, :, 0].tolist() == [[0] * 5, [1] * 5, [2] * 5]
        assert batched.context[0, 0, 0, 1:].tolist() == [5, 6]
    finally:
        implementation.close()


def test_flash_attention_port_plugs_in_both_ways():
    port = Path(__file__).resolve().parents[1] / "examples" / "flash_attn_port.py"
    plain = Implementation.load(f"{port}:flash_attn_func")
    varlen = Implementation.load(f"{port}:flash_attn_varlen_func")
    try:
        assert not plain.claims("varlen") and varlen.packed_only and varlen.claims("varlen")
        q, k, v = _qkv(n_q=5, n_kv=7)
        one, other = (i.kernel(q, k, v, causal=True, scale=0.5).context for i in (plain, varlen))
        torch.testing.assert_close(one, other)
        torch.testing.assert_close(one, oracle.attention(q, k, v, True, scale=0.5, alignment="bottom_right")[0])
    finally:
        plain.close()
        varlen.close()
