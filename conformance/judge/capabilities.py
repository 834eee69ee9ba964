"""What an implementation says it supports, read from its CAPABILITIES mapping.

Functions are detected by name (spec/clauses.toml lists them). Everything
else is declared; a missing key takes the default below. Anything not claimed
is reported as "not claimed", never as passed or failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

ARRAYS = ("torch", "numpy")
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NUMPY_DTYPES = ("float64", "float32", "float16")  # numpy has no bfloat16
DEVICES = ("cpu", "cuda")

DEFAULTS: dict[str, object] = {
    "array": "torch",
    "dtypes": ["float32", "float64"],
    "devices": None,  # torch: cpu and cuda; numpy: cpu
    "batching": True,
    "autograd": False,
    "returns_weights": True,
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

    @property
    def property_dtype(self) -> str:
        """The dtype properties are checked in: float32 when claimed, else the first claimed."""
        return "float32" if "float32" in self.dtypes else self.dtypes[0]

    def describe(self) -> str:
        return (
            f"array={self.array}, dtypes={','.join(self.dtypes)}, devices={','.join(self.devices)}, "
            f"batching={self.batching}, autograd={self.autograd}, returns_weights={self.returns_weights}"
        )


def _names(key: str, value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise CapabilityError(f"CAPABILITIES[{key!r}] must be a non-empty list of names from {list(allowed)}, got {value!r}")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise CapabilityError(f"CAPABILITIES[{key!r}] has unknown entries {unknown}; allowed: {list(allowed)}")
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
    dtypes = _names("dtypes", values["dtypes"], NUMPY_DTYPES if array == "numpy" else tuple(DTYPES))
    default_devices = ["cpu"] if array == "numpy" else list(DEVICES)
    devices = _names("devices", values["devices"] or default_devices, ("cpu",) if array == "numpy" else DEVICES)
    autograd = _flag("autograd", values["autograd"])
    if autograd and array == "numpy":
        raise CapabilityError("CAPABILITIES['autograd'] cannot be True for a numpy implementation")
    return Capabilities(
        array=array,
        dtypes=dtypes,
        devices=devices,
        batching=_flag("batching", values["batching"]),
        autograd=autograd,
        returns_weights=_flag("returns_weights", values["returns_weights"]),
    )
