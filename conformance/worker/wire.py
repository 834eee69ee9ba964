"""Plain data between the judge and a worker: framing and a codec that runs no code.

A message is one frame: an 8-byte header (length of a JSON document, number
of buffers), the JSON document, then each buffer as an 8-byte length and its
bytes. Arrays travel as {"$array": i, "dtype", "shape", "device", "kind",
"grad"} with their bytes in buffer i; tuples, dicts and objects that are not
plain data are tagged too. Decoding rebuilds arrays from bytes only (no
pickle), checks every size against the header, and turns anything unexpected
into WireError, so a worker can make the judge see wrong numbers, never run
code.

This module imports only the standard library at import time (numpy and
torch when arrays are encoded or decoded, jax only in a worker whose
implementation declares array="jax"): the worker shim loads it by path.

jax arrays travel as kind "jax": a worker serving array="jax" decodes every
array into jax and encodes the jax arrays it gets back; the judge, which never
imports jax, rebuilds them as JaxArray (the values in a torch tensor, the kind
kept so that it can tell a jax result from a numpy or torch one). Between jax
and torch arrays go through DLPack (no copy on the CPU).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any

HEADER = struct.Struct("<II")
LENGTH = struct.Struct("<Q")
MAX_DOCUMENT = 64 * 2**20  # bytes of JSON in one frame
MAX_FRAME = 2**30  # bytes of buffers in one frame

# dtypes that may cross, by name; bfloat16 travels as torch or jax only (numpy has none)
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
KINDS = ("torch", "numpy", "jax")  # the array libraries an array may come from or be decoded into
JAX_MISSING = "CAPABILITIES says array='jax' but jax is not installed: pip install jax"


def explain_load_error(message: str) -> str:
    """A load error, with what to install when the submission imports jax and jax is missing."""
    if "No module named 'jax" in message:
        return f"{message}; jax is not installed in this environment: pip install jax"
    return message


class WireError(ValueError):
    """A frame is malformed: wrong sizes, unknown tags or dtypes, or not JSON."""


class FrameError(WireError):
    """The byte stream itself is malformed (a header out of bounds, a document that is not a JSON object,
    a frame that stopped arriving): nothing after it can be read in step, so its sender is ended."""


# ---------------------------------------------------------------------------- framing
def send(fd: int, document: Any, buffers: list[bytes] = ()) -> None:
    """Write one frame to a file descriptor (blocking)."""
    text = json.dumps(document, separators=(",", ":")).encode()
    parts = [HEADER.pack(len(text), len(buffers)), text]
    for buffer in buffers:
        parts += [LENGTH.pack(len(buffer)), buffer]
    _write_all(fd, b"".join(parts) if sum(map(len, parts)) < 2**20 else parts)


def _write_all(fd: int, data: bytes | list[bytes]) -> None:
    for chunk in [data] if isinstance(data, bytes) else data:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


class Reader:
    """Incremental frame parser: feed bytes as they arrive, take complete frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._data = bytearray()
        self._max = max_frame

    def feed(self, chunk: bytes) -> None:
        self._data += chunk

    @property
    def pending(self) -> int:
        """Bytes received and not yet taken as a frame: a frame has started when this is not 0."""
        return len(self._data)

    def frame(self) -> tuple[dict, list[bytes]] | None:
        """The next complete frame as (document, buffers), or None if more bytes are needed. Every message
        is a JSON object: anything else is a FrameError, as are sizes out of bounds."""
        data = self._data
        if len(data) < HEADER.size:
            return None
        text_length, count = HEADER.unpack_from(data)
        if text_length > MAX_DOCUMENT or count > 4096:
            raise FrameError(f"frame header announces {text_length} bytes of JSON and {count} buffers")
        position = HEADER.size + text_length
        if len(data) < position:
            return None
        buffers, total = [], 0
        for _ in range(count):
            if len(data) < position + LENGTH.size:
                return None
            (length,) = LENGTH.unpack_from(data, position)
            total += length
            if total > self._max:
                raise FrameError(f"frame announces more than {self._max} bytes of arrays")
            position += LENGTH.size
            if len(data) < position + length:
                return None
            buffers.append(bytes(data[position:position + length]))
            position += length
        try:
            document = json.loads(bytes(data[HEADER.size:HEADER.size + text_length]))
        except (ValueError, RecursionError) as error:  # RecursionError: "[[[[..." nested past the parser's stack
            raise FrameError(f"frame is not JSON: {str(error)[:200]}") from None
        if not isinstance(document, dict):
            raise FrameError(f"frame holds a JSON {type(document).__name__}, not an object")
        del data[:position]
        return document, buffers


# ---------------------------------------------------------------------------- codec
def tensors(value: Any) -> list:
    """The torch tensors in a structure of lists, tuples and dicts, in order (the autograd leaves)."""
    if _is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    return []



def describe(value: object) -> str:
    """A short description of a value's type, for messages ("numpy array", "list", "Foo")."""
    kind = type(value)
    module = kind.__module__.split(".")[0]
    if isinstance(value, JaxArray) or is_jax(value):
        return f"jax array {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if module in ("numpy", "torch") and hasattr(value, "shape"):
        return f"{module} array {tuple(value.shape)} {value.dtype}"
    return kind.__name__


