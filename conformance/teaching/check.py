"""`check()` from inside a notebook or a script: the suite on the functions defined there.

    from conformance import check
    check()                                  # every spec function of this notebook (or script)
    check(self_attention=my_attention)       # just these, under the spec's names

The code is not taken from this process: check() writes what the caller ran to a temporary notebook (in
Jupyter/IPython the cells in the order they were run, the current one left out; in a script its file)
and runs `python -m conformance` on it, so the functions run in the suite's worker and are judged in
another process, as always. A function defined in another file (`from helpers import attention`) is
imported there from that file instead; where every function comes from other files, the caller's own
code is not run again at all.

What is scored is what was checked: the functions given by name, or those of the spec the notebook
defines, as a rubric's `functions` would scope them (the others are *out of scope*, not "not provided").

The result shows as the verdict table with the diagnosis: rich HTML in Jupyter (with the heatmaps of
weights that differ), plain text elsewhere, printed once: in a script or a plain Python prompt check()
prints it, and the object it returns then reads as a one-line summary (`print(check())` does not show the
table twice). The default profile, quick, takes a few seconds; `profile="ci"` is what
`python -m conformance` runs.
"""

from __future__ import annotations

import ast
import base64
import html
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable

IN_WORKER = "CONFORMANCE_IN_WORKER"  # set by the worker: a graded notebook's own check() call does nothing
ALIAS = "_conformance_checked"  # the object holding check(name=function)'s functions in the notebook
OUT_OF_SCOPE = "out of scope"  # a clause no function given to check() exercises (conformance.teaching.rubric)
VERDICT_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "blocked": "#9a6700"}


@dataclass
class CheckResult:
    """The verdict of one check(): `passed`, the clauses (as the JSON report has them) and the text."""

    verdict: str
    score: float = 0.0
    max_score: float = 0.0
    clauses: list[dict] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text: str = ""
    pictures: list[tuple[str, bytes]] = field(default_factory=list)  # (title, PNG) of the weights that differ
    printed: bool = False  # check() has printed `text` already (a script, a plain Python prompt)

    @property
    def passed(self) -> bool:
        return self.verdict == "conforms"

    def summary(self) -> str:
        """One line: the verdict and the score."""
        score = f", score {self.score:g} / {self.max_score:g}" if self.max_score else ""
        return f"check(): {self.verdict}{score}"

    def __repr__(self) -> str:
        # what check() printed is not shown again: `print(check())` and a prompt's echo show one line
        return f"{self.summary()} (the verdict table is printed above)" if self.printed else self.text

    __str__ = __repr__

    def _repr_html_(self) -> str:
        rows = []
        for clause in self.clauses:
            verdict = OUT_OF_SCOPE if clause.get("excluded") == OUT_OF_SCOPE else clause["verdict"]
            colour = VERDICT_COLOURS.get(verdict, "#57606a")
            score = f"{clause['earned']:g}/{clause['points']:g}" if clause["counted"] else "-"
            reason = html.escape((clause.get("reason") or "").strip().splitlines()[0][:300] if clause.get("reason") else "")
            rows.append(f"<tr><td><code>{html.escape(clause['id'])}</code></td>"
                        f"<td style='color:{colour};font-weight:bold'>{html.escape(verdict)}</td>"
                        f"<td>{score}</td><td style='text-align:left'>{reason}</td></tr>")
        colour = VERDICT_COLOURS["passed" if self.passed else "failed"]
        parts = [f"<h4 style='color:{colour}'>{html.escape(self.verdict.upper())}: score {self.score:g} / "
                 f"{self.max_score:g}</h4>"]
        if self.diagnoses:
            parts.append("<p><b>What the failures look like:</b></p><ul>"
                         + "".join(f"<li>{html.escape(d)}</li>" for d in self.diagnoses) + "</ul>")
        parts += [f"<p><i>{html.escape(note)}</i></p>" for note in self.notes]
        for title, png in self.pictures:
            parts.append(f"<p><b>{html.escape(title)}</b> (yours | expected; red: differs)</p>"
                         f"<img src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'/>")
        if rows:
            parts.append("<details><summary>every clause</summary><table><tr><th>clause</th><th>verdict</th>"
                         "<th>score</th><th>reason</th></tr>" + "".join(rows) + "</table></details>")
        elif self.text:
            parts.append(f"<pre>{html.escape(self.text)}</pre>")
        return "\n".join(parts)


