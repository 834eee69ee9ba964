"""How time and memory grow with n: a power law y = c·n^p fitted on the log-log curve, and the memory claim.

The fit is ordinary least squares of log y on log n over the measured points (n_i, y_i), y_i > 0:

    p = Σ (u_i - ū)(w_i - w̄) / Σ (u_i - ū)²,   u = log n, w = log y,
    se(p) = sqrt( Σ r_i² / (k - 2) / Σ (u_i - ū)² ),   r_i the residuals, k the number of points,

and its 95 % confidence interval is p ± t·se(p), t the 97.5 % quantile of Student's t with k - 2 degrees of
freedom (k >= 3; with two points the exponent is exact and has no error).

The claim CAPABILITIES["memory"] = "linear" (or "quadratic") says the peak memory of a call grows at most like
n (or n²). It is checked on every memory series measured (forward; forward + backward where autograd is
claimed):

    HELD      when, for every series, the interval's lower end p - t·se(p) <= bound + SLACK
              (bound 1 for "linear", 2 for "quadratic"): the measurements are consistent with growth at most
              that fast;
    NOT HELD  when for some series it is above: the measured growth is faster, beyond its error;
    UNDETERMINED when a series has fewer than 3 points with a measured peak (no error, no interval).

SLACK (0.05) allows for what an exact power law does not have: sizes rounded to the allocator's blocks and a
constant share that fades as n grows. A constant term in memory lowers the fitted exponent at small n, so
a claim is best checked up to large n (the default range, 128 ... 4096, is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conformance.judge.capabilities import MEMORY_GROWTH

SLACK = 0.05
# 97.5 % quantiles of Student's t by degrees of freedom; beyond the table, the normal's 1.96 is within 4 %
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
BOUNDS = MEMORY_GROWTH  # a claim and the exponent it bounds: linear 1, quadratic 2
HELD, NOT_HELD, UNDETERMINED = "held", "not held", "undetermined"


def t_quantile(degrees: int) -> float:
    """Student's t, 97.5 % quantile, for `degrees` >= 1 degrees of freedom (the next smaller tabulated)."""
    if degrees < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    return T_975[max(d for d in T_975 if d <= degrees)] if degrees <= 120 else 1.96


@dataclass(frozen=True)
class Fit:
    """y ≈ c·n^exponent over `points` points; stderr is None with two points (an exact line)."""

    exponent: float
    stderr: float | None
    points: int
    constant: float  # c, in the units of y

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % confidence interval of the exponent (None with two points)."""
        if self.stderr is None:
            return None
        half = t_quantile(self.points - 2) * self.stderr
        return self.exponent - half, self.exponent + half

    def describe(self) -> str:
        """'1.98 ± 0.02' (the standard error), or '1.98' with two points."""
        return f"{self.exponent:.2f}" if self.stderr is None else f"{self.exponent:.2f} ± {self.stderr:.2f}"

    def as_dict(self) -> dict:
        interval = self.interval
        return {"exponent": self.exponent, "stderr": self.stderr, "points": self.points, "constant": self.constant,
                "interval95": list(interval) if interval else None}


def power_law(ns: Sequence[float], values: Sequence[float | None]) -> Fit | None:
    """The least-squares fit of log y on log n over the points with y > 0; None with fewer than two."""
    pairs = [(math.log(n), math.log(y)) for n, y in zip(ns, values) if y is not None and y > 0 and n > 0]
    if len({u for u, _ in pairs}) < 2:
        return None
    k = len(pairs)
    mean_u = sum(u for u, _ in pairs) / k
    mean_w = sum(w for _, w in pairs) / k
    spread = sum((u - mean_u) ** 2 for u, _ in pairs)
    slope = sum((u - mean_u) * (w - mean_w) for u, w in pairs) / spread
    intercept = mean_w - slope * mean_u
    stderr = None
    if k > 2:
        residuals = sum((w - intercept - slope * u) ** 2 for u, w in pairs)
        stderr = math.sqrt(residuals / (k - 2) / spread)
    return Fit(slope, stderr, k, math.exp(intercept))


@dataclass(frozen=True)
class ClaimCheck:
    """A declared memory claim against the fitted memory exponents."""

    claim: str
    verdict: str  # HELD, NOT_HELD or UNDETERMINED
    reason: str
    fits: Mapping[str, Fit | None]

    def as_dict(self) -> dict:
        return {"claim": self.claim, "bound": BOUNDS[self.claim], "slack": SLACK, "verdict": self.verdict,
                "reason": self.reason, "fits": {k: f.as_dict() if f else None for k, f in self.fits.items()}}


RULE = (f"held when the 95% interval's lower end, exponent - t·se, is at most the bound + {SLACK} "
        f"(linear: 1, quadratic: 2) for every memory series measured")


def check_claim(claim: str, fits: Mapping[str, Fit | None]) -> ClaimCheck:
    """Check CAPABILITIES["memory"] = claim against the memory fits by series name ('forward',
    'forward+backward'), by the rule in the module docstring."""
    if claim not in BOUNDS:
        raise ValueError(f"unknown memory claim {claim!r}; known: {sorted(BOUNDS)}")
    bound = BOUNDS[claim]
    over, unknown, within = [], [], []
    for series, fit in fits.items():
        interval = fit.interval if fit is not None else None
        if interval is None:
            unknown.append(f"{series}: {'no peak measured' if fit is None else 'only two points'}")
        elif interval[0] > bound + SLACK:
            over.append(f"{series} grows like n^{fit.describe()}, 95% interval from {interval[0]:.2f}, "
                        f"above {bound} + {SLACK}")
        else:
            within.append(f"{series} n^{fit.describe()}, 95% interval from {interval[0]:.2f}")
    if not fits:
        return ClaimCheck(claim, UNDETERMINED, "no memory was measured", fits)
    if over:
        return ClaimCheck(claim, NOT_HELD, "; ".join(over), fits)
    if unknown:
        return ClaimCheck(claim, UNDETERMINED, "; ".join(unknown) + " (3 sequence lengths at least are needed)",
                          fits)
    return ClaimCheck(claim, HELD, "; ".join(within) + f": consistent with growth at most like n^{bound}", fits)
