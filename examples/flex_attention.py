"""The kernel section's attention(q, k, v, ...) built from PyTorch's FlexAttention alone.

    python -m conformance --impl examples/flex_attention.py

torch.nn.attention.flex_attention.flex_attention computes softmax(score_mod(scale · q kᵀ) masked by a
mask_mod) v. Everything optional here is one of those two hooks, as FlexAttention's own examples write them:

- softcap and ALiBi are a score_mod: c · tanh(s / c), then − slope_h · |i − j| (in the spec's order: the
  scaled scores are capped, then biased);
- causal and local windows are a mask_mod, turned into a BlockMask by create_block_mask on the tensors'
  device. Block masks run on the CPU in eager mode (torch 2.13): create_block_mask evaluates the mask_mod
  over the whole (n_q, n_kv) grid, and flex_attention's unfused path applies the same mask_mod to the scores,
  so no mask has to be folded into score_mod.

Without torch.compile, flex_attention takes its unfused path (it materialises the scores, in float32 for
float16 and bfloat16 inputs, in float64 for float64; dynamo still traces the score_mod and mask_mod, with its
eager backend, so the numbers they use are captured tensors: a Python number would be traced again for every
new value) and warns once per process that it is not compiled. That warning is about speed, not results, and is
silenced here, so a call prints nothing (API-QUIET tolerates up to 64 KiB a call, which this one warning stays
well under; silenced all the same, as a user would).

Causal attention is aligned top-left (query i sees keys 0..i), SDPA's convention and FlexAttention's causal
example. A query that sees no key (a window past every key) gets a context row of exact zeros: the unfused
path sets the log-sum-exp of a fully masked row to −inf and its softmax to 0 (torch._safe_softmax).
flex_attention takes (batch, heads, n, d) only: leading batch axes are folded into one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

CAPABILITIES = {
    "dtypes": ["float64", "float32", "float16", "bfloat16"],
    "batching": True,
    "returns_weights": False,  # flex_attention returns the context (and at most the log-sum-exp)
    "grouped_kv_heads": True,  # enable_gqa: query head i uses key/value head i // (h / h_kv)
    "causal_alignment": "top_left",
    "local_window": True,
    "softcap": True,
    "alibi": True,
    "masked_rows": "zeros",
}

_NOT_COMPILED = "flex_attention called without torch.compile"


def _block_mask(causal: bool, window: tuple[int, int] | None, n_q: int, n_kv: int,
                device: torch.device) -> BlockMask | None:
    """The keys each query may see, as a BlockMask (None: all of them). Query i sits at key i (top-left)."""
    left, right = window if window is not None else (-1, -1)
    if not causal and left < 0 and right < 0:
        return None
    far = n_q + n_kv  # a reach past every key: an unbounded side
    upper = min(far if right < 0 else right, 0 if causal else far)
    # the reaches as a tensor the mask_mod captures, not as Python numbers: flex_attention traces the mask_mod
    # with dynamo, which would compile it again for every new window
    reach = torch.tensor([far if left < 0 else left, upper], device=device)

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx >= q_idx - reach[0]) & (kv_idx <= q_idx + reach[1])

    return create_block_mask(mask_mod, None, None, n_q, n_kv, device=device)


def _score_mod(softcap: float | None, alibi_slopes: Tensor | None, dtype: torch.dtype,
               device: torch.device) -> Callable[..., Tensor] | None:
    """Softcapping, then the ALiBi bias, on the scaled scores (None: neither). The cap is a tensor of the scores'
    dtype (flex_attention's: float64 for float64 inputs, else float32), for the same reason as the reaches."""
    if softcap is None and alibi_slopes is None:
        return None
    working = torch.float64 if dtype == torch.float64 else torch.float32
    cap = None if softcap is None else torch.tensor(softcap, dtype=working, device=device)

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        if cap is not None:
            score = cap * torch.tanh(score / cap)
        if alibi_slopes is not None:
            score = score - alibi_slopes[h].to(score.dtype) * (q_idx - kv_idx).abs().to(score.dtype)
        return score

    return score_mod


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: float | None = None,
              window: tuple[int, int] | None = None, softcap: float | None = None,
              alibi_slopes: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ · scale) v with FlexAttention, in SDPA's layout: q (..., h, n_q, d_k), k (..., h_kv, n_kv,
    d_k), v (..., h_kv, n_kv, d_v), h_kv dividing h; scale 1/√d_k unless given. Returns the context
    (..., h, n_q, d_v).

    window (left, right): query i sees keys i − left .. i + right only (−1: unbounded on that side); softcap c:
    the scaled scores become c · tanh(s / c); alibi_slopes (h,): − slope_h · |i − j| is added to them.
    """
    if q.dim() < 3 or k.dim() < 3 or v.dim() < 3:
        raise ValueError("q, k and v must be (..., heads, n, d)")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (q.shape[-3],):
        raise ValueError(f"alibi_slopes must hold one slope per query head ({q.shape[-3]},)")
    batch = q.shape[:-3]
    # flex_attention takes exactly (batch, heads, n, d): the leading axes folded into one (a lone example: 1)
    q4, k4, v4 = (t.reshape(-1, *t.shape[-3:]) for t in (q, k, v))
    blocks = _block_mask(causal, window, q.shape[-2], k.shape[-2], q.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_COMPILED)
        context = flex_attention(q4, k4, v4, score_mod=_score_mod(softcap, alibi_slopes, q.dtype, q.device),
                                 block_mask=blocks, scale=scale, enable_gqa=k.shape[-3] != q.shape[-3])
    return context.reshape(*batch, *context.shape[-3:])
