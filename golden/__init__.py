"""Golden tensors of the seeded reference run, verified against their manifest.

`load("self/context")` returns the tensor stored in data/self/context.npy
after checking that the file exists, matches the sha256, shape and dtype
recorded in manifest.json, and parses without pickle. Any problem raises
GoldenError naming the file and what to do, never a bare stack trace.

The set used is the one shipped in this package, or the directory named by
$CONFORMANCE_GOLDEN_DIR (a regenerated or alternative set).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).parent
DATA_DIR = GOLDEN_DIR / "data"
MANIFEST_FILE = GOLDEN_DIR / "manifest.json"
ENV_GOLDEN_DIR = "CONFORMANCE_GOLDEN_DIR"
RESTORE_HINT = "restore it with `git checkout -- golden/` or regenerate it with `python -m golden.generate`"


class GoldenError(RuntimeError):
    """A golden file is missing, truncated, altered or not listed in the manifest."""


class GoldenSet:
    """One directory of golden data: manifest.json plus data/. Files are read and checked once."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.data_dir = self.directory / DATA_DIR.name
        self.manifest_file = self.directory / MANIFEST_FILE.name
        self._manifest: dict | None = None
        self._cache: dict[str, object] = {}

    def manifest(self) -> dict:
        if self._manifest is None:
            try:
                self._manifest = json.loads(self.manifest_file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise GoldenError(f"{self.manifest_file} is missing; {RESTORE_HINT}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise GoldenError(f"{self.manifest_file} is not valid JSON ({error}); {RESTORE_HINT}") from None
        return self._manifest

    def names(self) -> list[str]:
        """Names of all golden tensors, e.g. 'self/context'."""
        return [f.removesuffix(".npy") for f, entry in self.manifest()["files"].items() if entry["kind"] == "tensor"]

    def _verified(self, file: str) -> tuple[Path, dict]:
        entries = self.manifest()["files"]
        if file not in entries:
            raise GoldenError(f"golden/data/{file} is not listed in {self.manifest_file}")
        entry = entries[file]
        path = self.data_dir / file
        if not path.is_file():
            raise GoldenError(f"golden file {path} is missing; {RESTORE_HINT}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise GoldenError(
                f"golden file {path} does not match its checksum (truncated or altered?): "
                f"sha256 {digest[:16]}…, manifest says {entry['sha256'][:16]}…; {RESTORE_HINT}"
            )
        return path, entry

    def load(self, name: str) -> np.ndarray:
        """The verified golden tensor `name` (read-only array)."""
        if name not in self._cache:
            path, entry = self._verified(f"{name}.npy")
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
            self._cache[name] = array
        return self._cache[name]

    def load_json(self, name: str) -> object:
        """The verified golden JSON document `name`, e.g. 'tokens/vocab'."""
        if name not in self._cache:
            path, _ = self._verified(f"{name}.json")
            self._cache[name] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache[name]

    def verify_all(self) -> list[str]:
        """Check every file of the manifest; the list of problems (empty when all is well)."""
        problems = []
        for file, entry in self.manifest()["files"].items():
            stem = file.rsplit(".", 1)[0]
            try:
                self.load(stem) if entry["kind"] == "tensor" else self.load_json(stem)
            except GoldenError as error:
                problems.append(str(error))
        return problems


DEFAULT = GoldenSet(Path(os.environ.get(ENV_GOLDEN_DIR) or GOLDEN_DIR))
manifest = DEFAULT.manifest
names = DEFAULT.names
load = DEFAULT.load
load_json = DEFAULT.load_json
verify_all = DEFAULT.verify_all
