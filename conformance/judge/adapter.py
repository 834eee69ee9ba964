"""A guarded handle on the implementation under test.

Every call goes through Implementation.call, which
- hands the implementation copies of its inputs (numpy arrays for numpy
  implementations), so a function that writes into its arguments cannot
  corrupt the suite's own tensors, and records which inputs it modified;
- limits the call's wall time and the amount it may print;
- turns an exception, a hang, exit() or an output of the wrong type into an
  ImplementationError whose message names the function and what happened.

A test that gets an ImplementationError fails with that message; every other
test still runs.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import signal
import threading
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
from conformance import integrity
from conformance.judge.capabilities import Capabilities, CapabilityError
from conformance.judge.capabilities import parse as parse_capabilities
from conformance.worker.loader import LoadError, load_target

PRINT_LIMIT = 64 * 1024  # bytes a call may print (API-QUIET)
DEFAULT_CALL_TIMEOUT = 20.0  # seconds


class ImplementationError(AssertionError):
    """A call into the implementation raised, hung, or returned something unusable."""

    def __init__(self, message: str, original: BaseException | None = None) -> None:
        super().__init__(message)
        self.original = original  # the implementation's own exception, when it raised one


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


class _Timeout(BaseException):
    """Raised by the alarm inside the implementation; BaseException so `except Exception` there cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    # SIGALRM only exists on Unix and only works in the main thread; elsewhere calls run unlimited
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _CappedStream(io.TextIOBase):
    """A stdout/stderr stand-in that counts what is written and keeps only the start."""

    def __init__(self, keep: int = 4096) -> None:
        self.count = 0
        self.kept: list[str] = []
        self._room = keep

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.count += len(text.encode("utf-8", "replace"))
        if self._room > 0:
            self.kept.append(text[: self._room])
            self._room -= len(self.kept[-1])
        return len(text)


def _where(error: BaseException) -> str:
    """file:line of the innermost frame, to point the author at the line that failed."""
    frames = traceback.extract_tb(error.__traceback__)
    return f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def _changed(original: Any, copy: Any) -> bool:
    """Whether the copy handed to the implementation differs from the caller's tensor now."""
    if not isinstance(original, Tensor):
        return False
    if isinstance(copy, np.ndarray):
        return not np.array_equal(copy, original.detach().cpu().numpy())
    return not torch.equal(copy, original)


def _describe(value: object) -> str:
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__module__.split('.')[0]} array {tuple(value.shape)} {value.dtype}"
    return type(value).__name__


class Implementation:
    """The implementation under test, as the suite sees it."""

    def __init__(self, namespace: object, name: str, call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> None:
        try:
            self.capabilities: Capabilities = parse_capabilities(getattr(namespace, "CAPABILITIES", None))
        except CapabilityError as error:
            raise LoadError(f"{name}: {error}") from None
        self.name = name
        self.namespace = namespace
        self.call_timeout = call_timeout
        self.functions: dict[str, Callable] = {}
        for function in spec.load().function_names:
            candidate = getattr(namespace, function, None)
            if candidate is not None:
                if not callable(candidate):
                    raise LoadError(f"{name}: {function} is a {type(candidate).__name__}, not a function")
                self.functions[function] = candidate
        if not self.functions:
            names = ", ".join(spec.load().function_names)
            raise LoadError(f"{name} provides none of the spec's functions ({names}); nothing to check")
        self.last_call = CallRecord("")
        self._hung: set[str] = set()

    @classmethod
    def load(cls, target: str, call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Implementation:
        namespace, name = load_target(target)
        return cls(namespace, name, call_timeout)

    # ---------------------------------------------------------------- claims
    def has(self, function: str) -> bool:
        return function in self.functions

    def accepts(self, function: str, parameter: str) -> bool:
        """Whether the function takes this parameter (signature inspection)."""
        try:
            parameters = inspect.signature(self.functions[function]).parameters
        except (TypeError, ValueError):  # builtins and C functions: assume it does
            return True
        return parameter in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())

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
        if requirement in ("batching", "autograd"):
            return getattr(caps, requirement)
        if requirement == "weights":
            return caps.returns_weights
        function, _, parameter = requirement.partition(".")
        if function not in spec.load().function_names:
            raise ValueError(f"unknown requirement {requirement!r}")
        return self.has(function) and (not parameter or self.accepts(function, parameter))

    # ----------------------------------------------------------------- calls
    def _to_impl(self, value: Any) -> Any:
        if isinstance(value, Tensor):
            if self.capabilities.array == "numpy":
                return value.detach().cpu().numpy().copy()
            return value.clone()
        return value

    def _from_impl(self, function: str, value: Any) -> Any:
        expected = np.ndarray if self.capabilities.array == "numpy" else Tensor
        if isinstance(value, expected):
            return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        raise ImplementationError(f"{function} returned a {_describe(value)}, expected a {expected.__module__.split('.')[0]} array")

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any:
        """Call `function` with copies of the arguments, guarded; returns its raw result."""
        if function in self._hung:
            raise ImplementationError(f"{function} did not return within {self.call_timeout:g} s earlier; not called again")
        fn = self.functions[function]
        given = list(args) + list(kwargs.values())
        labels = [f"argument {i + 1}" for i in range(len(args))] + [f"argument {k!r}" for k in kwargs]
        passed = [self._to_impl(v) for v in given]
        passed_args, passed_kwargs = passed[: len(args)], dict(zip(kwargs, passed[len(args):]))
        stream = _CappedStream()
        start = time.perf_counter()
        try:
            with (
                _time_limit(self.call_timeout),
                contextlib.redirect_stdout(stream),
                contextlib.redirect_stderr(stream),
                integrity.submission_code(),
            ):
                return fn(*passed_args, **passed_kwargs)
        except _Timeout:
            self._hung.add(function)
            raise ImplementationError(
                f"{function} did not return within {self.call_timeout:g} s (per-call limit, see --call-timeout)"
            ) from None
        except SystemExit as error:
            raise ImplementationError(f"{function} called exit({error.code!r})") from None
        except Exception as error:
            raise ImplementationError(f"{function} raised {type(error).__name__}: {error}{_where(error)}", error) from None
        finally:
            # recorded whether the call returned or not: what it printed and wrote counts either way
            mutated = [label for label, original, copy in zip(labels, given, passed) if _changed(original, copy)]
            self.last_call = CallRecord(function, mutated, stream.count, time.perf_counter() - start)

    def tensor(self, function: str, *args: Any, **kwargs: Any) -> Tensor:
        """Call a function that returns one array."""
        return self._from_impl(function, self.call(function, *args, **kwargs))

    def attention(self, function: str, *args: Any, causal: bool = False, **kwargs: Any) -> Attention:
        """Call an attention function; returns (context, weights) as torch tensors."""
        if causal:
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

    def __repr__(self) -> str:
        return f"Implementation({self.name!r})"

    def describe(self) -> str:
        return f"{self.name}: functions {', '.join(self.functions)}; {self.capabilities.describe()}"

