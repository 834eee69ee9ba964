"""What an implementation supports: found by trying it, or read from its CAPABILITIES mapping.

Functions are detected by name (spec/clauses.toml lists them). What a plain
function can do (torch autograd, leading batch dimensions, the dtypes, CUDA) is
found out by trying it with a few small calls (adapter.Trials), once per run and
only when a test first asks; a key that CAPABILITIES declares is taken as
declared and not tried, so a declaration only narrows (or widens where the
author knows better). The other keys (the array library, returns_weights,
the shape declarations) are declared; a missing key takes the default below.
Anything not claimed is reported as "not claimed", never as passed or failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

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
    # the kernel's conventions and optional features (issue 19): what is not declared is not claimed
    "causal_alignment": "top_left",  # or "bottom_right": query i sits at key i + n_kv - n_q (FlashAttention)
    "local_window": False,  # attention(..., window=(left, right)) / window_size: keys outside get weight 0
    "softcap": False,  # attention(..., softcap=c): scaled scores -> c·tanh(scores / c)
    "alibi": False,  # attention(..., alibi_slopes=s): -s_h·|p_i - j| added to the scaled scores
    "dropout": False,  # attention(..., dropout_p=p): weights dropped with probability p from the seeded generator
    "varlen": False,  # attention(..., cu_seqlens_q=, cu_seqlens_k=): packed sequences, each attended alone
    "masked_rows": None,  # a query that sees no key: "zeros" or "nan" (its context and weights); None: not claimed
    # where the kernel's axes are: "bhnd" (..., heads, n, d) as SDPA, or "bnhd" (batch, n, heads, d) as
    # FlashAttention and JAX (one batch axis: the suite folds its batch axes into one, and adds it when there is none)
    "layout": "bhnd",
    # how the peak memory of a call grows with the sequence length n (issue 20): "linear" or "quadratic" at most;
    # not judged by the suite, checked against the measured exponent by `python -m conformance.bench`
    "memory": None,
}
ALIGNMENTS = ("top_left", "bottom_right")
LAYOUTS = ("bhnd", "bnhd")
MASKED_ROWS = ("zeros", "nan")
MEMORY_GROWTH = {"linear": 1, "quadratic": 2}  # a memory claim and the exponent it bounds
KERNEL_FEATURES = ("local_window", "softcap", "alibi", "dropout", "varlen")

# The spellings of kernels people ship, recognised by their parameter names (as SDPA's is_causal and
# attn_mask are): what their documented interface does is what they claim unless CAPABILITIES says otherwise.
SPELLINGS: dict[str, tuple[frozenset[str], dict[str, object]]] = {
    # flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, ...):
    # (batch, seq, heads, headdim) for q, k and v alike (d_v = d_k), causal aligned bottom-right, K/V heads dividing
    # Q heads, a query with no key -> 0
    "FlashAttention": (frozenset({"softmax_scale", "causal"}), {
        "layout": "bnhd", "causal_alignment": "bottom_right", "grouped_kv_heads": True, "returns_weights": False,
        "masked_rows": "zeros", "equal_head_dims": True}),
    # jax.nn.dot_product_attention(query, key, value, bias, mask, *, scale, is_causal, local_window_size, ...):
    # (batch, seq, heads, dim), causal top-left; its softmax runs in float32 whatever the inputs; value must have
    # key's shape (d_v = d_k); a query with no key is uniform (a large finite negative, not -inf): no masked_rows
    "JAX": (frozenset({"is_causal", "local_window_size"}), {
        "layout": "bnhd", "grouped_kv_heads": True, "local_window": True, "returns_weights": False,
        "equal_head_dims": True, "dtypes": ["float32", "float16", "bfloat16"]}),
    # torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
    # enable_gqa): SDPA's layout, causal top-left
    "SDPA": (frozenset({"attn_mask", "is_causal"}), {"returns_weights": False}),
}
# the optional features each spelling names by a parameter: claimed where the signature has it
FEATURE_PARAMETERS = {"window_size": "local_window", "softcap": "softcap", "alibi_slopes": "alibi",
                      "dropout_p": "dropout", "enable_gqa": "grouped_kv_heads", "cu_seqlens_q": "varlen"}


def spelled(parameters: list[str] | None) -> tuple[str, dict[str, object]]:
    """The spelling a kernel's parameter names show ('' for none) and what it claims by them."""
    names = set(parameters or ())
    for spelling, (required, claims) in SPELLINGS.items():
        if required <= names:
            features = {key: True for name, key in FEATURE_PARAMETERS.items() if name in names}
            return spelling, {**claims, **features}
    return "", {}


