"""Batch grading's progress: a bar redrawn on a terminal, plain lines in a CI log, an honest estimate."""

from __future__ import annotations

import io

from conformance.teaching.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_estimate_follows_the_pace_so_far():
    clock = Clock()
    progress = Progress(4, io.StringIO(), clock)
    assert progress.line() == "[------------------------] 0/4 students, 0s elapsed"
    clock.now += 30
    progress.finished_one()
    assert progress.line() == "[######------------------] 1/4 students, 30s elapsed, about 1m30s left"
    clock.now += 30
    progress.finished_one()
    progress.finished_one()
    progress.finished_one()
    assert progress.line() == "[########################] 4/4 students, 1m00s elapsed"  # done: no estimate


def test_a_log_gets_one_plain_line_per_student():
    log, clock = io.StringIO(), Clock()
    progress = Progress(2, log, clock)
    progress.show()
    progress.clear()  # neither draws anything where nothing can be redrawn
    progress.finished_one()
    progress.finished_one()
    assert log.getvalue().splitlines() == [
        "progress: [############------------] 1/2 students, 0s elapsed, about 0s left",
        "progress: [########################] 2/2 students, 0s elapsed",
    ]


def test_a_terminal_gets_one_bar_redrawn_in_place_and_cleared_for_other_lines():
    screen = Terminal()
    progress = Progress(2, screen, Clock())
    progress.show()
    progress.clear()
    progress.finished_one()
    progress.finished_one()
    text = screen.getvalue()
    assert "\n" not in text[:-1] and text.endswith("2/2 students, 0s elapsed\n")
    assert text.count("\r\033[K") == 4  # drawn, cleared, redrawn twice
