"""Diagnosis: a submission that declares it returns no weights is judged on its context alone; kernel mistakes."""

from __future__ import annotations

import textwrap

from conformance.judge.adapter import Implementation, LocalBackend
from conformance.teaching.diagnosis import diagnose

SOURCE = """
import math
import torch

CAPABILITIES = {{"returns_weights": False}}

def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.transpose(-2, -1), x @ w_k.transpose(-2, -1), x @ w_v.transpose(-2, -1)
    s = q @ k.transpose(-2, -1) / {divisor}
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, dim=-1) @ v, None
"""


def _diagnoses(tmp_path, divisor: str):
    path = tmp_path / "no_weights.py"
    path.write_text(textwrap.dedent(SOURCE.format(divisor=divisor)))
    implementation = Implementation(LocalBackend(str(path)), 20)
    return diagnose(implementation)


def test_no_weights_by_declaration_is_not_reported_as_a_difference(tmp_path):
    """Issue 10: it printed "self_attention returned None; expected tensor([[1.0000e+00, ..." for correct code."""
    assert _diagnoses(tmp_path, "math.sqrt(k.shape[-1])") == []


def test_a_mistake_is_still_named_from_the_context_alone(tmp_path):
    found = _diagnoses(tmp_path, "1.0")
    assert [d.title for d in found if d.kind == "mistake"][:1] == ["NoScale"], found
    assert not any("returned None" in d.sentence() for d in found)


def _kernel_diagnoses(target: str):
    implementation = Implementation.load(target)  # in a worker, as the suite runs it
    try:
        return diagnose(implementation)
    finally:
        implementation.close()


def test_kernel_mistakes_are_named_from_the_kernel_probes():
    for mistake in ("KernelMaskTrueHides", "KernelCausalBottomRight", "KernelIgnoresScale", "KernelHeadsTiled"):
        found = _kernel_diagnoses(f"conformance.teaching.mistakes:{mistake}")
        assert [d.title for d in found if d.kind == "mistake"] == [mistake], found
        assert all(d.functions == ("attention",) for d in found), found


def test_correct_kernels_get_no_diagnosis_whatever_their_parameter_names():
    assert _kernel_diagnoses("conformance.teaching.mistakes:Kernel") == []
    # SDPA: is_causal and attn_mask, the context alone, no grouped heads declared
    assert _kernel_diagnoses("torch.nn.functional:scaled_dot_product_attention") == []
