"""A Gradescope autograder bundle: `python -m conformance.autograder --rubric course.toml -o autograder.zip`.

Upload the zip as a Gradescope programming assignment's autograder. Gradescope unpacks it into
/autograder/source, runs setup.sh once when it builds the image, and runs run_autograder in a fresh
container per submission. The bundle holds:

    setup.sh           a Python >= 3.11 virtual environment in /autograder/venv with requirements.txt
    requirements.txt   torch (the CPU build), numpy, hypothesis and pytest, pinned to this machine's versions
    run_autograder     grades /autograder/submission into /autograder/results/results.json
    course.toml        the rubric (with its seed, the course secret, if it has one: keep the zip private)
    suite/             the suite itself (conformance, spec, golden, impl), as this machine has it

A submission is one .py file, one notebook (.ipynb) or one package folder (the submission folder itself
with an __init__.py, or one folder in it). It is graded as `python -m conformance --grading` grades it:
in the grading sandbox, with the rubric; anything else (nothing to grade, several candidates) is a
results.json with score 0 that says what was found. Under the profile grade the examples are drawn from
the rubric's seed, or from $CONFORMANCE_GRADING_SEED where the container sets it (the judge reads it; the
worker's environment never holds it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

SUITE_PACKAGES = ("conformance", "spec", "golden", "impl")
REQUIREMENTS = ("torch", "numpy", "hypothesis", "pytest")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SKIPPED = {"__pycache__", ".hypothesis", ".pytest_cache"}
NOT_CODE = re.compile(r"\.(md|txt|pdf|png|jpe?g|csv|json|toml|ya?ml)$", re.IGNORECASE)  # a README or data beside it

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image: a virtual environment with a
# Python of at least 3.11 (installed with apt where the image has none) and the pinned requirements.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PYTHON="$candidate"
        break
    fi
done
if [ -z "$PYTHON" ]; then
    apt-get update
    apt-get install -y python3.11 python3.11-venv
    PYTHON=python3.11
fi
"$PYTHON" -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --upgrade pip
"$ROOT/venv/bin/python" -m pip install -r "$ROOT/source/requirements.txt"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this in a fresh container for each submission: /autograder/submission is graded into
# /autograder/results/results.json ({options}).
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
cd "$ROOT/source"
PYTHONPATH="$ROOT/source/suite${{PYTHONPATH:+:$PYTHONPATH}}" exec "$PYTHON" -m conformance.autograder run \\
    --root "$ROOT" --rubric "$ROOT/source/course.toml"{arguments}
"""


# ------------------------------------------------------------------------------------------ the bundle
def requirements() -> str:
    """The pinned requirements: this machine's versions; torch's CPU build (a GPU is not used to grade)."""
    lines = ["# the versions `python -m conformance.autograder` was run with; torch's CPU build",
             f"--extra-index-url {TORCH_CPU_INDEX}"]
    for name in REQUIREMENTS:
        version = importlib.metadata.version(name).split("+")[0]  # "2.13.0+cpu": the index picks the build
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def _add_tree(archive: zipfile.ZipFile, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not SKIPPED & set(relative.parts) and path.suffix != ".pyc":
            archive.write(path, f"{prefix}/{relative.as_posix()}")


def _add_text(archive: zipfile.ZipFile, name: str, text: str, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, text)


def build(rubric: Path, out: Path, profile: str, call_timeout: float | None) -> list[str]:
    """Write the bundle; returns its entries."""
    import conformance

    suite_root = Path(conformance.__file__).resolve().parents[1]
    arguments = f" \\\n    --profile {profile}" + (f" --call-timeout {call_timeout:g}" if call_timeout else "")
    options = f"profile {profile}" + (f", {call_timeout:g} s per call" if call_timeout else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        _add_text(archive, "setup.sh", SETUP, executable=True)
        _add_text(archive, "run_autograder", RUN.format(options=options, arguments=arguments), executable=True)
        _add_text(archive, "requirements.txt", requirements())
        _add_text(archive, "course.toml", rubric.read_text(encoding="utf-8"))
        for package in SUITE_PACKAGES:
            _add_tree(archive, suite_root / package, f"suite/{package}")
        return archive.namelist()


# ---------------------------------------------------------------------------- grading one submission
def find_submission(folder: Path) -> tuple[Path | None, str]:
    """What to grade in Gradescope's submission folder, or None with the reason."""
    if not folder.is_dir():
        return None, f"there is no submission folder ({folder})"
    if (folder / "__init__.py").is_file():
        return folder, ""
    entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith((".", "_"))]
    packages = [e for e in entries if e.is_dir() and (e / "__init__.py").is_file()]
    files = [e for e in entries if e.is_file() and e.suffix in (".py", ".ipynb")]
    candidates = packages + files
    if len(candidates) == 1:
        return candidates[0], ""
    found = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries if not NOT_CODE.search(e.name)) or "nothing"
    if not candidates:
        return None, f"no .py file, notebook (.ipynb) or package folder was submitted (found: {found})"
    return None, (f"submit one .py file, one notebook (.ipynb) or one package folder with an __init__.py; "
                  f"found several: {found}")


