"""The suite's own `spec`, `golden` and `impl`, whatever the current folder holds.

The suite's modules say `import spec` and `import golden`. A homework folder often
holds a spec.py, golden.py or impl.py, and `python -m`, pytest's rootdir and its
conftest insertion put that folder first on sys.path, so a plain import would
find the user's file. pin() makes the three names mean the suite's own packages
in this process: it takes any other module imported under them out of
sys.modules and puts a finder first on sys.meta_path that loads them from the
suite's folder. `import conformance` pins (the package imports this module
first), so every route into the suite (`python -m conformance`, the console
script, `pytest --pyargs conformance.tests`, the teaching tools) sees its own
parts.

The implementation under test never runs in this process: it runs in a worker,
whose sys.path starts with the submission's folder, so a submission's own
`import spec` still finds its own spec.py (with --in-process it would find the
suite's: debugging only). The pytest plugin, though, is loaded by every pytest
run in the environment (a pytest11 entry point); conformance.pytest_entry pins
only while the plugin imports and then releases the names again, unless the run
collects the suite (see claims_run), so a user's own tests that `import spec`
get their own spec.py.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NAMES = ("spec", "golden", "impl")
PACKAGE = Path(__file__).resolve().parent  # conformance/
HOME = PACKAGE.parent  # the folder holding conformance/, spec/, golden/ and impl/ (checkout or site-packages)


def location(name: str) -> Path:
    """The folder of the suite's own package `name` (one of NAMES)."""
    return HOME / name


def is_own(module: ModuleType) -> bool:
    """Whether `module` was loaded from the suite's folders (a package or any of its submodules)."""
    name = module.__name__.partition(".")[0]
    paths = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or ())]
    for path in paths:
        if path:
            try:
                return Path(path).resolve().is_relative_to(location(name))
            except (OSError, ValueError):
                return False
    return False


_loaded: dict[str, ModuleType] = {}  # the suite's packages this finder loaded, by name


class _Loader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: ModuleType) -> None:
        _loaded[module.__name__] = module
        super().exec_module(module)


class _OwnParts(importlib.abc.MetaPathFinder):
    """Finds the top-level names in NAMES in the suite's folder, ahead of sys.path."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in NAMES:
            return None
        init = location(fullname) / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init, loader=_Loader(fullname, str(init)),
                                                      submodule_search_locations=[str(init.parent)])

    def __repr__(self) -> str:
        return f"<conformance.parts finder for {', '.join(NAMES)} in {HOME}>"


_FINDER = _OwnParts()
_released: dict[str, ModuleType] = {}  # the suite's modules, while the names are released
_displaced: dict[str, ModuleType] = {}  # other modules pin() took out of sys.modules, for release()
kept = False  # set by keep(): this process runs the suite, the names stay pinned


def _family(name: str) -> list[str]:
    return [key for key in list(sys.modules) if key == name or key.startswith(name + ".")]


def pinned() -> bool:
    return _FINDER in sys.meta_path


def pin() -> None:
    """From now on `import spec` (golden, impl) in this process gives the suite's own package."""
    if not pinned():
        sys.meta_path.insert(0, _FINDER)
    for name in NAMES:
        module = sys.modules.get(name)
        if module is not None and not is_own(module):
            for key in _family(name):
                if not is_own(sys.modules[key]):
                    _displaced[key] = sys.modules.pop(key)
            if name in _loaded:
                sys.modules[name] = _loaded[name]  # the same module object again: no second copy of the spec
    for key, module in list(_released.items()):
        sys.modules.setdefault(key, module)
    _released.clear()


def keep() -> None:
    """Pin for good: this process runs the suite (the command line, a pytest run that collects it)."""
    global kept
    kept = True
    pin()


def release() -> None:
    """Undo pin() unless keep() was called: the names find what sys.path finds, as if the suite were absent."""
    if kept:
        return
    if pinned():
        sys.meta_path.remove(_FINDER)
    for name in NAMES:
        for key in _family(name):
            if is_own(sys.modules[key]):
                _released[key] = sys.modules.pop(key)
    for key, module in _displaced.items():
        sys.modules.setdefault(key, module)
    _displaced.clear()


def suite_folders() -> list[Path]:
    """The folders whose tests (or modules) only make sense with the suite's own parts."""
    folders = [PACKAGE, *(location(name) for name in NAMES)]
    if (HOME / "pyproject.toml").is_file():  # a checkout: its own tests too
        folders += [HOME / "tests"]
    return folders


def claims_run(targets: list[str], invocation_dir: Path, pyargs: bool) -> bool:
    """Whether a pytest run over `targets` (its positional arguments; none: the invocation folder)
    collects the suite: the suite's package (`--pyargs conformance...`) or a path in its folders,
    or the checkout itself."""
    folders = suite_folders()
    for target in targets or [str(invocation_dir)]:
        target = target.partition("::")[0]
        if pyargs and target.partition(".")[0] == "conformance" and all(p.isidentifier() for p in target.split(".")):
            return True
        try:
            path = (invocation_dir / target).resolve()
        except (OSError, ValueError):
            continue
        if (path == HOME and (HOME / "pyproject.toml").is_file()) or any(path.is_relative_to(f) for f in folders):
            return True
    return False
