"""pytest plugin of the conformance suite (registered through the pytest11 entry point).

Options: --impl / ATTENTION_IMPL (the implementation under test, default: the
bundled reference `impl`), --conformance-profile / CONFORMANCE_PROFILE
(hypothesis profile: ci, fast, dev, thorough), --call-timeout (seconds per call
into the implementation), --conformance-json PATH (the report as JSON),
--grading (the grading sandbox, with --memory-mb, --output-mb, --disk-mb, --cpus,
--processes); for debugging a trusted implementation, --in-process. Under
--conformance-profile grade, a course secret ($CONFORMANCE_GRADING_SEED, or what
a plugin's pytest_conformance_course_seed gives) draws the examples
(conformance.judge.secret).

The implementation runs in a worker process (conformance.judge.workers); this
plugin, the tests and the reports are the judge. A plugin above it (the teaching
plugin: rubric, Gradescope, feedback, pictures) adds to it through the hooks of
conformance.judge.hooks. It does nothing for tests that carry no @clause marker.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from hypothesis.errors import Flaky

import spec
from conformance import DEFAULT_IMPL, ENV_IMPL, ENV_PROFILE
from conformance.judge import blocking, hooks
from conformance.judge.adapter import (
    DEFAULT_CALL_TIMEOUT,
    Backend,
    Implementation,
    ImplementationError,
    LocalBackend,
    RemoteBackend,
)
from conformance.judge.assertions import ClauseFailure
from conformance.judge.profiles import DEFAULT_PROFILE, PROFILES, REMEMBERING, bound_shrinking
from conformance.judge.report import BLOCKED, LOAD_FAILURE, Collector, TestRecord, skip_kind
from conformance.judge.run_report import INTEGRITY, RunReport, write
from conformance.judge.secret import (
    ENV_SEED,
    FROM_SECRET,
    SecretError,
    course_secret,
    examples_drawn,
    seed_of_test,
)
from conformance.judge.workers import Limits, grading_config, plain_config
from conformance.worker.loader import LoadError
from golden import GoldenError

BACKEND = pytest.StashKey[Backend]()
COLLECTOR = pytest.StashKey[Collector]()
IMPLEMENTATION = pytest.StashKey[Implementation]()
VERDICT = pytest.StashKey[str]()  # the run's verdict ('conforms', ...), known once every test has run
SEEN = pytest.StashKey[list["Seen"]]()  # xdist's controller: what each worker's implementation did
SECRET = pytest.StashKey[str]()  # the course secret this run draws its examples from; '' for none
EXAMPLES = pytest.StashKey[str]()  # what the report says about the examples (secret.FROM_SECRET, ...)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


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
    group.addoption(
        "--grading", action="store_true",
        help="run the implementation in the grading sandbox: a copy in a scratch dir, no reads of the suite, limits",
    )
    group.addoption("--memory-mb", type=int, default=Limits.memory_mb,
                    help="grading: memory of the worker's processes together (and each one's address space)")
    group.addoption("--output-mb", type=int, default=Limits.output_mb, help="grading: largest file the worker may write")
    group.addoption("--disk-mb", type=int, default=Limits.disk_mb, help="grading: all files the worker writes together")
    group.addoption("--cpus", type=float, default=Limits.cpus, help="grading: the worker's share of the CPUs")
    group.addoption("--processes", type=int, default=Limits.processes, help="grading: processes and threads at once")
    group.addoption(
        "--in-process", action="store_true",
        help="debugging only: import the implementation into this process (no worker, no isolation; pdb works)",
    )
    group.addoption("--worker-template", default=None, help="internal (batch grading): socket of a worker template")


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
    config.pluginmanager.register(_Recorder(config), "attention-conformance-recorder")
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile(f"conformance-{profile_name(config)}")
        bound_shrinking(profile_name(config))
        if profile_name(config) in REMEMBERING:
            _database_per_implementation(target_of(config))
    if config.getoption("grading") and config.getoption("in_process"):
        raise pytest.UsageError("--grading and --in-process exclude each other: grading always isolates the submission")


def _take_secret(config: pytest.Config) -> None:
    """The course secret, if this run draws its examples from one; taken out of os.environ for the rest of
    the run, before any worker starts: a plain worker inherits the judge's environment. Raises SecretError."""
    environ_value = os.environ.pop(ENV_SEED, None)
    if environ_value is not None:
        config.add_cleanup(lambda: os.environ.__setitem__(ENV_SEED, environ_value))
    course_seed = config.hook.pytest_conformance_course_seed(config=config) or ""
    secret = course_secret(course_seed, {} if environ_value is None else {ENV_SEED: environ_value})
    own_profile = not config.getoption("hypothesis_profile", None)  # else hypothesis' own profile decides
    profile = profile_name(config) if own_profile else ""
    config.stash[EXAMPLES] = examples_drawn(profile, secret, settings.default.derandomize)
    config.stash[SECRET] = secret if config.stash[EXAMPLES] == FROM_SECRET else ""


