"""Which tests verify which clause, read from the test code itself (no test is run).

A test declares its clause with @clause("ID"); this module finds those
decorators with the ast module, so the spec document, the traceability test
and reports all derive the mapping from one place: the tests.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS_DIR = Path(__file__).parents[1] / "tests"


def _clause_ids(function: ast.FunctionDef) -> list[str]:
    ids = []
    for decorator in function.decorator_list:
        if (
            isinstance(decorator, ast.Call)
            and isinstance(decorator.func, ast.Name)
            and decorator.func.id == "clause"
            and decorator.args
            and isinstance(decorator.args[0], ast.Constant)
        ):
            ids.append(decorator.args[0].value)
    return ids


def declared_clauses(directory: Path = TESTS_DIR) -> dict[str, list[str]]:
    """'module::test' -> clause ids it declares, for every test function in the suite."""
    result = {}
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                result[f"{path.stem}::{node.name}"] = _clause_ids(node)
    return result


def clause_tests(directory: Path = TESTS_DIR) -> dict[str, list[str]]:
    """clause id -> the tests that verify it."""
    mapping: dict[str, list[str]] = defaultdict(list)
    for test, clauses in declared_clauses(directory).items():
        for clause_id in clauses:
            mapping[clause_id].append(test)
    return dict(mapping)


def module_sections(directory: Path = TESTS_DIR) -> dict[str, str]:
    """test module name -> the first line of its docstring (which names its spec section)."""
    result = {}
    for path in sorted(directory.glob("test_*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        result[path.stem] = docstring.splitlines()[0] if docstring else ""
    return result
