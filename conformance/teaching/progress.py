"""Progress of batch grading: students done out of the total, elapsed time and an estimate of what is left.

On a terminal it is one bar, redrawn in place (on stderr, so that stdout keeps one line per student);
in a CI log, where nothing can be redrawn, it is a plain line after each student.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 24  # characters of the bar


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.clock = clock
        self.start = clock()
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False

    def line(self) -> str:
        """'[#####-----] 7/22 students, 1m12s elapsed, about 2m30s left' (no estimate before the first)."""
        elapsed = self.clock() - self.start
        filled = WIDTH * self.done // max(1, self.total)
        left = ""
        if 0 < self.done < self.total:
            left = f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return (f"[{'#' * filled}{'-' * (WIDTH - filled)}] {self.done}/{self.total} students, "
                f"{_duration(elapsed)} elapsed{left}")

    def clear(self) -> None:
        """Take the bar off the terminal before something else is printed."""
        if self.live and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def show(self) -> None:
        """Draw the bar again (terminal only): to keep the elapsed time moving while students run."""
        if self.live:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
            self._drawn = True

    def finished_one(self) -> None:
        self.done += 1
        if self.live:
            self.show()
            if self.done == self.total:
                self.stream.write("\n")
                self._drawn = False
        else:
            print(f"progress: {self.line()}", file=self.stream, flush=True)
