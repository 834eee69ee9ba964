"""Find the implementation under test from a target string (runs in the worker).

Accepted targets:
  impl                      an importable module or package (dotted path)
  mypkg.attention:ADAPTER   an attribute of a module: any object with the
                            spec's functions as attributes; a class is
                            instantiated without arguments
  path/to/homework.py       a Python file (a student's submission), whatever its name:
                            "hw3 (1).py" loads under a sanitized module name
  path/to/homework.ipynb    a Jupyter notebook: its code cells run in order, each
                            on its own (IPython lines and failing cells are noted)
  path/to/package           a directory with __init__.py (write ./package for one
                            in the current directory: a bare name is a module)
  path/to/file.py:ADAPTER   an attribute of a file
  torch.nn.functional:scaled_dot_product_attention
                            a single function: the kernel section's
                            attention(q, k, v, ...)

The module name `impl` (also the default target) always means the suite's bundled
reference implementation. Where something else would be imported under that name
(an impl.py or impl/ in the current folder), the target is refused as ambiguous,
with the path to write for either meaning: a path always means a file.

Standard library only: the worker shim loads it by path, and the judge uses
parse_target to tell paths from module names.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


# the bundled reference implementation: the package `impl` next to conformance/ (loader.py is conformance/worker/)
REFERENCE = "impl"
REFERENCE_DIR = Path(__file__).resolve().parents[2] / REFERENCE


class LoadError(RuntimeError):
    """The implementation cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    text: str
    module: str | None  # dotted module name, or None for a path
    path: Path | None
    attribute: str | None


def parse_target(text: str) -> Target:
    text = text.strip()
    if not text:
        raise LoadError("no implementation given: pass --impl MODULE or set ATTENTION_IMPL (e.g. --impl impl)")
    base, _, attribute = text.rpartition(":")
    # what follows the last colon is an attribute only if it is a (dotted) name: a Windows drive letter
    # ("C:\\x.py") and a colon in a file name ("hw3 10:30.py", as downloads name files) are paths
    if not base or not all(part.isidentifier() for part in attribute.split(".")):
        base, attribute = text, ""
    dotted_name = all(part.isidentifier() for part in base.split("."))
    looks_like_path = base.endswith((".py", ".ipynb")) or "/" in base or "\\" in base or not dotted_name
    if looks_like_path:
        return Target(text, None, Path(base), attribute or None)
    return Target(text, base, None, attribute or None)


WORKER_FOLDER = Path(__file__).resolve().parent


def submission_frames(error: BaseException) -> list[traceback.FrameSummary]:
    """The error's frames without the worker's own (a forbidden helper's wrapper that raised says nothing
    about the submission's line); all of them if that leaves none."""
    frames = traceback.extract_tb(error.__traceback__)
    theirs = [f for f in frames if Path(f.filename).resolve().parent != WORKER_FOLDER]
    return theirs or frames


def short_traceback(error: BaseException) -> str:
    """The last frames of an error: enough to find the line, not a wall."""
    frames = submission_frames(error)[-2:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames)
    return f"{type(error).__name__}: {error}" + (f" (at {where})" if where else "")


def module_name(stem: str, prefix: str = "submission") -> str:
    """The name a submission loaded by its path is imported under: its own name when Python could import
    it by that name and nothing already imported has it; else a sanitized, unique one. Downloads name files
    `hw3 (1).py` or `homework-3.py`: that is no reason to refuse them (hw3 (1) -> hw3__1_).

    A package's relative imports (`from .core import f`) work under any name its modules are registered
    under, so a package is renamed the same way; only absolute imports of its own name (`from dave import
    core`) need the real one, and those could not name `hw3 (1)` anyway. A name already imported (numpy.py,
    the shim's own modules, the suite's in --in-process) is never replaced: the submission gets another."""
    name = "".join(c if ("_" + c).isidentifier() else "_" for c in stem)
    if not name.isidentifier():  # empty, or it starts with a digit
        name = f"{prefix}_{name}"
    unique, number = name, 1
    while unique in sys.modules:
        number += 1
        unique = f"{name}_{number}"
    return unique


def _import_path(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if path.is_dir():
        init = path / "__init__.py"
        if not init.is_file():
            raise LoadError(f"{path} is a directory without __init__.py; point --impl at a .py file or a package")
        name, location, search = module_name(path.name), init, [str(path)]
    elif path.is_file():
        if path.suffix == ".ipynb":
            return _import_notebook(path)
        if path.suffix != ".py":
            raise LoadError(f"{path} is not a .py file, a notebook (.ipynb) or a package")
        name, location, search = module_name(path.stem), path, None
    else:
        raise LoadError(f"no such file or directory: {path}")
    # the submission's own directory goes first so that its sibling modules import
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, location, submodule_search_locations=search)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # SystemExit from a submission is a load error too
        sys.modules.pop(name, None)
        raise LoadError(f"importing {path} failed: {short_traceback(error)}") from None
    return module