def _test_id(item: pytest.Item) -> str:
    """The test's id whatever the rootdir (conformance.tests.test_x::test_y[cpu-self]): every judge of a
    class draws the same examples for it, however it was started."""
    module = getattr(getattr(item, "module", None), "__name__", "")
    return f"{module}::{item.nodeid.partition('::')[2]}" if module else item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Under a course secret, the test's own seed (what @hypothesis.seed sets, read before derandomize);
    set just before the call and put back after it, since the parameters of a test share its function."""
    secret = item.config.stash.get(SECRET, "")
    test = getattr(item, "obj", None)
    test = getattr(test, "__func__", test)  # a method: the function behind it
    if not secret or _clause_of(item) is None or not getattr(test, "is_hypothesis_test", False):
        yield
        return
    previous = getattr(test, "_hypothesis_internal_use_seed", None)
    test._hypothesis_internal_use_seed = seed_of_test(secret, _test_id(item))
    try:
        yield
    finally:
        test._hypothesis_internal_use_seed = previous


def _database_per_implementation(target: str) -> None:
    """Profiles that remember failures (dev, thorough) keep them per implementation, in
    .hypothesis/conformance/<target>: a failure found for one implementation is not replayed against the
    next one checked from the same folder."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("._") or "implementation"
    path = Path(".hypothesis") / "conformance" / name[:100]
    settings.register_profile("conformance-this-implementation", settings(), database=DirectoryBasedExampleDatabase(path))
    settings.load_profile("conformance-this-implementation")


def _backend(config: pytest.Config) -> Backend:
    """The implementation's backend: a worker (sandboxed when grading), or this process with --in-process."""
    target = target_of(config)
    if config.getoption("in_process"):
        return LocalBackend(target)
    functions = list(spec.load().function_names)
    if config.getoption("grading"):
        limits = Limits(memory_mb=config.getoption("memory_mb"), output_mb=config.getoption("output_mb"),
                        disk_mb=config.getoption("disk_mb"), cpus=config.getoption("cpus"),
                        processes=config.getoption("processes"))
        worker, scratch = grading_config(target, functions, limits, hidden=_report_folders(config))
        config.add_cleanup(lambda: shutil.rmtree(scratch, ignore_errors=True))
    else:
        worker = plain_config(target, functions)
    config.hook.pytest_conformance_worker(config=config, worker=worker)
    # judge and worker take turns: torch's spinning pool threads in the judge would only slow the worker
    torch.set_num_threads(1)
    backend = RemoteBackend(worker, config.getoption("worker_template"))
    backend.start()  # the worker imports torch and the implementation while the judge collects
    return backend


def _report_folders(config: pytest.Config) -> list[str]:
    """Where this run writes its reports (and the folder above: a batch's whole output), for the worker
    not to see."""
    paths = [config.getoption("conformance_json"), getattr(config.option, "xmlpath", None)]
    paths += [path for paths_ in config.hook.pytest_conformance_output_paths(config=config) for path in paths_]
    folders = []
    for path in filter(None, paths):
        folder = Path(path).resolve().parent
        folders += [str(folder), str(folder.parent)]
    return sorted(set(folders))


