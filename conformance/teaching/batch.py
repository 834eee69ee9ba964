"""Grade a folder of submissions: `python -m conformance.teaching.batch SUBMISSIONS --out REPORTS`.

Every .py file, notebook and package directory in SUBMISSIONS is one student
(named after the file or directory, made a safe folder name: "hw3 (1).py" ->
hw3_1), whatever its name. Every other entry gets a row too, "cannot grade"
with the reason (a symbolic link, never followed; a .txt file; a folder without
__init__.py; a FIFO); hidden files, __pycache__ and __MACOSX are skipped, and
the terminal says so. Each student gets a judge, forked from
this warm parent (it holds the suite, the golden data and the reports), and a
worker in the grading sandbox, forked from a template that has imported torch
and numpy and nothing of the suite: the submission runs from a copy in its
own scratch directory, cannot read the suite or its classmates, has limits on
memory, output and processes, and everything it starts ends with it. The
judge writes the reports; this parent reads only what judges wrote, trusting
nothing it cannot parse. A submission that crashes, hangs, exits, floods the
output or cheats gets a clear verdict and cannot stop the batch.

REPORTS/<student>/ receives results.json (Gradescope), feedback.md with PNG heatmaps
of the weights on the seed sentence (weights-*.png; --no-pictures leaves them out;
without matplotlib the terminal says so once, with the command that installs it),
report.json, junit.xml and log.txt; REPORTS/summary.csv has one row per student, its
diagnosis in words. The terminal prints a row per student as each finishes, its
reason whole (wrapped below the row where it is long). The default hypothesis profile, grade, shrinks each
failure within bounds (conformance.judge.profiles.SHRINK_BOUNDS), so a student
reads weights[1, 0], not weights[0, 162, 31].
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance.judge.forking import Judge, run_all, warm_up
from conformance.judge.invocation import suite_arguments
from conformance.judge.profiles import PROFILES
from conformance.judge.report import load_failure
from conformance.judge.secret import SecretError, course_secret
from conformance.judge.workers import ENV_SPIN, Limits, Template, signal_name
from conformance.teaching import pictures
from conformance.teaching.feedback import write
from conformance.teaching.progress import Progress
from conformance.teaching.pytest_plugin import warm_up as warm_up_teaching
from conformance.teaching.rubric import RubricError, load_rubric

EXIT_USAGE = int(pytest.ExitCode.USAGE_ERROR)
SUMMARY_FIELDS = ["student", "score", "max_score", "percent", "verdict", "failed_clauses", "diagnosis", "seconds",
                  "note", "file"]
CANNOT_GRADE = "cannot grade"  # the verdict of an entry that is no submission (a link, a .txt, a bare folder)
SKIPPED = ("__pycache__", "__MACOSX")  # never anyone's work (with hidden files: .DS_Store, .git)
RESERVED = ("summary.csv",)  # what the batch writes beside the report folders
MATPLOTLIB = "matplotlib>=3.7"  # the project's [teaching] extra


@dataclass
class Submission:
    student: str
    path: Path
    reports: Path
    judge: Judge | None = None
    row: dict = field(default_factory=dict)
    problem: str = ""  # why the entry cannot be graded ("" when it can): it gets a row, never a judge


@dataclass(frozen=True)
class Entry:
    """One entry of the class folder."""

    student: str  # its report folder's name: safe to use as a folder, unique in the batch
    path: Path
    problem: str = ""  # why it cannot be graded; "" when it can


def discover(folder: Path) -> tuple[list[Entry], list[str]]:
    """Every entry of the class folder, each under a student name that is a safe report folder and unique in
    the batch: .py files, notebooks and package folders to grade, and everything else with the reason it
    cannot be graded (a symbolic link is never followed); and, for the terminal, the names skipped as no
    one's work (hidden files such as .DS_Store, __pycache__, __MACOSX).

    A file's student is its stem (alice.py -> alice); where two entries would share a name (alice.py and
    alice/), each is named after its whole entry name (alice.py, alice), so no reports overwrite others."""
    kept, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in SKIPPED:
            skipped.append(_printable(entry.name))
            continue
        problem = _ungradable(entry)
        kept.append((entry, problem, _safe_name(entry.name if problem or entry.suffix not in (".py", ".ipynb")
                                                else entry.stem)))
    wanted = [name.casefold() for _, _, name in kept]
    taken = {name.casefold() for name in RESERVED}
    entries = []
    for entry, problem, name in kept:
        if wanted.count(name.casefold()) > 1:  # case too: one folder on macOS and Windows
            name = _safe_name(entry.name)
        unique, number = name, 1
        while unique.casefold() in taken:
            number += 1
            unique = f"{name}-{number}"
        taken.add(unique.casefold())
        entries.append(Entry(unique, entry, problem))
    return entries, skipped


def _ungradable(entry: Path) -> str:
    """Why an entry of the class folder cannot be graded, from its own status (links are not followed);
    '' when it is a .py file, a notebook or a package folder."""
    try:
        mode = entry.lstat().st_mode
    except OSError as error:
        return f"it cannot be read ({error.strerror})"
    if stat.S_ISLNK(mode):
        return ("it is a symbolic link, and links are never followed (one could lead to the suite or a classmate's "
                "work): submit the file itself")
    if stat.S_ISREG(mode):
        if entry.suffix in (".py", ".ipynb"):
            return ""
        kind = f"a {_printable(entry.suffix)} file" if entry.suffix else "a file without an extension"
        return f"it is {kind}, not a Python file (.py), a Jupyter notebook (.ipynb) or a package folder"
    if stat.S_ISDIR(mode):
        try:
            init = (entry / "__init__.py").lstat().st_mode
            if stat.S_ISREG(init):
                return ""
        except OSError:
            pass
        try:
            inside = sorted(p.name for p in entry.iterdir() if p.suffix in (".py", ".ipynb"))
        except OSError:
            inside = []
        holds = f" (it holds {', '.join(_printable(n) for n in inside[:3])}{', ...' if len(inside) > 3 else ''})"
        return (f"it is a folder without an __init__.py file{holds if inside else ''}: a folder is graded as a "
                f"package only; submit one .py file, a notebook, or a package folder with __init__.py")
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "an entry of an unknown kind")
    return f"it is {kind}, not a file that can be graded"


def _safe_name(name: str) -> str:
    """A report folder name from an entry's name: letters (any script), digits, '-', '_' and '.' kept,
    every other run of characters (spaces, brackets, control characters) one '_'; at most 60 characters,
    never empty, never hidden, never an option ("hw3 (1)" -> hw3_1, "élève" stays)."""
    safe = re.sub(r"[^\w.-]+", "_", name)
    safe = re.sub(r"_*([.-])_*", r"\1", safe).strip("_")  # "hw3 (1).py" -> hw3_1.py, not hw3_1_.py
    safe = safe[:60].lstrip(".-").rstrip(".")  # not hidden, not an option, no trailing dot (Windows drops it)
    return safe or "student"


def _printable(text: str, limit: int | None = 120) -> str:
    """A name as a terminal or a report may show it: bytes that are not UTF-8 (a name from a Windows zip)
    as '\ufffd', control characters (a newline, an escape) as '?'."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _arguments(submission: Submission, options: argparse.Namespace, template: str) -> list[str]:
    reports = submission.reports
    limits = limits_of(options)
    return suite_arguments({
        "worker-template": template,
        "impl": str(submission.path.resolve()),
        "conformance-profile": options.profile,
        "conformance-json": str(reports / "report.json"),
        "call-timeout": options.call_timeout,
        "rubric": str(Path(options.rubric).resolve()) if options.rubric else None,
        "gradescope": str(reports / "results.json"),
        "feedback": str(reports / "feedback.md"),
        "reveal-hidden": options.reveal_hidden,
        "grading": True,
        "junitxml": str(reports / "junit.xml"),
        "memory-mb": limits.memory_mb, "output-mb": limits.output_mb, "disk-mb": limits.disk_mb,
        "cpus": float(limits.cpus), "processes": limits.processes,
        "no-pictures": options.no_pictures,
    })


