"""Pins the budgets of conformance/judge/strategies.py and conformance/judge/profiles.py.

The suite's running time is sizes × examples: strategies.py bounds the sizes one example may have
(MAX_LEN, WORK_BUDGET on batch × heads × n_q × n_kv, the widths, heads and batch dimensions its
docstrings list) and profiles.py bounds how many examples a property gets under each profile. A strategy
that starts drawing past its bounds, or a profile whose count drifts from what README.md documents and
from what tox relies on (its mutation matrix runs `fast`, documented as ci's examples without shrinking),
makes the suite slower or the verdicts of two profiles differ, without any test of an implementation
failing. The draws are checked with small derandomized budgets; the reachability of the edges (tile
sizes, MAX_LEN, the most heads) with `hypothesis.find`, so the bounds are not met by never drawing big.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, settings, target
from hypothesis import strategies as st

from conformance.judge import profiles, strategies
from conformance.judge.profiles import DEFAULT_PROFILE, PROFILES, REMEMBERING, SHRINK_BOUNDS
from conformance.judge.strategies import (
    LARGE_LOGITS,
    MAGNITUDES,
    MASKING_LOGITS,
    MAX_LEN,
    MIXED_LOGITS,
    MULTIHEAD_KINDS,
    TILE_EDGES,
    WORK_BUDGET,
    kernel_problems,
    lengths,
    problems,
    score_problems,
)

REPO = Path(__file__).resolve().parents[2]
KINDS = ("self", "cross", "multihead", "concat")
DRAWS = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                 suppress_health_check=list(HealthCheck))
FIND = settings(max_examples=500, derandomize=True, database=None, deadline=None, phases=[Phase.generate])
# problems()'s own defaults, read from its signature (the composite wrapper keeps the keyword defaults)
DEFAULTS = {name: p.default for name, p in inspect.signature(problems).parameters.items()
            if p.default is not inspect.Parameter.empty}


def work(batch: tuple[int, ...], heads: int, n_q: int, n_kv: int) -> int:
    return math.prod(batch) * heads * n_q * n_kv


# --- the constants themselves ----------------------------------------------------------------------------------


def test_the_documented_constants_are_consistent():
    assert all(1 <= n <= MAX_LEN for n in TILE_EDGES) and max(TILE_EDGES) > 128  # "well past 128"
    assert MAX_LEN > 128
    assert MAX_LEN * MAX_LEN <= WORK_BUDGET  # the longest self-attention problem fits the budget alone
    assert max(LARGE_LOGITS) == 1e4 and max(MIXED_LOGITS, key=lambda t: t or 0) == 1e4  # "up to 1e4"
    assert max(MASKING_LOGITS, key=lambda t: t or 0) == 1e5 and None in MASKING_LOGITS  # "mixed ... up to 1e5"
    assert DEFAULTS["max_len"] == MAX_LEN and DEFAULTS["max_heads"] == 8  # "1-8 heads"


@settings(DRAWS, max_examples=200)
@given(lengths())
def test_lengths_stay_within_max_len(n):
    assert 1 <= n <= MAX_LEN


@pytest.mark.parametrize("target", [max(TILE_EDGES), MAX_LEN])
def test_lengths_reach_the_last_tile_edge_and_max_len(target):
    assert find(lengths(), lambda n: n == target, settings=FIND) == target


# --- problems() ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@settings(DRAWS)
@given(data=st.data())
def test_problems_stay_within_their_budget(kind, data):
    problem = data.draw(problems(kind), label="problem")
    assert problem.kind == kind
    assert 1 <= problem.n_q <= MAX_LEN and 1 <= problem.n_kv <= MAX_LEN
    if kind != "cross":
        assert problem.n_kv == problem.n_q
    assert 1 <= problem.heads <= DEFAULTS["max_heads"]
    if kind not in MULTIHEAD_KINDS:
        assert problem.heads == 1
    assert len(problem.batch) <= 2 and all(1 <= size <= 3 for size in problem.batch)  # "0-2 batch dimensions"
    size = work(problem.batch, problem.heads, problem.n_q, problem.n_kv)
    target(size / WORK_BUDGET, label="share of the work budget")  # hypothesis pushes towards the bound
    assert size <= WORK_BUDGET
    for width in (problem.d_in, problem.d_in_kv, problem.d_k, problem.d_v):
        assert 1 <= width <= DEFAULTS["max_dim"]
    assert problem.d_o is None or (kind == "concat" and 1 <= problem.d_o <= DEFAULTS["max_dim"])
    assert problem.magnitude in MAGNITUDES and problem.logit_target is None
    assert 0 <= problem.seed < 2**32


@settings(DRAWS)
@given(data=st.data())
def test_problems_keep_to_the_bounds_a_caller_passes(data):
    max_len = data.draw(st.integers(1, MAX_LEN), label="max_len")
    max_dim = data.draw(st.integers(1, 32), label="max_dim")
    max_heads = data.draw(st.integers(1, 8), label="max_heads")
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    problem = data.draw(problems(kind, batched=False, logit_targets=LARGE_LOGITS, max_len=max_len,
                                 max_dim=max_dim, max_heads=max_heads, square=True), label="problem")
    assert problem.batch == ()
    assert problem.n_q <= max_len and problem.n_kv <= max_len and problem.heads <= max_heads
    assert problem.d_in == problem.d_k == problem.d_v <= max_dim  # square: every weight square
    assert problem.d_in_kv == problem.d_in
    assert problem.logit_target in LARGE_LOGITS


def test_the_drawn_tensors_have_the_drawn_sizes():
    @settings(DRAWS, max_examples=15)
    @given(problems("concat", with_w_o=True, max_len=40))
    def check(problem):
        i = problem.tensors()
        assert i.x_q.shape == (*problem.batch, problem.n_q, problem.d_in)
        assert i.w_q.shape == (problem.heads, problem.d_k, problem.d_in)
        assert i.w_v.shape == (problem.heads, problem.d_v, problem.d_in_kv)
        assert i.w_o.shape == (problem.d_o, problem.heads * problem.d_v)
        assert i.x_q.dtype == torch.float64

    check()


@pytest.mark.parametrize("condition", [
    pytest.param(lambda p: p.heads == DEFAULTS["max_heads"], id="most heads"),
    pytest.param(lambda p: len(p.batch) == 2, id="two batch dims"),
    pytest.param(lambda p: p.n_q > 128, id="past 128 tokens"),
])
def test_problems_reach_the_edges_of_their_budget(condition):
    assert condition(find(problems("multihead"), condition, settings=FIND))


def test_cross_problems_draw_lengths_apart():
    assert find(problems("cross"), lambda p: p.n_q != p.n_kv, settings=FIND)


# --- score_problems() and kernel_problems() --------------------------------------------------------------------


@pytest.mark.parametrize("large", [False, True])
@settings(DRAWS)
@given(data=st.data())
def test_score_problems_stay_within_their_budget(large, data):
    problem = data.draw(score_problems(empty_rows=True, large=large), label="problem")
    # the strategy's own caps (score_problems: n_q ≤ 64, n_kv ≤ 160, d_k ≤ 64, "0-2 batch dims")
    assert 1 <= problem.n_q <= 64 and 1 <= problem.n_kv <= 160 and 1 <= problem.d_k <= 64
    assert len(problem.batch) <= 2 and all(1 <= size <= 3 for size in problem.batch)
    assert problem.masked and problem.empty_rows
    # "magnitude 0.1 to 100 (up to 1e4·√d_k with large=True)"
    low, high = (1e2, 1e4) if large else (0.1, 100.0)
    root = math.sqrt(problem.d_k) if large else 1.0
    assert low * root * (1 - 1e-12) <= problem.magnitude <= high * root * (1 + 1e-12)


@settings(DRAWS)
@given(data=st.data())
def test_kernel_problems_stay_within_their_budget(data):
    mask = data.draw(st.sampled_from([("none",), ("bool",), ("bool", "float")]), label="mask")
    problem = data.draw(kernel_problems(mask=mask), label="problem")
    assert 1 <= problem.n_q <= MAX_LEN and 1 <= problem.n_kv <= MAX_LEN
    assert 1 <= problem.heads <= 8 and problem.kv_heads == problem.heads  # "1-8 query heads"
    assert len(problem.batch) <= 2
    size = work(problem.batch, problem.heads, problem.n_q, problem.n_kv)
    target(size / WORK_BUDGET, label="share of the work budget")
    assert size <= WORK_BUDGET
    assert 1 <= problem.d_k <= 64 and 1 <= problem.d_v <= 64
    assert problem.magnitude in MAGNITUDES and problem.mask in mask


@settings(DRAWS)
@given(kernel_problems(grouped=True))
def test_grouped_kernel_problems_have_fewer_key_heads_that_divide_the_query_heads(problem):
    assert problem.kv_heads < problem.heads and problem.heads % problem.kv_heads == 0
    size = work(problem.batch, problem.heads, problem.n_q, problem.n_kv)
    target(size / WORK_BUDGET, label="share of the work budget")
    assert size <= WORK_BUDGET  # two query heads at least, and still within the budget


# --- profiles --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_is_registered_with_hypothesis_as_declared(name):
    registered = settings.get_profile(f"conformance-{name}")
    for option, value in PROFILES[name].items():
        assert getattr(registered, option) == (tuple(value) if option == "phases" else value), option
    assert registered.deadline is None  # a slow submission is judged by --call-timeout, not by hypothesis
    assert Phase.explain not in registered.phases
    assert not registered.report_multiple_bugs


def test_the_named_profiles_exist():
    assert DEFAULT_PROFILE == "ci"
    assert set(REMEMBERING) <= set(PROFILES) and set(SHRINK_BOUNDS) <= set(PROFILES)


def readme_count(pattern: str) -> int:
    match = re.search(pattern, (REPO / "README.md").read_text(), re.S)
    assert match, f"README.md no longer documents {pattern!r}"
    return int(match.group(1))


def test_the_example_counts_are_the_ones_readme_documents():
    assert PROFILES["quick"]["max_examples"] == readme_count(r"`quick` \(grade with (\d+) examples per property")
    assert PROFILES["dev"]["max_examples"] == readme_count(r"`dev` \(random, (\d+) examples")
    assert PROFILES["thorough"]["max_examples"] == readme_count(r"`thorough` \((\d+) examples")
    for name in ("dev", "thorough"):  # random: new examples every run
        assert not PROFILES[name].get("derandomize", False)


def test_fast_and_grade_are_ci_with_other_shrinking():
    """fast: 'the same examples without shrinking'; grade: 'ci's examples, failures shrunk'."""
    ci = PROFILES["ci"]
    assert ci["derandomize"] and ci["database"] is None and Phase.shrink in ci["phases"]
    for name in ("fast", "grade", "quick"):
        assert PROFILES[name]["derandomize"] and PROFILES[name]["database"] is None
    for name in ("fast", "grade"):
        assert PROFILES[name]["max_examples"] == ci["max_examples"]
    assert list(PROFILES["fast"]["phases"]) == [p for p in ci["phases"] if p is not Phase.shrink]
    assert PROFILES["grade"]["phases"] == ci["phases"]
    assert PROFILES["quick"]["max_examples"] <= ci["max_examples"]


