"""pytest's command line for one run of the suite, for every process that starts one (the command
line, batch grading, the mutation matrix): the suite's tests from a fixed rootdir, then the options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ROOTDIR = Path(__file__).resolve().parent.parent / "tests"  # conformance/tests


def suite_arguments(options: Mapping[str, str | float | bool | None], extra: list[str] = ()) -> list[str]:
    """The arguments, options given by their pytest names without dashes: {"impl": "x.py", "grading": True}
    -> [..., "--impl", "x.py", "--grading"]; None and False are left out."""
    # a fixed rootdir keeps test ids short and independent of where --impl points
    arguments = ["--pyargs", "conformance.tests", f"--rootdir={ROOTDIR}", "-p", "no:cacheprovider", "-q"]
    # the calling process imported the suite before pytest could mark it for assertion rewriting; it uses none
    arguments += ["--no-header", "-o", "addopts=", "-rfE", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    for name, value in options.items():
        if value is True:
            arguments.append(f"--{name}")
        elif value is not None and value is not False:
            arguments += [f"--{name}", f"{value:g}" if isinstance(value, float) else str(value)]
    return arguments + list(extra)
