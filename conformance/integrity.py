"""While grading, a submission may not read the golden files or import the reference.

install() adds an audit hook (PEP 578) and an import guard. They act only
while submission code runs (its import, and every call the adapter makes
into it, wrapped in `submission_code()`): opening a file under golden/ or
impl/, or importing impl, golden, spec or conformance, raises PermissionError
there, and the attempt is recorded so the grade can say so. The suite's own
reads, outside those windows, are unaffected. Nothing is active until
install() is called (`--grading`).

This stops the usual ways of copying the answer; it is not a sandbox against
a determined attacker, which is why each submission also runs in its own
process with limits (conformance.teaching.batch).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import golden

PROTECTED_MODULES = ("impl", "golden", "spec", "conformance", "tests")

_state = {"installed": False, "active": False}
violations: list[str] = []


@cache
def _protected_paths() -> tuple[str, ...]:
    paths = [str(Path(golden.__file__).resolve().parent)]
    reference = importlib.util.find_spec("impl")  # located, not imported
    if reference is not None and reference.submodule_search_locations:
        paths += [str(Path(p).resolve()) for p in reference.submodule_search_locations]
    return tuple(paths)


def _refuse(what: str) -> None:
    message = f"{what}: reading the golden files or the reference implementation is not allowed while grading"
    if message not in violations:
        violations.append(message)
    raise PermissionError(message)


def _audit(event: str, args: tuple) -> None:
    if not _state["active"] or event != "open" or not args or not isinstance(args[0], (str, bytes, Path)):
        return
    path = str(Path(args[0] if not isinstance(args[0], bytes) else args[0].decode(errors="replace")).resolve())
    if path.startswith(_protected_paths()):
        _refuse(f"opened {path}")


_real_import = builtins.__import__


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if _state["active"] and level == 0 and name.split(".")[0] in PROTECTED_MODULES:
        _refuse(f"imported {name}")
    return _real_import(name, globals, locals, fromlist, level)


def install() -> None:
    """Switch the guard on for this process (idempotent; audit hooks cannot be removed)."""
    if not _state["installed"]:
        _protected_paths()  # resolved now, not inside the hook
        sys.addaudithook(_audit)
        builtins.__import__ = _guarded_import
        _state["installed"] = True


@contextlib.contextmanager
def submission_code() -> Iterator[None]:
    """Mark a stretch of time in which submission code runs."""
    previous = _state["active"]
    _state["active"] = _state["installed"]
    try:
        yield
    finally:
        _state["active"] = previous
