"""Golden tensors of the seeded reference run, verified against their manifest.

`load("self/context")` returns the tensor stored in data/self/context.npy
after checking that the file exists, matches the sha256, shape and dtype
recorded in manifest.json, and parses without pickle. Any problem raises
GoldenError naming the file and what to do, never a bare stack trace.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).parent
DATA_DIR = GOLDEN_DIR / "data"
MANIFEST_FILE = GOLDEN_DIR / "manifest.json"
RESTORE_HINT = "restore it with `git checkout -- golden/` or regenerate it with `python -m golden.generate`"


class GoldenError(RuntimeError):
    """A golden file is missing, truncated, altered or not listed in the manifest."""


@cache
def manifest() -> dict:
    """The parsed manifest.json (read once per process)."""
    try:
        return json.loads(MANIFEST_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenError(f"{MANIFEST_FILE} is missing; {RESTORE_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GoldenError(f"{MANIFEST_FILE} is not valid JSON ({error}); {RESTORE_HINT}") from None


def names() -> list[str]:
    """Names of all golden tensors, e.g. 'self/context'."""
    return [file[: -len(".npy")] for file, entry in manifest()["files"].items() if entry["kind"] == "tensor"]


def _verified_bytes(file: str) -> tuple[Path, dict]:
    entries = manifest()["files"]
    if file not in entries:
        raise GoldenError(f"golden/data/{file} is not listed in {MANIFEST_FILE.name}; known: {', '.join(sorted(entries))}")
    entry = entries[file]
    path = DATA_DIR / file
    if not path.is_file():
        raise GoldenError(f"golden file {path} is missing; {RESTORE_HINT}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise GoldenError(
            f"golden file {path} does not match its checksum (truncated or altered?): "
            f"sha256 {digest[:16]}…, manifest says {entry['sha256'][:16]}…; {RESTORE_HINT}"
        )
    return path, entry


@cache
def load(name: str) -> np.ndarray:
    """The verified golden tensor `name` (read and checked once per process; read-only)."""
    path, entry = _verified_bytes(f"{name}.npy")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise GoldenError(f"golden file {path} cannot be parsed as .npy ({error}); {RESTORE_HINT}") from None
    if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
        raise GoldenError(
            f"golden file {path} holds {array.dtype}{list(array.shape)}, "
            f"manifest says {entry['dtype']}{entry['shape']}; {RESTORE_HINT}"
        )
    array.setflags(write=False)
    return array


@cache
def load_json(name: str) -> object:
    """The verified golden JSON document `name`, e.g. 'tokens/vocab'."""
    path, _ = _verified_bytes(f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def verify_all() -> list[str]:
    """Check every file of the manifest; returns the list of problems (empty when all is well)."""
    problems = []
    for file, entry in manifest()["files"].items():
        stem = file.rsplit(".", 1)[0]
        try:
            load(stem) if entry["kind"] == "tensor" else load_json(stem)
        except GoldenError as error:
            problems.append(str(error))
    return problems