def check(profile: str = "quick", call_timeout: float | None = None, _frame: FrameType | None = None,
          **functions: Callable[..., Any]) -> CheckResult:
    """Run the suite on the caller's functions (all spec functions it defines, or those given by name)."""
    if os.environ.get(IN_WORKER):  # this notebook is being checked or graded: its own check() is not part of it
        return CheckResult("not checked (a check() call inside the suite's worker)")
    import spec
    from conformance.judge.profiles import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"check(profile={profile!r}): choose one of {', '.join(sorted(PROFILES))}")
    unknown = sorted(set(functions) - set(spec.load().function_names))
    if unknown:
        raise TypeError(f"check(): {', '.join(unknown)} is not a function of the spec; the spec's functions are "
                        f"{', '.join(spec.load().function_names)}")
    frame = _frame or sys._getframe(1)
    namespace = frame.f_globals
    if not functions:  # the spec's functions the caller defines (or imported): those, and only those, are scored
        functions = _spec_functions(namespace, spec.load().function_names)
        if not functions:
            return _shown(CheckResult("nothing to check", text=(
                f"check() found no function of the spec here (a function defined with def under one of the spec's "
                f"names: {', '.join(spec.load().function_names)}); define one, or name yours: "
                f"check(self_attention=my_attention)")))
    sources = {name: _source_of(namespace, name, function) for name, function in functions.items()}
    cells = [_path_cell(namespace)]
    where: Callable[[int], str] = lambda k: "the code check() runs"  # noqa: E731
    if any(source is None for source in sources.values()):  # some are the caller's own: run its code again
        replayed, where = _cells_of(namespace)
        cells += replayed
    cells.append(_alias_cell(namespace, functions, sources, replayed=len(cells) > 1))
    last, caller = len(cells), where
    where = lambda k: "check()'s gathering of your functions" if k == last else caller(k)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="conformance-check-") as scratch:
        notebook = Path(scratch) / f"{_name_of(namespace)}.ipynb"
        notebook.write_text(json.dumps(_notebook(cells)), encoding="utf-8")
        scope = Path(scratch) / "scope.toml"  # a rubric scoped to what is checked: the rest is out of scope
        scope.write_text(f"functions = {json.dumps(sorted(functions))}\n", encoding="utf-8")
        result = _run(f"{notebook}:{ALIAS}", profile, call_timeout, Path(scratch), where, scope,
                      (notebook.name, _caller_name(namespace)))
    return _shown(result)


def _shown(result: CheckResult) -> CheckResult:
    """Print the result where nothing shows what check() returns (a script), once."""
    if not _in_ipython():
        print(result.text)
        result.printed = True
    return result


def _spec_functions(namespace: dict, names: list[str]) -> dict[str, Callable[..., Any]]:
    """The spec's functions the caller's namespace holds: defined with def (a notebook's `embed =
    nn.Embedding(...)` is a variable, not the function) or imported."""
    return {name: namespace[name] for name in names if inspect.isroutine(namespace.get(name))}


def _source_of(namespace: dict, spec_name: str, function: Callable[..., Any]) -> tuple[str, str, str] | None:
    """Where the worker finds a function: None for one of the caller's own (its code is run again), else
    (folder to import from, module, qualified name) of the file it was defined in, wherever that is."""
    module_name = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    own = [name for name, value in namespace.items() if value is function and not name.startswith("_")]
    if own and module_name == namespace.get("__name__"):
        return None
    module = sys.modules.get(module_name or "")
    reachable = module is not None and module_name != "__main__" and isinstance(qualname, str) and all(
        part.isidentifier() for part in qualname.split("."))
    if reachable:
        found = module
        for part in qualname.split("."):
            found = getattr(found, part, None)
        reachable = found is function
    if not reachable and own:  # made by the caller's code some other way: running that code again makes it
        return None
    if not reachable:
        raise ValueError(f"check({spec_name}=...): pass a function defined with def, at the top level of the "
                         f"notebook, the script or a module it imports; not a lambda or a function made inside "
                         f"another function")
    file = getattr(module, "__file__", None)
    if not file and own:  # a module made in memory: the worker could not import it, the caller's code makes it
        return None
    folder = ""
    if file:  # the folder the module's top package lies in, where the worker imports it from
        depth = len(module_name.split(".")) - (Path(file).stem != "__init__")
        folder = str(Path(file).resolve().parents[depth])
    return folder, module_name, qualname


