"""What an implementation says it supports, read from its CAPABILITIES mapping.

Functions are detected by name (spec/clauses.toml lists them). Everything
else is declared; a missing key takes the default below. Anything not claimed
is reported as "not claimed", never as passed or failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

ARRAYS = ("torch", "numpy", "jax")
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NUMPY_DTYPES = ("float64", "float32", "float16")  # numpy has no bfloat16
DEVICES = ("cpu", "cuda")
# per array library: the dtypes and devices it can be checked in, and whether autograd can be claimed
# (gradients are checked through torch.autograd, so only torch). jax runs on the CPU only for now: the
# worker hands it CPU arrays and reads CPU arrays back (a GPU build of jax is kept on the CPU).
ARRAY_DTYPES = {"torch": tuple(DTYPES), "numpy": NUMPY_DTYPES, "jax": tuple(DTYPES)}
ARRAY_DEVICES = {"torch": DEVICES, "numpy": ("cpu",), "jax": ("cpu",)}

DEFAULTS: dict[str, object] = {
    "array": "torch",
    "dtypes": ["float32", "float64"],
    "devices": None,  # torch: cpu and cuda; numpy and jax: cpu
    "batching": True,
    "autograd": False,
    "returns_weights": True,
    # causal-only models (a decoder block, SDPA with is_causal=True): every attention call is causal
    "causal": None,  # None: causal where the signature takes `causal`; "only": every attention call is causal
    # shapes a module can take (issue 10): the strategies draw within them and the report says what was left out
    "equal_head_dims": False,  # d_v = d_k (one head width for queries, keys and values)
    "width_is_heads_times_head_dim": False,  # d_in = h·d_k (nn.MultiheadAttention's embed_dim = h·head_dim)
    "max_length": None,  # the longest sequence (n_q and n_kv) the implementation takes
    "grouped_kv_heads": False,  # attention(q, k, v) takes k and v with fewer heads than q (grouped-query attention)
}


class CapabilityError(ValueError):
    """CAPABILITIES is malformed; the message says which key and what is allowed."""


@dataclass(frozen=True)
class Capabilities:
    array: str
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]
    batching: bool
    autograd: bool
    returns_weights: bool
    causal_only: bool = False
    equal_head_dims: bool = False
    width_is_heads_times_head_dim: bool = False
    max_length: int | None = None
    grouped_kv_heads: bool = False

    @property
    def constraints(self) -> list[str]:
        """The declared shape restrictions, as what is not exercised because of them."""
        left_out = []
        if self.equal_head_dims:
            left_out.append("d_v ≠ d_k (equal_head_dims)")
        if self.width_is_heads_times_head_dim:
            left_out.append("d_in ≠ h·d_k (width_is_heads_times_head_dim)")
        if self.max_length is not None:
            left_out.append(f"sequences longer than {self.max_length} tokens (max_length)")
        if self.causal_only:
            left_out.append("attention without a causal mask (causal='only')")
        return left_out

    @property
    def property_dtype(self) -> str:
        """The dtype properties are checked in: float32 when claimed, else the first claimed."""
        return "float32" if "float32" in self.dtypes else self.dtypes[0]

    def describe(self) -> str:
        return (
            f"array={self.array}, dtypes={','.join(self.dtypes)}, devices={','.join(self.devices)}, "
            f"batching={self.batching}, autograd={self.autograd}, returns_weights={self.returns_weights}"
            + (", causal=only" if self.causal_only else "")
            + (", equal_head_dims" if self.equal_head_dims else "")
            + (", width_is_heads_times_head_dim" if self.width_is_heads_times_head_dim else "")
            + (f", max_length={self.max_length}" if self.max_length is not None else "")
        )


def _names(key: str, value: object, allowed: tuple[str, ...], array: str = "") -> tuple[str, ...]:
    where = f" for array={array!r}" if array else ""  # the allowed names depend on the array library
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise CapabilityError(
            f"CAPABILITIES[{key!r}] must be a non-empty list of names from {list(allowed)}{where}, got {value!r}"
        )
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise CapabilityError(f"CAPABILITIES[{key!r}] has unknown entries {unknown}; allowed{where}: {list(allowed)}")
    return tuple(dict.fromkeys(value))


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise CapabilityError(f"CAPABILITIES[{key!r}] must be True or False, got {value!r}")
    return value


def parse(declared: Mapping[str, object] | None) -> Capabilities:
    """Validate a CAPABILITIES mapping and fill in the defaults."""
    if declared is None:
        declared = {}
    if not isinstance(declared, Mapping):
        raise CapabilityError(f"CAPABILITIES must be a dict, got {type(declared).__name__}")
    unknown = sorted(set(declared) - set(DEFAULTS))
    if unknown:
        raise CapabilityError(f"CAPABILITIES has unknown keys {unknown}; known keys: {sorted(DEFAULTS)}")
    values = {**DEFAULTS, **declared}
    array = values["array"]
    if array not in ARRAYS:
        raise CapabilityError(f"CAPABILITIES['array'] must be one of {list(ARRAYS)}, got {array!r}")
    dtypes = _names("dtypes", values["dtypes"], ARRAY_DTYPES[array], array)
    devices = _names("devices", values["devices"] or list(ARRAY_DEVICES[array]), ARRAY_DEVICES[array], array)
    autograd = _flag("autograd", values["autograd"])
    if autograd and array != "torch":
        raise CapabilityError(
            f"CAPABILITIES['autograd'] cannot be True for a {array} implementation: gradients are checked "
            "through torch.autograd, so only array='torch' can claim them"
        )
    return Capabilities(
        array=array,
        dtypes=dtypes,
        devices=devices,
        batching=_flag("batching", values["batching"]),
        autograd=autograd,
        returns_weights=_flag("returns_weights", values["returns_weights"]),
        causal_only=_causal(values["causal"]),
        equal_head_dims=_flag("equal_head_dims", values["equal_head_dims"]),
        width_is_heads_times_head_dim=_flag("width_is_heads_times_head_dim", values["width_is_heads_times_head_dim"]),
        max_length=_length(values["max_length"]),
        grouped_kv_heads=_flag("grouped_kv_heads", values["grouped_kv_heads"]),
    )


def _causal(value: object) -> bool:
    if value is None:
        return False
    if value != "only":
        raise CapabilityError(
            f"CAPABILITIES['causal'] must be 'only' (every attention call is causal) or left out (causal where the "
            f"function takes a `causal` argument), got {value!r}"
        )
    return True


def _length(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CapabilityError(f"CAPABILITIES['max_length'] must be a positive whole number of tokens or None, got {value!r}")
    return value
