"""Course rules against helpers: find the uses of forbidden callables in a submission's source.

The worker makes each forbidden callable raise when submission code calls it;
this static scan (ast, in the judge: the source is parsed, never run) also
finds the uses that dodge that block: another path to the same function
(`torch._C._nn.scaled_dot_product_attention`), an alias, or a name built from
strings for getattr. A use inside one of the spec's functions taints that
function; a use anywhere else (module level, a helper) taints them all.
Both are deterrents, not proofs: code can always hide a call better.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Use:
    name: str  # the forbidden dotted name
    file: str
    line: int
    function: str | None  # the spec function containing the use, None when outside them

    def sentence(self) -> str:
        where = f"in {self.function}" if self.function else "outside the spec's functions"
        return f"{self.file}:{self.line} ({where}) uses {self.name}, which this course forbids"


def _sources(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if p.is_file() and not p.is_symlink())
    return [path] if path.is_file() and path.suffix in (".py", ".ipynb") else []


def _parse(source: Path) -> ast.Module:
    """A source file's syntax tree; a notebook's code cells each parsed on their own (one that does not
    compile leaves out only itself), then put one after the other."""
    if source.suffix != ".ipynb":
        return ast.parse(source.read_text(encoding="utf-8", errors="replace"))
    from conformance.worker.loader import LoadError, notebook_cells

    body: list[ast.stmt] = []
    try:
        cells = notebook_cells(source)
    except LoadError:
        cells = []
    for cell in cells:
        try:
            body += ast.parse(cell.code).body
        except SyntaxError:
            continue
    return ast.Module(body=body, type_ignores=[])


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def scan(path: Path, forbidden: list[str], functions: list[str]) -> list[Use]:
    """Uses of each forbidden name (by its last part, so other import paths count); imports and
    docstrings that only mention a name are not uses."""
    last_parts = {name.rsplit(".", 1)[-1]: name for name in forbidden}
    uses: list[Use] = []
    for source in _sources(Path(path)):
        try:
            tree = _parse(source)
        except SyntaxError:
            continue
        owner: dict[int, str] = {}
        for top in tree.body:
            if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) and top.name in functions:
                for node in ast.walk(top):
                    owner[id(node)] = top.name
        for node in ast.walk(tree):
            text = ""
            if isinstance(node, (ast.Attribute, ast.Name)):
                text = _dotted(node).rsplit(".", 1)[-1]
            elif isinstance(node, ast.Call):  # getattr(F, "scaled_" + "dot_product_attention") and the like
                spelled = [_constant_text(argument) for argument in node.args]
                text = next((part for part in last_parts for word in spelled if word and part in word), "")
            if text in last_parts:
                use = Use(last_parts[text], source.name, getattr(node, "lineno", 0), owner.get(id(node)))
                if use not in uses:
                    uses.append(use)
    return uses


def _constant_text(node: ast.AST) -> str:
    """The string a + b + ... of constants spells, or '' (getattr(F, 'scaled_' + 'dot...'))."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _constant_text(node.left), _constant_text(node.right)
        return left + right if left and right else ""
    return ""


def tainted(uses: list[Use], functions: list[str]) -> set[str]:
    """The spec functions whose results cannot earn points because of these uses."""
    if any(use.function is None for use in uses):
        return set(functions)
    return {use.function for use in uses}
