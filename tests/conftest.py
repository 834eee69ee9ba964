"""Shared helpers for the suite's own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SuiteRun:
    returncode: int
    output: str
    report: dict | None

    def verdict(self, clause_id: str) -> str:
        return next(c["verdict"] for c in self.report["clauses"] if c["id"] == clause_id)

    def failed(self) -> set[str]:
        return {c["id"] for c in self.report["clauses"] if c["verdict"] == "failed"}

    def reason(self, clause_id: str) -> str:
        return next(c["reason"] for c in self.report["clauses"] if c["id"] == clause_id)


def run_suite(tmp_path: Path, impl: str, *extra: str, env: dict | None = None, timeout: float = 600,
              template: str | None = None) -> SuiteRun:
    """Run `python -m conformance` in a fresh process, as a user would, and read its JSON report
    (its worker forked from `template` when given: warm, instead of importing torch afresh)."""
    report = tmp_path / f"report-{abs(hash((impl, extra)))}.json"
    command = [sys.executable, "-m", "conformance", "--impl", impl, "--json", str(report), *extra]
    if template and "--grading" not in extra:
        command += ["--worker-template", template]
    environment = {**os.environ, **(env or {})}
    environment.pop("ATTENTION_IMPL", None)
    inherited = (int(template),) if template and "--grading" not in extra else ()
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout,
                          pass_fds=inherited)
    document = json.loads(report.read_text()) if report.exists() else None
    return SuiteRun(done.returncode, done.stdout + done.stderr, document)


@pytest.fixture(scope="session")
def template():
    """A worker template for the session: workers fork from it warm instead of importing torch each."""
    from conformance.judge.workers import Template

    started = Template()
    yield started.handle
    started.close()


@pytest.fixture
def suite(tmp_path, template):
    """run_suite bound to this test's temporary directory and the session's worker template."""
    return lambda impl, *extra, **kw: run_suite(tmp_path, impl, *extra, template=template, **kw)
