"""Driving the measurements: which candidates run each point, the plan each worker gets, what comes back.

A point is one function, dtype, device and sequence length n. Every candidate runs it on the same inputs
(drawn in its worker from the same seed): the implementation, F.scaled_dot_product_attention (in the
implementation's worker; on CUDA also each SDPA backend forced, where it runs) and the bundled reference (in
a worker of its own). The candidates of one n run one after the other, before the next n, so that they
share the machine's conditions. A candidate that fails at some n (it raised, ran out of memory, ran past the
timeout) is not run at the larger ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.judge.adapter import ATTENTION_FUNCTIONS, Implementation
from conformance.judge.workers import WorkerDied, WorkerTimeout
from conformance.worker import wire

BENCHED = ("attention", *ATTENTION_FUNCTIONS)  # the kernel first: it is what kernel authors bench
SDPA = "sdpa"
CUDA_BACKENDS = ("flash", "efficient", "cudnn", "math")  # each forced in turn on CUDA, where it runs
SEED = 20


@dataclass
class Settings:
    """What to measure and how (the command line's options, checked)."""

    functions: list[str]
    dtypes: list[str]
    device: str
    ns: list[int]
    budget: float = 0.5  # seconds of timed calls per measurement (after warm-up)
    min_repeats: int = 3
    max_repeats: int = 50
    timeout: float = 600.0  # seconds for one point of one candidate
    causal: bool = False  # every call causal (asked for, or the implementation is causal only)
    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    cpu_memory: str = "auto"
    backward: bool = False  # the implementation claims autograd: forward + backward is measured too

    @property
    def width(self) -> int:
        """d_in of the pipeline functions: heads · head_dim (so that every shape declaration holds)."""
        return self.heads * self.head_dim


@dataclass
class Candidate:
    """Something that runs each point: the implementation, SDPA (a backend of it), or the reference."""

    label: str
    role: str  # "implementation", "sdpa" or "reference"
    implementation: Implementation  # whose worker runs it
    kind: str = "impl"  # "impl" (the worker's implementation), "sdpa" or "sdpa:BACKEND"
    backward: bool = False
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (function, dtype) -> why
    no_backward: set[tuple[str, str]] = field(default_factory=set)  # (function, dtype) whose backward failed

    def runs(self, function: str) -> bool:
        return self.kind != "impl" or self.implementation.has(function)


def summary(samples: list[float], warmup: list[float]) -> dict:
    """Median, quartiles and extremes of the timed calls (seconds), with every sample and the warm-up calls'."""
    if len(samples) >= 2:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    else:
        q1 = q3 = samples[0]
    return {"median_s": statistics.median(samples), "q1_s": q1, "q3_s": q3, "min_s": min(samples),
            "max_s": max(samples), "repeats": len(samples), "samples_s": samples, "warmup_s": warmup}


class Runner:
    """Runs every point of the settings on every candidate; `measurements` holds one record per pair."""

    def __init__(self, settings: Settings, candidates: list[Candidate],
                 report: Callable[[dict], None] | None = None) -> None:
        self.settings = settings
        self.candidates = candidates
        self.report = report or (lambda record: None)
        self.measurements: list[dict] = []
        self.environment: dict[str, dict] = {}  # candidate label -> what its worker said of itself

    def points(self) -> list[tuple[str, str, int, Candidate]]:
        s = self.settings
        return [(function, dtype, n, candidate) for function in s.functions for dtype in s.dtypes for n in s.ns
                for candidate in self.candidates if candidate.runs(function)]

    def run(self) -> list[dict]:
        for function, dtype, n, candidate in self.points():
            record = self.measure(candidate, function, dtype, n)
            self.measurements.append(record)
            self.report(record)
        return self.measurements

    # ---------------------------------------------------------------- one point
    def plan(self, candidate: Candidate, function: str, dtype: str, n: int) -> dict:
        s = self.settings
        implementation = candidate.implementation
        caps = implementation.capabilities
        keywords: dict = {}
        if candidate.kind == "impl" and s.causal:  # under the names its signature uses
            keywords = implementation.kernel_keywords(causal=True) if function == "attention" else {"causal": True}
            if caps.causal_only and not all(implementation.accepts(function, k) for k in keywords):
                keywords = {}  # causal by itself, without the argument
        # a batch axis where there is a batch, and for a kernel that takes batches (a batch of 1); else none
        lead = [s.batch] if s.batch > 1 or (function == "attention" and caps.batching) else []
        return {
            "op": "bench", "candidate": candidate.kind, "function": function, "n": n, "dtype": dtype,
            "device": s.device, "layout": caps.layout, "keywords": keywords, "causal": s.causal,
            "shapes": {"heads": s.heads, "head_dim": s.head_dim, "width": s.width, "lead": lead},
            "backward": candidate.backward and (function, dtype) not in candidate.no_backward,
            "budget": s.budget, "min_repeats": s.min_repeats, "max_repeats": s.max_repeats,
            "cpu_memory": s.cpu_memory, "seed": SEED,
        }

    def measure(self, candidate: Candidate, function: str, dtype: str, n: int) -> dict:
        record = {"candidate": candidate.label, "role": candidate.role, "function": function, "dtype": dtype,
                  "device": self.settings.device, "n": n, "status": "ok", "error": None, "forward": None,
                  "forward_backward": None, "memory": None}
        why = candidate.skipped.get((function, dtype)) or self._refused(candidate, n)
        if why:
            return {**record, "status": "skipped", "error": why}
        plan = self.plan(candidate, function, dtype, n)
        record["shapes"] = plan["shapes"]
        try:
            reply = candidate.implementation.backend.request(plan, self.settings.timeout)
        except (WorkerDied, WorkerTimeout, wire.WireError) as error:
            reply = {"ok": False, "stage": "the worker", "error": {"type": type(error).__name__,
                                                                    "message": str(error)}}
        if not reply.get("ok"):
            error = reply.get("error") or {}
            text = f"{reply.get('stage', 'measuring')}: {error.get('type', '?')}: {error.get('message', '')}"
            candidate.skipped[(function, dtype)] = f"not run after the failure at n={n}"
            return {**record, "status": "error", "error": text}
        self.environment.setdefault(candidate.label, reply.get("environment") or {})
        record["forward"] = summary(reply["forward"]["seconds"], reply["forward"]["warmup_seconds"])
        if reply.get("forward_backward"):
            record["forward_backward"] = summary(reply["forward_backward"]["seconds"],
                                                 reply["forward_backward"]["warmup_seconds"])
        if reply.get("backward_error"):  # the forward stands; forward + backward is not asked for again
            error = reply["backward_error"]
            record["backward_error"] = f"forward + backward: {error.get('type', '?')}: {error.get('message', '')}"
            candidate.no_backward.add((function, dtype))
        memory = reply.get("memory") or {}
        record["memory"] = {"forward_bytes": memory.get("forward"),
                            "forward_backward_bytes": memory.get("forward_backward"),
                            "method": memory.get("method"), "note": memory.get("note") or ""}
        return record

    def _refused(self, candidate: Candidate, n: int) -> str:
        longest = candidate.implementation.capabilities.max_length
        if candidate.kind == "impl" and longest is not None and n > longest:
            return f"n = {n} is beyond its max_length {longest}"
        return ""