# ------------------------------------------------------------------------------------------- notebooks
CELL_SECONDS = 30.0  # one notebook cell's time limit while loading (a training loop left in a cell)
notes: list[str] = []  # what loading the last target set aside (notebook cells and lines), for the report


@dataclass(frozen=True)
class Cell:
    number: int  # 1-based position among the notebook's code cells (markdown cells are not counted)
    code: str  # the cell's Python, magics and shell lines removed
    dropped: tuple[str, ...]  # the IPython lines removed (%magic, !shell, a %%cell magic's whole cell)
    execution_count: int | None = None  # the [7] Jupyter shows beside a cell that ran, if it ran

    @property
    def name(self) -> str:
        """The cell as its author finds it in Jupyter: "code cell 4" (the fourth code cell, markdown not
        counted), with the "In [7]" Jupyter shows beside it where the notebook was saved after running."""
        shown = f" (In [{self.execution_count}])" if self.execution_count is not None else ""
        return f"code cell {self.number}{shown}"


def notebook_cells(path: Path) -> list[Cell]:
    """The code cells of a Jupyter notebook (nbformat 4 JSON, read with the standard library: this runs
    in the worker, which imports nothing else), IPython-only lines set aside."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LoadError(f"{path} is not a readable notebook: {error}") from None
    cells = document.get("cells") if isinstance(document, dict) else None
    if not isinstance(cells, list):
        raise LoadError(f"{path} has no list of cells: not a Jupyter notebook (nbformat 4)")
    result = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        number = len(result) + 1
        count = cell.get("execution_count")
        count = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        if text.lstrip().startswith("%%"):  # a cell magic (%%time, %%bash): the whole cell is IPython's
            result.append(Cell(number, "", (text.strip().splitlines()[0],), count))
            continue
        kept, dropped = [], []
        for line in text.splitlines():
            if line.lstrip().startswith(("%", "!")):
                dropped.append(line.strip())
                kept.append("")  # keep the line numbers of the cell
            else:
                kept.append(line)
        result.append(Cell(number, "\n".join(kept), tuple(dropped), count))
    return result


def _cell_error(error: BaseException, notebook: str) -> str:
    """'FileNotFoundError: ... (line 2)': where in the cell, not where in the loader."""
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
             if f.filename.startswith(f"{notebook}, code cell")]
    if isinstance(error, SyntaxError) and error.lineno:
        lines.append(error.lineno)
    return f"{type(error).__name__}: {error}" + (f" (line {lines[-1]})" if lines else "")


def _import_notebook(path: Path) -> ModuleType:
    """Run a notebook's code cells in order, in one module, each on its own: a cell that raises, does not
    compile or runs too long is noted by its name ("code cell 4": markdown cells are not counted) and the
    others still run, so the functions it does define are graded."""
    name = module_name(path.stem, "notebook")
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    for cell in notebook_cells(path):
        if cell.dropped:
            shown = "; ".join(line[:60] for line in cell.dropped[:3]) + ("; ..." if len(cell.dropped) > 3 else "")
            notes.append(f"{cell.name}: IPython lines not run ({shown})")
        if not cell.code.strip():
            continue
        try:
            code = compile(cell.code, f"{path.name}, {cell.name}", "exec")
            with time_limit(CELL_SECONDS):
                exec(code, module.__dict__)  # noqa: S102 - the submission's own code, in its worker
        except TimeLimit:
            notes.append(f"{cell.name} ran longer than {CELL_SECONDS:g} s and was stopped; the other cells ran")
        except BaseException as error:  # noqa: BLE001 - exit() in a cell too: the notebook goes on
            notes.append(f"{cell.name} raised {_cell_error(error, path.name)}; the other cells ran")
    return module


class TimeLimit(BaseException):
    """Raised inside code that runs past its time limit (BaseException: `except Exception` there cannot
    swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeLimit in the code of the block after `seconds` (SIGALRM: on Unix, in the main thread;
    elsewhere the block runs unlimited)."""
    import signal
    import threading

    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise TimeLimit

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def discarded_output(discard: bool = True) -> Iterator[None]:
    """Run the block with its output thrown away, cheaply: for a call whose function has flooded before.

    The judge asks for it (the request's "quiet"); it has counted that flood itself and charges it to
    every later call of the function, so nothing here is taken on trust. Formatting thousands of debug
    lines was most of a flooding call's cost, so print() to stdout or stderr returns without formatting
    its arguments; sys.stdout and sys.stderr write to /dev/null, and so do file descriptors 1 and 2
    (os.write(1, ...)). What the block changed itself (its own print, its own sys.stdout) is left as it is.
    """
    if not discard:
        yield
        return
    import builtins

    for stream in (sys.stdout, sys.stderr):  # what was written before goes to the judge, counted
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no /dev/null here: the streams and print() are still quiet
        null = -1
    for fd in (1, 2) if null >= 0 else ():
        with contextlib.suppress(OSError):
            saved.append((fd, os.dup(fd)))
            os.dup2(null, fd)
    streams, printer = (sys.stdout, sys.stderr), builtins.print
    sink = open(null, "w", encoding="utf-8") if null >= 0 else io.StringIO()  # it closes null

    def quiet_print(*args: object, sep: str | None = " ", end: str | None = "\n", file: object = None,
                    flush: bool = False) -> None:
        if file is None or file is sink:
            return None
        return printer(*args, sep=sep, end=end, file=file, flush=flush)

    sys.stdout = sys.stderr = sink
    builtins.print = quiet_print
    try:
        yield
    finally:
        if builtins.print is quiet_print:
            builtins.print = printer
        if sys.stdout is sink:
            sys.stdout = streams[0]
        if sys.stderr is sink:
            sys.stderr = streams[1]
        with contextlib.suppress(Exception):
            sink.close()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _shown(path: Path) -> str:
    """A path as the user would write it for --impl: ./impl.py for one in the current folder."""
    try:
        return "./" + path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _check_reference(name: str) -> None:
    """Refuse `impl` where it would import something other than the bundled reference (a user's impl.py)."""
    if name.partition(".")[0] != REFERENCE or not (REFERENCE_DIR / "__init__.py").is_file():
        return
    # what the import would find on sys.path, the current folder first (`python -m` and the worker put it there)
    found = importlib.machinery.PathFinder.find_spec(REFERENCE, [os.getcwd(), *sys.path])
    if found is None:
        return
    if found.origin and found.has_location:
        origin = Path(found.origin).resolve()
    else:  # a folder without __init__.py: a namespace package, which would hide the reference too
        origin = Path(next(iter(found.submodule_search_locations or []), REFERENCE_DIR)).resolve() / "__init__.py"
    if origin.is_relative_to(REFERENCE_DIR.resolve()):
        return
    yours = origin.parent if origin.name == "__init__.py" else origin
    raise LoadError(
        f"{name!r} is ambiguous here: the module name {REFERENCE!r} (also the default --impl) means the bundled "
        f"reference implementation, but {yours} would be imported under that name. To check your file, give its "
        f"path: --impl {_shown(yours)}; to check the reference, --impl {REFERENCE_DIR}"
    )


def _import_module(name: str) -> ModuleType:
    _check_reference(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise LoadError(
                f"no module named {name!r}: install it, run from the directory that contains it, or give a file path"
            ) from None
        raise LoadError(f"importing {name!r} failed: {short_traceback(error)}") from None
    except BaseException as error:
        raise LoadError(f"importing {name!r} failed: {short_traceback(error)}") from None


def load_target(text: str) -> tuple[object, str]:
    """Import the target and return (namespace holding the functions, display name)."""
    target = parse_target(text)
    notes.clear()
    module = _import_path(target.path) if target.path is not None else _import_module(target.module)
    if target.attribute is None:
        return module, text
    try:
        namespace = getattr(module, target.attribute)
    except AttributeError:
        raise LoadError(f"{module.__name__} has no attribute {target.attribute!r}") from None
    if isinstance(namespace, type):
        try:
            namespace = namespace()
        except Exception as error:
            raise LoadError(f"creating {target.attribute}() failed: {short_traceback(error)}") from None
    elif isinstance(namespace, (types.FunctionType, types.BuiltinFunctionType)):
        namespace = _kernel(namespace)
    return namespace, text


def _kernel(function) -> types.SimpleNamespace:
    """A single function is the kernel section's attention(q, k, v, ...), e.g.
    torch.nn.functional:scaled_dot_product_attention. It has no module to declare CAPABILITIES in: it
    may carry them as an attribute; by default it returns the context alone (no weights)."""
    declared = getattr(function, "CAPABILITIES", None)
    if declared is None:
        declared = {"returns_weights": False}
        if str(getattr(function, "__module__", "")).split(".")[0] == "jax":  # jax.nn.dot_product_attention
            declared["array"] = "jax"
    return types.SimpleNamespace(attention=function, CAPABILITIES=declared)