def encode(value: Any) -> tuple[Any, list[bytes]]:
    """(JSON-able document, buffers) for a value made of plain data and arrays."""
    buffers: list[bytes] = []
    return _encode(value, buffers, 0), buffers


def _encode(value: Any, buffers: list[bytes], depth: int) -> Any:
    if depth > 32:
        return {"$other": "structure nested deeper than 32 levels"}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and type(value) in (int, bool):
        return value if abs(value) < 2**63 else {"$other": "integer out of range"}
    if type(value) is float:
        return value
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        items = [_encode(v, buffers, depth + 1) for v in value]
        return items if type(value) is list else {"$tuple": items}
    if type(value) is dict:
        if not all(type(k) is str for k in value):
            return {"$other": "dict with keys that are not strings"}
        return {"$dict": [[k, _encode(v, buffers, depth + 1)] for k, v in value.items()]}
    module = type(value).__module__.split(".")[0]
    if module == "torch" or (module != "numpy" and _is_tensor(value)):
        return _encode_tensor(value, buffers)
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.generic) and value.dtype.name in DTYPES:
            value = np.asarray(value)
            meta = _encode_numpy(value, buffers)
            return {**meta, "scalar": True} if "$array" in meta else meta
        if isinstance(value, np.ndarray):
            return _encode_numpy(value, buffers)
    if is_jax(value):
        return _encode_jax(value, buffers)
    return {"$other": describe(value)}


def _is_tensor(value: object) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - the suite always has torch
        return False
    return isinstance(value, torch.Tensor)


def _encode_tensor(value: Any, buffers: list[bytes]) -> dict:
    import torch

    if not isinstance(value, torch.Tensor):
        return {"$other": describe(value)}
    # a subclass (nn.Parameter, or one whose __torch_function__ lies) is read as the plain tensor it holds
    with torch._C.DisableTorchFunctionSubclass():
        name = str(value.dtype).removeprefix("torch.")
        if name not in DTYPES:
            return {"$other": f"torch array of dtype {name}"}
        plain = value.detach()
        device = plain.device.type
        plain = plain.cpu().contiguous()
        if name == "bfloat16":  # numpy has no bfloat16: its bytes travel as int16
            plain = plain.view(torch.int16)
        buffers.append(plain.numpy().tobytes())
        return {"$array": len(buffers) - 1, "kind": "torch", "dtype": name, "shape": list(plain.shape),
                "device": device, "grad": bool(value.requires_grad)}


def _encode_jax(value: Any, buffers: list[bytes]) -> dict:
    try:
        tensor = jax_to_torch(value)
    except Exception as error:  # noqa: BLE001 - a tracer (returned from inside jit) or a deleted array
        return {"$other": f"jax value that cannot be read as an array ({type(error).__name__})"}
    meta = _encode_tensor(tensor, buffers)
    return {**meta, "kind": "jax"} if "$array" in meta else meta


def _encode_numpy(value: Any, buffers: list[bytes]) -> dict:
    import numpy as np

    if value.dtype.name not in DTYPES:
        return {"$other": f"numpy array of dtype {value.dtype.name}"}
    buffers.append(np.ascontiguousarray(value).tobytes())
    return {"$array": len(buffers) - 1, "kind": "numpy", "dtype": value.dtype.name, "shape": list(value.shape),
            "device": "cpu", "grad": False}


# ---------------------------------------------------------------------------- jax
def is_jax(value: object) -> bool:
    """Whether value is a jax array; never imports jax (a jax array exists only once jax is imported)."""
    jax = sys.modules.get("jax")
    array = getattr(jax, "Array", None)
    return isinstance(array, type) and isinstance(value, array)


def start_jax() -> str:
    """Import jax for an implementation that declares array="jax"; '' when ready, else why not.

    64-bit mode is turned on whatever dtypes are claimed: token ids must be int64 (TOK-IDS) and
    embed gets int64 ids, which jax would otherwise narrow to int32 without a word, as it would
    float64 inputs to float32. It costs float32 code nothing: jax keeps the dtype of its arrays, and
    Python numbers (weakly typed) do not widen them. Only the CPU is supported for now: the judge
    sends and reads CPU arrays, so jax is kept off any accelerator it might find.
    """
    try:
        import jax
    except ImportError:
        return JAX_MISSING
    jax.config.update("jax_enable_x64", True)
    try:
        jax.config.update("jax_platforms", "cpu")
    except Exception:  # noqa: BLE001 - a jax that has started its backends keeps them; arrays still come back
        pass
    return ""


def torch_to_jax(tensor: Any) -> Any:
    """A jax array with the tensor's values: through DLPack, sharing the CPU memory when aligned."""
    import jax.numpy as jnp
    import torch

    plain = tensor.detach()  # DLPack refuses tensors that require gradients; jax does not take them anyway
    try:
        return jnp.from_dlpack(plain)
    except (AttributeError, BufferError, RuntimeError, TypeError, ValueError):
        # a jax whose DLPack import lacks this dtype or device: a host copy through numpy, bfloat16
        # (which numpy only knows through jax's ml_dtypes) as its 16-bit pattern
        host = plain.cpu()
        if str(host.dtype) == "torch.bfloat16":
            return jnp.asarray(host.view(torch.int16).numpy().view(jnp.bfloat16))
        return jnp.asarray(host.numpy())


