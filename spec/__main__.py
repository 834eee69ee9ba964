"""`python -m spec render` rewrites spec/SPEC.md; `python -m spec check` fails if it is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import spec
from spec.render import render_markdown

SPEC_MD = Path(spec.__file__).with_name("SPEC.md")


def rendered() -> str:
    from conformance.judge.traceability import (
        clause_tests,  # the mapping comes from the tests
    )

    return render_markdown(spec.load(), clause_tests())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spec", description=__doc__)
    parser.add_argument("command", choices=["render", "check"])
    args = parser.parse_args(argv)
    text = rendered()
    if args.command == "render":
        SPEC_MD.write_text(text, encoding="utf-8")
        print(f"wrote {SPEC_MD}")
        return 0
    if not SPEC_MD.exists() or SPEC_MD.read_text(encoding="utf-8") != text:
        print(f"{SPEC_MD} is out of date with clauses.toml or the tests; run `python -m spec render`", file=sys.stderr)
        return 1
    print(f"{SPEC_MD} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
