"""Grade a folder of submissions: `python -m conformance.teaching.batch SUBMISSIONS --out REPORTS`.

Every .py file and every package directory in SUBMISSIONS is one student
(named after the file or directory). Each student gets a judge, forked from
this warm parent (it holds the suite, the golden data and the reports), and a
worker in the grading sandbox, forked from a template that has imported torch
and numpy and nothing of the suite: the submission runs from a copy in its
own scratch directory, cannot read the suite or its classmates, has limits on
memory, output and processes, and everything it starts ends with it. The
judge writes the reports; this parent reads only what judges wrote, trusting
nothing it cannot parse. A submission that crashes, hangs, exits, floods the
output or cheats gets a clear verdict and cannot stop the batch.

REPORTS/<student>/ receives results.json (Gradescope), feedback.md with PNG heatmaps
of the weights on the seed sentence (weights-*.png; --no-pictures leaves them out),
report.json, junit.xml and log.txt; REPORTS/summary.csv has one row per student, its
diagnosis in words. The default hypothesis profile, grade, shrinks each
failure within bounds (conformance.judge.profiles.SHRINK_BOUNDS), so a student
reads weights[1, 0], not weights[0, 162, 31].
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance.cli import pytest_arguments
from conformance.judge.forking import Judge, run_all, warm_up
from conformance.judge.profiles import PROFILES
from conformance.judge.report import load_failure
from conformance.judge.workers import ENV_SPIN, Template, signal_name
from conformance.teaching.feedback import write
from conformance.teaching.progress import Progress
from conformance.teaching.rubric import RubricError, load_rubric

EXIT_USAGE = int(pytest.ExitCode.USAGE_ERROR)
SUMMARY_FIELDS = ["student", "score", "max_score", "percent", "verdict", "failed_clauses", "diagnosis", "seconds", "note"]


@dataclass
class Submission:
    student: str
    path: Path
    reports: Path
    judge: Judge | None = None
    row: dict = field(default_factory=dict)


def discover(folder: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(student, path) for every .py file, notebook and package directory; and the names of other entries."""
    found, ignored = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix in (".py", ".ipynb"):
            found.append((entry.stem, entry))
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            found.append((entry.name, entry))
        else:
            ignored.append(entry.name)
    return found, ignored


def _arguments(submission: Submission, options: argparse.Namespace, template: str) -> list[str]:
    reports = submission.reports
    namespace = argparse.Namespace(
        in_process=False,
        worker_template=template,
        impl=str(submission.path.resolve()),
        profile=options.profile,
        json=str(reports / "report.json"),
        call_timeout=options.call_timeout,
        rubric=str(Path(options.rubric).resolve()) if options.rubric else None,
        gradescope=str(reports / "results.json"),
        feedback=str(reports / "feedback.md"),
        plots=None,
        reveal_hidden=options.reveal_hidden,
        grading=True,
    )
    extra = ["--junitxml", str(reports / "junit.xml"), "--memory-mb", str(options.memory_mb), "--output-mb", str(options.output_mb)]
    if options.no_pictures:
        extra.append("--no-pictures")
    return pytest_arguments(namespace, extra)


