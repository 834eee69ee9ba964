"""Attention computed by torch.nn.MultiheadAttention itself, through an adapter.

What makes it different: no attention arithmetic of our own.  The spec's
weights are mapped exactly onto an nn.MultiheadAttention(embed_dim=E,
num_heads=h, bias=False, batch_first=True), which is then run with
need_weights=True, average_attn_weights=False.  MHA needs one head width
hd = E / h for queries, keys and values and an input width of E, while the
spec allows any d_in, d_k, d_v, h, so everything is zero-padded:

* hd = max(d_k, d_v, ceil(d_in/h), ceil(d_kv_in/h), ceil(d_o/h)), E = h·hd;
* the inputs get E - d_in zero features (zero columns in every weight);
* each head's W_q, W_k, W_v get zero rows up to hd: padded query/key features
  add exact zeros to the scores, padded value features are dropped at the end;
* MHA scales by 1/sqrt(hd), so W_k is multiplied by sqrt(hd / d_k) to make
  that 1/sqrt(d_k) (W_k, not W_q: the suite inflates W_q for large scores);
* out_proj carries W_o (the identity when there is no W_o) on the unpadded
  value columns, and its padded output rows are cut off.

The padded weights are built differentiably and swapped into the module with
torch.func.functional_call, so gradients reach the caller's weights; the
module itself lives on the "meta" device and is in eval mode (dropout 0).
MHA's boolean attn_mask means True = NOT allowed, so the causal mask is the
strict upper triangle (top-left aligned: query i sees keys j <= i).
Leading batch dimensions (zero or more) are flattened into MHA's one batch
axis and restored afterwards.  Plug-in target:
tests.variants.correct.torch_mha:MHAAdapter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from tests.variants.correct import CAPABILITIES  # the claims every variant here shares


def _pad_role(w: Tensor, head_dim: int, embed_dim: int) -> Tensor:
    """(h, d, d_in) -> (E, E): each head's rows padded to head_dim, columns to embed_dim."""
    h, d, d_in = w.shape
    return F.pad(w, (0, embed_dim - d_in, 0, head_dim - d)).reshape(h * head_dim, embed_dim)


def _pad_output(w_o: Tensor, heads: int, d_v: int, head_dim: int, embed_dim: int) -> Tensor:
    """(d_o, h·d_v) -> (E, E): W_o's columns moved to the unpadded value slots, zero rows below d_o."""
    d_o = w_o.shape[0]
    spread = F.pad(w_o.reshape(d_o, heads, d_v), (0, head_dim - d_v)).reshape(d_o, embed_dim)
    return F.pad(spread, (0, 0, 0, embed_dim - d_o))


def _run_mha(
    x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None, causal: bool
) -> tuple[Tensor, Tensor]:
    """Returns (output (..., n_q, d_o or h·d_v), weights (..., h, n_q, n_kv))."""
    heads, d_k, d_in = w_q.shape
    d_v, d_kv_in = w_v.shape[1], w_v.shape[2]
    if w_o is None:
        w_o = torch.eye(heads * d_v, dtype=w_v.dtype, device=w_v.device)
    d_o = w_o.shape[0]
    head_dim = max(d_k, d_v, *(math.ceil(width / heads) for width in (d_in, d_kv_in, d_o)))
    embed_dim = heads * head_dim

    # the factor goes on W_k: the suite inflates W_q for its large-score problems, so scaling W_q further
    # could overflow float16 where the spec's own queries do not
    k_scale = math.sqrt(head_dim / d_k)
    in_proj = torch.cat(
        [
            _pad_role(w_q, head_dim, embed_dim),
            _pad_role(w_k * k_scale if k_scale != 1.0 else w_k, head_dim, embed_dim),
            _pad_role(w_v, head_dim, embed_dim),
        ]
    )
    params = {"in_proj_weight": in_proj, "out_proj.weight": _pad_output(w_o, heads, d_v, head_dim, embed_dim)}

    lead, n_q, n_kv = x_q.shape[:-2], x_q.shape[-2], x_kv.shape[-2]
    query = F.pad(x_q, (0, embed_dim - d_in)).reshape(-1, n_q, embed_dim)
    key = query if x_kv is x_q else F.pad(x_kv, (0, embed_dim - d_kv_in)).reshape(-1, n_kv, embed_dim)
    attn_mask = None
    if causal:
        attn_mask = torch.ones(n_q, n_kv, dtype=torch.bool, device=x_q.device).triu(1)  # True = hidden

    mha = nn.MultiheadAttention(embed_dim, heads, bias=False, batch_first=True, device="meta").eval()
    output, weights = functional_call(
        mha,
        params,
        (query, key, key),
        {"need_weights": True, "average_attn_weights": False, "attn_mask": attn_mask},
    )
    output = output[..., :d_o].reshape(*lead, n_q, d_o)
    return output, weights.reshape(*lead, heads, n_q, n_kv)


class MHAAdapter:
    """The spec's attention functions on top of torch.nn.MultiheadAttention."""

    CAPABILITIES = CAPABILITIES

    def multihead_attention_concat(
        self, x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor | None = None, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        return _run_mha(x, x, w_q, w_k, w_v, w_o, causal)

    def multihead_attention(
        self, x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        concat, weights = _run_mha(x, x, w_q, w_k, w_v, None, causal)
        heads, d_v = w_v.shape[0], w_v.shape[1]
        return concat.unflatten(-1, (heads, d_v)).transpose(-3, -2), weights

    def cross_attention(
        self, x_q: Tensor, x_kv: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        context, weights = _run_mha(x_q, x_kv, w_q[None], w_k[None], w_v[None], None, causal)
        return context, weights.squeeze(-3)

    def self_attention(
        self, x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool = False
    ) -> tuple[Tensor, Tensor]:
        context, weights = _run_mha(x, x, w_q[None], w_k[None], w_v[None], None, causal)
        return context, weights.squeeze(-3)
