"""Pictures of the attention weights on the seed sentence: the submission's next to the expected ones.

A wrong mask or softmax axis is a pattern a student sees at a glance in the weight matrix. The judge calls
the submission's self_attention (plain and causal) and multihead_attention on the seed's inputs, computes
the expected weights with its own float64 oracle and the tolerance policy, and draws, in this process and
from the returned arrays only:

- a PNG per view (matplotlib): yours | expected, tokens on both axes, the cells that differ from the
  expected weights by more than the tolerance outlined and their values written in both panels; for
  feedback.md and `--plots DIR`;
- a text heatmap for the terminal, one digit per weight, when a weights clause failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import spec
from conformance.judge import oracle, rounding
from conformance.judge.adapter import ImplementationError
from conformance.judge.capabilities import DTYPES
from conformance.judge.tolerance import expected

MATPLOTLIB_MISSING = "pictures need matplotlib: pip install matplotlib (or the project's [teaching] extra)"
# failed clauses that are about the weights, and the views that show them (the rest: plain self-attention)
CAUSAL_CLAUSES = {c.id for c in spec.load().clauses if c.section == "causal"} | {"GOLD-CAUSAL"}
HEAD_CLAUSES = {c.id for c in spec.load().clauses if c.section == "multihead"} | {"GOLD-MULTIHEAD"}
WEIGHT_CLAUSES = ({c.id for c in spec.load().clauses if c.section == "weights"} | CAUSAL_CLAUSES | HEAD_CLAUSES
                  | {"GOLD-SCORES", "GOLD-SELF"})


@dataclass
class View:
    """One weight matrix of the seed run: the submission's, the expected one and the tolerance per cell."""

    key: str  # file stem: "self", "causal", "head-0"
    title: str  # "self_attention(x, W_q, W_k, W_v, causal=True)"
    tokens: list[str]
    expected: Tensor  # float64 (n, n)
    allowed: float  # the largest difference the tolerance policy allows per cell
    got: Tensor | None = None  # float64 (n, n); None with a note: why there is nothing to show
    note: str = ""

    @property
    def differs(self) -> Tensor:
        """Cells outside the tolerance (NaN and inf included); none without weights."""
        if self.got is None:
            return torch.zeros_like(self.expected, dtype=torch.bool)
        return ~((self.got - self.expected).abs() <= self.allowed)

    def summary(self) -> str:
        if self.got is None:
            return self.note
        wrong = int(self.differs.sum())
        cells = self.expected.numel()
        if not wrong:
            return f"all {cells} weights within the tolerance ({self.allowed:.2g})"
        return f"{wrong} of {cells} weights differ from the expected ones by more than the tolerance ({self.allowed:.2g})"


def _seed() -> tuple[list[str], dict[str, Tensor]]:
    import golden

    tokens = oracle.words(golden.manifest()["sentence"])
    names = {"x": "embedding/x", "w_q": "projection/w_q", "w_k": "projection/w_k", "w_v": "projection/w_v",
             "heads_q": "multihead/w_q", "heads_k": "multihead/w_k", "heads_v": "multihead/w_v"}
    return tokens, {key: torch.from_numpy(golden.load(name).copy()) for key, name in names.items()}


def _expected(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, causal: bool, dtype: str) -> tuple[Tensor, float]:
    """The float64 weights and the tolerance for them in `dtype` (as NUM-ACCURACY judges them)."""
    exact = oracle.upcast(x, w_q, w_k, w_v)
    plain = [t.to(DTYPES[dtype]) for t in (x, w_q, w_k, w_v)]
    reference = oracle.cross_attention(exact[0], exact[0], *exact[1:], causal)[1]
    baseline = oracle.cross_attention(plain[0], plain[0], *plain[1:], causal)[1]
    n = exact[0].shape[-2]
    keep = oracle.allowed(n, n, causal, None, torch.device("cpu"))
    bound = rounding.pipeline(exact[0], exact[0], *exact[1:], keep, 1 / math.sqrt(exact[1].shape[-2]), dtype).weights
    return reference, expected("weights", reference, baseline, dtype, bound).allowed