def test_the_profile_tox_runs_the_mutation_matrix_with_has_cis_examples():
    """tox runs `python -m tests.matrix`, whose default profile must draw what `ci` (the default) draws."""
    assert "python -m tests.matrix" in (REPO / "tox.ini").read_text()
    source = (REPO / "tests" / "matrix.py").read_text()
    match = re.search(r"add_argument\(\s*\"--profile\",\s*default=\"(\w+)\"", source)
    assert match, "tests/matrix.py no longer has a --profile default"
    matrix = PROFILES[match.group(1)]
    assert matrix["max_examples"] == PROFILES[DEFAULT_PROFILE]["max_examples"]
    assert matrix["derandomize"] and Phase.shrink not in matrix["phases"]


def drawn_under(profile: str, strategy) -> list:
    seen = []

    def record(value):
        seen.append(value)

    settings(settings.get_profile(f"conformance-{profile}"))(given(strategy)(record))()
    return seen


def test_derandomized_profiles_draw_cis_examples():
    """Without a course secret every run, and fast and grade, see ci's very examples; quick sees some of them
    (its 'ci's first examples': as hypothesis generates them the first is ci's first, the rest among ci's)."""
    strategy = problems("cross")
    ci = drawn_under("ci", strategy)
    assert len(ci) == PROFILES["ci"]["max_examples"]
    assert drawn_under("ci", strategy) == ci
    assert drawn_under("fast", strategy) == ci and drawn_under("grade", strategy) == ci
    quick = drawn_under("quick", strategy)
    assert len(quick) == PROFILES["quick"]["max_examples"]
    assert quick[0] == ci[0] and all(example in ci for example in quick)


def test_bound_shrinking_sets_the_engines_limits_only_for_bounded_profiles(monkeypatch):
    from hypothesis.internal.conjecture import engine

    monkeypatch.setattr(engine, "MAX_SHRINKS", engine.MAX_SHRINKS)  # restored after the test
    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", engine.MAX_SHRINKING_SECONDS)
    before = (engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS)
    profiles.bound_shrinking("ci")
    assert (engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS) == before
    for name, bounds in SHRINK_BOUNDS.items():
        profiles.bound_shrinking(name)
        assert (engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS) == bounds
        assert bounds[0] < before[0] and bounds[1] < before[1]  # bounded: below hypothesis' own limits
