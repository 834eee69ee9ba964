"""The self-attention specification as data.

`clauses.toml` is the one place where clause ids, titles, texts, points, the
public function list and the tolerance policy are written. Everything else
(the Markdown spec, the tests, the verdict table, the rubric) reads them
through this module.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SPEC_FILE = Path(__file__).with_name("clauses.toml")
LEVELS = ("MUST", "SHOULD")


class SpecError(ValueError):
    """clauses.toml is malformed (duplicate id, unknown section, ...)."""


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Clause:
    id: str
    section: str
    level: str
    points: float
    title: str
    text: str
    mistakes: str = ""
    prerequisites: tuple[str, ...] = ()  # clauses whose property this clause's tests rely on
    end_to_end: bool = False  # compares whole results with the reference: any mistake may fail it

    @property
    def normative(self) -> bool:
        return self.level == "MUST"


@dataclass(frozen=True)
class Function:
    name: str
    signature: str
    section: str


@dataclass(frozen=True)
class DtypePolicy:
    factor: float  # on the plain same-dtype reference's error, the second allowance


@dataclass(frozen=True)
class RoundingModel:
    """The error analysis' parameters (conformance/judge/rounding.py): facts of the arithmetic, not fits."""

    failure_probability: float  # per element and step, of the probabilistic bound
    extra_roundings: int  # per term of a sum, beyond a plain sum's
    online_roundings: int  # per term and tile of an online softmax, on sums over the keys
    function_ulps: float  # exp, tanh
    accumulation: dict[str, str]  # dtype -> the precision its sums accumulate in


@dataclass(frozen=True)
class Spec:
    title: str
    version: str
    notation: str
    sections: tuple[Section, ...]
    clauses: tuple[Clause, ...]
    functions: tuple[Function, ...]
    tolerance_text: str
    tolerance: dict[str, DtypePolicy]
    rounding: RoundingModel
    judging_text: str = ""  # how a failing example is explained or set aside (judge/readings.py, blocking.py)

    def clause(self, clause_id: str) -> Clause:
        for clause in self.clauses:
            if clause.id == clause_id:
                return clause
        raise KeyError(f"no clause {clause_id!r} in {SPEC_FILE.name}")

    def section(self, section_id: str) -> Section:
        for section in self.sections:
            if section.id == section_id:
                return section
        raise KeyError(f"no section {section_id!r} in {SPEC_FILE.name}")

    def clauses_of(self, section_id: str) -> tuple[Clause, ...]:
        return tuple(c for c in self.clauses if c.section == section_id)

    @property
    def function_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.functions)


def _text(value: str) -> str:
    return " ".join(value.split())


def parse(data: dict) -> Spec:
    """Build a Spec from the TOML document, rejecting inconsistent data."""
    sections = tuple(Section(s["id"], s["title"], _text(s["text"])) for s in data["section"])
    section_ids = [s.id for s in sections]
    clauses = []
    for raw in data["clause"]:
        clause = Clause(
            id=raw["id"],
            section=raw["section"],
            level=raw["level"],
            points=float(raw["points"]),
            title=raw["title"],
            text=_text(raw["text"]),
            mistakes=_text(raw.get("mistakes", "")),
            prerequisites=tuple(raw.get("prerequisites", ())),
            end_to_end=bool(raw.get("end_to_end", False)),
        )
        if clause.section not in section_ids:
            raise SpecError(f"clause {clause.id}: unknown section {clause.section!r}")
        if clause.level not in LEVELS:
            raise SpecError(f"clause {clause.id}: level must be one of {LEVELS}, not {clause.level!r}")
        if clause.points < 0:
            raise SpecError(f"clause {clause.id}: points must be >= 0")
        clauses.append(clause)
    ids = [c.id for c in clauses]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SpecError(f"duplicate clause ids: {', '.join(duplicates)}")
    for clause in clauses:
        unknown = [p for p in clause.prerequisites if p not in ids or p == clause.id]
        if unknown:
            raise SpecError(f"clause {clause.id}: prerequisites must be other clause ids, not {unknown}")
    functions = tuple(Function(f["name"], f["signature"], f["section"]) for f in data["function"])
    tolerance = {
        name: DtypePolicy(float(p["factor"]))
        for name, p in data["tolerance"]["dtype"].items()
    }
    model = data["tolerance"]["model"]
    if not 0 < float(model["failure_probability"]) < 1:
        raise SpecError("tolerance.model.failure_probability must be in (0, 1)")
    unknown = sorted(set(model.get("accumulation", {})) - set(tolerance))
    if unknown:
        raise SpecError(f"tolerance.model.accumulation names dtypes without a policy: {unknown}")
    rounding = RoundingModel(float(model["failure_probability"]), int(model["extra_roundings"]),
                             int(model["online_roundings"]), float(model["function_ulps"]),
                             dict(model.get("accumulation", {})))
    return Spec(
        title=data["title"],
        version=str(data["version"]),
        notation=_text(data["notation"]["text"]),
        sections=sections,
        clauses=tuple(clauses),
        functions=functions,
        tolerance_text=data["tolerance"]["text"].strip("\n"),
        judging_text=data.get("judging", {}).get("text", "").strip("\n"),
        tolerance=tolerance,
        rounding=rounding,
    )


@cache
def load() -> Spec:
    """The specification shipped with this package (parsed once)."""
    with SPEC_FILE.open("rb") as handle:
        return parse(tomllib.load(handle))
