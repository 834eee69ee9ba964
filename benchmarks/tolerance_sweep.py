"""Evidence for the tolerance policy: correct implementations against their allowance, mutants above it.

    python benchmarks/tolerance_sweep.py [--examples 20000] [--jobs 2] [--seed 0] [--json sweep.json]

Draws examples weighted toward the worst cases of rounding (long reductions up to n = 1,024, widths of 1 to 3,
cancelling values, large scores, every dtype, causal masks, every pipeline output, every gradient, every
kernel output with its features), judges the correct implementations on each exactly as the suite does
(conformance.judge.cases: the float64 reference, the derived allowance, the plain baseline), and prints:

- per correct implementation and output: examples judged, rejections (must be 0), and the largest
  error / allowance ratio (how close a correct result comes to its bound) and error / derived-bound ratio
  (the same against the error analysis alone, without the sampled baseline);
- per mutant of the matrix (conformance.teaching.mistakes): examples whose outputs reject it on accuracy, and
  the smallest error / allowance ratio among those (how far a mistake stays above the bound). A mutant
  whose mistake does not change values (it prints, mutates its inputs, drops a feature these examples do not
  use) is judged by its own clause in the matrix and shows 0 here.

Exits 1 if a correct implementation was rejected. Numbers, never a timed test: not part of CI.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from hypothesis.errors import UnsatisfiedAssumption  # noqa: E402

from conformance.judge import blocking  # noqa: E402
from conformance.judge.adapter import Implementation, ImplementationError  # noqa: E402
from conformance.judge.assertions import ClauseFailure  # noqa: E402
from conformance.judge.cases import Case, KernelCase, fit_problem  # noqa: E402
from conformance.judge.strategies import TILE_EDGES, Inputs, KernelProblem, Problem  # noqa: E402
from conformance.teaching import mistakes  # noqa: E402

PIPELINES = {
    "impl": "impl",
    "numpy example": "examples/numpy_attention.py",
    "sdpa (math, CPU)": "tests.variants.correct.sdpa",
    "tiled online softmax": "tests.variants.correct.tiled",
    "log-sum-exp softmax": "tests.variants.correct.logsumexp",
    "einsum": "tests.variants.correct.einsum",
    "float64 inside": "tests.variants.correct.float64_internal",
    "reversed sums": "benchmarks/reorderings.py:ReversedSums",
    "blocked pairwise sums": "benchmarks/reorderings.py:BlockedSums",
    "float32 accumulation": "benchmarks/reorderings.py:Float32Accumulation",
}
KERNELS = {
    "sdpa kernel": "benchmarks/reorderings.py:sdpa_kernel",
    "tiled flash kernel": "tests.variants.correct.kernel_tiled",
    "kernel steps (features)": "conformance.teaching.mistakes:KernelFeatures",
    "flash_attn_func port": "examples/flash_attn_port.py:flash_attn_func",
}
GRADIENT_KINDS = ("self", "cross", "multihead")
DTYPES = ("float64", "float32", "float16", "bfloat16")
DTYPE_WEIGHTS = (0.15, 0.4, 0.22, 0.23)
ELEMENTS = 2_000_000  # largest n_q · n_kv · width · batch · heads of one example (the reorderings expand it)


@dataclass
class Tally:
    examples: int = 0
    rejected: int = 0
    worst: float = 0.0  # largest error / allowance
    worst_derived: float = 0.0  # largest error / derived bound
    where: str = ""
    where_derived: str = ""

    def add(self, ratio: float, derived: float, where: str) -> None:
        self.examples += 1
        self.rejected += ratio > 1
        if ratio > self.worst:
            self.worst, self.where = ratio, where
        if derived > self.worst_derived:
            self.worst_derived, self.where_derived = derived, where


@dataclass
class MutantTally:
    examples: int = 0
    rejected: int = 0
    raised: int = 0
    closest: float = math.inf  # smallest error / allowance among the rejecting examples
    ratios: list = None  # every rejecting example's error / allowance (for the median)

    def add(self, ratio: float) -> None:
        self.examples += 1
        if ratio > 1:
            self.rejected += 1
            self.closest = min(self.closest, ratio)
            self.ratios = (self.ratios or []) + [ratio]

    @property
    def median(self) -> float:
        values = sorted(self.ratios or [])
        return values[len(values) // 2] if values else math.inf


def ratios(actual: torch.Tensor, expected) -> tuple[float, float]:
    """(max error / allowance, max error / derived bound) over the elements; inf for a wrong shape or NaN."""
    if tuple(actual.shape) != tuple(expected.reference.shape):
        return math.inf, math.inf
    error = (actual.detach().to("cpu", torch.float64) - expected.reference).abs().nan_to_num(nan=math.inf)
    # as assert_matches: where the allowance passes the dtype's largest number, the dtype cannot compute it
    error = error.masked_fill(expected.allowance >= torch.finfo(getattr(torch, expected.dtype)).max, 0.0)
    if error.numel() == 0:
        return 0.0, 0.0
    over = (error / expected.allowance.clamp(min=1e-300)).max().item()
    derived = (error / expected.derived.expand(error.shape).clamp(min=1e-300)).max().item()
    return over, derived


def tally(tallies, name: str, out, target, where: str) -> None:
    """Both outputs of a correct implementation's call into its tallies."""
    tallies[(name, "context")].add(*ratios(out.context, target.context), where)
    if out.weights is not None:
        tallies[(name, "weights")].add(*ratios(out.weights, target.weights), where)


