"""`python -m conformance` / `attention-conformance`: run the suite on one implementation.

Everything after the known options is passed to pytest, so `-x`, `-k weights`
or `--junitxml=out.xml` work as usual.
"""

from __future__ import annotations

import argparse
import os

import pytest

import spec
from conformance import DEFAULT_IMPL, ENV_IMPL, parts
from conformance.judge.invocation import suite_arguments
from conformance.judge.profiles import PROFILES
from conformance.judge.secret import withheld
from conformance.judge.workers import plain_config, prestart
from conformance.teaching.rubric import RubricError, load_rubric


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Check an attention implementation against the spec and the golden run.",
        epilog="Unknown arguments are passed on to pytest (e.g. -x, -k causal, --junitxml=report.xml).",
    )
    parser.add_argument(
        "--impl",
        default=None,
        help=f"module, module:object, file.py or package directory (default: ${ENV_IMPL} or '{DEFAULT_IMPL}')",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None, help="hypothesis profile (default ci)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write clause verdicts as JSON")
    parser.add_argument("--call-timeout", type=float, default=None, metavar="SECONDS", help="limit per call")
    teaching = parser.add_argument_group("teaching")
    teaching.add_argument("--rubric", default=None, metavar="PATH", help="course rubric: points, hidden clauses (TOML)")
    teaching.add_argument("--gradescope", default=None, metavar="PATH", help="write Gradescope's results.json")
    teaching.add_argument("--feedback", default=None, metavar="PATH", help="write Markdown feedback for the student")
    teaching.add_argument("--plots", default=None, metavar="DIR",
                          help="draw the weights on the seed sentence, yours next to the expected ones, as PNGs in DIR")
    teaching.add_argument("--reveal-hidden", action="store_true", help="show hidden clauses to the student")
    teaching.add_argument("--grading", action="store_true",
                          help="grading sandbox: the submission runs from a copy, cannot read the suite, has limits")
    parser.add_argument("--worker-template", default=None, metavar="FD",
                        help="fork the worker from the worker template behind this inherited descriptor "
                             "(batch grading and the mutation matrix start one)")
    parser.add_argument("--in-process", action="store_true",
                        help="debugging only: run the implementation inside the judge (pdb works; no isolation)")
    return parser


def pytest_arguments(args: argparse.Namespace, extra: list[str]) -> list[str]:
    return suite_arguments({
        "impl": args.impl, "conformance-profile": args.profile, "conformance-json": args.json,
        "call-timeout": args.call_timeout, "rubric": args.rubric, "gradescope": args.gradescope,
        "feedback": args.feedback, "plots": args.plots, "worker-template": getattr(args, "worker_template", None),
        "reveal-hidden": args.reveal_hidden, "grading": args.grading, "in-process": args.in_process,
    }, extra)


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    parts.keep()  # this process runs the suite: `spec`, `golden`, `impl` stay its own (not the current folder's)
    if not (args.in_process or args.grading or args.worker_template):
        # the worker imports torch and the implementation while this process imports the suite
        target = args.impl or os.environ.get(ENV_IMPL) or DEFAULT_IMPL
        config = plain_config(target, list(spec.load().function_names))
        try:
            config.forbid = sorted(load_rubric(args.rubric).forbid) if args.rubric else []
        except RubricError:
            config = None  # the plugin reports the rubric's problem
        if config is not None:
            with withheld():  # the worker inherits this environment: never the course secret
                prestart(config)
    return int(pytest.main(pytest_arguments(args, extra)))