def jax_to_torch(array: Any) -> Any:
    """A torch tensor with the jax array's values: through DLPack, else a host copy through numpy."""
    import torch

    try:
        return torch.from_dlpack(array)
    except (AttributeError, BufferError, RuntimeError, TypeError, ValueError):
        import numpy as np

        # np.asarray raises for a tracer, which the caller reports; bfloat16 goes as its 16-bit pattern
        host = np.asarray(array)
        if host.dtype.name == "bfloat16":
            return torch.from_numpy(host.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(np.array(host))


class JaxArray:
    """A jax array as the judge receives it: its values as a torch tensor, its kind remembered."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def dtype(self) -> Any:
        return self.tensor.dtype

    def __repr__(self) -> str:  # the values too when they are few: failure messages quote results
        values = f": {self.tensor.tolist()}" if self.tensor.numel() <= 16 else ""
        return f"<{describe(self)}{values}>"


class Opaque:
    """Stands for a value that is not plain data, by its description (never the value itself)."""

    def __init__(self, description: str) -> None:
        self.description = str(description)[:200]

    def __repr__(self) -> str:
        return f"<{self.description}>"


def decode(
    document: Any, buffers: list[bytes], array: str | None = None, devices: tuple[str, ...] = ("cpu",), grad: bool = False
) -> Any:
    """Rebuild a value. Arrays become what they were sent as (torch tensor, numpy array, JaxArray), or
    all numpy (array="numpy") / all torch (array="torch") / all jax (array="jax", in a worker that
    has called start_jax), on the devices allowed; with grad, tensors sent as requiring gradients
    require them again."""
    return _decode(document, buffers, (array, devices, grad), 0)


def _decode(document: Any, buffers: list[bytes], how: tuple, depth: int) -> Any:
    if depth > 34:
        raise WireError("structure nested too deep")
    if document is None or isinstance(document, (bool, int, float, str)):
        return document
    if isinstance(document, list):
        return [_decode(v, buffers, how, depth + 1) for v in document]
    if not isinstance(document, dict) or len(document) == 0:
        raise WireError(f"unexpected item {type(document).__name__}")
    if "$tuple" in document:
        return tuple(_decode(v, buffers, how, depth + 1) for v in _list(document["$tuple"]))
    if "$dict" in document:
        result = {}
        for pair in _list(document["$dict"]):
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
                raise WireError("malformed dict item")
            result[pair[0]] = _decode(pair[1], buffers, how, depth + 1)
        return result
    if "$other" in document:
        return Opaque(document["$other"])
    if "$array" in document:
        return _decode_array(document, buffers, *how)
    raise WireError(f"unknown tag {sorted(document)[:3]}")


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise WireError("malformed container")
    return value


def _decode_array(meta: dict, buffers: list[bytes], array: str | None, devices: tuple[str, ...], grad: bool) -> Any:
    import numpy as np
    import torch

    index, dtype, shape, kind = meta.get("$array"), meta.get("dtype"), meta.get("shape"), meta.get("kind")
    if not isinstance(index, int) or not 0 <= index < len(buffers):
        raise WireError("array refers to a missing buffer")
    if dtype not in DTYPES or kind not in KINDS:
        raise WireError(f"array of unknown dtype {dtype!r} or kind {kind!r}")
    if not isinstance(shape, list) or len(shape) > 16 or not all(isinstance(n, int) and 0 <= n < 2**40 for n in shape):
        raise WireError(f"malformed shape {shape!r}")
    torch_dtype = getattr(torch, dtype)
    itemsize = torch_dtype.itemsize
    count = 1
    for n in shape:
        count *= n
    data = buffers[index]
    if len(data) != count * itemsize:
        raise WireError(f"array {shape} {dtype} should have {count * itemsize} bytes, got {len(data)}")
    device = meta.get("device", "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in devices:
        raise WireError(f"array on an unexpected device {device!r}")
    if device != "cpu" and not torch.cuda.is_available():
        raise WireError(f"array on {device!r}, which this machine does not have")
    tensor = torch.frombuffer(bytearray(data), dtype=torch_dtype) if count else torch.empty(0, dtype=torch_dtype)
    tensor = tensor.reshape(shape)
    target = array or kind
    if target == "numpy" and dtype != "bfloat16":
        result = tensor.numpy()
        return result[()] if meta.get("scalar") else result
    if array == "jax":  # a worker handing arrays to a jax implementation
        return torch_to_jax(tensor)
    if device != "cpu":
        tensor = tensor.to(device)
    if grad and meta.get("grad") is True and tensor.is_floating_point():
        tensor.requires_grad_()
    # the judge keeps the kind of what a jax implementation returned (array=None): it checks it
    return JaxArray(tensor) if target == "jax" else tensor
