"""The layout is the architecture: each room imports only rooms below it.

worker (beside a submission: the standard library only) < judge < teaching < composition (the command
line, the pytest entry point, the package's own `check`); the suite's test modules are the judge's and
import no teaching. Read from the source, so a new import that crosses a line fails here, naming it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import conformance

PACKAGE = Path(conformance.__file__).parent
ROOMS = {  # room -> the conformance modules it must not import (a prefix matches its submodules)
    "worker": ("conformance.judge", "conformance.teaching", "conformance.tests", "conformance.cli",
               "conformance.pytest_entry", "conformance.autograder"),
    # the suite's test modules are the judge's own (its plugin runs them, forking imports them warm)
    "judge": ("conformance.teaching", "conformance.cli", "conformance.pytest_entry", "conformance.autograder"),
    "tests": ("conformance.teaching", "conformance.cli", "conformance.pytest_entry", "conformance.autograder"),
    "teaching": ("conformance.cli", "conformance.pytest_entry", "conformance.autograder"),
}
# the benchmark (`python -m conformance.bench`, issue 20) is composition too: no room imports it
ROOMS = {room: (*above, "conformance.bench") for room, above in ROOMS.items()}


def imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; relative imports resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base == "conformance" else base) for alias in node.names]
    return found


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_no_room_imports_one_above_it(room):
    crossings = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
                 for path in sorted((PACKAGE / room).rglob("*.py"))
                 for line, module in imports(path)
                 if any(module == above or module.startswith(above + ".") for above in ROOMS[room])]
    assert not crossings, "a room imports one above it:\n" + "\n".join(crossings)


def test_the_worker_imports_only_the_standard_library_at_module_level():
    """It runs beside the submission, in the submission's interpreter: torch and numpy only when the
    submission's own values need them (inside functions)."""
    outside = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
               for path in sorted((PACKAGE / "worker").rglob("*.py"))
               for line, module in imports(path, top_level_only=True)
               if module.split(".")[0] not in sys.stdlib_module_names
               and not module.startswith("conformance.worker") and module != "__future__"]
    assert not outside, "the worker imports beyond the standard library:\n" + "\n".join(outside)


def test_the_checker_sees_a_crossing(tmp_path):
    """The scan above reads `from conformance.teaching import x` and `import conformance.cli` as crossings."""
    room = PACKAGE / "judge"
    probe = room / "_layering_probe.py"
    probe.write_text("from conformance.teaching import rubric\nimport conformance.cli\nfrom . import report\n")
    try:
        found = [module for _, module in imports(probe)]
    finally:
        probe.unlink()
    assert found == ["conformance.teaching", "conformance.cli", "conformance.judge"]


def test_a_run_without_the_teaching_plugin_still_judges(pytester_free_run):
    """The judge stands alone: with the teaching plugin blocked, the suite judges and prints its table,
    without scores."""
    output = pytester_free_run
    assert "VERDICT for impl: CONFORMS" in output
    header = next(line for line in output.splitlines() if line.startswith("clause "))
    assert "score" not in header and "\nSCORE " not in output


@pytest.fixture(scope="module")
def pytester_free_run(tmp_path_factory) -> str:
    import subprocess

    from conformance.judge.invocation import suite_arguments

    arguments = suite_arguments({"impl": "impl", "conformance-profile": "fast"},
                                ["-p", "no:attention-conformance-teaching", "-k", "golden or GOLD"])
    done = subprocess.run([sys.executable, "-m", "pytest", *arguments], capture_output=True, text=True,
                          cwd=tmp_path_factory.mktemp("run"), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
