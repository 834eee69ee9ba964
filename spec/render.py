"""Render the specification as Markdown (spec/SPEC.md is this output)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spec import Spec


def render_markdown(spec: Spec, verified_by: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole specification as one Markdown document.

    verified_by maps clause ids to the tests that check them; it is derived
    from the test code, never written by hand.
    """
    out: list[str] = [
        f"# {spec.title} (version {spec.version})",
        "",
        "<!-- Generated from spec/clauses.toml by `python -m spec render`; edit that file, not this one. -->",
        "",
        "Clauses marked **MUST** decide conformance; **SHOULD** clauses are reported and scored but do not.",
        "",
        "## Notation",
        "",
        spec.notation,
        "",
        "## Functions",
        "",
        "An implementation provides any subset of these; the suite checks what it provides.",
        "",
    ]
    out += [f"- `{f.signature}`" for f in spec.functions]
    for number, section in enumerate(spec.sections, start=1):
        out += ["", f"## {number}. {section.title}", "", section.text]
        for clause in spec.clauses_of(section.id):
            out += ["", f"### {clause.id} ({clause.level}, {clause.points:g} pt): {clause.title}", "", clause.text]
            if clause.mistakes:
                out += ["", f"*Common mistakes:* {clause.mistakes}"]
            if clause.prerequisites:
                out += ["", f"*Judged once these hold:* {', '.join(clause.prerequisites)}"]
            if clause.end_to_end:
                out += ["", "*End to end:* compares whole results with the reference, so any mistake may fail it."]
            if verified_by is not None:
                tests = ", ".join(f"`{t}`" for t in sorted(verified_by.get(clause.id, ()))) or "**none**"
                out += ["", f"*Verified by:* {tests}"]
    if spec.judging_text:
        out += ["", "## Judging", "", spec.judging_text]
    model = spec.rounding
    out += ["", "## Tolerance policy", "", spec.tolerance_text, "", "| dtype | factor | accumulates in |", "|---|---|---|"]
    out += [f"| {name} | {p.factor:g} | {model.accumulation.get(name, name)} |" for name, p in spec.tolerance.items()]
    out += ["", "| parameter | value |", "|---|---|",
            f"| failure_probability | {model.failure_probability:g} |",
            f"| extra_roundings | {model.extra_roundings} |",
            f"| online_roundings | {model.online_roundings} |",
            f"| function_ulps | {model.function_ulps:g} |"]
    return "\n".join(out) + "\n"