def implementation_of(config: pytest.Config) -> Implementation:
    """The implementation under test, loaded once; a load failure ends the run with one message."""
    if IMPLEMENTATION not in config.stash:
        target = target_of(config)
        try:
            backend = config.stash[BACKEND] if BACKEND in config.stash else _backend(config)
            config.stash[BACKEND] = backend
            implementation = Implementation(backend, config.getoption("call_timeout"))
        except LoadError as error:
            pytest.exit(f"{LOAD_FAILURE} {target!r}: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
        implementation.name = target
        config.stash[IMPLEMENTATION] = implementation
    return config.stash[IMPLEMENTATION]


def pytest_unconfigure(config: pytest.Config) -> None:
    if BACKEND in config.stash:
        config.stash[BACKEND].close()


def _clause_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("clause")
    return marker.args[0] if marker else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    collector = config.stash[COLLECTOR]
    for item in items:
        clause_id = _clause_of(item)
        if clause_id is not None:
            collector.expect(item.nodeid, clause_id)
    if collector and SECRET not in config.stash:  # only a run of the suite reads (and checks) the secret
        try:
            _take_secret(config)
        except SecretError as error:
            pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)
    if collector and BACKEND not in config.stash:
        try:
            config.stash[BACKEND] = _backend(config)
        except LoadError as error:
            pytest.exit(f"{LOAD_FAILURE} {target_of(config)!r}: {error}",
                        returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"attention conformance: --impl {target_of(config)}, profile {profile_name(config)}, torch {torch.__version__}"]


# requirements whose id alone does not say what is missing
WORDING = {
    "noncausal": "non-causal attention (declared causal='only')",
    "seed_shapes": "the seed's sizes (d_k 24 and d_v 28; d_in 16; 8 tokens) outside the declared shape constraints",
    "masks": "masks (attention takes no mask, attn_mask or bias)",
    "masked_rows": "a policy for a query that sees no key (CAPABILITIES['masked_rows'])",
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    clause_id = _clause_of(item)
    if clause_id is None:
        return
    blocking.begin()
    implementation = implementation_of(item.config)
    implementation.called.clear()
    for marker in item.iter_markers("needs"):
        missing = [r for r in marker.args if not implementation.claims(r)]
        if missing:
            # what was tried and why it failed, after the list (rubric reads the list up to " — ")
            why = [f"{r}: {reason}" for r in missing if (reason := implementation.why_not(r))]
            pytest.skip(f"not claimed: {', '.join(WORDING.get(r, r) for r in missing)}"
                        + (f" — {'; '.join(why)}" if why else ""))


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
    if name == "cuda":
        skip_without_cuda(implementation)
    return name


def skip_without_cuda(implementation: Implementation) -> None:
    """Skip as unavailable where the implementation's worker cannot use a GPU: none on this machine, or
    one that the grading sandbox keeps out (its report's 'cuda' line says why)."""
    if not torch.cuda.is_available():
        pytest.skip("unavailable: no CUDA device on this machine")
    state = implementation.sandbox.get("cuda", "active")
    if not state.startswith("active"):
        pytest.skip(f"unavailable: CUDA is not usable in the grading sandbox: {state}")


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
    implementation = item.config.stash.get(IMPLEMENTATION, None)
    functions = tuple(sorted(implementation.called)) if implementation else ()
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        block = blocking.parse_block(reason)
        if block is not None:
            outcome = TestRecord(item.nodeid, BLOCKED, reason, report.duration, functions, blocker=block[0],
                                 blocks=blocking.blocks())
        else:
            outcome = TestRecord(item.nodeid, skip_kind(reason), reason)
    elif report.failed:
        error = call.excinfo.value if call.excinfo else None
        if isinstance(error, (ClauseFailure, ImplementationError, GoldenError)):
            # the whole story in a few lines, not a traceback through the suite
            report.longrepr = f"[{clause_id}] {spec.load().clause(clause_id).title}\n{_message(error)}"
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}" if error else report.longreprtext
        if isinstance(error, Flaky) and "API-DETERMINISTIC" in spec.load().clause(clause_id).prerequisites:
            # the same example failed once and not again: the implementation answers differently each time
            why = "the same inputs gave different verdicts on replay"
            outcome = TestRecord(item.nodeid, BLOCKED, f"blocked by API-DETERMINISTIC: {why}", report.duration,
                                 functions, blocker="API-DETERMINISTIC", blocks=(("API-DETERMINISTIC", message),))
        else:
            outcome = TestRecord(item.nodeid, "failed", message, report.duration, functions)
    elif report.when == "call":
        outcome = TestRecord(item.nodeid, "passed", "", report.duration, functions, blocks=blocking.blocks())
    else:
        return
    report.conformance_record = outcome.to_json(clause_id)