def _load_error(submission: Submission) -> str:
    """The suite's one-line reason for not loading the submission, from the end of its log."""
    try:
        with open(submission.reports / "log.txt", "rb") as handle:
            handle.seek(max(0, os.path.getsize(handle.name) - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return load_failure(text)


def _failure_row(submission: Submission, verdict: str, note: str) -> dict:
    """Reports for a submission whose run produced none: Gradescope-valid, score 0, the reason."""
    write(submission.reports / "results.json", {"score": 0, "output": f"{verdict}: {note}", "tests": []})
    write(submission.reports / "report.json", {"implementation": submission.student, "verdict": verdict, "note": note})
    write(
        submission.reports / "feedback.md",
        f"# Feedback for {submission.student}\n\n**Score: 0**\n\nThe submission could not be graded: {verdict}.\n\n{note}\n",
    )
    return {"score": 0, "max_score": "", "percent": 0, "verdict": verdict, "failed_clauses": "", "diagnosis": "", "note": note}


def _result_row(submission: Submission, options: argparse.Namespace) -> dict:
    status = submission.judge.status
    report = submission.reports / "report.json"
    if submission.judge.timed_out:
        return _failure_row(submission, "timed out", f"the whole run took longer than {options.timeout:g} s and was stopped")
    if os.WIFSIGNALED(status):
        name = signal_name(os.WTERMSIG(status))
        return _failure_row(submission, "crashed", f"the judge was killed by {name}")
    code = os.WEXITSTATUS(status)
    if code == EXIT_USAGE:
        message = _load_error(submission) or "the submission could not be loaded"
        verdict = "integrity violation" if "not allowed while grading" in message else "cannot load"
        return _failure_row(submission, verdict, message)
    try:  # written by the judge, never by the submission; still, nothing is taken on trust
        document = json.loads(report.read_text(encoding="utf-8")) if code in (0, 1) and report.is_file() else None
        failed = [c["id"] for c in document["clauses"] if c["verdict"] == "failed"]
        maximum = float(document["max_score"])
        diagnosis = _diagnosis_in_words(document["diagnoses"])
    except (OSError, ValueError, KeyError, TypeError):
        return _failure_row(submission, "crashed", f"the judge ended with exit status {code} without a readable report")
    return {
        "score": round(document["score"], 2),
        "max_score": maximum,
        "percent": round(100 * document["score"] / maximum, 1) if maximum else 0,
        "verdict": document["verdict"],
        "failed_clauses": " ".join(failed),
        "diagnosis": diagnosis,
        "note": "; ".join(document["integrity_violations"]),
    }


def _diagnosis_in_words(diagnoses: list[dict]) -> str:
    """The named mistakes as the student reads them ("The scores are not divided by √d_k before the
    softmax"); what was observed when no known mistake matches."""
    mistakes = [" ".join(str(d["text"]).split()) for d in diagnoses if d["kind"] == "mistake"]
    return "; ".join(mistakes or [" ".join(str(d["text"]).split()) for d in diagnoses])


def grade(options: argparse.Namespace) -> list[Submission]:
    folder, out = Path(options.submissions).resolve(), Path(options.out).resolve()
    found, ignored = discover(folder)
    if ignored:
        print(f"ignoring {len(ignored)} entries that are neither .py files, notebooks nor packages: {', '.join(ignored)}")
    submissions = [Submission(student, path, out / student) for student, path in found]
    if 2 * options.jobs > (os.cpu_count() or 1):  # judges sharing the CPUs sleep while their worker computes
        os.environ[ENV_SPIN] = "0"
    template = Template()
    try:
        warm_up(options.profile)
        return _run(submissions, options, out, template.path)
    finally:
        template.close()


def _run(submissions: list[Submission], options: argparse.Namespace, out: Path, template: str) -> list[Submission]:
    done, progress = [], Progress(len(submissions))
    for submission in submissions:
        submission.reports.mkdir(parents=True, exist_ok=True)
        submission.judge = Judge(_arguments(submission, options, template), submission.reports / "log.txt")
    by_judge = {id(s.judge): s for s in submissions}

    def finished(judge: Judge) -> None:
        submission = by_judge[id(judge)]
        try:
            row = _result_row(submission, options)
        except Exception as error:  # noqa: BLE001 - one student's odd report must not stop the batch
            row = _failure_row(submission, "crashed", f"its reports could not be read: {type(error).__name__}")
        submission.row = row = {"student": submission.student, **row, "seconds": round(judge.seconds, 1)}
        done.append(submission)
        progress.clear()
        print(f"{row['student']:<16} {row['verdict']:<20} {row['score']!s:>6} / {row['max_score']!s:<6} "
              f"{row['seconds']:>6.1f} s  {row['diagnosis'] or row['note']}"[:160], flush=True)
        progress.finished_one()

    progress.show()  # the elapsed time moves on while students run
    run_all([s.judge for s in submissions], options.jobs, options.timeout, finished, tick=progress.show)
    done.sort(key=lambda s: s.student)
    # a submission that produced no report is out of the same maximum as the others
    maximum = max((s.row["max_score"] for s in done if s.row["max_score"] != ""), default="")
    for s in done:
        if s.row["max_score"] == "":
            s.row["max_score"] = maximum
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(s.row for s in done)
    return done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance.teaching.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", help="folder with one .py file or package directory per student")
    parser.add_argument("--out", required=True, help="folder for the reports (created)")
    parser.add_argument("--rubric", default=None, help="course rubric (TOML): points, hidden clauses")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded at once")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one submission's whole run")
    parser.add_argument("--call-timeout", type=float, default=10, help="seconds for one call into a submission")
    parser.add_argument("--memory-mb", type=int, default=8192, help="address-space limit per submission")
    parser.add_argument("--output-mb", type=int, default=16, help="largest file a submission's process may write")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="grade",
                        help="hypothesis profile (default grade: ci's examples, failures shrunk within bounds)")
    parser.add_argument("--reveal-hidden", action="store_true", help="include hidden clauses in student reports")
    parser.add_argument("--no-pictures", action="store_true",
                        help="feedback.md without the PNG heatmaps of the weights (about a second less per student)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    folder = Path(options.submissions)
    if not folder.is_dir():
        parser.error(f"{folder} is not a folder of submissions")
    if options.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        load_rubric(Path(options.rubric) if options.rubric else None)
    except RubricError as error:
        parser.error(str(error))
    start = time.perf_counter()
    done = grade(options)
    wall = time.perf_counter() - start
    print(f"graded {len(done)} submissions in {wall:.1f} s with {options.jobs} jobs; summary: {Path(options.out) / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
