"""`check()` from inside a notebook or a script: the suite on the functions defined there.

    from conformance import check
    check()                                  # every spec function of this notebook (or script)
    check(self_attention=my_attention)       # just these, under the spec's names

The code is not taken from this process: check() writes what the caller ran to a temporary notebook (in
Jupyter/IPython the cells in the order they were run, the current one left out; in a script its file)
and runs `python -m conformance` on it, so the functions run in the suite's worker and are judged in
another process, as always. The result shows as the verdict table with the diagnosis: rich HTML in
Jupyter (with the heatmaps of weights that differ), plain text elsewhere. The default profile, quick,
takes a few seconds; `profile="ci"` is what `python -m conformance` runs.
"""

from __future__ import annotations

import base64
import html
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

    @property
    def passed(self) -> bool:
        return self.verdict == "conforms"

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        rows = []
        for clause in self.clauses:
            verdict = clause["verdict"]
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
    cells, where = _cells_of(namespace)
    target_suffix = ""
    if functions:
        cells.append(_alias_cell(namespace, functions))
        target_suffix = f":{ALIAS}"
    with tempfile.TemporaryDirectory(prefix="conformance-check-") as scratch:
        notebook = Path(scratch) / f"{_name_of(namespace)}.ipynb"
        notebook.write_text(json.dumps(_notebook(cells)), encoding="utf-8")
        result = _run(f"{notebook}{target_suffix}", profile, call_timeout, Path(scratch), where)
    if not _in_ipython():
        print(result.text)  # a script shows nothing it returns
    return result


def _name_of(namespace: dict) -> str:
    """What the verdict calls the caller: its script's name, else "notebook"."""
    stem = Path(namespace.get("__file__") or "notebook").stem
    return stem if stem.isidentifier() else "notebook"


def _in_ipython() -> bool:
    shell = sys.modules.get("IPython")
    return bool(shell and getattr(shell, "get_ipython", lambda: None)())


def _cells_of(namespace: dict) -> tuple[list[str], Callable[[int], str]]:
    """What the caller ran: IPython's cells in the order they ran (the current one, calling check(), left
    out), else the source of the caller's file; first, the caller's folder on sys.path for its imports.
    Also how to name cell k of that notebook to the caller (In [k-1]; the script's name)."""
    folder = Path(namespace.get("__file__") or os.getcwd()).resolve()
    folder = folder.parent if folder.is_file() else folder
    cells = [f"import sys as _sys\n_sys.path.insert(0, {str(folder)!r})\ndel _sys"]
    shell = _in_ipython() and sys.modules["IPython"].get_ipython()
    if shell and namespace is shell.user_ns:
        # every input, empty ones too, so that cell k is In [k - 1]
        return cells + list(shell.history_manager.input_hist_raw[1:-1]), lambda k: f"In [{k - 1}]"
    path = namespace.get("__file__")
    if not path or not Path(path).is_file():
        raise RuntimeError("check() finds the functions in a notebook (Jupyter, IPython) or a script file; "
                           "here there is neither: pass the path to python -m conformance --impl instead")
    return cells + [Path(path).read_text(encoding="utf-8")], lambda k: Path(path).name


def _alias_cell(namespace: dict, functions: dict[str, Callable[..., Any]]) -> str:
    """A cell that gathers the given functions, by their names in the notebook, under the spec's names."""
    names = {}
    for spec_name, function in functions.items():
        found = [name for name, value in namespace.items() if value is function and not name.startswith("_")]
        if not found:
            raise ValueError(f"check({spec_name}=...): pass a function defined at the top level of the notebook "
                             f"or script (def name(...)), not a lambda or a function made elsewhere")
        names[spec_name] = found[0]
    members = [f"{spec_name}={name}" for spec_name, name in names.items()]
    if "CAPABILITIES" in namespace:
        members.append("CAPABILITIES=CAPABILITIES")
    return f"import types as _types\n{ALIAS} = _types.SimpleNamespace({', '.join(members)})\ndel _types"


def _notebook(cells: list[str]) -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": code}
                  for code in cells],
    }


def _run(target: str, profile: str, call_timeout: float | None, scratch: Path,
         where: Callable[[int], str]) -> CheckResult:
    from conformance.teaching import pictures

    report, plots = scratch / "report.json", scratch / "plots"
    command = [sys.executable, "-m", "conformance", "--impl", target, "--profile", profile, "--json", str(report)]
    if call_timeout is not None:
        command += ["--call-timeout", str(call_timeout)]
    if pictures.matplotlib_available():
        command += ["--plots", str(plots)]
    environment = {k: v for k, v in os.environ.items() if k not in ("ATTENTION_IMPL", "MPLBACKEND")}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=scratch)
    # "notebook.ipynb", not a temporary path and the name of the object holding the named functions
    output = (done.stdout + done.stderr).replace(f"{scratch}{os.sep}", "").replace(f".ipynb:{ALIAS}", ".ipynb")
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
    """The temporary notebook's "cell 3" as the caller knows it ("In [2]", "homework.py")."""
    return re.sub(r"\bcell (\d+)\b", lambda match: where(int(match.group(1))), text)


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