class _Recorder:
    """Records each test's outcome from its report (pytest_runtest_logreport): under xdist the report, not
    the item, reaches the process that writes the verdict table."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, "conformance_record", None)
        if record is not None:
            clause_id, outcome = TestRecord.from_json(record)
            collector = self.config.stash[COLLECTOR]
            collector.expect(outcome.nodeid, clause_id)
            collector.record(outcome)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist's controller: what one worker's implementation saw (violations, refused helpers, output)."""
    seen = getattr(node, "workeroutput", {}).get("conformance")
    if seen is not None:
        node.config.stash.setdefault(SEEN, []).append(Seen(**seen))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """The exit status follows the verdict, which is only known once every test has run (a set-aside example
    whose blocker passed its own tests is a failure then): 1 when it does not conform, 0 when it conforms
    (a SHOULD clause that failed does not change it). Outermost, so it runs after the verdict table."""
    if _is_xdist_worker(session.config) and IMPLEMENTATION in session.config.stash:
        # before xdist's own wrapper sends the worker's output to the controller
        session.config.workeroutput["conformance"] = asdict(Seen.of(session.config.stash[IMPLEMENTATION]))
    result = yield
    verdict = session.config.stash.get(VERDICT, None)
    if verdict is not None and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        if verdict == "conforms":
            session.exitstatus = pytest.ExitCode.OK
        elif verdict in ("does not conform", INTEGRITY):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result


@dataclass
class Seen:
    """What the implementation did besides its results, as the report says it: from this process's
    implementation, or merged from those of xdist's workers."""

    name: str
    description: str
    violations: list[str]
    sandbox: dict[str, str]
    constraints: list[str]
    load_notes: list[str]
    output: tuple[str, int]
    refused: list[str]
    callers_of_refused: list[str]

    @classmethod
    def of(cls, implementation: Implementation) -> Seen:
        return cls(implementation.name, implementation.describe(), implementation.violations, implementation.sandbox,
                   implementation.capabilities.constraints, implementation.load_notes, implementation.output,
                   implementation.forbidden_used, sorted(implementation.tainted))

    @classmethod
    def merged(cls, seen: list[Seen]) -> Seen:
        def union(lists) -> list:
            return list(dict.fromkeys(item for items in lists for item in items))

        first = seen[0]
        return cls(first.name, first.description, union(s.violations for s in seen), first.sandbox,
                   first.constraints, union(s.load_notes for s in seen), max((tuple(s.output) for s in seen),
                                                                             key=lambda o: o[1]),
                   union(s.refused for s in seen), union(s.callers_of_refused for s in seen))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    collector = config.stash[COLLECTOR]
    if _is_xdist_worker(config) or not collector or not collector.outcomes:
        return  # an xdist worker's tests are reported by the controller
    implementation = config.stash.get(IMPLEMENTATION, None)
    seen = [Seen.of(implementation)] if implementation else config.stash.get(SEEN, [])
    summary = Seen.merged(seen) if seen else None
    name = summary.name if summary else target_of(config)
    report = RunReport(
        implementation=name,
        description=summary.description if summary else "",
        verdicts=collector.verdicts(),
        violations=summary.violations if summary else [],
        sandbox=summary.sandbox if summary else {},
        not_exercised=summary.constraints if summary else [],
        load_notes=summary.load_notes if summary else [],
        examples=config.stash.get(EXAMPLES, ""),
        refused=summary.refused if summary else [],
        callers_of_refused=frozenset(summary.callers_of_refused if summary else ()),
    )

    def load() -> Implementation | None:
        """The implementation, to call again (diagnoses, pictures): started here when xdist's workers ran
        the tests."""
        if IMPLEMENTATION in config.stash or summary is not None:
            return implementation_of(config)
        return None

    # a plugin above (teaching) may score it under a course and add diagnoses
    report = config.hook.pytest_conformance_report(config=config, report=report, implementation=load) or report
    config.stash[VERDICT] = report.verdict
    written = []  # files first: they matter even if the terminal is gone
    path = config.getoption("conformance_json")
    if path:
        write(Path(path), report.to_json())
        written.append(path)
    written += [p for paths in config.hook.pytest_conformance_write(config=config, report=report) for p in paths]
    terminalreporter.write_sep("=", f"attention conformance: {name}")
    head, printed = summary.output if summary else ("", 0)
    if head.strip():
        shown = head[:2000]
        terminalreporter.write_line(f"the implementation printed {printed:,} bytes; the first {len(shown):,}:")
        terminalreporter.write_line(shown.rstrip())
        terminalreporter.write_sep("-")
    terminalreporter.write_line(report.table(terminalreporter._tw.fullwidth))
    for lines in config.hook.pytest_conformance_terminal(config=config, report=report):
        for line in lines:
            terminalreporter.write_line(line)
    for path in written:
        terminalreporter.write_line(f"wrote {path}")
