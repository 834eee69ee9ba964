"""The implementation under test, as the judge sees it: a handle on a worker process.

Every call goes through Implementation.call. By default the implementation
runs in a worker (conformance/worker/shim.py) and the judge exchanges plain
data with it, so nothing the implementation does can reach the expected
values, the tolerances or the report. The handle
- sends the arguments and rebuilds plain tensors from the reply; anything
  else that comes back is reported by its type, never used;
- records which inputs the call modified (the worker sends them back), how
  much it printed (the judge counts the worker's pipes; once a function has
  printed past PRINT_LIMIT in one call, its later calls run with their output
  discarded in the worker and are charged that count) and how long it took;
- turns an exception, a hang (the worker is killed from outside and a fresh
  one started), exit(), a dead worker or an output of the wrong type into an
  ImplementationError whose message names the function and what happened;
- differentiates through the worker: a call on tensors that require
  gradients becomes an autograd node whose backward sends a vjp request.

`--in-process` runs a trusted implementation in the judge's own process
instead (for pdb); batch grading never does.

A test that gets an ImplementationError fails with that message; every other
test still runs.
"""

from __future__ import annotations

import contextlib
import math
import io
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

import spec
from conformance.judge.capabilities import ARRAY_DEVICES, ARRAY_DTYPES, DTYPES, Capabilities, CapabilityError, Finding
from conformance.judge.capabilities import parse as parse_capabilities
from conformance.judge.capabilities import spelled
from conformance.judge.workers import (
    START_TIMEOUT,
    WorkerConfig,
    WorkerDied,
    WorkerLink,
    WorkerTimeout,
    adopt,
    plain_config,
)
from conformance.worker import wire
from conformance.worker.loader import LoadError, TimeLimit, load_target, time_limit

PRINT_LIMIT = 64 * 1024  # bytes a call may print (API-QUIET)
DEFAULT_CALL_TIMEOUT = 20.0  # seconds
DEVICES = ("cpu", "cuda")
ATTENTION_FUNCTIONS = ("self_attention", "cross_attention", "multihead_attention", "multihead_attention_concat")
# what capabilities are tried with: the first of these the implementation provides
TRIAL_FUNCTIONS = (*ATTENTION_FUNCTIONS, "attention", "project", "attention_scores", "attention_weights", "embed")


class ImplementationError(AssertionError):
    """A call into the implementation raised, hung, or returned something unusable."""

    def __init__(self, message: str, raised: tuple[str, ...] = (), detail: str = "") -> None:
        super().__init__(message)
        self.raised = raised  # the implementation's exception class and its bases, by name
        self.detail = detail  # the implementation's own exception message


class Attention(NamedTuple):
    context: Tensor
    weights: Tensor | None


@dataclass
class CallRecord:
    """What the last call did besides returning: for the purity and quiet clauses."""

    function: str
    mutated: list[str] = field(default_factory=list)
    printed_bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Signature:
    parameters: tuple[str, ...] | None  # None: not inspectable (builtins), any keyword is assumed taken
    varkw: bool
    required: tuple[str, ...] = ()  # the parameters without a default (as far as the signature tells)

    def accepts(self, name: str) -> bool:
        return self.parameters is None or self.varkw or name in self.parameters


def _describe(value: object) -> str:
    return value.description if isinstance(value, wire.Opaque) else wire.describe(value)


