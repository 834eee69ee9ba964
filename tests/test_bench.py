"""`python -m conformance.bench` (issue 20): the command runs and reports, its JSON is complete, the power-law
fit and the memory claim are right on synthetic curves, and bad arguments are clear errors.

No timing thresholds: benchmarks measure, these tests check that they can. The runs use three short
lengths and a tiny time budget per measurement, so that they take seconds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys

import pytest

from conformance import parts
from conformance.bench import fit, report
from conformance.bench.cli import main
from conformance.judge.capabilities import CapabilityError, parse
from tests.conftest import REPO

TILED = REPO / "examples" / "tiled_attention.py"
# from the example's block size (128 keys) on, where its memory is linear; below, one block holds every key
QUICK = ["--n", "128", "256", "512", "--budget", "0.01", "--device", "cpu"]
SERIES = ("time forward", "time forward+backward", "memory forward", "memory forward+backward")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    """The tiled example benched as a user runs it (a fresh process), with its JSON (and plot, where
    matplotlib is installed)."""
    folder = tmp_path_factory.mktemp("bench")
    plot = ["--plot", str(folder / "bench.png")] if HAS_MATPLOTLIB else []
    command = [sys.executable, "-m", "conformance.bench", "--impl", str(TILED), *QUICK,
               "--json", str(folder / "bench.json"), *plot]
    environment = {k: v for k, v in os.environ.items() if k != "ATTENTION_IMPL"}
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads((folder / "bench.json").read_text()), folder


@pytest.fixture
def in_process(monkeypatch):
    """main() in this process, without pinning `spec`, `golden` and `impl` for the rest of the session."""
    monkeypatch.setattr(parts, "keep", lambda: None)
    monkeypatch.delenv("ATTENTION_IMPL", raising=False)
    return main


# ------------------------------------------------------------------------------------ the command
def test_the_table_shows_ratios_to_sdpa_exponents_and_the_memory_claim(tiled):
    done, _, _ = tiled
    out = done.stdout
    assert "×SDPA" in out and "growth with n" in out
    for candidate in ("tiled_attention", "sdpa", "reference (impl)"):
        assert f"  {candidate}" in out
    assert "memory claim of tiled_attention: 'linear' HELD" in out
    assert "at n=512, tiled_attention takes" in out and "SDPA's forward time" in out
    assert "9/9 points" in done.stderr  # the progress, on stderr


def test_the_json_holds_every_measurement_the_machine_and_the_versions(tiled):
    _, document, _ = tiled
    assert {"schema", "command", "implementation", "settings", "candidates", "machine", "versions", "measurements",
            "fits", "claims", "rules"} <= set(document)
    assert document["implementation"]["memory_claim"] == "linear"
    assert {"platform", "processor", "cpus", "memory_bytes", "python", "worker_threads"} <= set(document["machine"])
    assert document["versions"]["torch"] and document["versions"]["worker_torch"]
    candidates = [c["label"] for c in document["candidates"]]
    assert candidates == ["tiled_attention", "sdpa", "reference (impl)"]
    measurements = document["measurements"]
    assert sorted((m["candidate"], m["n"]) for m in measurements) == sorted(
        (c, n) for c in candidates for n in (128, 256, 512))
    for m in measurements:
        assert m["status"] == "ok" and (m["function"], m["dtype"], m["device"]) == ("attention", "float32", "cpu")
        for part in ("forward", "forward_backward"):  # the example claims autograd: both are measured
            timed = m[part]
            assert timed["repeats"] == len(timed["samples_s"]) >= 3 and timed["warmup_s"]
            assert timed["min_s"] <= timed["q1_s"] <= timed["median_s"] <= timed["q3_s"] <= timed["max_s"]
        assert m["memory"]["method"] == "allocator"
        assert m["memory"]["forward_bytes"] > 0 and m["memory"]["forward_backward_bytes"] > 0
    fitted = {(f["candidate"], f["series"]) for f in document["fits"] if f["exponent"] is not None}
    assert fitted == {(c, s) for c in candidates for s in SERIES}
    [claim] = document["claims"]
    assert claim["claim"] == "linear" and claim["verdict"] == "held"
    assert set(claim["fits"]) == {"forward", "forward+backward"}


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="the plot needs matplotlib (the [teaching] extra)")
def test_the_plot_is_written(tiled):
    _, _, folder = tiled
    assert (folder / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_reference_benches_its_pipeline_functions_beside_sdpa(in_process, tmp_path, capsys):
    """The reference is the implementation here: no second copy of it; pipeline functions have SDPA
    counterparts; no memory claim is declared, and the output says how to declare one."""
    out = tmp_path / "impl.json"
    code = in_process(["--impl", "impl", "--function", "self_attention", "multihead_attention_concat",
                       "--n", "16", "32", "--budget", "0.01", "--device", "cpu", "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert [c["label"] for c in document["candidates"]] == ["impl", "sdpa"]
    assert len(document["measurements"]) == 2 * 2 * 2
    assert all(m["status"] == "ok" for m in document["measurements"]), document["measurements"]
    assert document["claims"] == []
    assert "impl declares no memory claim" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("lengths, said", [(["0"], "a sequence length is at least 1"),
                                           (["12x"], "'12x' is not a whole number of tokens")])
def test_a_bad_length_is_a_usage_error(in_process, capsys, lengths, said):
    with pytest.raises(SystemExit) as ended:
        in_process(["--n", *lengths])
    assert ended.value.code == 2 and said in capsys.readouterr().err


def test_an_unknown_implementation_is_named(in_process, capsys):
    with pytest.raises(SystemExit) as ended:
        in_process(["--impl", "no_such_attention_module", "--reference", "none"])
    assert ended.value.code == 2
    assert "--impl no_such_attention_module: no module named 'no_such_attention_module'" in capsys.readouterr().err


def test_a_dtype_it_does_not_claim_is_refused(in_process, capsys, tmp_path):
    mine = tmp_path / "float32_only.py"
    mine.write_text("import torch\nCAPABILITIES = {'dtypes': ['float32'], 'returns_weights': False}\n"
                    "def attention(q, k, v, causal=False):\n"
                    "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)\n")
    with pytest.raises(SystemExit) as ended:
        in_process(["--impl", str(mine), "--dtype", "float64", "--reference", "none"])
    assert ended.value.code == 2
    said = capsys.readouterr().err
    assert "--dtype float64: not claimed by" in said and "claims float32" in said


def test_a_plot_without_matplotlib_is_refused_before_measuring(in_process, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(SystemExit) as ended:
        in_process(["--impl", "no_such_module_needed", "--plot", str(tmp_path / "x.png")])
    assert ended.value.code == 2 and report.PLOT_MISSING in capsys.readouterr().err


def test_a_memory_claim_is_validated():
    assert parse({"memory": "linear"}).memory == "linear" and parse({}).memory is None
    with pytest.raises(CapabilityError, match="'linear' or 'quadratic'"):
        parse({"memory": "cubic"})


# ------------------------------------------------------------------------------------ the fit
NS = [128, 256, 512, 1024, 2048, 4096]


def test_an_exact_power_law_is_fitted_exactly():
    found = fit.power_law(NS, [3.0 * n**1.5 for n in NS])
    assert found.exponent == pytest.approx(1.5, abs=1e-12) and found.constant == pytest.approx(3.0)
    assert found.stderr == pytest.approx(0.0, abs=1e-12) and found.points == 6


def test_a_noisy_power_law_is_within_its_error():
    """With log-normal noise the exponent is off by about its standard error, and the 95 % interval holds
    the true exponent in about 95 % of the draws (seeded: the same draws every run)."""
    noisy = random.Random(20)

    def draw() -> fit.Fit:
        return fit.power_law(NS, [2e-9 * n**2 * math.exp(noisy.gauss(0, 0.1)) for n in NS])

    one = draw()
    assert abs(one.exponent - 2) <= 3 * one.stderr and one.stderr > 0
    covered = sum(low <= 2 <= high for low, high in (draw().interval for _ in range(400)))
    assert 0.91 * 400 <= covered <= 0.99 * 400


def test_too_few_points_give_no_error_or_no_fit():
    two = fit.power_law([128, 256], [1.0, 4.0])
    assert two.exponent == pytest.approx(2) and two.stderr is None and two.interval is None
    assert fit.power_law([128], [1.0]) is None
    assert fit.power_law([128, 256, 512], [None, 0, 3.0]) is None  # nothing measured, or zero, is left out


def test_the_memory_claim_on_synthetic_curves_both_ways():
    linear = fit.power_law(NS, [4096 + 512 * n for n in NS])  # a constant and a linear term
    quadratic = fit.power_law(NS, [512 * n + 4 * n * n for n in NS])
    assert fit.check_claim("linear", {"forward": linear}).verdict == fit.HELD
    assert fit.check_claim("quadratic", {"forward": linear}).verdict == fit.HELD  # an upper bound
    assert fit.check_claim("linear", {"forward": quadratic}).verdict == fit.NOT_HELD
    assert fit.check_claim("quadratic", {"forward": quadratic}).verdict == fit.HELD
    # linear forward, quadratic backward (autograd through a tiled loop keeps every block): not held
    mixed = fit.check_claim("linear", {"forward": linear, "forward+backward": quadratic})
    assert mixed.verdict == fit.NOT_HELD and "forward+backward grows like" in mixed.reason
    two = fit.power_law(NS[:2], [1.0, 2.0])
    assert fit.check_claim("linear", {"forward": two}).verdict == fit.UNDETERMINED
    assert fit.check_claim("linear", {"forward": None}).verdict == fit.UNDETERMINED


def test_a_noisy_linear_memory_holds_its_claim():
    noisy = random.Random(3)
    measured = fit.power_law(NS, [1e5 * n * math.exp(noisy.gauss(0, 0.05)) for n in NS])
    assert fit.check_claim("linear", {"forward": measured}).verdict == fit.HELD