def limits_of(options: argparse.Namespace) -> Limits:
    return Limits(memory_mb=options.memory_mb, output_mb=options.output_mb, disk_mb=options.disk_mb, cpus=options.cpus,
                  processes=options.processes)


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
        f"# Feedback for {submission.student}\n\n**Score: 0**\n\nThe submission `{_printable(submission.path.name)}` "
        f"could not be graded ({verdict}).\n\n{note}\n",
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


def pictures_warning(no_pictures: bool) -> str:
    """What the terminal says, once for the whole batch, when feedback.md will lack its pictures because
    matplotlib cannot be imported (each log.txt says it too): the command that installs it; '' otherwise."""
    if no_pictures or pictures.matplotlib_available():
        return ""
    python = shlex.quote(sys.executable)
    return (f"warning: feedback.md will have no pictures of the weights: matplotlib cannot be imported by {python}\n"
            f"  install it: {python} -m pip install '{MATPLOTLIB}'   (in the project's clone: pip install -e "
            f"'.[teaching]')\n"
            f"  or grade with --no-pictures to leave them out without this warning")


def grade(options: argparse.Namespace) -> list[Submission]:
    folder, out = Path(options.submissions).resolve(), Path(options.out).resolve()
    entries, skipped = discover(folder)
    warning = pictures_warning(options.no_pictures)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if skipped:
        print(f"skipping {len(skipped)} entries that are no one's work (hidden files, caches): {', '.join(skipped)}")
    submissions = [Submission(e.student, e.path, out / e.student, problem=e.problem) for e in entries]
    if 2 * options.jobs > (os.cpu_count() or 1):  # judges sharing the CPUs sleep while their worker computes
        os.environ[ENV_SPIN] = "0"
    template = Template(limits_of(options))  # a grading template: it forks only sandboxed workers, on these limits
    try:
        warm_up_teaching()
        warm_up(options.profile)
        return _run(submissions, options, out, template.handle)
    finally:
        template.close()


