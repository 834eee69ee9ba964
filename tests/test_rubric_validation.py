"""A rubric is read strictly: each mistake a teacher makes when pasting the README's rubric snippets is refused
with the line, the key, where it landed and what was meant, never read as a rubric without that rule."""

from __future__ import annotations

import re

import pytest

from conformance.teaching.rubric import Rubric, RubricError, key_lines, load_rubric
from tests.conftest import REPO

SECRET = "5f0c8a1e9b7d4c3a2e6f8b0d1c9a7e5f"  # stands for the README's seed = "..." placeholder


def readme_snippets() -> list[str]:
    """The ```toml blocks of the README's teaching section, as a teacher copies them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Teaching", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```toml\n(.*?)```", section, re.DOTALL)


def course(snippets: list[str]) -> tuple[str, str]:
    """(the main rubric snippet with its seed filled in, the forbid snippet)."""
    main = next(s for s in snippets if "[points]" in s)
    rule = next(s for s in snippets if s.lstrip().startswith("forbid"))
    return main.replace('seed = "..."', f'seed = "{SECRET}"'), rule


def load(tmp_path, text: str) -> Rubric:
    path = tmp_path / "course.toml"
    path.write_text(text, encoding="utf-8")
    return load_rubric(path)


def refused(tmp_path, text: str) -> str:
    with pytest.raises(RubricError) as error:
        load(tmp_path, text)
    return str(error.value)


def test_the_readmes_rubric_snippets_load(tmp_path):
    snippets = readme_snippets()
    assert len(snippets) >= 2, "the README's teaching section shows a rubric and the forbid rule"
    main, rule = course(snippets)
    rubric = load(tmp_path, main)
    assert rubric.title and rubric.functions and rubric.seed == SECRET
    assert rubric.points["WEIGHTS-SCALE"] == 5 and rubric.hidden == {"NUM-ACCURACY"}
    assert load(tmp_path, rule).forbid == {"torch.nn.functional.scaled_dot_product_attention",
                                           "torch.nn.MultiheadAttention"}
    together = load(tmp_path, rule + main)  # where the rule belongs: at the top
    assert together.forbid and together.hidden == {"NUM-ACCURACY"} and together.points["WEIGHTS-SCALE"] == 5


def test_the_seed_placeholder_pasted_as_is_is_refused_without_repeating_it(tmp_path):
    main = next(s for s in readme_snippets() if "[points]" in s)
    message = refused(tmp_path, main)
    line = main.splitlines().index(next(l for l in main.splitlines() if l.startswith("seed"))) + 1
    assert f"line {line}: seed is shorter than 16 characters" in message and "secrets.token_hex" in message


def test_forbid_pasted_at_the_end_lands_in_hidden_and_is_refused(tmp_path):
    """Issue 18: the rule went into [hidden], was ignored, and SDPA scored 47/49."""
    main, rule = course(readme_snippets())
    text = main.rstrip("\n") + "\n" + rule
    message = refused(tmp_path, text)
    line = len(main.rstrip("\n").splitlines()) + 1
    first_table = next(n for n, l in enumerate(text.splitlines(), 1) if l.startswith("[points]"))
    assert f"line {line}: `forbid` belongs at the top of the file, before the first [table]; here it is inside " \
           f"[hidden]" in message
    assert f"Move it above the first [table] (line {first_table})" in message


def test_forbid_pasted_after_the_points_is_refused(tmp_path):
    main, rule = course(readme_snippets())
    at_points = main.replace("WEIGHTS-SCALE = 5\n", "WEIGHTS-SCALE = 5\n" + rule)
    assert "`forbid` belongs at the top of the file" in refused(tmp_path, at_points)
    assert "here it is inside [points]" in refused(tmp_path, at_points)


@pytest.mark.parametrize("line", ['title = "CS 123, homework 4"', 'functions = ["self_attention"]',
                                  f'seed = "{SECRET}"'])
def test_a_top_key_added_at_the_end_is_refused_without_its_value(tmp_path, line):
    key = line.split()[0]
    message = refused(tmp_path, "[points]\nWEIGHTS-SCALE = 5\n[hidden]\nclauses = []\n" + line + "\n")
    assert f"line 5: `{key}` belongs at the top of the file, before the first [table]; here it is inside [hidden]" \
        in message
    assert SECRET not in message  # a misplaced secret is not printed in the error


def test_hidden_clauses_without_their_table_are_refused(tmp_path):
    message = refused(tmp_path, 'title = "HW"\nclauses = ["NUM-ACCURACY"]\n')
    assert "line 2: `clauses` belongs in [hidden]" in message


def test_clause_points_without_their_table_are_refused(tmp_path):
    message = refused(tmp_path, 'title = "HW"\nWEIGHTS-SCALE = 5\n')
    assert "line 2: `WEIGHTS-SCALE` is a clause outside any table: a clause's points go in [points]" in message


def test_hidden_written_as_a_list_is_refused_with_the_table_to_write(tmp_path):
    message = refused(tmp_path, 'hidden = ["NUM-ACCURACY"]\n')
    assert "line 1: `hidden` must be a table" in message and '[hidden]\nclauses = ["NUM-ACCURACY"]' in message


def test_one_key_per_hidden_clause_is_refused(tmp_path):
    message = refused(tmp_path, "[hidden]\nNUM-ACCURACY = true\n")
    assert 'line 2: [hidden] lists the hidden clauses in one key, clauses = ["NUM-ACCURACY", ...]' in message


def test_hidden_clauses_as_a_string_are_refused(tmp_path):
    message = refused(tmp_path, '[hidden]\nclauses = "NUM-ACCURACY"\n')
    assert "line 2: [hidden] clauses must be a list of clause ids" in message


@pytest.mark.parametrize("text, line, meant", [
    ("[points]\nWEIGHT-SCALE = 5\n", 2, "WEIGHTS-SCALE"),
    ('[hidden]\nclauses = ["num-accuracy"]\n', 2, "NUM-ACCURACY"),
    ('[hidden]\nclauses = [\n  "NUM-ACCURACY",\n  "API-BACH",\n]\n', 2, "API-BATCH"),
])
def test_a_misspelt_clause_id_is_refused_with_what_was_meant_and_the_ids(tmp_path, text, line, meant):
    message = refused(tmp_path, text)
    assert f"line {line}:" in message and f"did you mean {meant}" in message
    assert "Clause ids (spec/SPEC.md): TOK-VOCAB, " in message and "GOLD-CROSS" in message


@pytest.mark.parametrize("text, words", [
    ('[points]\nWEIGHTS-SCALE = "5"\n', "line 2: points for WEIGHTS-SCALE must be a number >= 0"),
    ("[points]\nWEIGHTS-SCALE = -1\n", "line 2: points for WEIGHTS-SCALE must be a number >= 0"),
    ('forbid = "torch.nn.functional.scaled_dot_product_attention"\n', "line 1: forbid must be a list of dotted names"),
    ('forbid = ["scaled_dot_product_attention"]\n', "line 1: forbid must be a list of dotted names"),
    ("title = 4\n", "line 1: title must be a string"),
    ('functions = "self_attention"\n', "line 1: functions must be a non-empty list of function names"),
])
def test_a_value_of_the_wrong_type_is_refused_with_what_is_allowed(tmp_path, text, words):
    assert words in refused(tmp_path, text)


@pytest.mark.parametrize("text, words", [
    ('title = "HW"\n\n[Points]\nWEIGHTS-SCALE = 5\n', "line 3: unknown table [Points] (did you mean [points]?)"),
    ("[visibility]\nNUM-ACCURACY = 'after_due_date'\n", "line 1: unknown table [visibility]"),
    ('name = "HW 4"\n', "line 1: unknown key `name`"),
    ('titel = "HW 4"\n', "line 1: unknown key `titel` (did you mean title?)"),
    ("[hidden]\nclause = []\n", "line 2: unknown key `clause` in [hidden]"),
])
def test_unknown_keys_and_tables_are_refused_with_the_rubrics_layout(tmp_path, text, words):
    message = refused(tmp_path, text)
    assert words in message
    if "in [hidden]" not in words:
        assert "title, functions, forbid and seed at the top of the file, then the tables [points]" in message


def test_a_table_pasted_twice_is_refused_by_toml_with_its_line(tmp_path):
    main, _ = course(readme_snippets())
    message = refused(tmp_path, main + "[points]\nGOLD-SELF = 1\n")
    assert "not valid TOML" in message and "line" in message


def test_key_lines_follow_tables_dotted_and_quoted_keys():
    text = 'title = "x"\nforbid = [\n  "a.b",\n]\n[points]\n"WEIGHTS-SCALE" = 5\n[hidden]\nclauses = []\n'
    lines = key_lines(text)
    assert lines[("title",)] == 1 and lines[("forbid",)] == 2 and lines[("points",)] == 5
    assert lines[("points", "WEIGHTS-SCALE")] == 6 and lines[("hidden", "clauses")] == 8
    assert key_lines("points.WEIGHTS-SCALE = 5\n")[("points", "WEIGHTS-SCALE")] == 1


def test_the_autograder_zip_is_not_built_from_a_rubric_whose_rule_landed_in_hidden(tmp_path):
    """Issue 18: the zip was built without a word, and a submission calling SDPA scored 47/49."""
    import subprocess
    import sys

    main, rule = course(readme_snippets())
    (tmp_path / "course.toml").write_text(main.rstrip("\n") + "\n" + rule, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "conformance.autograder", "--rubric", "course.toml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "`forbid` belongs at the top of the file" in done.stderr, done.stderr
    assert "here it is inside [hidden]" in done.stderr and not (tmp_path / "autograder.zip").exists()