def worst(out, target) -> float:
    """A mutant's largest error / allowance over both outputs of its call."""
    ratio = ratios(out.context, target.context)[0]
    return ratio if out.weights is None else max(ratio, ratios(out.weights, target.weights)[0])


def length(rng: random.Random) -> int:
    band = rng.random()
    if band < 0.3:
        return rng.randint(1, 16)
    if band < 0.65:
        return rng.choice((*TILE_EDGES, rng.randint(17, 200)))
    return rng.choice((255, 256, 257, 511, 512, 513, 1000, 1023, 1024, rng.randint(201, 1024)))


def width(rng: random.Random, long: bool) -> int:
    band = rng.random()
    if band < 0.45 or long:
        return rng.randint(1, 3) if band < 0.7 else rng.randint(4, 8)
    return rng.randint(4, 16) if band < 0.75 else rng.choice((31, 32, 33, 63, 64))


def pipeline_problem(rng: random.Random) -> tuple[Problem, str, bool, bool]:
    """(problem, dtype, causal, cancelling)."""
    kind = rng.choice(("self", "self", "cross", "cross", "multihead", "concat"))
    n_q = length(rng)
    n_kv = length(rng) if kind == "cross" else n_q
    long = max(n_q, n_kv) > 256
    d_in, d_k, d_v = width(rng, long), width(rng, long), width(rng, long)
    heads = rng.randint(1, 3) if kind in ("multihead", "concat") else 1
    batch = () if long or rng.random() < 0.6 else (rng.randint(1, 3),)
    while n_q * n_kv * max(d_in, d_k, d_v) * heads * math.prod(batch) > ELEMENTS and max(d_in, d_k, d_v) > 1:
        d_in, d_k, d_v = max(1, d_in // 2), max(1, d_k // 2), max(1, d_v // 2)
    d_o = rng.randint(1, 16) if kind == "concat" and rng.random() < 0.5 else None
    magnitude = rng.choice((0.25, 1.0, 2.0, 4.0))
    logits = rng.choice((None, None, None, 1e2, 1e3, 1e4))
    dtype = rng.choices(DTYPES, DTYPE_WEIGHTS)[0]
    d_in_kv = width(rng, long) if kind == "cross" else d_in
    problem = Problem(kind, batch, n_q, n_kv, d_in, d_in_kv, d_k, d_v, heads, d_o, magnitude, logits,
                      rng.randrange(2 ** 32))
    return problem, dtype, kind != "concat" and rng.random() < 0.3, rng.random() < 0.25


def cancelling(inputs: Inputs) -> Inputs:
    """The key/value tokens in nearly opposite pairs (x_{2i+1} = −x_{2i} + small): the context sums cancel,
    and Σ|terms| is far above |result|."""
    x = inputs.x_kv.clone()
    n = x.shape[-2] // 2 * 2
    noise = torch.randn(x[..., 1:n:2, :].shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x[..., 1:n:2, :] = (-x[..., 0:n:2, :].double() + 1e-3 * noise).to(x.dtype)
    same = inputs.x_q is inputs.x_kv or torch.equal(inputs.x_q, inputs.x_kv)
    return replace(inputs, x_q=x if same else inputs.x_q, x_kv=x)


def kernel_problem(rng: random.Random) -> tuple[KernelProblem, str, dict]:
    n_q, n_kv = length(rng), length(rng)
    long = max(n_q, n_kv) > 256
    heads = rng.choice((1, 2, 4))
    kv_heads = rng.choice([h for h in (1, 2, 4) if heads % h == 0])
    d = width(rng, long)
    d_v = d if rng.random() < 0.6 else width(rng, long)
    batch = () if long or rng.random() < 0.5 else (rng.randint(1, 2),)
    mask = rng.choice(("none", "none", "bool", "float"))
    problem = KernelProblem(batch, heads, kv_heads, n_q, n_kv, d, d_v, rng.choice((0.25, 1.0, 2.0, 4.0)), mask,
                            rng.choice(("full", "shared")), rng.randrange(2 ** 32))
    features = {"causal": rng.random() < 0.35, "scale": rng.choice((None, None, 0.3, 2.5))}
    if rng.random() < 0.3:
        features["window"] = (rng.randint(-1, 40), rng.randint(-1, 40))
    if rng.random() < 0.25:
        features["softcap"] = rng.choice((5.0, 30.0))
    if rng.random() < 0.25:
        features["alibi"] = tuple(2.0 ** -(i + 1) for i in range(heads))
    return problem, rng.choices(DTYPES, DTYPE_WEIGHTS)[0], features


def load(targets: dict[str, str]) -> dict[str, Implementation]:
    return {name: Implementation.load(target, in_process=True) for name, target in targets.items()}


def usable(implementation: Implementation, problem, dtype: str, function: str, causal: bool) -> bool:
    if not implementation.has(function) or not implementation.claims(f"dtype:{dtype}"):
        return False
    if causal and not implementation.claims(f"{function}.causal"):
        return False
    return fit_problem(problem, implementation) == problem


def judge_pipeline(rng: random.Random, correct, wrong, tallies, mutants, with_gradients: bool,
                   with_mutants: bool) -> None:
    problem, dtype, causal, cancel = pipeline_problem(rng)
    function = Case(correct["impl"], problem, dtype, causal=causal).function
    neutral = Case(correct["impl"], problem, dtype, causal=causal)
    try:
        inputs = cancelling(neutral.inputs) if cancel else neutral.inputs
        neutral = neutral.with_inputs(inputs)
        target = neutral.expected()
    except UnsatisfiedAssumption:
        return  # the dtype cannot compute this input (overflow): not drawn by the suite either
    where = f"{problem} in {dtype}{', causal' if causal else ''}{', cancelling' if cancel else ''}"

    def outputs(implementation: Implementation):
        case = replace(neutral, implementation=implementation, _memo={})
        case.__dict__["inputs"] = inputs
        return case, case.run()

    for name, implementation in correct.items():
        if not usable(implementation, problem, dtype, function, causal):
            continue
        case, out = outputs(implementation)
        tally(tallies, name, out, target, where)
        if with_gradients and problem.kind in GRADIENT_KINDS and implementation.claims("autograd"):
            from conformance.tests.test_numerics import gradient_expectations

            blocking.begin("NUM-GRADIENTS")
            try:
                for grad_name, grad, expected in gradient_expectations(case):
                    tallies[(name, f"d/d{grad_name}")].add(*ratios(grad, expected), where)
            except UnsatisfiedAssumption:
                pass
            except ClauseFailure as error:  # the gradient check itself rejected it (its forward pass): a rejection
                tallies[(name, "gradients")].add(math.inf, math.inf, f"{where}: {str(error)[:300]}")
    if not with_mutants:
        return
    for name, implementation in wrong.items():
        if not usable(implementation, problem, dtype, function, causal):
            continue
        try:
            _, out = outputs(implementation)
        except ImplementationError:
            mutants[name].raised += 1
            continue
        mutants[name].add(worst(out, target))


def judge_kernel(rng: random.Random, correct, wrong, tallies, mutants, with_mutants: bool) -> None:
    problem, dtype, features = kernel_problem(rng)
    base = correct["kernel steps (features)"]
    neutral = KernelCase(base, problem, dtype, **features)
    try:
        neutral.inputs  # noqa: B018  (drawn here: an input the dtype cannot hold is not drawn by the suite)
    except UnsatisfiedAssumption:
        return
    where = f"{problem} in {dtype} with {features}"
    claims = {"causal": "attention.causal", "window": "local_window", "softcap": "softcap", "alibi": "alibi"}
    targets: dict[str, object] = {}  # per causal alignment (FlashAttention's is bottom-right)

    def fits(implementation: Implementation) -> bool:
        if not implementation.claims(f"dtype:{dtype}") or fit_problem(problem, implementation) != problem:
            return False
        if problem.mask != "none" and not implementation.claims("masks"):
            return False
        if problem.kv_heads != problem.heads and not implementation.claims("grouped_kv_heads"):
            return False
        return all(implementation.claims(claim) for key, claim in claims.items() if features.get(key))

    def run(implementation: Implementation):
        case = replace(neutral, implementation=implementation, _memo={})
        case.__dict__["inputs"] = neutral.inputs
        if case.alignment not in targets:
            targets[case.alignment] = case.expected()
        return case.run_checked(), targets[case.alignment]

    for name, implementation in correct.items():
        if not fits(implementation):
            continue
        try:
            out, target = run(implementation)
        except UnsatisfiedAssumption:
            return
        tally(tallies, name, out, target, where)
    if not with_mutants:
        return
    for name, implementation in wrong.items():
        if not fits(implementation):
            continue
        try:
            out, target = run(implementation)
        except ImplementationError:
            mutants[name].raised += 1
            continue
        except UnsatisfiedAssumption:
            return
        mutants[name].add(worst(out, target))


def work(job: tuple[int, int, int, int]) -> tuple[dict, dict, int]:
    """One worker's share: `count` examples from its own seed (a kernel example every fourth)."""
    seed, count, gradient_every, mutant_every = job
    torch.set_num_threads(1)
    rng = random.Random(seed)
    correct, kernels = load(PIPELINES), load(KERNELS)
    wrong_pipelines = {cls.__name__: Implementation.load(f"conformance.teaching.mistakes:{cls.__name__}",
                                                          in_process=True)
                       for cls in mistakes.MISTAKES if issubclass(cls, mistakes.Pipeline)}
    wrong_kernels = {cls.__name__: Implementation.load(f"conformance.teaching.mistakes:{cls.__name__}",
                                                        in_process=True)
                     for cls in mistakes.MISTAKES if issubclass(cls, mistakes.Kernel)}
    tallies: dict = defaultdict(Tally)
    kernel_tallies: dict = defaultdict(Tally)
    mutants: dict = defaultdict(MutantTally)
    for index in range(count):
        blocking.begin("NUM-ACCURACY")
        if index % 4 == 3:
            judge_kernel(rng, kernels, wrong_kernels, kernel_tallies, mutants, index % mutant_every < 4)
        else:
            judge_pipeline(rng, correct, wrong_pipelines, tallies, mutants, index % gradient_every == 0,
                           index % mutant_every < 4)
    return ({**{("pipeline",) + k: v for k, v in tallies.items()}, **{("kernel",) + k: v for k, v in
                                                                       kernel_tallies.items()}},
            dict(mutants), count)


def merge(parts):
    tallies: dict = defaultdict(Tally)
    mutants: dict = defaultdict(MutantTally)
    for part_tallies, part_mutants, _ in parts:
        for key, t in part_tallies.items():
            total = tallies[key]
            total.examples += t.examples
            total.rejected += t.rejected
            if t.worst > total.worst:
                total.worst, total.where = t.worst, t.where
            if t.worst_derived > total.worst_derived:
                total.worst_derived, total.where_derived = t.worst_derived, t.where_derived
        for key, m in part_mutants.items():
            total = mutants[key]
            total.examples += m.examples
            total.rejected += m.rejected
            total.raised += m.raised
            total.closest = min(total.closest, m.closest)
            total.ratios = (total.ratios or []) + (m.ratios or [])
    return tallies, mutants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient-every", type=int, default=6, help="gradients on every k-th pipeline example")
    parser.add_argument("--mutant-every", type=int, default=40, help="mutants on 4 of every k examples")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    share = -(-args.examples // args.jobs)
    jobs = [(args.seed * 1000 + j, share, args.gradient_every, args.mutant_every) for j in range(args.jobs)]
    if args.jobs == 1:
        parts = [work(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            parts = pool.map(work, jobs)
    tallies, mutants = merge(parts)
    drawn = sum(p[2] for p in parts)
    seconds = time.perf_counter() - started
    print(f"{drawn:,} examples drawn in {seconds:.0f} s ({args.jobs} jobs, seed {args.seed})\n")
    print(f"{'section':9} {'implementation':26} {'output':10} {'judged':>7} {'rejected':>8} "
          f"{'max err/allowed':>15} {'max err/derived':>15}")
    rejected = 0
    for (section, name, output), t in sorted(tallies.items()):
        rejected += t.rejected
        print(f"{section:9} {name:26} {output:10} {t.examples:7,} {t.rejected:8} {t.worst:15.3g} "
              f"{t.worst_derived:15.3g}")
    print(f"\nrejections of correct implementations: {rejected}")
    for (section, name, output), t in sorted(tallies.items()):
        if t.rejected:
            print(f"  REJECTED: {name} {output} ({t.rejected}), worst at {t.worst:.3g} on {t.where}")
    closest = sorted(tallies.items(), key=lambda kv: -kv[1].worst)[:3]
    for (section, name, output), t in closest:
        print(f"  closest: {name} {output} at {t.worst:.3g} of its allowance on {t.where}")
    for (section, name, output), t in sorted(tallies.items(), key=lambda kv: -kv[1].worst_derived)[:3]:
        print(f"  closest to the derived bound alone: {name} {output} at {t.worst_derived:.3g} on {t.where_derived}")
    print(f"\n{'mutant':34} {'judged':>7} {'rejected':>8} {'raised':>6} {'min err/allowed':>15} {'median':>9}"
          "   (over the examples that reject it)")
    for name, m in sorted(mutants.items()):
        shown = [f"{x:.3g}" if math.isfinite(x) else "-" for x in (m.closest, m.median)]
        print(f"{name:34} {m.examples:7} {m.rejected:8} {m.raised:6} {shown[0]:>15} {shown[1]:>9}")
    if args.json:
        args.json.write_text(json.dumps({
            "examples": drawn, "seconds": seconds, "rejected": rejected,
            "correct": [{"section": s, "implementation": n, "output": o, **vars(t)} for (s, n, o), t in
                        sorted(tallies.items())],
            "mutants": [{"mutant": n, "examples": m.examples, "rejected": m.rejected, "raised": m.raised,
                         "closest": m.closest if math.isfinite(m.closest) else None,
                         "median": m.median if math.isfinite(m.median) else None} for n, m in sorted(mutants.items())],
        }, indent=1))
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