def _path_cell(namespace: dict) -> str:
    """The first cell: the caller's folder first on sys.path, then every folder the caller imports from
    (made absolute: the worker runs elsewhere), as its imports found them."""
    folder = Path(namespace.get("__file__") or os.getcwd()).resolve()
    folder = folder.parent if folder.is_file() else folder
    extra = []
    for entry in sys.path:
        path = Path(entry or os.getcwd()).resolve()
        if path.is_dir() and str(path) not in extra and path != folder:
            extra.append(str(path))
    return (f"import sys as _sys\n_sys.path.insert(0, {str(folder)!r})\n"
            f"_sys.path += [p for p in {extra!r} if p not in _sys.path]\ndel _sys")


def _name_of(namespace: dict) -> str:
    """The temporary notebook's name: the caller's script's, else "notebook"."""
    stem = Path(namespace.get("__file__") or "notebook").stem
    return stem if stem.isidentifier() else "notebook"


def _caller_name(namespace: dict) -> str:
    """What the verdict calls the caller: its script ("homework.py"), its notebook where Jupyter says which
    (VS Code, JupyterLab), else "notebook.ipynb"."""
    opened = str(namespace.get("__vsc_ipynb_file__") or namespace.get("__session__") or "")
    if opened.endswith(".ipynb"):
        return Path(opened).name
    path = namespace.get("__file__")
    return Path(path).name if path and not _in_ipython() else "notebook.ipynb"


def _in_ipython() -> bool:
    shell = sys.modules.get("IPython")
    return bool(shell and getattr(shell, "get_ipython", lambda: None)())


def _cells_of(namespace: dict) -> tuple[list[str], Callable[[int], str]]:
    """What the caller ran: IPython's cells in the order they ran (the current one, calling check(), left
    out), else the source of the caller's file. Also how to name code cell k of the temporary notebook to
    the caller (In [k-1], after the cell that sets sys.path; the script's name)."""
    shell = _in_ipython() and sys.modules["IPython"].get_ipython()
    if shell and namespace is shell.user_ns:
        # every input, empty ones too, so that cell k is In [k - 1]
        return list(shell.history_manager.input_hist_raw[1:-1]), lambda k: f"In [{k - 1}]"
    path = namespace.get("__file__")
    if not path or not Path(path).is_file():
        raise RuntimeError("check() finds the functions in a notebook (Jupyter, IPython) or a script file; "
                           "here there is neither: pass the path to python -m conformance --impl instead")
    return [Path(path).read_text(encoding="utf-8")], lambda k: Path(path).name


def _alias_cell(namespace: dict, functions: dict[str, Callable[..., Any]],
                sources: dict[str, tuple[str, str, str] | None], replayed: bool) -> str:
    """A cell that gathers the given functions under the spec's names: the caller's own by their names in
    the notebook, the others imported from the files they were defined in. One that cannot be had is left
    out (the suite reports it "not provided") and the cell raises at its end, which the report notes."""
    lines = ["import importlib as _importlib, sys as _sys, types as _types",
             f"{ALIAS} = _types.SimpleNamespace()", "_missing = []"]
    for spec_name, function in functions.items():
        source = sources[spec_name]
        if source is None:
            own = [n for n, v in namespace.items() if v is function and not n.startswith("_")]
            name = getattr(function, "__name__", "") if getattr(function, "__name__", "") in own else own[0]
            value, shown = name, name
        else:
            folder, module, qualname = source
            if folder:
                lines.append(f"_sys.path.insert(0, {folder!r}) if {folder!r} not in _sys.path else None")
            value = f"_importlib.import_module({module!r})" + "".join(f".{part}" for part in qualname.split("."))
            shown = f"{module}.{qualname}"
        lines += ["try:", f"    {ALIAS}.{spec_name} = {value}", "except Exception as _error:",
                  f"    _missing.append(f'{spec_name} ({shown}): {{type(_error).__name__}}: {{_error}}')"]
    declared = namespace.get("CAPABILITIES")
    if replayed and "CAPABILITIES" in namespace:
        lines.append(f"{ALIAS}.CAPABILITIES = CAPABILITIES")
    elif declared is not None and _literal(declared):
        lines.append(f"{ALIAS}.CAPABILITIES = {declared!r}")
    else:
        modules = {source[1] for source in sources.values() if source}
        if len(modules) == 1 and None not in sources.values():  # all from one file: its declaration
            lines += ["try:",
                      f"    _declared = getattr(_importlib.import_module({modules.pop()!r}), 'CAPABILITIES', None)",
                      "except Exception:", "    _declared = None",
                      "if _declared is not None:", f"    {ALIAS}.CAPABILITIES = _declared"]
    lines += ["del _importlib, _sys, _types",
              "if _missing:",
              "    raise ImportError('could not get ' + '; '.join(_missing))"]
    return "\n".join(lines)


