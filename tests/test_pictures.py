"""Pictures of the weights on the seed sentence (conformance/teaching/pictures.py): the PNG heatmaps in
feedback.md and --plots, and the text heatmap on the terminal when a weights clause fails."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

import golden
from conformance.teaching import mistakes, pictures
from tests.conftest import REPO

matplotlib = pytest.importorskip("matplotlib", reason="unavailable: matplotlib is not installed ([teaching] extra)")
from matplotlib import image  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own dependency; it reads the PNG's text chunk)

CELL = re.compile(r"\((\d+),(\d+)\)")


def outlined(png) -> tuple[str, set[tuple[int, int]]]:
    """The picture's description and the cells it outlines (from its text chunk)."""
    description = Image.open(png).text["Description"]
    return description, {(int(i), int(j)) for i, j in CELL.findall(description.split("differing cells:")[1])}


def seed_weights(pipeline, causal: bool) -> torch.Tensor:
    def t(name):
        return torch.from_numpy(golden.load(name).copy())

    args = (t("embedding/x"), t("projection/w_q"), t("projection/w_k"), t("projection/w_v"))
    return pipeline.self_attention(*args, causal=causal)[1].double()


def test_a_masked_mistake_gets_its_heatmap_in_the_feedback_and_on_the_terminal(tmp_path, suite):
    """MaskOffByOne hides each query's own key: the outlined cells are where its weights differ from the
    reference's (between the tolerance and 1e-3 either may be), and the terminal shows the causal weights."""
    feedback, plots = tmp_path / "fb" / "feedback.md", tmp_path / "plots"
    run = suite("conformance.teaching.mistakes:MaskOffByOne", "-k", "causal and golden", "--feedback", str(feedback),
                "--plots", str(plots))
    assert run.returncode == 1, run.output[-3000:]
    text = feedback.read_text()
    assert "![your weights next to the expected ones: self_attention(x, W_q, W_k, W_v, causal=True)](weights-causal.png)" in text
    for folder in (feedback.parent, plots):
        png = folder / "weights-causal.png"
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 0
        description, cells = outlined(png)
        assert description.startswith("weights 6x6 of self_attention(x, W_q, W_k, W_v, causal=True)")
        difference = (seed_weights(mistakes.MaskOffByOne(), True) - seed_weights(mistakes.Pipeline(), True)).abs()
        clearly = {tuple(c) for c in (difference > 1e-3).nonzero().tolist()}
        at_all = {tuple(c) for c in (difference > 1e-7).nonzero().tolist()}
        assert clearly <= cells <= at_all and (0, 0) in cells  # what clearly differs is outlined, nothing else
    # the plain self-attention is right: drawn, nothing outlined
    assert outlined(plots / "weights-self.png")[1] == set()
    assert "weights of self_attention(x, W_q, W_k, W_v, causal=True) on the seed sentence" in run.output
    life = next(line for line in run.output.splitlines() if line.startswith("Life "))
    assert life.split()[1] == "0!0" and life.split()[-6] == "9"  # yours: nothing for "Life"; expected: 1 on itself


def test_a_conforming_implementation_gets_clean_pictures_and_no_terminal_heatmap(tmp_path, suite):
    plots = tmp_path / "plots"
    run = suite("impl", "-k", "golden", "--plots", str(plots))
    assert run.returncode == 0, run.output[-3000:]
    drawn = sorted(p.name for p in plots.iterdir())
    assert drawn == ["weights-causal.png", "weights-head-0.png", "weights-head-1.png", "weights-head-2.png",
                     "weights-self.png"]
    assert all(outlined(plots / name)[1] == set() for name in drawn)
    assert "on the seed sentence" not in run.output


def test_plots_without_matplotlib_is_a_clear_usage_error(tmp_path):
    command = ("import sys; sys.modules['matplotlib'] = None; from conformance.cli import main; "
               f"raise SystemExit(main(['--impl', 'impl', '--plots', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "--plots: pictures need matplotlib: pip install matplotlib" in done.stdout + done.stderr


def test_a_clause_hidden_until_the_deadline_keeps_its_picture_from_the_students():
    weights = torch.eye(2, dtype=torch.float64)
    views = [pictures.View(key, key, ["a", "b"], weights, 1e-6, weights) for key in ("self", "causal", "head-0")]
    assert [v.key for v in pictures.shown_to_students(views, frozenset({"GOLD-CAUSAL"}))] == ["self", "head-0"]
    assert [v.key for v in pictures.shown_to_students(views, frozenset({"MH-HEADS"}))] == ["self", "causal"]
    assert [v.key for v in pictures.shown_to_students(views, frozenset({"WEIGHTS-SCALE"}))] == ["causal", "head-0"]
    assert pictures.shown_to_students(views, frozenset({"NUM-ACCURACY", "API-PURE"})) == views
