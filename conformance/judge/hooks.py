"""The judge's extension points: hooks the pytest plugin calls, which a plugin above it (the teaching
plugin: rubric, Gradescope, feedback, pictures, diagnoses) implements. The judge never imports that
plugin; without it a run still judges and prints its verdict table.

Registered by conformance.pytest_entry before any plugin implementing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conformance.judge.adapter import Implementation
    from conformance.judge.report import RunReport
    from conformance.judge.workers import WorkerConfig


@pytest.hookspec(firstresult=True)
def pytest_conformance_course_seed(config: pytest.Config) -> str | None:
    """The course secret a course file holds (its `seed`), or None; $CONFORMANCE_GRADING_SEED is the
    judge's own. Called once, before the first worker starts."""


@pytest.hookspec
def pytest_conformance_output_paths(config: pytest.Config) -> list[str]:
    """The files a plugin will write: the grading sandbox hides their folders from the submission."""


@pytest.hookspec
def pytest_conformance_worker(config: pytest.Config, worker: WorkerConfig) -> None:
    """Adjust the worker's configuration before it starts (e.g. the helpers a course forbids)."""


@pytest.hookspec(firstresult=True)
def pytest_conformance_report(config: pytest.Config, report: RunReport,
                              implementation: Callable[[], Implementation | None]) -> RunReport | None:
    """The report to print and write in place of the judge's plain one (one scored under a rubric, with
    diagnoses); None keeps the plain one. Its `verdict` decides the exit status. `implementation()` gives
    the implementation to call again (None if it never loaded); where xdist's workers ran the tests, it
    starts one in this process."""


@pytest.hookspec
def pytest_conformance_write(config: pytest.Config, report: RunReport) -> list[str]:
    """Write a plugin's files (after the judge's JSON, before the terminal); return their paths."""


@pytest.hookspec
def pytest_conformance_terminal(config: pytest.Config, report: RunReport) -> list[str]:
    """Lines for the terminal after the verdict table."""