# found by trying where CAPABILITIES does not declare them (autograd: torch implementations only)
TRIED = ("dtypes", "devices", "batching", "autograd")


class CapabilityError(ValueError):
    """CAPABILITIES is malformed; the message says which key and what is allowed."""


@dataclass(frozen=True)
class Finding:
    """What trying found for one key: its value, and for each requirement it leaves unclaimed ('autograd',
    'batching', 'dtype:float16', 'device:cuda') what was tried and what came of it, for the report."""

    value: object
    why_not: Mapping[str, str] = field(default_factory=dict)
    note: str = ""  # "" when tried; else why the default stands (a probe that could not be run)


class Trier(Protocol):
    """Finds a key out by calling the implementation (adapter.Trials); caches what it found."""

    def find(self, key: str, default: object) -> Finding: ...

    def peek(self, key: str) -> Finding | None: ...


@dataclass(frozen=True)
class Capabilities:
    array: str
    returns_weights: bool
    causal_only: bool = False
    equal_head_dims: bool = False
    width_is_heads_times_head_dim: bool = False
    max_length: int | None = None
    grouped_kv_heads: bool = False
    causal_alignment: str = "top_left"
    local_window: bool = False
    softcap: bool = False
    alibi: bool = False
    dropout: bool = False
    varlen: bool = False
    masked_rows: str | None = None
    layout: str = "bhnd"
    memory: str | None = None
    # the TRIED keys: their declared (or default) values, which of them CAPABILITIES declares, and what finds
    # the others out (None: the defaults stand, as for a bare parse())
    given: Mapping[str, object] = field(default_factory=dict)
    declared: frozenset[str] = frozenset()
    trier: Trier | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------ the tried keys
    def _tried(self, key: str) -> bool:
        return key not in self.declared and self.trier is not None and not (key == "autograd" and self.array != "torch")

    def _value(self, key: str) -> object:
        return self.trier.find(key, self.given[key]).value if self._tried(key) else self.given[key]

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self._value("dtypes")  # type: ignore[return-value]

    @property
    def devices(self) -> tuple[str, ...]:
        return self._value("devices")  # type: ignore[return-value]

    @property
    def batching(self) -> bool:
        return self._value("batching")  # type: ignore[return-value]

    @property
    def autograd(self) -> bool:
        return self._value("autograd")  # type: ignore[return-value]

    def source(self, key: str) -> str:
        """Where a key's value comes from: 'declared', 'tried', 'not tried yet' or 'default'."""
        if key in self.declared:
            return "declared"
        if not self._tried(key):
            return "default"
        found = self.trier.peek(key)
        if found is None:
            return "not tried yet"
        return "default" if found.note else "tried"

    def why_not(self, requirement: str) -> str:
        """Why a requirement ('autograd', 'batching', 'dtype:NAME', 'device:NAME') is not claimed, in words:
        what was tried and what came of it, or the declaration; '' when it is claimed or nothing is known."""
        kind, _, name = requirement.partition(":")
        key = {"dtype": "dtypes", "device": "devices"}.get(kind, requirement) if name else requirement
        if key not in TRIED:
            return ""
        if key in self.declared:
            return f"declared in CAPABILITIES[{key!r}]"
        if key == "autograd" and self.array != "torch":
            return f"gradients are checked through torch.autograd; a {self.array} implementation cannot claim them"
        found = self.trier.peek(key) if self.trier is not None else None
        if found is None:
            return ""
        return f"tried: {found.why_not[requirement]}" if requirement in found.why_not else found.note

    # ------------------------------------------------------------ derived
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
        dtypes = self.dtypes
        return "float32" if "float32" in dtypes or not dtypes else dtypes[0]

    def describe(self) -> str:
        """The capabilities in one line, each tried key with where its value comes from (declared, tried,
        default) and, where trying left something unclaimed, why. Tries nothing itself."""
        def shown(key: str) -> str:
            source = self.source(key)
            if source == "not tried yet":
                return f"{key}: not tried (no check asked for it)"
            found = self.trier.peek(key) if self._tried(key) else None
            value = found.value if found is not None else self.given[key]
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            if found is not None and found.note:
                source = f"{source}; {found.note}"
            why = found.why_not if found is not None else {}
            if key in why:  # autograd, batching
                source = f"tried: {why[key]}"
            elif why:  # the dtypes, devices not claimed
                source += "".join(f"; {r.partition(':')[2]} not claimed: {w}" for r, w in why.items())
            return f"{key}={text} ({source})"

        return (
            f"array={self.array}, {shown('dtypes')}, {shown('devices')}, {shown('batching')}, {shown('autograd')}, "
            f"returns_weights={self.returns_weights}"
            + (", causal=only" if self.causal_only else "")
            + (", equal_head_dims" if self.equal_head_dims else "")
            + (", width_is_heads_times_head_dim" if self.width_is_heads_times_head_dim else "")
            + (f", max_length={self.max_length}" if self.max_length is not None else "")
            + (f", causal_alignment={self.causal_alignment}" if self.causal_alignment != "top_left" else "")
            + "".join(f", {key}" for key in KERNEL_FEATURES if getattr(self, key))
            + (f", masked_rows={self.masked_rows}" if self.masked_rows else "")
            + (f", layout={self.layout}" if self.layout != "bhnd" else "")
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


def parse(declared: Mapping[str, object] | None, trier: Trier | None = None) -> Capabilities:
    """Validate a CAPABILITIES mapping and fill in the defaults; with a trier, the TRIED keys it does not
    declare are found out by trying (lazily, when first asked), else they take the defaults."""
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
    if _flag("dropout", values["dropout"]) and array == "jax":
        raise CapabilityError(
            "CAPABILITIES['dropout'] cannot be True for a jax implementation: QKV-DROPOUT seeds the array library's "
            "global generator before each call, and jax has none (jax.random takes its key as an argument)"
        )
    given = {"dtypes": dtypes, "devices": devices, "batching": _flag("batching", values["batching"]), "autograd": autograd}
    # "devices": None is the default spelled out, not a declaration
    declared_keys = frozenset(k for k in TRIED if k in declared and not (k == "devices" and declared[k] is None))
    return Capabilities(
        array=array,
        returns_weights=_flag("returns_weights", values["returns_weights"]),
        causal_only=_causal(values["causal"]),
        equal_head_dims=_flag("equal_head_dims", values["equal_head_dims"]),
        width_is_heads_times_head_dim=_flag("width_is_heads_times_head_dim", values["width_is_heads_times_head_dim"]),
        max_length=_length(values["max_length"]),
        grouped_kv_heads=_flag("grouped_kv_heads", values["grouped_kv_heads"]),
        causal_alignment=_alignment(values["causal_alignment"]),
        **{key: _flag(key, values[key]) for key in KERNEL_FEATURES},
        masked_rows=_choice("masked_rows", values["masked_rows"], MASKED_ROWS,
                            "what a query that sees no key gets: all zeros, or all NaN (as declared)", optional=True),
        layout=_choice("layout", values["layout"], LAYOUTS,
                       "(..., heads, n, d) as SDPA, or (batch, n, heads, d) as FlashAttention and JAX"),
        memory=_choice("memory", values["memory"], tuple(MEMORY_GROWTH),
                       "how the peak memory of a call grows with the sequence length at most", optional=True),
        given=given,
        declared=declared_keys,
        trier=trier,
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


def _alignment(value: object) -> str:
    if value not in ALIGNMENTS:
        raise CapabilityError(
            f"CAPABILITIES['causal_alignment'] must be 'top_left' (query i sees keys 0..i, SDPA) or 'bottom_right' "
            f"(query i sees keys 0..i + n_kv - n_q, FlashAttention), got {value!r}"
        )
    return value  # type: ignore[return-value]


def _choice(key: str, value: object, allowed: tuple[str, ...], meaning: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if value not in allowed:
        shown = " or ".join(repr(a) for a in allowed) + (" (or None: not claimed)" if optional else "")
        raise CapabilityError(f"CAPABILITIES[{key!r}] must be {shown}: {meaning}; got {value!r}")
    return value  # type: ignore[return-value]