class Implementation:
    """The implementation under test, as the suite sees it."""

    def __init__(self, backend: Backend, call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> None:
        self.backend = backend
        name, declared, signatures = backend.hello()
        # what CAPABILITIES does not declare of autograd, batching, dtypes and devices is found by trying
        self.trials = Trials(self)
        # a kernel spelled like FlashAttention's or JAX's claims what that interface documents (layout, causal
        # alignment, features by parameter name); CAPABILITIES overrides any of it
        kernel = signatures.get("attention")
        self.spelling, spelled_claims = spelled(kernel.parameters if kernel is not None else None)
        if isinstance(declared, dict) or declared is None:
            if isinstance(declared, dict) and declared.get("array") == "jax":
                spelled_claims.pop("dropout", None)  # no global generator to seed: not claimable (capabilities.parse)
            declared = {**spelled_claims, **(declared or {})}
        try:
            self.capabilities: Capabilities = parse_capabilities(declared, self.trials)
        except CapabilityError as error:
            raise LoadError(f"{name}: {error}") from None
        self.name = name
        self.call_timeout = call_timeout
        self.signatures: dict[str, Signature] = signatures
        if not signatures:
            names = ", ".join(spec.load().function_names)
            raise LoadError(f"{name} provides none of the spec's functions ({names}); nothing to check")
        self.last_call = CallRecord("")
        self.called: set[str] = set()  # functions called since the plugin last cleared it (per test)
        self.tainted: set[str] = set()  # functions seen calling a helper the course forbids
        self._hung: set[str] = set()

    @classmethod
    def load(
        cls, target: str, call_timeout: float | None = DEFAULT_CALL_TIMEOUT, *, in_process: bool = False,
        config: WorkerConfig | None = None, template: str | None = None,
    ) -> Implementation:
        if in_process:
            return cls(LocalBackend(target), call_timeout)
        config = config or plain_config(target, list(spec.load().function_names))
        return cls(RemoteBackend(config, template), call_timeout)

    @property
    def sandbox(self) -> dict[str, str]:
        """The sandbox layers of the worker and whether each was active."""
        return dict(getattr(self.backend, "layers", {}))

    @property
    def output(self) -> tuple[str, int]:
        """The start of what the implementation printed (its worker's stdout and stderr), and the byte count."""
        link = getattr(self.backend, "link", None)
        head = getattr(self.backend, "output_head", "") or (link.output_head() if link else "")
        return head, (link.printed if link else 0)

    @property
    def load_notes(self) -> list[str]:
        """What loading set aside (a notebook's cells that raised, its IPython lines), in words."""
        return list(getattr(self.backend, "load_notes", []))

    @property
    def violations(self) -> list[str]:
        return list(getattr(self.backend, "violations", []))

    @property
    def forbidden_used(self) -> list[str]:
        return list(getattr(self.backend, "forbidden_used", []))

    def close(self) -> None:
        self.backend.close()

    # ---------------------------------------------------------------- claims
    def has(self, function: str) -> bool:
        return function in self.signatures

    def accepts(self, function: str, parameter: str) -> bool:
        """Whether the function takes this parameter (signature inspection, in the worker)."""
        return self.signatures[function].accepts(parameter)

    def claims(self, requirement: str) -> bool:
        """Requirements: 'fn' (provided), 'fn.param' (accepts param), 'batching', 'autograd',
        'weights' (returns weights), 'dtype:NAME', 'device:NAME'."""
        caps = self.capabilities
        kind, _, value = requirement.partition(":")
        if value:
            if kind == "dtype":
                return value in caps.dtypes
            if kind == "device":
                return value in caps.devices
            raise ValueError(f"unknown requirement {requirement!r}")
        if requirement in ("batching", "autograd", "grouped_kv_heads", "local_window", "softcap", "alibi", "dropout",
                           "varlen"):
            return getattr(caps, requirement)
        if requirement == "masks":  # the kernel takes a mask under one of its spellings (FlashAttention's takes none)
            signature = self.signatures.get("attention")  # a pack's examples cannot each get their own mask
            return signature is not None and any(signature.accepts(n) for n in ("mask", "attn_mask", "bias")) \
                and not self.packed_only
        if requirement == "masked_rows":  # a declared policy for a query that sees no key
            return caps.masked_rows is not None
        if requirement == "weights":
            return caps.returns_weights
        if requirement == "noncausal":  # attention without a causal mask
            return not caps.causal_only
        if requirement == "seed_shapes":  # the golden run's sizes are within the declared shape constraints
            return seed_shapes_fit(caps)
        function, _, parameter = requirement.partition(".")
        if function not in spec.load().function_names:
            raise ValueError(f"unknown requirement {requirement!r}")
        if parameter == "causal" and caps.causal_only and function in ATTENTION_FUNCTIONS:
            return self.has(function)  # causal by declaration, whether or not it takes the argument
        return self.has(function) and (not parameter or self.accepts(function, parameter))

    def why_not(self, requirement: str) -> str:
        """Why a requirement ('autograd', 'batching', 'dtype:NAME', 'device:NAME') is not claimed: what was
        tried and what came of it ("tried: backward of self_attention raised ..."), or the declaration."""
        return self.capabilities.why_not(requirement)

    # ----------------------------------------------------------------- calls
    def _from_impl(self, function: str, value: Any) -> Any:
        # strict per declared library: an implementation returns the arrays it was given (a numpy array from
        # a jax implementation is a slip such as np.asarray left in, and is named as such)
        array = self.capabilities.array
        if array == "torch" and isinstance(value, Tensor):
            return value
        if array == "numpy" and isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        if array == "jax" and isinstance(value, wire.JaxArray):
            return value.tensor
        raise ImplementationError(f"{function} returned a {_describe(value)}, expected a {array} array")

    def call(self, function: str, *args: Any, seed: int | None = None, **kwargs: Any) -> Any:
        """Call `function` on the arguments, guarded; returns its result as plain data. With a seed, the worker
        seeds the implementation's generator (torch.manual_seed; numpy.random.seed) right before the call."""
        if function in self._hung:
            raise ImplementationError(f"{function} did not return within {self.call_timeout:g} s earlier; not called again")
        labels = [f"argument {i + 1}" for i in range(len(args))] + [f"argument {k!r}" for k in kwargs]
        record = CallRecord(function)
        self.called.add(function)
        forbidden_before = len(self.forbidden_used)
        start = time.perf_counter()
        try:
            return self.backend.call(function, list(args), dict(kwargs), self.call_timeout, record, labels, seed)
        except WorkerTimeout:
            self._hung.add(function)
            raise ImplementationError(
                f"{function} did not return within {self.call_timeout:g} s (per-call limit, see --call-timeout)"
            ) from None
        except WorkerDied as error:
            raise ImplementationError(f"{function} ended the worker process ({error}): exit(), a crash or a limit") from None
        except wire.FrameError as error:  # the worker was ended; the next call gets a fresh one
            raise ImplementationError(f"{function}: {error}") from None
        except wire.WireError as error:
            raise ImplementationError(f"{function} sent back data the judge cannot read: {error}") from None
        except LoadError as error:  # a fresh worker (after a hang or a crash) did not come up
            raise ImplementationError(f"{function}: the implementation could not be loaded again: {error}") from None
        finally:
            record.seconds = time.perf_counter() - start
            self.last_call = record
            if len(self.forbidden_used) > forbidden_before:
                self.tainted.add(function)

    def tensor(self, function: str, *args: Any, **kwargs: Any) -> Tensor:
        """Call a function that returns one array."""
        return self._from_impl(function, self.call(function, *args, **kwargs))

    def attention(self, function: str, *args: Any, causal: bool = False, **kwargs: Any) -> Attention:
        """Call an attention function; returns (context, weights) as torch tensors."""
        if self.capabilities.causal_only and not causal:
            raise ValueError(f"{self.name} declares causal='only': {function} is not called without the mask")
        # a causal-only function that takes no `causal` argument (a decoder block) is causal by itself
        if causal and (not self.capabilities.causal_only or self.accepts(function, "causal")):
            kwargs["causal"] = True
        result = self.call(function, *args, **kwargs)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ImplementationError(f"{function} returned a {_describe(result)}, expected a pair (context, weights)")
        context = self._from_impl(function, result[0])
        if result[1] is None:
            if self.capabilities.returns_weights:
                raise ImplementationError(
                    f"{function} returned no weights (None) although CAPABILITIES says returns_weights=True"
                )
            return Attention(context, None)
        return Attention(context, self._from_impl(function, result[1]))

    def kernel(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, mask: Tensor | None = None,
               scale: float | None = None, grouped: bool = False, window: tuple[int, int] | None = None,
               softcap: float | None = None, alibi_slopes: Tensor | None = None, dropout_p: float | None = None,
               seed: int | None = None, cu_seqlens_q: Tensor | None = None,
               cu_seqlens_k: Tensor | None = None) -> Attention:
        """Call attention(q, k, v, ...) of the kernel section, under the names its signature uses (the spec's
        causal/mask or SDPA's is_causal/attn_mask); a bare array back is the context alone. A seed seeds the
        implementation's generator right before the call, for its dropout to draw from (QKV-DROPOUT)."""
        function = "attention"
        batch = q.shape[:-3]
        if window is not None and self.spelling == "JAX":  # local_window_size has no "unbounded": reach past every key
            reach = q.shape[-2] + k.shape[-2]
            window = tuple(reach if side < 0 else side for side in window)
        keywords = self.kernel_keywords(causal=causal, mask=self.mask_to_layout(mask, q, k), scale=scale,
                                        grouped=grouped, window=window, softcap=softcap, alibi_slopes=alibi_slopes,
                                        dropout_p=dropout_p)
        if cu_seqlens_q is not None or cu_seqlens_k is not None or self.packed_only:
            return self._packed(q, k, v, keywords, cu_seqlens_q, cu_seqlens_k, seed=seed)
        # dropout: `seed` seeds the implementation's generator right before the call (QKV-DROPOUT)
        result = self.call(function, *self.to_layout(q, k, v), seed=seed, **keywords)
        if not isinstance(result, (tuple, list)):
            return Attention(self.from_layout(self._from_impl(function, result), batch), None)
        if len(result) != 2:
            raise ImplementationError(f"{function} returned a {_describe(result)}, expected the context or a pair "
                                      f"(context, weights)")
        context = self.from_layout(self._from_impl(function, result[0]), batch)
        weights = None if result[1] is None else self._from_impl(function, result[1])
        if weights is not None and self.capabilities.layout == "bnhd" and weights.dim() == 4:
            weights = weights.reshape(*batch, *weights.shape[1:])  # (b, h, n_q, n_kv) in every layout
        return Attention(context, weights)

    @property
    def packed_only(self) -> bool:
        """Whether the kernel takes packed sequences only: its signature requires cu_seqlens_q, as
        flash_attn_varlen_func's does. Every ordinary call then reaches it as its batch's examples packed one after
        another (equal lengths, uniform offsets)."""
        signature = self.signatures.get("attention")
        return signature is not None and "cu_seqlens_q" in signature.required

    def packed_arguments(self, q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor | None = None,
                         cu_seqlens_k: Tensor | None = None) -> tuple[list[Tensor], dict[str, Any]]:
        """The arguments of a packed call (QKV-VARLEN): q, k, v as the kernel takes a pack, and the offsets by
        name. With offsets, q is (h, Σ n_q, d_k) and k, v (h_kv, Σ n_kv, d) in the suite's form; without, q
        (..., h, n_q, d_k) etc. are a batch whose examples are packed in order with uniform offsets. In the bnhd
        layout a pack is (Σ n, h, d), with no batch axis. The offsets go as int32 on q's device, and
        max_seqlen_q / max_seqlen_k (Python ints) only where the signature names them."""
        if cu_seqlens_q is None and cu_seqlens_k is None:
            count = math.prod(q.shape[:-3])
            q, k, v = (t.reshape(count, *t.shape[-3:]).transpose(0, 1).reshape(t.shape[-3], -1, t.shape[-1])
                       for t in (q, k, v))
            cu_seqlens_q, cu_seqlens_k = (torch.arange(count + 1) * (t.shape[-2] // max(count, 1)) for t in (q, k))
        if cu_seqlens_q is None or cu_seqlens_k is None:
            raise ValueError("a packed call takes both cu_seqlens_q and cu_seqlens_k")
        tensors = [t if self.capabilities.layout == "bhnd" else t.transpose(0, 1).contiguous() for t in (q, k, v)]
        offsets: dict[str, Any] = {}
        parameters = self.signatures["attention"].parameters or ()
        for suffix, cu in (("q", cu_seqlens_q), ("k", cu_seqlens_k)):
            offsets[f"cu_seqlens_{suffix}"] = cu.to(device=q.device, dtype=torch.int32)
            if f"max_seqlen_{suffix}" in parameters:
                offsets[f"max_seqlen_{suffix}"] = int(cu.diff().max()) if cu.numel() > 1 else 0
        return tensors, offsets

    def _packed(self, q: Tensor, k: Tensor, v: Tensor, keywords: dict[str, Any], cu_seqlens_q: Tensor | None,
                cu_seqlens_k: Tensor | None, seed: int | None = None) -> Attention:
        """kernel() on a pack: with offsets, the context (h, Σ n_q, d_v); without (a packed-only kernel's
        ordinary call), the batch's examples packed and their contexts unpacked to (..., h, n_q, d_v). A pack's
        weights, if any come back, are not judged (None)."""
        function = "attention"
        if any(name in keywords for name in ("mask", "attn_mask", "bias")):
            raise ValueError("a packed call takes no mask (each sequence is attended alone)")
        unpack = cu_seqlens_q is None and cu_seqlens_k is None
        batch, n_q = q.shape[:-3], q.shape[-2]
        arguments, offsets = self.packed_arguments(q, k, v, cu_seqlens_q, cu_seqlens_k)
        result = self.call(function, *arguments, seed=seed, **offsets, **keywords)
        if isinstance(result, (tuple, list)) and len(result) != 2:
            raise ImplementationError(f"{function} returned a {_describe(result)}, expected the context or a pair "
                                      f"(context, weights)")
        context = self._from_impl(function, result[0] if isinstance(result, (tuple, list)) else result)
        if context.dim() != 3:  # another rank is left for the shape checks
            return Attention(context, None)
        if self.capabilities.layout == "bnhd":
            context = context.transpose(0, 1)
        if unpack and context.shape[1] == math.prod(batch) * n_q:
            heads, d_v = context.shape[0], context.shape[-1]
            context = context.reshape(heads, -1, n_q, d_v).transpose(0, 1).reshape(*batch, heads, n_q, d_v)
        return Attention(context, None)

    # the kernel's declared layout: the suite works in (..., h, n, d); a "bnhd" kernel takes (b, n, h, d), one batch
    # axis, so the suite's batch axes are folded into one (a single example gets a batch of 1) and unfolded after
    def to_layout(self, *tensors: Tensor) -> list[Tensor]:
        """q, k, v of shape (..., h, n, d) as the kernel takes them."""
        if self.capabilities.layout == "bhnd":
            return list(tensors)
        return [t.reshape(-1, *t.shape[-3:]).transpose(-3, -2).contiguous() for t in tensors]

    def from_layout(self, context: Tensor, batch: tuple[int, ...]) -> Tensor:
        """The kernel's context back in (..., h, n_q, d_v); a result of another rank is left for the shape checks."""
        if self.capabilities.layout == "bhnd" or context.dim() != 4 or context.shape[0] != math.prod(batch):
            return context
        return context.transpose(-3, -2).reshape(*batch, context.shape[-2], *context.shape[-3:-2], context.shape[-1])

    def mask_to_layout(self, mask: Tensor | None, q: Tensor, k: Tensor) -> Tensor | None:
        """A mask (..., h or 1, n_q, n_kv) for a "bnhd" kernel: batch axes folded, as (b, h or 1, n_q, n_kv)."""
        if mask is None or self.capabilities.layout == "bhnd":
            return mask
        lead = q.shape[:-3]
        shape = (*lead, mask.shape[-3] if mask.dim() >= 3 else 1, q.shape[-2], k.shape[-2])
        return mask.expand(shape).reshape(-1, *shape[-3:]).contiguous()

    def kernel_keywords(self, causal: bool = False, mask: Tensor | None = None, scale: float | None = None,
                        grouped: bool = False, window: tuple[int, int] | None = None, softcap: float | None = None,
                        alibi_slopes: Tensor | None = None, dropout_p: float | None = None) -> dict[str, Any]:
        """The keyword arguments of attention(q, k, v, ...) under the names its signature uses: the spec's
        causal/mask/scale/window or SDPA's is_causal/attn_mask (and enable_gqa for grouped key/value heads)
        or FlashAttention's softmax_scale/window_size; softcap and alibi_slopes are spelled alike."""
        parameters = self.signatures["attention"].parameters or ()

        def name(*names: str) -> str:  # the first the signature has; the spec's when it cannot be told
            return next((n for n in names if n in parameters), names[0])

        kwargs: dict[str, Any] = {}
        if causal:
            kwargs[name("causal", "is_causal")] = True
        if dropout_p is not None:
            kwargs["dropout_p"] = dropout_p
        if mask is not None:  # JAX takes a boolean mask as mask and a float one as bias
            float_bias = mask.dtype != torch.bool and "bias" in parameters
            kwargs["bias" if float_bias else name("mask", "attn_mask")] = mask
        if scale is not None:
            kwargs[name("scale", "softmax_scale")] = scale
        if grouped and "enable_gqa" in parameters:
            kwargs["enable_gqa"] = True  # SDPA repeats the key/value heads only when asked
        if window is not None:
            kwargs[name("window", "window_size", "local_window_size")] = tuple(window)
        if softcap is not None:
            kwargs["softcap"] = softcap
        if alibi_slopes is not None:
            kwargs["alibi_slopes"] = alibi_slopes
        return kwargs

    def __repr__(self) -> str:
        return f"Implementation({self.name!r})"

    def describe(self) -> str:
        return f"{self.name}: functions {', '.join(self.signatures)}; {self.capabilities.describe()}"


# ------------------------------------------------------------------------------------ trying
REASON_LIMIT = 240  # characters of an exception's message kept in a reason


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


class Trials:
    """What a plain function can do, found out by trying it (capabilities.TRIED): a few small calls on the
    first function the implementation provides among TRIAL_FUNCTIONS, each through Implementation.call like
    every call (the worker, the call timeout), once per run and only when a test first asks for the key.

    A trial that fails leaves the requirement unclaimed with what it tried and what came of it; it never
    fails a clause (the clause's own tests judge correctness). When even a plain float32 call fails, trying
    tells nothing: the defaults stand (capabilities.DEFAULTS) and the clauses judge that call themselves."""

    SEQUENCE, WIDTH, HEADS, BATCH = 3, 4, 2, 2

    def __init__(self, implementation: Implementation) -> None:
        self.implementation = implementation
        self.found: dict[str, Finding] = {}
        self.seconds = 0.0  # spent trying, this run
        self.calls = 0
        self._baseline: list[Tensor] | str | None = None  # the float32 call's outputs, or why it failed
        self._depth = 0  # finding one key can ask for another (autograd tries in float64 where it is claimed)

    @property
    def function(self) -> str | None:
        return next((f for f in TRIAL_FUNCTIONS if self.implementation.has(f)), None)

    # ------------------------------------------------------------ Trier
    def peek(self, key: str) -> Finding | None:
        return self.found.get(key)

    def find(self, key: str, default: object) -> Finding:
        if key in self.found:
            return self.found[key]
        implementation = self.implementation
        called, last_call = set(implementation.called), implementation.last_call
        start = time.perf_counter()
        self._depth += 1
        try:
            finding = self._find(key, default)
        except Exception as error:  # noqa: BLE001 - trying never ends the run; the default stands
            finding = Finding(default, note=f"could not try ({type(error).__name__}: {_short(error)}); the default stands")
        finally:
            # the trial is no call of the test that asked: what it called is not that test's
            implementation.called.clear()
            implementation.called.update(called)
            implementation.last_call = last_call
            self._depth -= 1
            if not self._depth:
                self.seconds += time.perf_counter() - start
        self.found[key] = finding
        return finding

    def _find(self, key: str, default: object) -> Finding:
        caps = self.implementation.capabilities
        function = self.function
        if function is None:
            return Finding(default, note="nothing to try it with (no attention or step function); the default stands")
        baseline = self.baseline()
        if isinstance(baseline, str):
            return Finding(default, note=f"could not try: {baseline}; the default stands")
        # trying only widens the spec's defaults: what they claim (batching; float32 and float64) stays
        # claimed, and a failure there is for its clause (API-BATCH, API-DTYPE) to judge
        if key == "dtypes":
            return self._dtypes(function, caps.array, baseline, tuple(default))
        if key == "batching":
            return Finding(True, note="the spec requires it") if default else self._batching(function, baseline)
        if key == "autograd":
            return self._autograd(function)
        if key == "devices":
            return self._devices(function, caps.array, default)
        raise ValueError(f"{key!r} is not found by trying")

    # ------------------------------------------------------------ the trials
    def baseline(self) -> list[Tensor] | str:
        """The outputs of a small unbatched float32 call on the CPU, or what went wrong with it."""
        if self._baseline is None:
            outputs = self._try(self.function, "float32")
            self._baseline = outputs if not isinstance(outputs, str) else \
                f"{self.function} on a small float32 input: {outputs}"
        return self._baseline

    def _dtypes(self, function: str, array: str, baseline: list[Tensor], default: tuple[str, ...]) -> Finding:
        claimed, why_not = [], {}
        for dtype in ARRAY_DTYPES[array]:
            if dtype == "float32" or dtype in default:
                # the seed's dtype and the defaults: claimed whatever a call returns; a result in another dtype
                # is for API-DTYPE to judge
                claimed.append(dtype)
                continue
            outputs = self._try(function, dtype)
            wrong = [] if isinstance(outputs, str) else [str(o.dtype).removeprefix("torch.") for o in outputs
                                                       if o.is_floating_point() and o.dtype != DTYPES[dtype]]
            if isinstance(outputs, str):
                why_not[f"dtype:{dtype}"] = outputs
            elif wrong:
                why_not[f"dtype:{dtype}"] = f"{function} returned {', '.join(wrong)} for {dtype} inputs"
            else:
                claimed.append(dtype)
        return Finding(tuple(claimed), why_not)

    def _batching(self, function: str, baseline: list[Tensor]) -> Finding:
        outputs = self._try(function, "float32", batch=True)
        if isinstance(outputs, str):
            return Finding(False, {"batching": f"a batch of {self.BATCH}: {outputs}"})
        # a (b, n, h, d) kernel's single example already has its batch axis of 1
        folded = function == "attention" and self.implementation.capabilities.layout == "bnhd"
        want = [(self.BATCH, *(o.shape[1:] if folded else o.shape)) for o in baseline]
        got = [tuple(o.shape) for o in outputs]
        if got != want:
            return Finding(False, {"batching": f"{function} on a batch of {self.BATCH} returned shapes "
                                               f"{', '.join(map(str, got))}; {', '.join(map(str, want))} expected"})
        return Finding(True)

    def _autograd(self, function: str) -> Finding:
        dtype = "float64" if "float64" in self.implementation.capabilities.dtypes else "float32"
        with torch.enable_grad():
            arguments = self._arguments(function, dtype, grad=True)
            leaves = [t for t in wire.tensors(arguments) if t.requires_grad]
            outputs = self._outputs(function, arguments)
            if isinstance(outputs, str):
                return Finding(False, {"autograd": f"with inputs that require gradients, {outputs}"})
            carried = [o for o in outputs if o.requires_grad]
            if not carried:
                return Finding(False, {"autograd": f"no output of {function} carries a gradient (no grad_fn): "
                                                   ".detach(), .item(), numpy or torch.no_grad() cut the graph"})
            try:
                grads = torch.autograd.grad(carried, leaves, [torch.ones_like(o) for o in carried], allow_unused=True)
            except ImplementationError as error:
                return Finding(False, {"autograd": f"backward() failed: {_short(error)}"})
            except RuntimeError as error:
                return Finding(False, {"autograd": f"backward() raised RuntimeError: {_short(error)}"})
        if all(g is None for g in grads):
            return Finding(False, {"autograd": "backward() gave no gradient for any input"})
        for grad, leaf in zip(grads, leaves):
            if grad is not None and grad.shape != leaf.shape:
                return Finding(False, {"autograd": f"backward() gave a gradient of shape {tuple(grad.shape)} "
                                                   f"for an input of shape {tuple(leaf.shape)}"})
            if grad is not None and not bool(torch.isfinite(grad).all()):
                return Finding(False, {"autograd": "backward() gave gradients that are not finite (nan or inf)"})
        return Finding(True)

    def _devices(self, function: str, array: str, default: object) -> Finding:
        devices = tuple(ARRAY_DEVICES[array])
        if "cuda" not in devices:
            return Finding(devices)
        state = self.implementation.sandbox.get("cuda", "active")
        if not torch.cuda.is_available() or not state.startswith("active"):
            # cuda stays claimed as before: its checks say "unavailable" on this machine
            where = "no CUDA device on this machine" if not torch.cuda.is_available() else f"in the sandbox: {state}"
            return Finding(default, note=f"cuda not tried: {_short(where)}")
        outputs = self._try(function, "float32", device="cuda")
        if isinstance(outputs, str):
            return Finding(("cpu",), {"device:cuda": outputs})
        elsewhere = sorted({str(o.device) for o in outputs if o.device.type != "cuda"})
        if elsewhere:
            return Finding(("cpu",), {"device:cuda": f"{function} returned its results on "
                                                     f"{', '.join(elsewhere)} for inputs on cuda"})
        return Finding(("cpu", "cuda"))

    # ------------------------------------------------------------ calls
    def _try(self, function: str, dtype: str, batch: bool = False, device: str = "cpu") -> list[Tensor] | str:
        return self._outputs(function, self._arguments(function, dtype, batch=batch, device=device))

    def _outputs(self, function: str, arguments: tuple[list, dict]) -> list[Tensor] | str:
        """The arrays a call returned, as torch tensors, or what went wrong, in words."""
        implementation = self.implementation
        args, kwargs = arguments
        self.calls += 1
        try:
            result = implementation.call(function, *args, **kwargs)
            parts = list(result) if isinstance(result, (tuple, list)) else [result]
            outputs = [implementation._from_impl(function, part) for part in parts if part is not None]
        except ImplementationError as error:
            return _short(error)
        if not outputs:
            return f"{function} returned no array"
        return outputs

    def _arguments(self, function: str, dtype: str, batch: bool = False, device: str = "cpu",
                   grad: bool = False) -> tuple[list, dict]:
        """Small inputs for `function` within the declared shapes: d_k = d_v (equal_head_dims), d_in = h·d_k
        (width_is_heads_times_head_dim), at most max_length tokens; causal where every call must be."""
        caps = self.implementation.capabilities
        n = min(self.SEQUENCE, caps.max_length or self.SEQUENCE)
        d, h = self.WIDTH, self.HEADS
        generator = torch.Generator().manual_seed(0)
        lead = (self.BATCH,) if batch else ()

        def tensor(*shape: int, data: bool = False) -> Tensor:
            value = torch.randn(*(lead if data else ()), *shape, generator=generator, dtype=torch.float64)
            value = value.to(device=device, dtype=DTYPES[dtype])
            return value.requires_grad_() if grad else value

        kwargs: dict[str, Any] = {}
        causal = caps.causal_only and function != "attention" and self.implementation.accepts(function, "causal")
        if function in ("self_attention", "multihead_attention", "multihead_attention_concat"):
            per_head = (h, d // h, d) if function != "self_attention" else (d, d)
            args = [tensor(n, d, data=True), tensor(*per_head), tensor(*per_head), tensor(*per_head)]
        elif function == "cross_attention":
            args = [tensor(n, d, data=True), tensor(n, d, data=True), tensor(d, d), tensor(d, d), tensor(d, d)]
        elif function == "attention":
            q, k, v = tensor(h, n, d, data=True), tensor(h, n, d, data=True), tensor(h, n, d, data=True)
            kwargs = self.implementation.kernel_keywords(causal=caps.causal_only)
            if self.implementation.packed_only:  # flash_attn_varlen_func: the examples as one pack
                args, offsets = self.implementation.packed_arguments(q, k, v)
                kwargs.update(offsets)
            else:
                args = self.implementation.to_layout(q, k, v)
        elif function == "project":
            args = [tensor(n, d, data=True), tensor(d, d)]
        elif function == "attention_scores":
            args = [tensor(n, d, data=True), tensor(n, d, data=True)]
        elif function == "attention_weights":
            args = [tensor(n, n, data=True), d]
        elif function == "embed":
            ids = torch.arange(n, device=device).remainder(5).expand(*lead, n).clone()
            args = [ids, tensor(5, d)]
        else:
            raise ValueError(f"{function} is not tried")
        if causal:
            kwargs["causal"] = True
        return args, kwargs

def seed_shapes_fit(caps: Capabilities) -> bool:
    """Whether the seed's sizes (d_in 16, d_k 24, d_v 28, 3 heads, 6 and 8 tokens) are within the declared
    shape constraints: the golden checks cannot be run on an implementation that refuses them."""
    import golden

    d = golden.manifest()["dimensions"]
    longest = max(len(golden.manifest()["sentence"].split()), d["n_kv"])
    return not (
        (caps.equal_head_dims and d["d_k"] != d["d_v"])
        or (caps.width_is_heads_times_head_dim and d["d"] not in (d["d_k"], d["heads"] * d["d_k"]))
        or (caps.max_length is not None and caps.max_length < longest)
    )


def _raised(error: dict, function: str) -> ImplementationError:
    """The ImplementationError for an exception the implementation raised (as the worker described it)."""
    if error.get("exit"):
        return ImplementationError(f"{function} called exit({error.get('code')!r})")
    kind, message, where = str(error.get("type", "?")), str(error.get("message", "")), str(error.get("where", ""))
    at = f" (at {where})" if where else ""
    lineage = tuple(str(n) for n in error.get("lineage", [kind]))
    return ImplementationError(f"{function} raised {kind}: {message}{at}", lineage, message)


# ------------------------------------------------------------------------------------ backends
class Backend:
    def hello(self) -> tuple[str, object, dict[str, Signature]]:
        raise NotImplementedError

    def call(self, function: str, args: list, kwargs: dict, timeout: float | None, record: CallRecord,
             labels: list[str], seed: int | None = None) -> Any:
        """Call the implementation's function; a seed seeds its array library's generator right before."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class RemoteBackend(Backend):
    """The implementation in a worker process (see conformance.judge.workers)."""

    def __init__(self, config: WorkerConfig, template: str | None = None) -> None:
        self.config = config
        self.template = template
        self.link: WorkerLink | None = None
        self.violations: list[str] = []
        self.forbidden_used: list[str] = []
        self.layers: dict[str, str] = {}
        self.output_head = ""
        self.load_notes: list[str] = []  # what loading set aside: a notebook's failing cells, its IPython lines
        # function -> the most bytes the judge counted in one of its calls, once past PRINT_LIMIT: its later
        # calls run with their output discarded in the worker (see _call) and are charged that count
        self.floods: dict[str, int] = {}
        self._hello: dict | None = None

    def start(self) -> None:
        """Start a worker now, without waiting for it (it imports torch while the judge works)."""
        if self.link is None or not self.link.alive:
            if self.link is not None:
                self.output_head = self.output_head or self.link.output_head()
                self.link.close()
            self.link = (self.link is None and adopt(self.config)) or WorkerLink(self.config, self.template)
            self._hello = None

    def _link(self) -> WorkerLink:
        self.start()
        if self._hello is None:
            try:
                self._hello = self._note(self.link.receive(START_TIMEOUT)[0])
            except wire.FrameError as error:  # "the worker sent a malformed message (...); it was ended"
                raise LoadError(f"while loading {self.config.target}, {error}") from None
            except (WorkerDied, WorkerTimeout, wire.WireError) as error:
                raise LoadError(f"the worker for {self.config.target} did not start: {error}") from None
            if not self._hello.get("ok"):
                raise LoadError(str(self._hello.get("error", "the implementation could not be loaded"))[:2000])
        return self.link

    def _note(self, document: dict) -> dict:
        for key, seen in (("violations", self.violations), ("forbidden", self.forbidden_used)):
            for item in document.get(key) or []:
                if isinstance(item, str) and item[:300] not in seen:
                    seen.append(item[:300])
        if isinstance(document.get("sandbox"), dict):
            self.layers = {str(k)[:40]: str(v)[:300] for k, v in document["sandbox"].items()}
        return document

    def hello(self) -> tuple[str, object, dict[str, Signature]]:
        try:
            self._link()
        except LoadError:
            if self.violations:  # a load that failed because the sandbox refused a read of the answer
                raise LoadError(f"{self.violations[0]}") from None
            raise
        hello = self._hello
        notes = hello.get("notes")
        self.load_notes = [str(n)[:300] for n in notes[:50]] if isinstance(notes, list) else []
        try:
            declared = wire.decode(hello.get("capabilities"), [])
        except wire.WireError:
            declared = wire.Opaque("CAPABILITIES that are not plain data")
        if isinstance(declared, wire.Opaque):
            declared = declared.description  # parse() rejects it with the type named
        signatures = {}
        functions = hello.get("functions") if isinstance(hello.get("functions"), dict) else {}
        for function in spec.load().function_names:
            info = functions.get(function)
            if not isinstance(info, dict):
                continue
            if not info.get("callable"):
                raise LoadError(f"{hello.get('name')}: {function} is a {str(info.get('type'))[:40]}, not a function")
            parameters = info.get("parameters")
            parameters = tuple(str(p) for p in parameters) if isinstance(parameters, list) else None
            required = info.get("required")
            required = tuple(str(p) for p in required) if isinstance(required, list) else ()
            signatures[function] = Signature(parameters, bool(info.get("varkw")), required)
        return str(hello.get("name", self.config.target))[:200], declared, signatures

    def _exchange(self, document: dict, buffers: list[bytes], timeout: float | None) -> tuple[dict, list[bytes]]:
        link = self._link()
        try:
            reply, reply_buffers = link.request(document, buffers, timeout)
        except wire.WireError:
            link.kill()
            raise
        self._note(reply)
        return reply, reply_buffers

    def request(self, document: dict, timeout: float | None) -> dict:
        """One plain-data request that is not a call, and the worker's reply: `python -m conformance.bench`
        sends {"op": "bench", ...} (conformance/worker/bench.py measures in the implementation's process)."""
        return self._exchange(document, [], timeout)[0]

    def call(self, function: str, args: list, kwargs: dict, timeout: float | None, record: CallRecord,
             labels: list[str], seed: int | None = None) -> Any:
        leaves = wire.tensors([args, kwargs])
        if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
            return _differentiable_call(self, function, args, kwargs, timeout, record, labels, seed)
        return self._call(function, args, kwargs, timeout, record, labels, seed=seed)[0]

    def _call(self, function: str, args: list, kwargs: dict, timeout: float | None, record: CallRecord,
              labels: list[str], grad: bool = False, seed: int | None = None) -> tuple[Any, list[bytes]]:
        sent, buffers = wire.encode([args, kwargs])
        link = self._link()
        printed = link.printed
        request = {"op": "call", "function": function, "args": sent[0], "kwargs": sent[1]}
        if seed is not None:
            request["seed"] = seed
        try:
            reply, reply_buffers = self._exchange(self._quiet(function, request), buffers, timeout)
        finally:
            record.printed_bytes = self._charge(function, (self.link.printed - printed) if self.link is link else 0)
        offset = reply.get("after_offset")
        if not isinstance(offset, int) or not 0 <= offset <= len(reply_buffers):
            raise wire.WireError("reply without the inputs after the call")
        record.mutated = _mutated(reply.get("after"), reply_buffers[offset:], sent, buffers, labels)
        if not reply.get("ok"):
            raise _raised(reply.get("error") or {}, function)
        result = wire.decode(reply.get("result"), reply_buffers[:offset], None, DEVICES, grad=grad)
        return result, buffers

    def _quiet(self, function: str, request: dict) -> dict:
        """The request, asking the worker to discard the call's output when the function has flooded before.

        Reading a flood costs little; producing it does not: sybil's 2000 print()s of a list per call were
        most of its 185 s of grading, in its own worker. Once the judge has counted one call of a function
        past PRINT_LIMIT (API-QUIET fails on that), the rest of its output has nothing left to tell."""
        return {**request, "quiet": True} if function in self.floods else request

    def _charge(self, function: str, counted: int) -> int:
        """The bytes a call is charged with: what the judge counted, and for a call whose output was
        discarded at the judge's request, at least the function's flood counted before (the worker's word
        that it printed less is not taken)."""
        if counted > PRINT_LIMIT:
            self.floods[function] = max(counted, self.floods.get(function, 0))
        return max(counted, self.floods.get(function, 0))

    def vjp(self, function: str, args: list, kwargs: dict, cotangents: list, timeout: float | None,
            seed: int | None = None) -> list:
        sent, buffers = wire.encode([args, kwargs, cotangents])
        request = {"op": "vjp", "function": function, "args": sent[0], "kwargs": sent[1], "cotangents": sent[2]}
        if seed is not None:  # the recomputed call draws what the forward call drew
            request["seed"] = seed
        reply, reply_buffers = self._exchange(self._quiet(function, request), buffers, timeout)
        if not reply.get("ok"):
            raise _raised(reply.get("error") or {}, f"backward of {function}")
        grads = wire.decode(reply.get("grads"), reply_buffers, "torch", DEVICES)
        if not isinstance(grads, list):
            raise wire.WireError("vjp reply without a list of gradients")
        return grads

    def close(self) -> None:
        if self.link is not None:
            self.output_head = self.output_head or self.link.output_head()
            self.link.close()
            self.link = None


def _replace(value: Any, leaves: Iterator[Tensor]) -> Any:
    """The same structure with its tensors replaced, in order, by `leaves`."""
    if isinstance(value, Tensor):
        return next(leaves)
    if isinstance(value, (list, tuple)):
        return type(value)(_replace(v, leaves) for v in value)
    if isinstance(value, dict):
        return {k: _replace(v, leaves) for k, v in value.items()}
    return value


def _mutated(after: Any, after_buffers: list[bytes], sent: Any, buffers: list[bytes], labels: list[str]) -> list[str]:
    """Labels of the arguments whose bytes differ after the call from what was sent."""
    def arrays(document: Any) -> list[int | None]:
        if isinstance(document, dict) and "$array" in document:
            return [document["$array"]]
        if isinstance(document, dict):
            return [i for v in document.values() for i in arrays(v)]
        if isinstance(document, list):
            return [i for v in document for i in arrays(v)]
        return [None]

    def per_argument(document: Any) -> list[Any]:
        if not isinstance(document, list) or len(document) != 2:
            return []
        positional, named = document
        named = named.get("$dict", []) if isinstance(named, dict) else []
        return [*positional, *(pair[1] for pair in named if isinstance(pair, list) and len(pair) == 2)]

    before, now = per_argument(sent), per_argument(after)
    changed = []
    for label, a, b in zip(labels, before, now):
        ia, ib = arrays(a), arrays(b)
        bytes_a = [buffers[i] if isinstance(i, int) and i < len(buffers) else None for i in ia]
        bytes_b = [after_buffers[i] if isinstance(i, int) and 0 <= i < len(after_buffers) else None for i in ib]
        if any(x is not None for x in bytes_a) and bytes_a != bytes_b:
            changed.append(label)
    return changed


class _RemoteCall(torch.autograd.Function):
    """An autograd node for one call into the worker: backward is a vjp request."""

    @staticmethod
    def forward(ctx, run: Callable, *leaves: Tensor):  # noqa: ANN205
        outputs, differentiable, backward = run(leaves)
        ctx.backward_request = backward
        ctx.mark_non_differentiable(*[o for o, d in zip(outputs, differentiable) if not d])
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *cotangents: Tensor):  # noqa: ANN205
        return (None, *ctx.backward_request(cotangents))


def _differentiable_call(backend: RemoteBackend, function: str, args: list, kwargs: dict, timeout: float | None,
                         record: CallRecord, labels: list[str], seed: int | None = None) -> Any:
    leaves = wire.tensors([args, kwargs])
    box: dict[str, Any] = {}

    def run(inputs: tuple[Tensor, ...]):
        result, _ = backend._call(function, args, kwargs, timeout, record, labels, grad=True, seed=seed)
        outputs = wire.tensors(result)
        box["result"] = result
        differentiable = [o.requires_grad for o in outputs]

        def backward(cotangents: tuple[Tensor, ...]):
            wanted = [c if d else None for c, d in zip(cotangents, differentiable)]
            grads = iter(backend.vjp(function, args, kwargs, wanted, timeout, seed))
            result_grads = []
            for leaf in leaves:
                grad = next(grads, None) if leaf.requires_grad else None
                result_grads.append(grad if isinstance(grad, Tensor) else None)
            return tuple(result_grads)

        return [o.detach() for o in outputs], differentiable, backward

    outputs = _RemoteCall.apply(run, *leaves)
    return _replace(box["result"], iter(outputs))


# ------------------------------------------------------------------------------------ in process
class _CappedStream(io.TextIOBase):
    """A stdout/stderr stand-in that counts what is written."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.count += len(text.encode("utf-8", "replace"))
        return len(text)


class LocalBackend(Backend):
    """The implementation imported into the judge's own process: for debugging trusted code (pdb)."""

    def __init__(self, target: str) -> None:
        from conformance.worker import loader

        try:
            self.namespace, self.name = load_target(target)
        except LoadError as error:
            raise LoadError(wire.explain_load_error(str(error))) from None
        self.load_notes = list(loader.notes)

    def hello(self) -> tuple[str, object, dict[str, Signature]]:
        import inspect

        signatures = {}
        for function in spec.load().function_names:
            candidate = getattr(self.namespace, function, None)
            if candidate is None or inspect.ismodule(candidate):  # a submodule of that name is not the function
                continue
            if not callable(candidate):
                raise LoadError(f"{self.name}: {function} is a {type(candidate).__name__}, not a function")
            try:
                parameters = inspect.signature(candidate).parameters
                signatures[function] = Signature(tuple(parameters),
                                                 any(p.kind is p.VAR_KEYWORD for p in parameters.values()),
                                                 tuple(name for name, p in parameters.items() if p.default is p.empty
                                                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)))
            except (TypeError, ValueError):
                signatures[function] = Signature(None, True)
        declared = getattr(self.namespace, "CAPABILITIES", None)
        self.array = declared.get("array", "torch") if isinstance(declared, dict) else "torch"
        if self.array == "jax":
            why = wire.start_jax()
            if why:
                raise LoadError(f"{self.name}: {why}")
        return self.name, declared, signatures

    def _to_impl(self, value: Any) -> Any:
        if isinstance(value, Tensor):
            if self.array == "jax":  # a copy: the jax array must not share memory with the judge's tensor
                return wire.torch_to_jax(value.detach().cpu().clone())
            return value.detach().cpu().numpy().copy() if self.array == "numpy" else value.clone()
        return value

    def call(self, function: str, args: list, kwargs: dict, timeout: float | None, record: CallRecord,
             labels: list[str], seed: int | None = None) -> Any:
        fn = getattr(self.namespace, function)
        given = args + list(kwargs.values())
        passed = [self._to_impl(v) for v in given]
        stream = _CappedStream()
        if seed is not None:  # as the worker does (shim.seed_generator); in process, the judge's generator too
            if self.array == "numpy":
                np.random.seed(seed % 2**32)
            elif self.array == "torch":
                torch.manual_seed(seed)
        try:
            with time_limit(timeout), contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                result = fn(*passed[: len(args)], **dict(zip(kwargs, passed[len(args):])))
        except TimeLimit:
            raise WorkerTimeout(f"no answer within {timeout:g} s") from None
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - exit() is a result here
            frames = traceback.extract_tb(error.__traceback__)
            raise _raised({
                "type": type(error).__name__, "message": str(error), "exit": isinstance(error, SystemExit),
                "code": getattr(error, "code", None), "lineage": [c.__name__ for c in type(error).__mro__],
                "where": f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "",
            }, function) from None
        finally:
            record.mutated = [label for label, original, copy in zip(labels, given, passed) if _changed(original, copy)]
            record.printed_bytes = stream.count
        # jax results take the worker's path (JaxArray for every jax array) so that _from_impl sees the same
        return wire.decode(*wire.encode(result)) if self.array == "jax" else result


def _changed(original: Any, copy: Any) -> bool:
    """Whether the copy handed to the implementation differs from the caller's tensor now."""
    if not isinstance(original, Tensor):
        return False
    if isinstance(copy, np.ndarray):
        return not np.array_equal(copy, original.detach().cpu().numpy())
    if wire.is_jax(copy):  # jax arrays cannot be written into, but the check is the same
        return not torch.equal(wire.jax_to_torch(copy), original.detach().cpu())
    return not torch.equal(copy, original)


__all__ = ["Attention", "CallRecord", "DEFAULT_CALL_TIMEOUT", "Implementation", "ImplementationError", "LoadError",
           "PRINT_LIMIT"]
