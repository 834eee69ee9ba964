"""Per-submission batch grading time: this checkout's grader against an earlier one's.

    python benchmarks/grading_time.py [--baseline REF] [--target 1.5] [--jobs 2] [--repeat 2] [--profile fast]

Grades the honest and one-mistake students of tests/submissions (the ones both graders grade the same
way) with this checkout's `conformance.teaching.batch` (judge/worker split, sandbox, worker template)
and with the grader of REF, checked out into a temporary git worktree, alternating, in one run. REF is
af9e158 by default, the last commit before the judge/worker split (target: at most 1.5x); with
`--baseline c2b8156 --target 1.2`, the grader before the private root, cgroups and disk quota. Prints
each run's wall time, the time per submission, and the ratio. Timing lives here, never in a test.

Both grade with the profile `fast` (no shrinking), so that the ratio compares graders; `--profile grade`
grades this checkout with batch grading's default profile instead (failures shrunk within bounds), to
measure what shrinking costs (the baseline, which has no such profile, stays on fast).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "af9e158"
# the misbehaving samples (hangs, floods, exits, cheats) take the time of their limits, not of grading
STUDENTS = ("alice", "bob", "carol_numpy", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
            "niaj", "olivia", "peggy")


def class_folder(root: Path) -> Path:
    folder = root / "class"
    folder.mkdir()
    for student in STUDENTS:
        source = REPO / "tests" / "submissions" / student
        if source.is_dir():
            shutil.copytree(source, folder / student)
        else:
            shutil.copy(source.with_suffix(".py"), folder / f"{student}.py")
    return folder


def grade(tree: Path, module: str, folder: Path, out: Path, jobs: int, profile: str = "fast") -> float:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    if tree != REPO:  # the installed entry point names this checkout's plugin module: load the tree's own
        old_plugin = "conformance.judge.pytest_plugin" if (tree / "conformance" / "judge").is_dir() else "conformance.pytest_plugin"
        environment.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTEST_ADDOPTS=f"-p {old_plugin}")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, str(folder), "--out", str(out), "--jobs", str(jobs), "--profile", profile],
        cwd=tree, env=environment, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{module} in {tree} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the grader to compare with")
    parser.add_argument("--target", type=float, default=1.5, help="the ratio this checkout should stay under")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", default="fast", help="hypothesis profile of this checkout's grader (default fast)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grading-time-") as scratch:
        root = Path(scratch)
        old_tree = root / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.baseline], cwd=REPO, check=True,
                       capture_output=True)
        try:
            old_module = ("conformance.teaching.batch" if (old_tree / "conformance" / "teaching").is_dir()
                          else "conformance.batch")
            folder = class_folder(root)
            baseline = f"baseline {args.baseline}"
            times: dict[str, list[float]] = {baseline: [], "this checkout": []}
            for run in range(args.repeat):
                for label, tree, module in ((baseline, old_tree, old_module),
                                            ("this checkout", REPO, "conformance.teaching.batch")):
                    profile = args.profile if tree == REPO else "fast"
                    seconds = grade(tree, module, folder, root / f"out-{run}-{len(times[label])}-{label[:3]}", args.jobs,
                                    profile)
                    times[label].append(seconds)
                    print(f"run {run + 1}: {label:<24} {seconds:6.1f} s  {seconds / len(STUDENTS):5.2f} s per submission",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, capture_output=True)
    medians = {label: statistics.median(values) for label, values in times.items()}
    old, new = medians[f"baseline {args.baseline}"], medians["this checkout"]
    print(f"{len(STUDENTS)} submissions, {args.jobs} jobs, {os.cpu_count()} CPUs, profile {args.profile} "
          f"(baseline: fast), median of {args.repeat}:")
    print(f"  baseline {args.baseline} {old / len(STUDENTS):.2f} s per submission; this checkout "
          f"{new / len(STUDENTS):.2f} s per submission; ratio {new / old:.2f} (target <= {args.target:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
