"""Judges forked from one warm process, several at a time: what batch grading and the mutation matrix use.

A judge started as `python -m conformance` spends about 4 s importing torch, the suite and the golden data
before its first test. Forked from a parent that imported them once, it starts at once; each child is
still its own process (one judge's state never reaches the next), runs the same pytest arguments as the
command line, and writes its output to its own log. The submission still runs in its worker, never here.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.judge.profiles import bound_shrinking


@dataclass
class Judge:
    """One forked judge: its pytest arguments and log, then how it ended."""

    arguments: list[str]
    log: Path
    scratch: Path | None = None  # its temporary files (a worker's scratch dir) go here; removed when it ends
    pid: int = 0
    started: float = 0.0
    seconds: float = 0.0
    status: int = 0  # os.waitpid's status
    timed_out: bool = False


def warm_up(profile: str) -> None:
    """Import everything the judge needs once, in this parent, so each forked judge starts warm (a plugin
    above warms its own part: conformance.teaching.pytest_plugin.warm_up).

    The hypothesis profile is loaded first: settings given at decoration time inherit from it.
    """
    from hypothesis import settings

    import conformance.judge.pytest_plugin  # noqa: F401
    import conformance.tests

    settings.load_profile(f"conformance-{profile}")
    bound_shrinking(profile)  # in this parent: every forked judge inherits the bounds
    for module in sorted(Path(conformance.tests.__file__).parent.glob("test_*.py")):
        importlib.import_module(f"conformance.tests.{module.stem}")


def _child(judge: Judge) -> None:
    """In the forked judge: output to its log, then the suite."""
    code = 70  # EX_SOFTWARE, if anything below fails before pytest reports
    try:
        os.setpgrp()  # its own process group, so a timeout ends the judge and the worker template's child
        if judge.scratch is not None:
            os.environ["TMPDIR"] = tempfile.tempdir = str(judge.scratch)
        log = os.open(judge.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = int(pytest.main(judge.arguments))
    except BaseException:  # noqa: BLE001 - the child must always end through os._exit
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_all(
    judges: Sequence[Judge],
    jobs: int,
    timeout: float,
    finished: Callable[[Judge], None],
    tick: Callable[[], None] | None = None,
) -> None:
    """Run the judges, `jobs` at a time, in order; a judge past `timeout` seconds is killed with its process
    group. `finished` is called in this parent as each one ends; `tick` about once a second meanwhile."""
    waiting, running, ticked = list(judges), {}, time.monotonic()
    while waiting or running:
        while waiting and len(running) < jobs:
            judge = waiting.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            judge.started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                _child(judge)
            judge.pid = pid
            running[pid] = judge
        time.sleep(0.05)
        if tick is not None and time.monotonic() - ticked >= 1.0:
            tick()
            ticked = time.monotonic()
        for pid, judge in list(running.items()):
            ended, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.perf_counter() - judge.started
            if ended == 0 and elapsed > timeout:
                judge.timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # killed before its setpgrp
                    os.kill(pid, signal.SIGKILL)
                ended, status = os.waitpid(pid, 0)
            if ended:
                judge.status, judge.seconds = status, elapsed
                del running[pid]
                if judge.scratch is not None:  # also when the judge was killed before its own cleanup
                    shutil.rmtree(judge.scratch, ignore_errors=True)
                finished(judge)
