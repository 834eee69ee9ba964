"""Issue 19, item 9: the interface clauses judge the kernel attention(q, k, v) too, for a kernel-only
implementation (SDPA's case): each of these kernels breaks one interface property, and that clause alone fails."""

from __future__ import annotations

import textwrap

import pytest

INTERFACE = ("API-BATCH", "API-DTYPE", "API-DEVICE", "API-PURE", "API-DETERMINISTIC", "API-QUIET")

HEADER = """
import torch
import torch.nn.functional as F

def attention(q, k, v, causal=False, mask=None, scale=None):
"""

KERNELS = {
    "correct": "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)\n",
    "API-PURE": """\
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    if not q.requires_grad:
        q.zero_()  # a scratch buffer reused: the caller's q
    return out
""",
    "API-QUIET": """\
    print("x" * 100_000)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
""",
    "API-DETERMINISTIC": """\
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, dropout_p=0.3)
""",
    "API-BATCH": """\
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    return out.mean(dim=0, keepdim=True).expand_as(out).clone() if q.dim() > 3 else out  # mixes the examples
""",
    "API-DTYPE": """\
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale).double()
""",
}


@pytest.mark.parametrize("broken", list(KERNELS))
def test_each_interface_clause_judges_the_kernel(suite, tmp_path, broken):
    kernel = tmp_path / "kernel.py"
    kernel.write_text(textwrap.dedent(HEADER) + KERNELS[broken])
    run = suite(str(kernel), "-k", "test_interface")
    assert run.report is not None, run.output[-3000:]
    verdicts = {c: run.verdict(c) for c in INTERFACE}
    expected = {c: "failed" if c == broken else "passed" for c in INTERFACE}
    if broken == "API-DETERMINISTIC":  # one mistake, one verdict: a batch that differs from its examples is not
        expected["API-BATCH"] = "blocked"  # API-BATCH's failure when the kernel answers differently each time
    assert verdicts == expected, run.output[-3000:]
    functions = {c["id"]: {f for t in c["tests"] for f in t["functions"]} for c in run.report["clauses"]}
    assert all("attention" in functions[c] for c in INTERFACE), functions
