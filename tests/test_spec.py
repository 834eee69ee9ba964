"""The specification data: well formed, rendered document in sync, loader rejects bad data."""

from __future__ import annotations

import copy
import tomllib

import pytest

import spec
from spec.__main__ import SPEC_MD, rendered


@pytest.fixture(scope="module")
def raw():
    with spec.SPEC_FILE.open("rb") as handle:
        return tomllib.load(handle)


def test_every_clause_has_text_title_and_a_known_section():
    loaded = spec.load()
    section_ids = {s.id for s in loaded.sections}
    assert loaded.clauses, "no clauses"
    for clause in loaded.clauses:
        assert clause.section in section_ids
        assert clause.title and clause.text, clause.id
        assert clause.level in spec.LEVELS


def test_spec_md_is_rendered_from_the_data():
    assert SPEC_MD.read_text(encoding="utf-8") == rendered(), "run `python -m spec render`"


def test_tolerance_policy_covers_every_dtype():
    from conformance.judge.capabilities import DTYPES

    assert set(spec.load().tolerance) == set(DTYPES)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["clause"].append(copy.deepcopy(d["clause"][0])), "duplicate clause ids"),
        (lambda d: d["clause"][0].update(section="nowhere"), "unknown section"),
        (lambda d: d["clause"][0].update(level="MAY"), "level must be one of"),
        (lambda d: d["clause"][0].update(points=-1), "points must be >= 0"),
    ],
)
def test_inconsistent_spec_data_is_rejected(raw, mutate, message):
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(spec.SpecError, match=message):
        spec.parse(data)


def test_unknown_clause_id_is_an_error():
    with pytest.raises(KeyError, match="NO-SUCH-CLAUSE"):
        spec.load().clause("NO-SUCH-CLAUSE")