def seed_views(implementation) -> list[View]:
    """The views the submission provides: self-attention, causal self-attention, each head."""
    if not implementation.claims("seed_shapes"):
        return []  # the seed's sizes are outside what it declared it takes
    tokens, seed = _seed()
    dtype = implementation.capabilities.property_dtype
    x = seed["x"].to(DTYPES[dtype])
    single = [seed[k].to(DTYPES[dtype]) for k in ("w_q", "w_k", "w_v")]
    heads = [seed[k].to(DTYPES[dtype]) for k in ("heads_q", "heads_k", "heads_v")]
    causal_only = implementation.capabilities.causal_only
    plans: list[tuple[str, str, str, list[Tensor], bool]] = []
    if implementation.has("self_attention"):
        if not causal_only:
            plans.append(("self", "self_attention(x, W_q, W_k, W_v)", "self_attention", single, False))
        if implementation.claims("self_attention.causal"):
            plans.append(("causal", "self_attention(x, W_q, W_k, W_v, causal=True)", "self_attention", single, True))
    if implementation.has("multihead_attention"):
        plans.append(("head", "multihead_attention(x, W_q[h], W_k[h], W_v[h])" + (", causal" if causal_only else ""),
                      "multihead_attention", heads, causal_only))
    views = []
    for key, title, function, weights, causal in plans:
        reference, allowed = _expected(x, *weights, causal, dtype)
        got, note = None, ""
        try:
            out = implementation.attention(function, x, *weights, causal=causal)
            if out.weights is None:
                note = f"{function} returns no weights (returns_weights=False)"
            elif tuple(out.weights.shape) != tuple(reference.shape):
                note = f"{function} returned weights of shape {tuple(out.weights.shape)}; expected {tuple(reference.shape)}"
            else:
                got = out.weights.detach().to("cpu", torch.float64)
        except ImplementationError as error:
            note = f"{function} on the seed's inputs: {str(error).splitlines()[0][:200]}"
        if key != "head":
            views.append(View(key, title, tokens, reference, allowed, got, note))
            continue
        for h in range(reference.shape[0]):
            views.append(View(f"head-{h}", f"{title}, head {h}", tokens, reference[h], allowed,
                              None if got is None else got[h], note))
    return views


def clauses_of(view: View) -> set[str]:
    """The clauses whose result a view shows: a student must not see it while they are hidden."""
    if view.key == "causal":
        return CAUSAL_CLAUSES
    if view.key.startswith("head"):
        return HEAD_CLAUSES
    return WEIGHT_CLAUSES - CAUSAL_CLAUSES - HEAD_CLAUSES


def shown_to_students(views: list[View], hidden: set[str] | frozenset[str]) -> list[View]:
    """The views that reveal nothing of the clauses the rubric hides until after the deadline."""
    return [view for view in views if not clauses_of(view) & hidden]


def first_failing(views: list[View], failed_clauses: list[str]) -> View | None:
    """The view that shows the first failed weights clause (in spec order), if it differs on the seed."""
    clauses = [c for c in failed_clauses if c in WEIGHT_CLAUSES]
    if not clauses:
        return None
    first = clauses[0]
    prefix = "causal" if first in CAUSAL_CLAUSES else "head" if first in HEAD_CLAUSES else "self"
    differing = [v for v in views if bool(v.differs.any())]
    preferred = [v for v in differing if v.key.startswith(prefix)]
    return (preferred or differing or [None])[0]


