"""pytest plugin of the conformance suite (registered through the pytest11 entry point).

Options: --impl / ATTENTION_IMPL (the implementation under test, default: the
bundled reference `impl`), --conformance-profile / CONFORMANCE_PROFILE
(hypothesis profile: ci, fast, dev, thorough), --call-timeout (seconds per call
into the implementation), --conformance-json PATH (verdicts, scores and
diagnoses as JSON); for teaching: --rubric PATH, --gradescope PATH
(results.json), --feedback PATH (Markdown for the student), --reveal-hidden,
--grading (refuse reads of the golden files and the reference).

It does nothing for tests that carry no @clause marker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

import spec
from conformance import DEFAULT_IMPL, ENV_IMPL, ENV_PROFILE, integrity
from conformance.judge.adapter import (
    DEFAULT_CALL_TIMEOUT,
    Implementation,
    ImplementationError,
)
from conformance.judge.assertions import ClauseFailure
from conformance.teaching.diagnosis import diagnose
from conformance.teaching.feedback import Outcome, write
from conformance.worker.loader import LoadError
from conformance.judge.report import Collector, TestRecord, skip_kind
from conformance.teaching.rubric import Rubric, RubricError, load_rubric
from golden import GoldenError

COLLECTOR = pytest.StashKey[Collector]()
IMPLEMENTATION = pytest.StashKey[Implementation]()
RUBRIC = pytest.StashKey[Rubric]()

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# no "explain" phase: its coverage notes about the suite's own lines would only confuse the reader
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
PROFILES = {
    # CI: same examples every run (no flakes), no example database, bounded; failures shrunk to small examples
    "ci": dict(derandomize=True, database=None, max_examples=10, phases=_PHASES),
    # the same examples without shrinking: for running many implementations (mutation matrix, batch grading)
    "fast": dict(derandomize=True, database=None, max_examples=10, phases=_PHASES[:-1]),
    # development: random, remembers failures in .hypothesis/
    "dev": dict(max_examples=50, phases=_PHASES),
    # before a release or when hunting a bug
    "thorough": dict(max_examples=500, phases=_PHASES),
}
DEFAULT_PROFILE = "ci"
for _name, _options in PROFILES.items():
    settings.register_profile(
        f"conformance-{_name}",
        deadline=None,
        suppress_health_check=_QUIET_CHECKS,
        print_blob=False,
        report_multiple_bugs=False,  # one clear failure per test, not an exception group
        **_options,
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attention-conformance")
    group.addoption(
        "--impl",
        default=None,
        help=f"implementation under test: module, module:object, file.py or package dir "
        f"(default: ${ENV_IMPL}, else the bundled reference '{DEFAULT_IMPL}')",
    )
    group.addoption(
        "--conformance-profile",
        choices=sorted(PROFILES),
        default=None,
        help=f"hypothesis profile (default: ${ENV_PROFILE}, else {DEFAULT_PROFILE})",
    )
    group.addoption(
        "--call-timeout",
        type=float,
        default=DEFAULT_CALL_TIMEOUT,
        help=f"seconds one call into the implementation may take (default {DEFAULT_CALL_TIMEOUT:g})",
    )
    group.addoption("--conformance-json", default=None, metavar="PATH", help="write verdicts and scores as JSON to PATH")
    group.addoption("--rubric", default=None, metavar="PATH", help="course rubric (points, hidden clauses), TOML")
    group.addoption("--gradescope", default=None, metavar="PATH", help="write Gradescope's results.json to PATH")
    group.addoption("--feedback", default=None, metavar="PATH", help="write Markdown feedback for the student to PATH")
    group.addoption("--reveal-hidden", action="store_true", help="show hidden clauses to students (after the deadline)")
    group.addoption(
        "--grading", action="store_true", help="refuse the implementation's reads of golden files and the reference"
    )


def profile_name(config: pytest.Config) -> str:
    name = config.getoption("conformance_profile") or os.environ.get(ENV_PROFILE) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise pytest.UsageError(f"{ENV_PROFILE}={name!r} is not a profile; choose one of {', '.join(sorted(PROFILES))}")
    return name


def target_of(config: pytest.Config) -> str:
    return config.getoption("impl") or os.environ.get(ENV_IMPL) or DEFAULT_IMPL


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id): the spec clause this test verifies")
    config.addinivalue_line("markers", "needs(*requirements): capabilities the test uses")
    config.stash[COLLECTOR] = Collector()
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile(f"conformance-{profile_name(config)}")
    try:
        config.stash[RUBRIC] = load_rubric(config.getoption("rubric"))
    except RubricError as error:
        raise pytest.UsageError(str(error)) from None
    if config.getoption("grading"):
        integrity.install()


def implementation_of(config: pytest.Config) -> Implementation:
    """The implementation under test, loaded once; a load failure ends the run with one message."""
    if IMPLEMENTATION not in config.stash:
        target = target_of(config)
        try:
            config.stash[IMPLEMENTATION] = Implementation.load(target, config.getoption("call_timeout"))
        except LoadError as error:
            pytest.exit(f"cannot check implementation {target!r}: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
    return config.stash[IMPLEMENTATION]


def _clause_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("clause")
    return marker.args[0] if marker else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    collector = config.stash[COLLECTOR]
    for item in items:
        clause_id = _clause_of(item)
        if clause_id is not None:
            collector.expect(item.nodeid, clause_id)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"attention conformance: --impl {target_of(config)}, profile {profile_name(config)}, torch {torch.__version__}"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _clause_of(item) is None:
        return
    implementation = implementation_of(item.config)
    for marker in item.iter_markers("needs"):
        missing = [r for r in marker.args if not implementation.claims(r)]
        if missing:
            pytest.skip(f"not claimed: {', '.join(missing)}")


@pytest.fixture(scope="session")
def implementation(pytestconfig: pytest.Config) -> Implementation:
    """The implementation under test (see --impl)."""
    return implementation_of(pytestconfig)


@pytest.fixture(scope="session", params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest, implementation: Implementation) -> str:
    """Every check runs on each device the implementation claims and this machine has."""
    name = request.param
    if not implementation.claims(f"device:{name}"):
        pytest.skip(f"not claimed: device {name}")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("unavailable: no CUDA device on this machine")
    return name


@pytest.fixture(scope="session")
def dtype(implementation: Implementation) -> str:
    """The dtype property checks run in (float32 when claimed)."""
    return implementation.capabilities.property_dtype


def _message(error: BaseException) -> str:
    notes = [n for n in getattr(error, "__notes__", []) if n.strip()]
    return "\n".join([str(error), *notes])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    result = yield
    report: pytest.TestReport = result.get_result()
    clause_id = _clause_of(item)
    if clause_id is None:
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        outcome = TestRecord(item.nodeid, skip_kind(reason), reason)
    elif report.failed:
        error = call.excinfo.value if call.excinfo else None
        if isinstance(error, (ClauseFailure, ImplementationError, GoldenError)):
            # the whole story in a few lines, not a traceback through the suite
            report.longrepr = f"[{clause_id}] {spec.load().clause(clause_id).title}\n{_message(error)}"
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}" if error else report.longreprtext
        outcome = TestRecord(item.nodeid, "failed", message, report.duration)
    elif report.when == "call":
        outcome = TestRecord(item.nodeid, "passed", "", report.duration)
    else:
        return
    item.config.stash[COLLECTOR].record(outcome)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    collector = config.stash[COLLECTOR]
    if not collector or not collector.outcomes:
        return
    implementation = config.stash.get(IMPLEMENTATION, None)
    name = implementation.name if implementation else target_of(config)
    verdicts = collector.verdicts()
    failed = any(v.verdict == "failed" for v in verdicts)
    outcome = Outcome(
        implementation=name,
        description=implementation.describe() if implementation else "",
        verdicts=verdicts,
        rubric=config.stash[RUBRIC],
        diagnoses=diagnose(implementation) if failed and implementation else [],
        violations=list(integrity.violations),
    )
    reveal = config.getoption("reveal_hidden")
    outputs = {
        "conformance_json": lambda: outcome.to_json(),
        "gradescope": lambda: outcome.to_gradescope(reveal),
        "feedback": lambda: outcome.to_markdown(reveal),
    }
    written = []
    for option, render in outputs.items():  # files first: they matter even if the terminal is gone
        path = config.getoption(option)
        if path:
            write(Path(path), render())
            written.append(path)
    terminalreporter.write_sep("=", f"attention conformance: {name}")
    terminalreporter.write_line(outcome.table(terminalreporter._tw.fullwidth))
    for path in written:
        terminalreporter.write_line(f"wrote {path}")