def _failure(results: Path, message: str) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    document = {"score": 0, "output": f"The submission could not be graded: {message}", "tests": []}
    results.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _plugin_arguments() -> list[str]:
    """`-p conformance.pytest_entry` where the suite is on the path but not installed (the bundle)."""
    installed = any(e.value == "conformance.pytest_entry" for e in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "conformance.pytest_entry"]


def run(root: Path, rubric: Path, profile: str, call_timeout: float | None) -> int:
    """Grade root/submission into root/results/results.json; always leaves a valid results.json."""
    import conformance

    results = root / "results" / "results.json"
    print(f"suite: {Path(conformance.__file__).resolve().parent}", flush=True)
    target, problem = find_submission(root / "submission")
    if target is None:
        print(problem)
        _failure(results, problem)
        return 0
    command = [sys.executable, "-m", "conformance", "--impl", str(target), "--grading", "--rubric", str(rubric),
               "--gradescope", str(results), "--profile", profile, *_plugin_arguments()]
    if call_timeout:
        command += ["--call-timeout", str(call_timeout)]
    if results.exists():
        results.unlink()
    done = subprocess.run(command, capture_output=True, text=True, cwd=root)
    print(done.stdout + done.stderr, flush=True)  # Gradescope shows this to the course staff
    if not results.is_file():
        from conformance.judge.report import load_failure

        _failure(results, load_failure(done.stdout + done.stderr)
                 or f"the grader ended with exit status {done.returncode} without a result")
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["run"]:  # inside Gradescope's container (run_autograder)
        parser = argparse.ArgumentParser(prog="python -m conformance.autograder run")
        parser.add_argument("--root", type=Path, default=Path("/autograder"))
        parser.add_argument("--rubric", type=Path, required=True)
        parser.add_argument("--profile", default="grade")
        parser.add_argument("--call-timeout", type=float, default=None)
        options = parser.parse_args(arguments[1:])
        return run(options.root, options.rubric, options.profile, options.call_timeout)
    from conformance.judge.profiles import PROFILES
    from conformance.teaching.rubric import RubricError, load_rubric

    parser = argparse.ArgumentParser(prog="python -m conformance.autograder",
                                     description="Write a Gradescope autograder bundle (a zip) for a course rubric.")
    parser.add_argument("--rubric", type=Path, required=True, help="the course rubric (TOML)")
    parser.add_argument("-o", "--out", type=Path, default=Path("autograder.zip"), help="the zip to write")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="grade", help="hypothesis profile (default grade)")
    parser.add_argument("--call-timeout", type=float, default=None, help="seconds per call into a submission")
    options = parser.parse_args(arguments)
    try:
        rubric = load_rubric(options.rubric)
    except RubricError as error:
        parser.error(str(error))
    if options.out.is_dir():
        parser.error(f"{options.out} is a folder; name the zip to write (e.g. -o autograder.zip)")
    entries = build(options.rubric, options.out, options.profile, options.call_timeout)
    size = os.path.getsize(options.out)
    print(f"wrote {options.out} ({len(entries)} files, {size / 1e6:.1f} MB): setup.sh, run_autograder, "
          f"requirements.txt, course.toml, suite/; upload it as the assignment's autograder")
    if rubric.seed:
        from conformance.judge.secret import SECRET_PROFILES

        applies = ("its examples are drawn from it" if options.profile in SECRET_PROFILES else
                   f"it applies to --profile {', '.join(sorted(SECRET_PROFILES))} only, not {options.profile}")
        print(f"course.toml holds the course secret (seed): {applies}; keep the zip private")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