def _literal(value: object) -> bool:
    """Whether a value is written back by its repr (a dict of strings and numbers, as CAPABILITIES is)."""
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _notebook(cells: list[str]) -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": code}
                  for code in cells],
    }


def _run(target: str, profile: str, call_timeout: float | None, scratch: Path, where: Callable[[int], str],
         rubric: Path, names: tuple[str, str]) -> CheckResult:
    from conformance.teaching import pictures

    report, plots = scratch / "report.json", scratch / "plots"
    command = [sys.executable, "-m", "conformance", "--impl", target, "--profile", profile, "--json", str(report),
               "--rubric", str(rubric)]
    if call_timeout is not None:
        command += ["--call-timeout", str(call_timeout)]
    if pictures.matplotlib_available():
        command += ["--plots", str(plots)]
    environment = {k: v for k, v in os.environ.items() if k not in ("ATTENTION_IMPL", "MPLBACKEND")}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=scratch)
    # the caller's name ("homework.py", "notebook.ipynb"), not a temporary notebook and the object holding
    # the functions
    output = (done.stdout + done.stderr).replace(f"{scratch}{os.sep}", "").replace(f".ipynb:{ALIAS}", ".ipynb")
    output = output.replace(*names)
    output = _caller_cells(output, where)
    text = _verdict_text(output)
    if not report.is_file():  # it could not be loaded: the one-line reason is the result
        return CheckResult("cannot load", text=text or output.strip()[-2000:])
    document = json.loads(report.read_text(encoding="utf-8"))
    return CheckResult(
        verdict=document["verdict"],
        score=document["score"],
        max_score=document["max_score"],
        clauses=document["clauses"],
        diagnoses=[d["sentence"] for d in document["diagnoses"]],
        notes=[f"loading: {_caller_cells(note, where)}" for note in document["load_notes"]] + [
            f"not exercised: {note}" for note in document["not_exercised"]],
        text=text,
        pictures=_differing_pictures(plots),
    )


def _caller_cells(text: str, where: Callable[[int], str]) -> str:
    """The temporary notebook's "code cell 3" as the caller knows it ("In [2]", "homework.py")."""
    return re.sub(r"\bcode cell (\d+)\b", lambda match: where(int(match.group(1))), text)


def _verdict_text(output: str) -> str:
    """The verdict table, the diagnosis and the text heatmap, from the command's output."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "attention conformance:" in line), None)
    if start is None:
        from conformance.judge.report import load_failure

        return load_failure(output) or "\n".join([line for line in lines if line.startswith("ERROR")][-3:])
    end = next((i for i in range(start, len(lines)) if "short test summary info" in lines[i]), len(lines))
    return "\n".join(line for line in lines[start + 1:end] if not line.startswith("wrote "))


def _differing_pictures(plots: Path) -> list[tuple[str, bytes]]:
    """(title, PNG) of each view whose weights differ somewhere (their description says which cells)."""
    if not plots.is_dir():
        return []
    from PIL import Image  # matplotlib's own dependency

    shown = []
    for png in sorted(plots.glob("weights-*.png")):
        description = Image.open(png).text.get("Description", "")
        if "differing cells: none" not in description:
            title = description.split(" of ", 1)[-1].split("; differing cells")[0]
            shown.append((title, png.read_bytes()))
    return shown
