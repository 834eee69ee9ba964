"""The teaching plugin: a course's rubric, Gradescope's results.json, the student's feedback, the
pictures of the weights, the diagnoses of known mistakes and the forbidden-helper rules, on top of
the judge's plugin (conformance.judge.pytest_plugin), through the judge's hooks (conformance.judge.hooks).

Registered beside the judge's plugin by the pytest11 entry point (conformance.pytest_entry). Options:
--rubric PATH, --gradescope PATH, --feedback PATH, --plots DIR, --no-pictures, --reveal-hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import spec
from conformance.judge.adapter import Implementation
from conformance.judge.run_report import RunReport, write
from conformance.judge.workers import WorkerConfig
from conformance.teaching import pictures
from conformance.teaching.diagnosis import diagnose
from conformance.teaching.feedback import Outcome
from conformance.teaching.forbidden import scan
from conformance.teaching.forbidden import tainted as forbidden_functions
from conformance.teaching.rubric import Rubric, RubricError, load_rubric
from conformance.worker.loader import parse_target

RUBRIC = pytest.StashKey[Rubric]()
VIEWS = pytest.StashKey[tuple[list, list[str]]]()  # the seed-sentence views drawn, and notes on the drawing


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attention-conformance")
    group.addoption("--rubric", default=None, metavar="PATH", help="course rubric (points, hidden clauses), TOML")
    group.addoption("--gradescope", default=None, metavar="PATH", help="write Gradescope's results.json to PATH")
    group.addoption("--feedback", default=None, metavar="PATH", help="write Markdown feedback for the student to PATH")
    group.addoption("--plots", default=None, metavar="DIR",
                    help="draw the weights on the seed sentence, yours next to the expected ones, as PNGs in DIR")
    group.addoption("--no-pictures", action="store_true",
                    help="feedback without the PNGs of the weights (a second less per submission in a large batch)")
    group.addoption("--reveal-hidden", action="store_true", help="show hidden clauses to students (after the deadline)")


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[RUBRIC] = load_rubric(config.getoption("rubric"))
    except RubricError as error:
        raise pytest.UsageError(str(error)) from None
    if config.getoption("plots") and not pictures.matplotlib_available():
        raise pytest.UsageError(f"--plots: {pictures.MATPLOTLIB_MISSING}")


def rubric_of(config: pytest.Config) -> Rubric:
    return config.stash.get(RUBRIC, Rubric())


def warm_up() -> None:
    """Import what grading a class needs once, in a batch's parent, so each forked judge starts warm."""
    import conformance.teaching.mistakes  # noqa: F401  (diagnosis)

    if pictures.matplotlib_available():  # feedback draws with it
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401


# ---------------------------------------------------------------- the judge's hooks
def pytest_conformance_course_seed(config: pytest.Config) -> str | None:
    return rubric_of(config).seed or None


def pytest_conformance_output_paths(config: pytest.Config) -> list[str]:
    return [p for p in (config.getoption(name) for name in ("gradescope", "feedback", "plots")) if p]


def pytest_conformance_worker(config: pytest.Config, worker: WorkerConfig) -> None:
    rubric = rubric_of(config)
    worker.forbid = sorted(rubric.forbid)  # the worker refuses these helpers and reports each call
    if rubric.seed and worker.sandbox is not None:
        # the rubric holds the course secret: kept from the submission like the suite, a read of it named
        worker.sandbox["protected_paths"].append(str(Path(config.getoption("rubric")).resolve()))


def pytest_conformance_report(config: pytest.Config, report: RunReport,
                              implementation: Callable[[], Implementation | None]) -> Outcome:
    forbidden, tainted = _forbidden_uses(config, report)
    failed = [v.id for v in report.verdicts if v.verdict == "failed"]
    feedback, plots = config.getoption("feedback"), config.getoption("plots")
    needed = failed or feedback or plots  # diagnoses and pictures call the implementation again
    called = implementation() if needed else None
    outcome = Outcome.of(report, rubric=rubric_of(config), forbidden=forbidden, tainted=frozenset(tainted),
                         diagnoses=diagnose(called) if failed and called else [])
    config.stash[VIEWS] = _pictures(config, called, outcome, failed)
    return outcome


def pytest_conformance_write(config: pytest.Config, report: RunReport) -> list[str]:
    if not isinstance(report, Outcome):  # another plugin's report: nothing of a course's to write
        return []
    reveal = config.getoption("reveal_hidden")
    outputs = {"gradescope": lambda: report.to_gradescope(reveal), "feedback": lambda: report.to_markdown(reveal)}
    written = []
    for option, render in outputs.items():
        path = config.getoption(option)
        if path:
            write(Path(path), render())
            written.append(path)
    return written


def pytest_conformance_terminal(config: pytest.Config, report: RunReport) -> list[str]:
    views, notes = config.stash.get(VIEWS, ([], []))
    shown = pictures.first_failing(views, [v.id for v in report.verdicts if v.verdict == "failed"])
    lines = ["", pictures.text_heatmap(shown)] if shown is not None else []
    return lines + notes


# ---------------------------------------------------------------- what they add
def _forbidden_uses(config: pytest.Config, report: RunReport) -> tuple[list[str], set[str]]:
    """Uses of helpers the rubric forbids: refused calls (from the worker) and the source scan."""
    rule = sorted(rubric_of(config).forbid)
    if not rule or not report.description:  # no description: the implementation never loaded
        return [], set()
    functions = list(spec.load().function_names)
    sentences = [f"{name} was called and refused (the course forbids it)" for name in report.refused]
    tainted = set(report.callers_of_refused)
    path = parse_target(report.implementation).path
    if path is not None:
        uses = scan(path, rule, functions)
        sentences += [use.sentence() for use in uses]
        tainted |= forbidden_functions(uses, functions)
    return sentences, tainted


def _pictures(config: pytest.Config, implementation: Implementation | None, outcome: Outcome,
              failed: list[str]) -> tuple[list[pictures.View], list[str]]:
    """The seed-sentence views of the weights when a picture is asked for (--feedback, --plots) or a weights
    clause failed (the terminal's text heatmap); PNGs drawn next to feedback.md and into --plots. Sets
    the feedback's section on them; returns the views and lines for the terminal."""
    feedback, plots = config.getoption("feedback"), config.getoption("plots")
    if implementation is None or not (feedback or plots or set(failed) & pictures.WEIGHT_CLAUSES):
        return [], []
    try:
        views = pictures.seed_views(implementation)
    except Exception as error:  # noqa: BLE001 - the verdict stands without pictures; say why there are none
        return [], [f"pictures: not drawn ({type(error).__name__}: {str(error)[:200]})"]
    notes, drawn = [], []
    # feedback is the student's: no picture of what a clause hidden until the deadline checks
    for_students = views if config.getoption("reveal_hidden") else pictures.shown_to_students(views, outcome.rubric.hidden)
    if feedback and not pictures.matplotlib_available():
        notes.append(f"feedback without pictures: {pictures.MATPLOTLIB_MISSING}")
    elif feedback and not config.getoption("no_pictures"):
        drawn = pictures.draw_all(for_students, Path(feedback).parent)
    if plots:  # the teacher's (or the student's own) run
        notes += [f"wrote {Path(plots) / name}" for _, name in pictures.draw_all(views, Path(plots))]
    outcome.pictures = pictures.markdown(for_students, drawn) if feedback else []
    return views, notes
