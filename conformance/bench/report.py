"""What a bench run shows: the progress bar, the table with the ratios to SDPA, the growth exponents, the
memory claim, the JSON document and the plot."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from conformance.bench.fit import RULE, ClaimCheck, Fit, power_law

WIDTH = 24  # characters of the progress bar
SERIES = {  # name -> (what is measured, where in a record)
    "time forward": ("forward", "median_s"),
    "time forward+backward": ("forward_backward", "median_s"),
    "memory forward": ("memory", "forward_bytes"),
    "memory forward+backward": ("memory", "forward_backward_bytes"),
}
LEGEND = ("times: the median of the timed calls, ± half their interquartile range; peaks: the memory a call "
          "holds at its highest above what was held before it; ×SDPA: this / F.scaled_dot_product_attention's, "
          "on the same inputs")
METHODS = {  # how a peak was measured (conformance/worker/bench.py says why)
    "allocator": "the bytes torch's CPU allocator hands out during the call (the profiler's allocation events)",
    "rss": "the resident-set high-water mark during the call (VmHWM, reset before it) less VmRSS before it",
    "cuda allocator": "torch.cuda.max_memory_allocated() during the call less memory_allocated() before it",
}
PLOT_MISSING = ("--plot needs matplotlib: pip install matplotlib (or the project's [teaching] extra: "
                "pip install -e '.[teaching]')")


# ------------------------------------------------------------------------------------ progress
class Progress:
    """Points done out of the total, on stderr: a bar redrawn in place on a terminal, a line per point in a log.
    The time left is estimated from the work done so far, a point's work taken as n² (attention's)."""

    def __init__(self, sizes: list[int], stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.weights = [n * n for n in sizes]
        self.total, self.done = len(sizes), 0
        self.stream = stream or sys.stderr
        self.clock = clock
        self.start = clock()
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, record: dict) -> str:
        elapsed = self.clock() - self.start
        filled = WIDTH * self.done // max(1, self.total)
        done = sum(self.weights[: self.done])
        left = ""
        if 0 < self.done < self.total and done:
            left = f", about {elapsed / done * (sum(self.weights) - done):.0f} s left"
        last = f"{record['function']} {record['dtype']} n={record['n']} {record['candidate']}: {record['status']}"
        bar = f"[{'#' * filled}{'-' * (WIDTH - filled)}]"
        return f"{bar} {self.done}/{self.total} points, {elapsed:.0f} s{left} ({last})"

    def advance(self, record: dict) -> None:
        self.done += 1
        if self.live:
            self.stream.write("\r\033[K" + self.line(record) + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(f"bench: {self.line(record)}\n")
        self.stream.flush()


# ------------------------------------------------------------------------------------ numbers
def value(record: dict, series: str) -> float | None:
    """A record's number for a series ('time forward', 'memory forward+backward'...), None when not measured."""
    part, key = SERIES[series]
    found = record.get(part) or {}
    return found.get(key) if record.get("status") == "ok" else None


