"""Multi-head attention: h independent heads, in the two output forms in use."""

from __future__ import annotations

from torch import Tensor

from impl.attention import _require, cross_attention


def multihead_attention(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-head outputs as in the seed post: context (..., h, n, d_v), weights (..., h, n, n).

    The weights are stacked per head, (h, d_out, d_in).
    """
    for name, weight in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        _require(weight.dim() == 3, f"{name} must be (h, d_out, d_in), got shape {tuple(weight.shape)}")
    _require(
        w_q.shape[0] == w_k.shape[0] == w_v.shape[0],
        f"w_q, w_k and w_v must have the same number of heads, got {w_q.shape[0]}, {w_k.shape[0]}, {w_v.shape[0]}",
    )
    # a head axis in front of the tokens lets every head attend independently
    stacked = x.unsqueeze(-3)
    return cross_attention(stacked, stacked, w_q, w_k, w_v, causal=causal)


def multihead_attention_concat(
    x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
) -> tuple[Tensor, Tensor]:
    """Heads concatenated head-major, [head_0 | head_1 | ...], then optionally W_o.

    Returns context (..., n, h·d_v), or (..., n, d_o) with w_o of shape
    (d_o, h·d_v), and the per-head weights (..., h, n, n).
    """
    per_head, weights = multihead_attention(x, w_q, w_k, w_v, causal=causal)
    heads, n, d_v = per_head.shape[-3:]
    concatenated = per_head.movedim(-3, -2).reshape(*per_head.shape[:-3], n, heads * d_v)
    if w_o is None:
        return concatenated, weights
    _require(
        w_o.dim() == 2 and w_o.shape[1] == heads * d_v,
        f"w_o must be (d_o, h·d_v) = (d_o, {heads * d_v}), got shape {tuple(w_o.shape)}",
    )
    return concatenated @ w_o.T, weights
