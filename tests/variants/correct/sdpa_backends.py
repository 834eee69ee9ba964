"""Each of SDPA's CUDA backends on its own, as the GPU matrix judges them (issue 19): the flash, memory-efficient,
cuDNN and math kernels behind torch.nn.functional.scaled_dot_product_attention, one pinned per function with
torch.nn.attention.sdpa_kernel, so a backend that computes differently is caught as itself rather than hidden
behind the dispatcher's choice.

Each function keeps SDPA's spelling (so the suite passes is_causal, scale, dropout_p and enable_gqa under
SDPA's names) but takes only what its backend takes: the flash and cuDNN kernels accept no arbitrary mask, so
their functions have no attn_mask parameter (QKV-MASK is then not claimed, rather than failed for a call the
backend refuses). CAPABILITIES on each function claims the CUDA device alone and the dtypes its backend
computes; on a machine without CUDA every check is "unavailable".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

HALF = ["float16", "bfloat16"]


def _pinned(backend: SDPBackend, query: Tensor, key: Tensor, value: Tensor, **kwargs) -> Tensor:
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(query, key, value, **kwargs)


def flash(query, key, value, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _pinned(SDPBackend.FLASH_ATTENTION, query, key, value, dropout_p=dropout_p, is_causal=is_causal,
                   scale=scale, enable_gqa=enable_gqa)


def efficient(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _pinned(SDPBackend.EFFICIENT_ATTENTION, query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                   is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


def cudnn(query, key, value, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _pinned(SDPBackend.CUDNN_ATTENTION, query, key, value, dropout_p=dropout_p, is_causal=is_causal,
                   scale=scale, enable_gqa=enable_gqa)


def math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _pinned(SDPBackend.MATH, query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                   is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


# the dtypes each backend computes (flash and cuDNN: half precision only); CUDA only, the context alone
# (without attn_mask the SDPA spelling is not recognised, so flash states the grouped heads and dropout it has)
# (flash and cuDNN take one head width for q, k and v: equal_head_dims)
flash.CAPABILITIES = {"devices": ["cuda"], "dtypes": HALF, "returns_weights": False, "grouped_kv_heads": True,
                      "dropout": True, "equal_head_dims": True}
cudnn.CAPABILITIES = {"devices": ["cuda"], "dtypes": HALF, "returns_weights": False, "equal_head_dims": True}
efficient.CAPABILITIES = {"devices": ["cuda"], "dtypes": ["float32", *HALF], "returns_weights": False}
math.CAPABILITIES = {"devices": ["cuda"], "dtypes": ["float64", "float32", *HALF], "returns_weights": False}
BACKENDS = ("flash", "efficient", "cudnn", "math")