def text_heatmap(view: View) -> str:
    """The weights as digits (weight × 10, rounded down; 9 is 0.9 or more), yours next to the expected ones;
    `!` marks a weight that differs by more than the tolerance, `?` one that is NaN or inf."""

    def cell(value: float, marked: bool) -> str:
        digit = "?" if not math.isfinite(value) else str(min(9, max(0, int(value * 10))))
        if value < 0 and math.isfinite(value):
            digit = "-"
        return digit + ("!" if marked else " ")

    width = max(len(t) for t in view.tokens)
    n = len(view.tokens)
    keys = "".join(f"{j:<2}" for j in range(n)).rstrip()
    lines = [f"weights of {view.title} on the seed sentence (rows: queries; columns: keys 0-{n - 1}):",
             f"digit = weight × 10 rounded down; ! differs from the expected weight by more than {view.allowed:.2g}",
             f"{'':<{width}}  {'yours':<{2 * n}}  expected", f"{'':<{width}}  {keys:<{2 * n}}  {keys}"]
    differs = view.differs
    for i, token in enumerate(view.tokens):
        yours = "".join(cell(float(view.got[i, j]), bool(differs[i, j])) for j in range(n))
        theirs = "".join(cell(float(view.expected[i, j]), False) for j in range(n))
        lines.append(f"{token:<{width}}  {yours}  {theirs}".rstrip())
    return "\n".join(lines)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _label(value: float, got: float, expected: float) -> str:
    """A weight with the fewest decimals (2 to 6) that tell the two panels' values apart."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    for decimals in range(2, 7):
        if f"{got:.{decimals}f}" != f"{expected:.{decimals}f}":
            return f"{value:.{decimals}f}"
    return f"{value:.2g}"


def draw(view: View, path: Path) -> Path:
    """A PNG of the view: yours | expected, tokens on both axes, differing cells outlined in red.
    Its text chunk `Description` says the shape and the differing cells, for tools and tests."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot
    from matplotlib.patches import Rectangle

    n = len(view.tokens)
    # a fixed layout: constrained_layout would take a third of the drawing time
    figure, axes = pyplot.subplots(1, 2, figsize=(1.0 + 1.0 * n, 0.9 + 0.42 * n), dpi=100)
    figure.subplots_adjust(left=0.12, right=0.9, bottom=0.2, top=0.86, wspace=0.35)
    differs = view.differs
    panels = (("yours", view.got), ("expected", view.expected))
    for axis, (label, weights) in zip(axes, panels):
        axis.set_title(label, fontsize=10)
        axis.set_xticks(range(n), view.tokens, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(n), view.tokens, fontsize=8)
        axis.set_xlabel("keys", fontsize=8)
        if weights is None:
            axis.imshow(torch.zeros(n, n).numpy(), cmap="Greys", vmin=0, vmax=1)
            axis.text((n - 1) / 2, (n - 1) / 2, "no weights", ha="center", va="center", fontsize=9)
            continue
        values = weights.numpy()
        axis.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0)
        # the numbers where they matter, in both panels: the cells that differ (each text costs drawing time)
        for i, j in differs.nonzero().tolist():
            value = float(values[i, j])
            text = _label(value, float(view.got[i, j]), float(view.expected[i, j]))
            axis.text(j, i, text, ha="center", va="center", fontsize=6, color="white" if value < 0.5 else "black")
            if label == "yours":
                axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    axes[0].set_ylabel("queries", fontsize=8)
    figure.colorbar(axes[1].images[0], ax=axes, shrink=0.8, pad=0.02)
    figure.suptitle(view.title, fontsize=9)
    cells = " ".join(f"({i},{j})" for i, j in differs.nonzero().tolist())
    description = f"weights {n}x{n} of {view.title}; differing cells: {cells or 'none'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Description": description})
    pyplot.close(figure)
    return path


def draw_all(views: list[View], folder: Path) -> list[tuple[View, str]]:
    """Draw every view with weights into `folder`; (view, file name) for each picture."""
    drawn = []
    for view in views:
        if view.got is not None:
            drawn.append((view, draw(view, folder / f"weights-{view.key}.png").name))
    return drawn


def markdown(views: list[View], drawn: list[tuple[View, str]]) -> list[str]:
    """feedback.md's section on the pictures (file names relative to feedback.md)."""
    if not views:
        return []
    files = {view.key: name for view, name in drawn}
    # the legend describes pictures; without any (no matplotlib, --no-pictures) the summaries stand alone
    legend = ("Each row is a query token, each column a key token. A red outline marks a weight that differs "
              "from the expected one by more than the tolerance.") if files else \
        "Each line compares your weights with the expected ones on one call of the seed sentence."
    lines = ["## Your attention weights on the seed sentence", "", legend, ""]
    for view in views:
        lines += [f"### {view.title}", ""]
        if view.key in files:
            lines += [f"![your weights next to the expected ones: {view.title}]({files[view.key]})", ""]
        lines += [view.summary() + ".", ""]
    return lines
