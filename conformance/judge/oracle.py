"""The suite's own executable definition of attention.

Independent of impl/ (the bundled reference is checked like any other
implementation). Computes in the dtype of its inputs: fed float64 it is the
reference every result is measured against; fed the result's own dtype it is
the "plain same-dtype reference" whose error sets the tolerance baseline.
"""

from __future__ import annotations

import math
import string

import torch
from torch import Tensor


def project(x: Tensor, weight: Tensor) -> Tensor:
    return torch.einsum("...nd,...od->...no", x, weight)


def scores(queries: Tensor, keys: Tensor) -> Tensor:
    return torch.einsum("...id,...jd->...ij", queries, keys)


def allowed(n_q: int, n_kv: int, causal: bool, mask: Tensor | None, device: torch.device) -> Tensor | None:
    """True where query i may attend to key j; causal is top-left aligned (j <= i)."""
    result = mask
    if causal:
        i = torch.arange(n_q, device=device).unsqueeze(-1)
        j = torch.arange(n_kv, device=device)
        result = (j <= i) if result is None else result & (j <= i)
    return result


def weights(
    omega: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None, alpha: float | None = None
) -> Tensor:
    """softmax(ω/√d_k) over the keys; `alpha` replaces 1/√d_k (a fitted scale, see judge.fitting)."""
    scaled = omega / math.sqrt(d_k) if alpha is None else omega * alpha
    keep = allowed(omega.shape[-2], omega.shape[-1], causal, mask, omega.device)
    if keep is not None:
        scaled = scaled.masked_fill(~keep, -math.inf)
    top = scaled.amax(dim=-1, keepdim=True).nan_to_num(neginf=0.0)
    exp = (scaled - top).exp()
    total = exp.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, exp / total, torch.zeros_like(exp))


def cross_attention(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False,
    alpha: float | None = None,
) -> tuple[Tensor, Tensor]:
    """(context, weights); weights may carry a leading head axis (h, d_out, d_in)."""
    if w_q.dim() == 3:  # multi-head: one copy of the tokens per head
        x_q, x_kv = x_q.unsqueeze(-3), x_kv.unsqueeze(-3)
    q, k, v = project(x_q, w_q), project(x_kv, w_k), project(x_kv, w_v)
    w = weights(scores(q, k), k.shape[-1], causal, alpha=alpha)
    return torch.einsum("...ij,...jd->...id", w, v), w


def aligned_positions(n_q: int, n_kv: int, alignment: str, device: torch.device) -> Tensor:
    """Where each query sits among the keys: i (top-left, SDPA) or i + n_kv - n_q (bottom-right,
    FlashAttention: the last query is the last key, as when decoding with a KV cache). Shape (n_q, 1)."""
    offset = n_kv - n_q if alignment == "bottom_right" else 0
    return torch.arange(n_q, device=device).unsqueeze(-1) + offset


def visible(n_q: int, n_kv: int, causal: bool, window: tuple[int, int] | None, alignment: str,
            device: torch.device) -> Tensor | None:
    """True where query i may attend to key j: causal keeps j <= p_i, a window (left, right) keeps
    p_i - left <= j <= p_i + right (-1: unbounded on that side), p_i the query's aligned position."""
    p = aligned_positions(n_q, n_kv, alignment, device)
    j = torch.arange(n_kv, device=device)
    keep = None
    if causal:
        keep = j <= p
    if window is not None:
        left, right = window
        inside = torch.ones(n_q, n_kv, dtype=torch.bool, device=device)
        if left >= 0:
            inside = inside & (j >= p - left)
        if right >= 0:
            inside = inside & (j <= p + right)
        keep = inside if keep is None else keep & inside
    return keep


def alibi_bias(slopes: Tensor, n_q: int, n_kv: int, alignment: str) -> Tensor:
    """-slope_h · |p_i - j| for every query head h: shape (h, n_q, n_kv)."""
    p = aligned_positions(n_q, n_kv, alignment, slopes.device)
    j = torch.arange(n_kv, device=slopes.device)
    distance = (p - j).abs().to(slopes.dtype)
    return -slopes.reshape(-1, 1, 1) * distance


def attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, mask: Tensor | None = None, scale: float | None = None,
    window: tuple[int, int] | None = None, softcap: float | None = None, alibi_slopes: Tensor | None = None,
    alignment: str = "top_left",
) -> tuple[Tensor, Tensor]:
    """The kernel section: (context, weights) from q (..., h, n_q, d_k), k (..., h_kv, n_kv, d_k) and
    v (..., h_kv, n_kv, d_v). A boolean mask is True where a query may attend; a float mask is added to
    the scaled scores. With h_kv < h, query head i uses key/value head i // (h / h_kv).

    In order: scores · scale; softcap c: c · tanh(scaled / c); + ALiBi bias and a float mask; keys hidden by
    causal, the window or a boolean mask get weight 0; softmax over the keys; times v. A query with no
    visible key gets weight 0 everywhere (and context 0)."""
    group = q.shape[-3] // k.shape[-3]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    n_q, n_kv = q.shape[-2], k.shape[-2]
    alpha = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scaled = scores(q, k) * alpha
    if softcap is not None:
        scaled = softcap * torch.tanh(scaled / softcap)
    if alibi_slopes is not None:
        scaled = scaled + alibi_bias(alibi_slopes.to(scaled.dtype), n_q, n_kv, alignment)
    keep = visible(n_q, n_kv, causal, window, alignment, q.device)
    if mask is not None and mask.dtype == torch.bool:
        keep = mask if keep is None else mask & keep
    elif mask is not None:
        scaled = scaled + mask.to(scaled.dtype)
    if keep is not None:
        scaled = scaled.masked_fill(~keep, -math.inf)
    top = scaled.amax(dim=-1, keepdim=True).nan_to_num(neginf=0.0)
    exp = (scaled - top).exp()
    total = exp.sum(dim=-1, keepdim=True)
    w = torch.where(total > 0, exp / total, torch.zeros_like(exp))
    return torch.einsum("...ij,...jd->...id", w, v), w


def concat_heads(per_head: Tensor, w_o: Tensor | None) -> Tensor:
    """(..., h, n, d_v) -> (..., n, h·d_v), head-major; then W_o if given."""
    joined = torch.cat(per_head.unbind(dim=-3), dim=-1)
    return joined if w_o is None else project(joined, w_o)


def upcast(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Exact float64 copies on the CPU (None stays None)."""
    return tuple(None if t is None else t.detach().to("cpu", torch.float64) for t in tensors)


def words(sentence: str) -> list[str]:
    """The words of a sentence without ASCII punctuation (TOK-VOCAB)."""
    return "".join(ch for ch in sentence if ch not in string.punctuation).split()


def vocabulary(sentence: str) -> dict[str, int]:
    """TOK-VOCAB: distinct words sorted by code point, numbered in order."""
    return {word: index for index, word in enumerate(sorted(set(words(sentence))))}