def groups(measurements: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """The measurements by (function, dtype, device), in the order they were run."""
    found: dict[tuple[str, str, str], list[dict]] = {}
    for record in measurements:
        found.setdefault((record["function"], record["dtype"], record["device"]), []).append(record)
    return found


def fits(measurements: list[dict]) -> list[dict]:
    """The power-law fit of every series of every candidate in every group."""
    fitted = []
    for (function, dtype, device), records in groups(measurements).items():
        for candidate in dict.fromkeys(r["candidate"] for r in records):
            mine = [r for r in records if r["candidate"] == candidate]
            for series in SERIES:
                ns = [r["n"] for r in mine]
                fit = power_law(ns, [value(r, series) for r in mine])
                fitted.append({"candidate": candidate, "role": mine[0]["role"], "function": function, "dtype": dtype,
                               "device": device, "series": series, "fit": fit})
    return fitted


def ratio(record: dict, baseline: dict | None, series: str) -> float | None:
    mine, theirs = value(record, series), value(baseline, series) if baseline else None
    return mine / theirs if mine is not None and theirs else None


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _bytes(count: float | None) -> str:
    if count is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


def _timed(record: dict, part: str) -> str:
    found = record.get(part) if record.get("status") == "ok" else None
    if not found:
        return "-"
    spread = (found["q3_s"] - found["q1_s"]) / 2 / found["median_s"] if found["median_s"] else 0.0
    return f"{_seconds(found['median_s'])} ±{spread:.0%}"


def _times(factor: float | None) -> str:
    return "-" if factor is None else f"{factor:.2f}"


# ------------------------------------------------------------------------------------ the table
def table(measurements: list[dict], fitted: list[dict], claims: dict[tuple[str, str, str], ClaimCheck],
          subject: str, headers: dict[tuple[str, str, str], str]) -> str:
    """The terminal report: per group, each n with each candidate's times and peaks and their ratios to SDPA
    on the same inputs; then the exponents of the growth with n, the memory claim, and the headline."""
    methods = sorted({r["memory"]["method"] for r in measurements if r.get("memory") and r["memory"]["method"]})
    lines = [LEGEND, *(f"peak memory ({m}): {METHODS.get(m, m)}" for m in methods), ""]
    backward = any(r.get("forward_backward") for r in measurements)
    for key, records in groups(measurements).items():
        lines.append(headers.get(key, " · ".join(key)))
        columns = [("forward", 13), ("×SDPA", 6)]
        if backward:
            columns += [("fwd+bwd", 13), ("×SDPA", 6)]
        columns += [("peak fwd", 10), ("×SDPA", 6)]
        if backward:
            columns += [("peak fwd+bwd", 12), ("×SDPA", 6)]
        width = max(len("candidate"), *(len(r["candidate"]) for r in records)) + 2
        lines.append(f"{'n':>6}  {'candidate':<{width}}" + "".join(f"{name:>{size + 2}}" for name, size in columns))
        for n in dict.fromkeys(r["n"] for r in records):
            at = [r for r in records if r["n"] == n]
            sdpa = next((r for r in at if r["role"] == "sdpa" and r["candidate"] == "sdpa"), None)
            for index, record in enumerate(at):
                cells = [_timed(record, "forward"), _times(ratio(record, sdpa, "time forward"))]
                if backward:
                    cells += [_timed(record, "forward_backward"), _times(ratio(record, sdpa, "time forward+backward"))]
                cells += [_bytes(value(record, "memory forward")), _times(ratio(record, sdpa, "memory forward"))]
                if backward:
                    cells += [_bytes(value(record, "memory forward+backward")),
                              _times(ratio(record, sdpa, "memory forward+backward"))]
                if record["status"] != "ok":  # the whole message is in the JSON
                    text = "  " + " ".join(f"{record['status']}: {record['error']}".split())[:110]
                else:
                    text = "".join(f"{cell:>{size + 2}}" for cell, (_, size) in zip(cells, columns))
                lines.append(f"{n if index == 0 else '':>6}  {record['candidate']:<{width}}{text}")
        lines.append("")
        lines += _growth(key, [f for f in fitted if (f["function"], f["dtype"], f["device"]) == key], width)
        if key in claims:
            check = claims[key]
            lines.append(f"memory claim of {subject}: {check.claim!r} {check.verdict.upper()} ({check.reason})")
            lines.append(f"  rule: {RULE}")
        lines += _headline(records, subject)
        lines.append("")
    notes = sorted({r["memory"]["note"] for r in measurements if r.get("memory") and r["memory"]["note"]})
    notes += [f"{r['candidate']}, {r['function']} {r['dtype']} n={r['n']}: {r['backward_error']}"
              for r in measurements if r.get("backward_error")]
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _growth(key: tuple[str, str, str], fitted: list[dict], width: int) -> list[str]:
    shown = [s for s in SERIES if any(f["fit"] is not None for f in fitted if f["series"] == s)]
    if not shown:
        return []
    lines = ["growth with n: exponent p of a power-law fit c·n^p on the log-log points, ± its standard error",
             f"{'':>6}  {'candidate':<{width}}" + "".join(f"{s:>25}" for s in shown)]
    for candidate in dict.fromkeys(f["candidate"] for f in fitted):
        mine = {f["series"]: f["fit"] for f in fitted if f["candidate"] == candidate}
        cells = [mine[s].describe() if mine.get(s) else "-" for s in shown]
        lines.append(f"{'':>6}  {candidate:<{width}}" + "".join(f"{c:>25}" for c in cells))
    return lines


def _headline(records: list[dict], subject: str) -> list[str]:
    """The ratios to SDPA at the largest n both ran: the numbers to quote."""
    ran = [r["n"] for r in records if r["candidate"] == subject and r["status"] == "ok"]
    sdpa_ran = {r["n"] for r in records if r["candidate"] == "sdpa" and r["status"] == "ok"}
    common = [n for n in ran if n in sdpa_ran]
    if not common or subject == "sdpa":
        return []
    n = max(common)
    mine = next(r for r in records if r["candidate"] == subject and r["n"] == n)
    sdpa = next(r for r in records if r["candidate"] == "sdpa" and r["n"] == n)
    parts = [f"{ratio(mine, sdpa, 'time forward'):.2f}× SDPA's forward time"]
    if ratio(mine, sdpa, "time forward+backward") is not None:
        parts.append(f"{ratio(mine, sdpa, 'time forward+backward'):.2f}× its forward+backward time")
    if ratio(mine, sdpa, "memory forward") is not None:
        parts.append(f"{ratio(mine, sdpa, 'memory forward'):.2f}× its forward peak memory")
    return [f"at n={n}, {subject} takes " + ", ".join(parts)]


# ------------------------------------------------------------------------------------ the plot
def plot(path: Path, measurements: list[dict], fitted: list[dict], headers: dict[tuple[str, str, str], str]) -> None:
    """Time and peak memory against n, log-log, one line per candidate (solid with circles: forward; dashed
    with squares: forward + backward), a row of two panels per function, dtype and device. Needs matplotlib
    (imported here)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(PLOT_MISSING) from None
    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    grouped = groups(measurements)
    figure, axes = pyplot.subplots(len(grouped), 2, figsize=(11, 4.2 * len(grouped)), squeeze=False)
    for row, (key, records) in zip(axes, grouped.items()):
        exponents = {(f["candidate"], f["series"]): f["fit"] for f in fitted
                     if (f["function"], f["dtype"], f["device"]) == key}
        for panel, kind, unit, scale in ((row[0], "time", "seconds", 1.0), (row[1], "memory", "MiB", 2**-20)):
            for index, candidate in enumerate(dict.fromkeys(r["candidate"] for r in records)):
                mine = [r for r in records if r["candidate"] == candidate]
                for series, style, marker in ((f"{kind} forward", "-", "o"), (f"{kind} forward+backward", "--", "s")):
                    points = [(r["n"], value(r, series)) for r in mine if value(r, series)]
                    if not points:
                        continue
                    fit: Fit | None = exponents.get((candidate, series))
                    label = f"{candidate}, {series.split(' ', 1)[1]}" + (f" (n^{fit.exponent:.2f})" if fit else "")
                    panel.plot([n for n, _ in points], [v * scale for _, v in points], style, marker=marker,
                               color=f"C{index}", label=label)
            panel.set_xscale("log", base=2)
            panel.set_yscale("log")
            panel.set_xticks(sorted({r["n"] for r in records}))
            panel.xaxis.set_major_formatter(ScalarFormatter())  # 1024, not 2^10
            panel.xaxis.set_minor_formatter(NullFormatter())
            panel.set_xlabel("sequence length n")
            panel.set_ylabel(f"{'median time' if kind == 'time' else 'peak memory'} ({unit})")
            panel.set_title(f"{headers.get(key, ' · '.join(key)).split(' — ')[0]}: {kind}", fontsize=10)
            panel.grid(True, which="both", alpha=0.3)
            panel.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def fit_rows(fitted: list[dict]) -> list[dict]:
    """The fits as plain data for the JSON document."""
    return [{**{k: v for k, v in f.items() if k != "fit"}, **(f["fit"].as_dict() if f["fit"] else {"exponent": None})}
            for f in fitted]