def _run(submissions: list[Submission], options: argparse.Namespace, out: Path, template: str) -> list[Submission]:
    gradable = [s for s in submissions if not s.problem]
    done, progress = [], Progress(len(gradable))
    for submission in submissions:
        submission.reports.mkdir(parents=True, exist_ok=True)
        if submission.problem:  # a row at once, and no judge: nothing of it is ever opened
            submission.row = {"student": submission.student,
                              **_failure_row(submission, CANNOT_GRADE, submission.problem), "seconds": 0.0}
            done.append(submission)
            _print_row(submission.row)
        else:
            # its own temporary folder, removed by run_all however the judge ends (its worker's scratch dir)
            submission.judge = Judge(_arguments(submission, options, template), submission.reports / "log.txt",
                                     scratch=Path(tempfile.mkdtemp(prefix="attention-judge-")))
    by_judge = {id(s.judge): s for s in gradable}

    def finished(judge: Judge) -> None:
        submission = by_judge[id(judge)]
        try:
            row = _result_row(submission, options)
        except Exception as error:  # noqa: BLE001 - one student's odd report must not stop the batch
            row = _failure_row(submission, "crashed", f"its reports could not be read: {type(error).__name__}")
        submission.row = row = {"student": submission.student, **row, "seconds": round(judge.seconds, 1)}
        done.append(submission)
        progress.clear()
        _print_row(row)
        progress.finished_one()

    progress.show()  # the elapsed time moves on while students run
    run_all([s.judge for s in gradable], options.jobs, options.timeout, finished, tick=progress.show)
    done.sort(key=lambda s: s.student)
    # a submission that produced no report is out of the same maximum as the others
    maximum = max((s.row["max_score"] for s in done if s.row["max_score"] != ""), default="")
    for s in done:
        if s.row["max_score"] == "":
            s.row["max_score"] = maximum
        s.row["file"] = _printable(s.path.name, None)  # the entry as the class folder names it
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(s.row for s in done)
    return done


def _print_row(row: dict, width: int | None = None) -> None:
    """A line per student: name, verdict, score, time and the diagnosis (or why it was not graded), whole:
    a reason that does not fit the terminal's width goes on the lines below, wrapped and indented."""
    head = (f"{row['student']:<16} {row['verdict']:<20} {row['score']!s:>6} / {row['max_score']!s:<6} "
            f"{row['seconds']:>6.1f} s")
    reason = _printable(" ".join(str(row["diagnosis"] or row["note"]).split()), None)
    width = width or max(60, shutil.get_terminal_size((100, 24)).columns)
    if len(head) + 2 + len(reason) <= width:
        print(f"{head}  {reason}".rstrip(), flush=True)
    else:  # a path or a word longer than the width stays whole, so that it can be copied
        print(head, textwrap.fill(reason, width, initial_indent="    ", subsequent_indent="    ",
                                  break_long_words=False, break_on_hyphens=False), sep="\n", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance.teaching.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", help="folder with one .py file or package directory per student")
    parser.add_argument("--out", required=True, help="folder for the reports (created)")
    parser.add_argument("--rubric", default=None, help="course rubric (TOML): points, hidden clauses")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded at once")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one submission's whole run")
    parser.add_argument("--call-timeout", type=float, default=10, help="seconds for one call into a submission")
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb,
                        help="memory of a submission's processes together (and each one's address space)")
    parser.add_argument("--output-mb", type=int, default=Limits.output_mb, help="largest file a submission may write")
    parser.add_argument("--disk-mb", type=int, default=Limits.disk_mb,
                        help="all the files a submission writes together (its scratch dir is a tmpfs of that size)")
    parser.add_argument("--cpus", type=float, default=Limits.cpus,
                        help="a submission's share of the CPUs, all its processes together (classmates keep theirs)")
    parser.add_argument("--processes", type=int, default=Limits.processes,
                        help="processes and threads a submission may have at once")
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
    try:  # a rubric or course secret that cannot be used stops the batch here, not each student's run
        course_secret(load_rubric(Path(options.rubric) if options.rubric else None).seed, os.environ)
    except (RubricError, SecretError) as error:
        parser.error(str(error))
    start = time.perf_counter()
    done = grade(options)
    wall = time.perf_counter() - start
    print(f"graded {len(done)} submissions in {wall:.1f} s with {options.jobs} jobs; summary: {Path(options.out) / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
