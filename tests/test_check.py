"""check() from inside a notebook or a script (conformance/teaching/check.py): a notebook executed headless
with nbclient, a script run with python, and the mistakes a caller can make."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conformance import check

ATTENTION = '''
import math
import torch

def attention_weights(scores, d_k, causal=False, mask=None):
    scaled = scores / d_k  # a mistake: d_k, not its square root
    n_q, n_kv = scores.shape[-2:]
    keep = torch.ones(n_q, n_kv, dtype=torch.bool, device=scores.device)
    if causal:
        keep = keep.tril()
    if mask is not None:
        keep = keep & mask
    weights = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)
    return weights.nan_to_num(0.0)  # a query that sees no key: all zeros

def self_attention(x, w_q, w_k, w_v, causal=False):
    queries, keys, values = x @ w_q.T, x @ w_k.T, x @ w_v.T
    weights = attention_weights(queries @ keys.transpose(-2, -1), keys.shape[-1], causal)
    return weights @ values, weights
'''


def test_check_in_a_headless_notebook_shows_the_verdict_as_html(tmp_path):
    """check() of the whole notebook: the verdict, the diagnosis and the heatmaps of the wrong weights."""
    nbformat = pytest.importorskip("nbformat", reason="unavailable: nbformat/nbclient are not installed ([test] extra)")
    nbclient = pytest.importorskip("nbclient", reason="unavailable: nbclient is not installed ([test] extra)")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Homework 4"),
        nbformat.v4.new_code_cell("%matplotlib inline\n" + ATTENTION),
        nbformat.v4.new_code_cell("reviews = open('/data/course/imdb_train.csv').read()"),  # raises here too
        nbformat.v4.new_code_cell("from conformance import check\ncheck()"),
    ]
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = [o for o in notebook.cells[3].outputs if o.output_type == "execute_result"]
    assert len(shown) == 1, notebook.cells[3].outputs
    page, text = shown[0].data["text/html"], shown[0].data["text/plain"]
    assert "DOES NOT CONFORM" in page and "divided by d_k instead of √d_k" in page
    assert "<code>WEIGHTS-SCALE</code>" in page and page.count("data:image/png;base64,") == 2  # self, causal
    # what loading set aside, named as the notebook numbers its inputs
    assert "In [1]: IPython lines not run (%matplotlib inline)" in page
    assert "In [2] raised FileNotFoundError" in page
    assert "VERDICT for notebook.ipynb: DOES NOT CONFORM" in text and "WEIGHTS-SCALE" in text
    # scored: the two functions the notebook defines; the rest of the spec is out of scope, not "not provided"
    assert "not provided" not in text and "out of scope" in text and "out of scope" in page


def test_check_in_a_script_prints_the_verdict_of_the_functions_it_names(tmp_path):
    """check(self_attention=...) in a script: only that function is checked and scored (attention_weights is
    used by it, not checked on its own: its clauses are out of scope, not "not provided"); the script's own
    check() call, run again in the worker, does nothing; print(check()) does not show the table twice."""
    script = tmp_path / "homework.py"
    script.write_text(ATTENTION + textwrap.dedent('''
        from conformance import check
        result = check(self_attention=self_attention)
        verdicts = {c["id"]: c["verdict"] for c in result.clauses}
        excluded = {c["id"]: c["excluded"] for c in result.clauses}
        print("SHIFT", excluded.get("WEIGHTS-SHIFT"))  # only attention_weights exercises it (none: in the worker)
        print("RESULT", result.verdict, result.passed, [c for c, v in verdicts.items() if v == "failed"])
        print(result)
    '''))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERDICT for homework.py: DOES NOT CONFORM" in done.stdout  # the script, not a notebook
    assert "The scores are divided by d_k instead of √d_k (seen in: self_attention)" in done.stdout
    assert "LOADING" not in done.stdout  # the replayed check() in the worker neither ran the suite nor failed
    assert "not provided" not in done.stdout and "out of scope" in done.stdout  # scored: self_attention only
    *_, shift, result, shown = done.stdout.splitlines()
    assert result.startswith("RESULT does not conform False [") and "'WEIGHTS-SCALE'" in result
    assert shift == "SHIFT out of scope"  # the named functions only
    assert done.stdout.count("VERDICT for") == 1 and done.stdout.count("WEIGHTS-SCALE ") == 1
    assert shown.startswith("check(): does not conform, score ")
    assert shown.endswith("(the verdict table is printed above)")


def test_check_finds_functions_imported_from_other_files(tmp_path):
    """A function imported from another file (a folder found through a relative sys.path entry, a package)
    is checked from the file it was defined in; check() without names scores just the spec's functions the
    script holds, and print(check()) shows the table once."""
    (tmp_path / "lib" / "course").mkdir(parents=True)
    (tmp_path / "lib" / "course" / "__init__.py").write_text("")
    (tmp_path / "lib" / "course" / "attention.py").write_text(ATTENTION.replace("scores / d_k", "scores / d_k ** 0.5"))
    (tmp_path / "hw").mkdir()
    script = tmp_path / "hw" / "try_check.py"
    script.write_text(textwrap.dedent('''
        import sys
        sys.path.append("../lib")  # relative to where the script is run: not where check() runs it
        from course.attention import self_attention as mine
        from course.attention import self_attention
        from conformance import check
        named = check(self_attention=mine)
        print("NAMED", named.verdict, named.score == named.max_score > 0)
        print(check())
    '''))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path / "hw", capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "_conformance_checked" not in done.stdout and "LOADING" not in done.stdout
    assert done.stdout.count("VERDICT for try_check.py: CONFORMS") == 2, done.stdout
    assert "not provided" not in done.stdout  # scored: self_attention, the one function of the spec it holds
    named_line = next(line for line in done.stdout.splitlines() if line.startswith("NAMED"))
    assert named_line == "NAMED conforms True"
    last = done.stdout.splitlines()[-1]
    assert last.startswith("check(): conforms, score ") and last.endswith("(the verdict table is printed above)")


def test_check_without_a_spec_function_says_what_it_looks_for(capsys):
    result = check()  # this test module defines none of the spec's functions
    assert result.verdict == "nothing to check" and not result.passed
    printed = capsys.readouterr().out
    assert "check() found no function of the spec here" in printed and "check(self_attention=my_attention)" in printed
    assert str(result) == "check(): nothing to check (the verdict table is printed above)"


def not_a_spec_function():
    pass


def test_what_check_cannot_take_is_named():
    with pytest.raises(TypeError, match="selfattention is not a function of the spec; the spec's functions are"):
        check(selfattention=not_a_spec_function)
    with pytest.raises(ValueError, match="check\\(profile='fastest'\\): choose one of ci, dev, fast"):
        check(profile="fastest")
    with pytest.raises(ValueError, match="pass a function defined with def, at the top level"):
        check(self_attention=lambda x, w_q, w_k, w_v: None)

    def inner(x, w_q, w_k, w_v):
        return x, None

    with pytest.raises(ValueError, match="not a lambda or a function made inside another function"):
        check(self_attention=inner)
