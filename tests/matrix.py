"""The mutation matrix: every correct variant must pass, every mutant must be rejected by the clause it names
and fail nothing it does not break.

    python -m tests.matrix [--jobs N] [--profile fast] [--only NAME ...] [--slow] [--json PATH]

Each implementation is checked by its own judge, with the arguments `python -m conformance` passes to
pytest, through the public plug-in path, as a user would run it; the judges are forked from this warm
process (as in batch grading), which saves each one the 4 s of importing torch and the suite. Prints a
table (variant, expected verdict, verdict, clauses failed, time), the mutation
score, the false-rejection count and the blame precision: the share of mutants
whose failures stay within their own clause, the clauses their `breaks` names
and the end-to-end clauses. Exits 1 if a correct variant is rejected, a mutant
survives or a mutant fails a clause it does not break (a collateral failure).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import spec
from conformance import ENV_IMPL
from conformance.cli import build_parser, pytest_arguments
from conformance.judge.forking import Judge, run_all, warm_up
from conformance.teaching.pytest_plugin import warm_up as warm_up_teaching
from conformance.judge.workers import ENV_SPIN, Template
from conformance.teaching import mistakes

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900  # seconds for one implementation's whole run
END_TO_END = frozenset(c.id for c in spec.load().clauses if c.end_to_end)

# Correct variants, and clauses each must pass rather than leave "not claimed": a variant whose
# declared capabilities went missing would otherwise still "conform" on what is left.
AUTOGRAD = ("NUM-GRADIENTS",)
# everything but what the machine or the array library rules out (no CUDA here; numpy has no autograd)
EVERY_CLAUSE = tuple(c.id for c in spec.load().clauses if c.id != "NUM-DEVICES")
# a kernel alone (SDPA) is judged by the interface clauses too (issue 19): they must pass, not be "not claimed"
KERNEL = ("QKV-ATTEND", "QKV-SCALE", "QKV-CAUSAL", "QKV-ALIGN", "QKV-MASK",
          "API-BATCH", "API-DTYPE", "API-DEVICE", "API-PURE", "API-DETERMINISTIC", "API-QUIET")
KERNEL_FEATURES = (*KERNEL, "QKV-GQA", "QKV-WINDOW", "QKV-SOFTCAP", "QKV-ALIBI", "QKV-VARLEN", "QKV-DROPOUT",
                   "QKV-EMPTY-ROWS")
# the kernel's optional features: an implementation that does not declare them leaves them "not claimed"
OPTIONAL_KERNEL = ("QKV-WINDOW", "QKV-SOFTCAP", "QKV-ALIBI", "QKV-VARLEN", "QKV-DROPOUT", "QKV-EMPTY-ROWS")
# FlexAttention (examples/flex_attention.py): every feature but what its attention() does not take (a mask, packed
# sequences, dropout)
FLEX = tuple(c for c in KERNEL_FEATURES if c not in ("QKV-MASK", "QKV-VARLEN", "QKV-DROPOUT"))
# FlashAttention's interface (examples/flash_attn_port.py): its spelling claims every feature but a mask
FLASH = tuple(c for c in KERNEL_FEATURES if c not in ("QKV-MASK", "QKV-VARLEN"))
CORRECT = {
    "reference (impl)": ("impl", EVERY_CLAUSE),
    "numpy example": ("examples/numpy_attention.py",
                      tuple(c for c in EVERY_CLAUSE if c not in AUTOGRAD and c not in OPTIONAL_KERNEL)),
    "step pipeline": ("conformance.teaching.mistakes:Pipeline", AUTOGRAD),
    "sdpa": ("tests.variants.correct.sdpa", AUTOGRAD),
    "einsum": ("tests.variants.correct.einsum", AUTOGRAD),
    "log-sum-exp softmax": ("tests.variants.correct.logsumexp", AUTOGRAD),
    "tiled online softmax": ("tests.variants.correct.tiled", AUTOGRAD),
    "nn.Module adapter": ("tests.variants.correct.module:ModuleAdapter", AUTOGRAD),
    "nn.MultiheadAttention": ("tests.variants.correct.torch_mha:MHAAdapter", AUTOGRAD),
    "float64 inside": ("tests.variants.correct.float64_internal", AUTOGRAD),
    "reentrant checkpointing": ("tests.variants.correct.checkpointed", AUTOGRAD),
    "causal-only decoder": ("tests.variants.correct.causal_decoder", ("CAUSAL-MASK", "SYM-EQUIVARIANT",
                                                                       "MH-HEADS", *AUTOGRAD)),
    # the kernel section: SDPA itself, with no adapter code (its signature claims dropout_p and enable_gqa, so
    # dropout and grouped key/value heads are judged too); a flash-style tiled kernel; the mutants' base
    "sdpa kernel": ("torch.nn.functional:scaled_dot_product_attention", (*KERNEL, "QKV-GQA", "QKV-DROPOUT")),
    "tiled flash kernel": ("tests.variants.correct.kernel_tiled", (*KERNEL, "QKV-GQA")),
    "kernel steps": ("conformance.teaching.mistakes:Kernel", (*KERNEL, "QKV-GQA")),
    # the optional features, declared, with either causal alignment (issue 19)
    "kernel steps, windows/softcap/alibi": ("conformance.teaching.mistakes:KernelFeatures", KERNEL_FEATURES),
    "kernel steps, bottom-right": ("conformance.teaching.mistakes:KernelBottomRight", KERNEL_FEATURES),
    # a kernel built from torch's FlexAttention (score_mod, block masks), eager on the CPU
    "flex attention": ("examples/flex_attention.py", FLEX),
    # a pure-PyTorch port of flash_attn_func, and of flash_attn_varlen_func: it takes packs only, so every check
    # reaches it packed (the adapter packs a batch's examples with uniform offsets)
    "flash_attn_func port": ("examples/flash_attn_port.py:flash_attn_func", FLASH),
    "flash_attn_varlen_func port": ("examples/flash_attn_port.py:flash_attn_varlen_func", (*FLASH, "QKV-VARLEN")),
}
# the JAX example, where jax is installed (tox's py environment has it: pip install -e '.[jax]')
JAX = {"jax example": ("examples/jax_attention.py", ("GOLD-TOKENS", "MASK-EMPTY-ROW", "API-DTYPE"))}
# run with --slow (tox -e matrix, tox -e jax), not in CI's matrix: jax's own kernel by name, no adapter code, its
# spelling claiming grouped heads and windows (no masked_rows: it masks with a large finite negative number, so a
# query that sees no key is uniform). It runs op by op and XLA compiles every op for every new shape: about two
# minutes, half of CI's matrix; CI checks its spelling on the core clauses (tests/test_jax.py)
SLOW = {"jax.nn.dot_product_attention": ("jax.nn:dot_product_attention", (*KERNEL, "QKV-GQA", "QKV-WINDOW"))}
HAS_JAX = importlib.util.find_spec("jax") is not None
# on a CUDA machine, each SDPA backend pinned on its own (tests/variants/correct/sdpa_backends.py): they must
# compute attention, causal and scaled as SDPA documents, in the dtypes each declares
SDPA_BACKENDS = {f"sdpa {name} backend (cuda)": (f"tests.variants.correct.sdpa_backends:{name}",
                                                 ("QKV-ATTEND", "QKV-SCALE", "QKV-CAUSAL", "API-DTYPE"))
                 for name in ("flash", "efficient", "cudnn", "math")}


@dataclass
class Entry:
    name: str
    target: str
    expected: tuple[str, ...]  # () for a correct variant, else the clauses that must fail
    required: tuple[str, ...] = ()  # correct variants: clauses that must be passed, not "not claimed"
    may_fail: tuple[str, ...] = ()  # mutants: clauses they truly break besides their own (documented)
    verdict: str = ""
    failed: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    seconds: float = 0.0
    problem: str = ""

    @property
    def correct(self) -> bool:
        return not self.expected

    @property
    def rejected(self) -> bool:
        return set(self.expected) <= set(self.failed)

    @property
    def collateral(self) -> tuple[str, ...]:
        """Failed clauses the mistake does not break: neither its own, documented, nor end to end."""
        allowed = set(self.expected) | set(self.may_fail) | END_TO_END
        return tuple(c for c in self.failed if c not in allowed)

    @property
    def ok(self) -> bool:
        if self.correct:
            return self.verdict == "conforms" and not self.failed and set(self.required) <= set(self.passed)
        return self.rejected and not self.collateral

    @property
    def expected_text(self) -> str:
        return "conforms" if self.correct else "rejected by " + ", ".join(self.expected)


# Mistakes written as plain attention functions, with no step functions for the detectors to call: the blame
# must come from the functions' own outputs (tests/variants/mistakes/): target, the clause, what it truly breaks
FUNCTION_MUTANTS = {
    "functions: softmax without the max shift": ("tests.variants.mistakes.unshifted_softmax", ("WEIGHTS-STABLE",), {}),
    "functions: squeezed scores": ("tests.variants.mistakes.squeezed_scores", ("API-SHAPES",), {}),
    "functions: W_Q and W_K swapped": ("tests.variants.mistakes.swapped_roles", ("PROJ-ROLES",), {
        "API-SHAPES": "queries from W_K need x_q to have W_K's input width: cross-attention raises when d_in ≠ d_in_kv",
    }),
}


def entries(slow: bool = False) -> list[Entry]:
    correct = {**CORRECT, **(JAX if HAS_JAX else {}), **(SLOW if slow and HAS_JAX else {}),
               **(SDPA_BACKENDS if torch.cuda.is_available() else {})}
    result = [Entry(name, target, (), required) for name, (target, required) in correct.items()]
    for mutant in mistakes.MISTAKES:
        result.append(Entry(mutant.__name__, f"conformance.teaching.mistakes:{mutant.__name__}", tuple(mutant.catches),
                            may_fail=tuple(mutant.breaks)))
    for name, (target, catches, breaks) in FUNCTION_MUTANTS.items():
        result.append(Entry(name, target, catches, may_fail=tuple(breaks)))
    return result


def judge_of(entry: Entry, profile: str, scratch: Path, template: str) -> Judge:
    """The judge for one entry, with the command line's pytest arguments; its JSON report and log in `scratch`."""
    stem = scratch / entry.name.replace(" ", "_").replace("/", "_")
    options = build_parser().parse_args(["--impl", entry.target, "--profile", profile, "--json", f"{stem}.json",
                                         "--worker-template", template])
    return Judge(pytest_arguments(options, []), Path(f"{stem}.log"))


def read(entry: Entry, judge: Judge) -> None:
    """The entry's verdict from its judge's JSON report (or what went wrong, from its log)."""
    entry.seconds = judge.seconds
    report = judge.log.with_suffix(".json")
    if judge.timed_out:
        entry.verdict, entry.problem = "timeout", f"the suite did not finish within {TIMEOUT} s"
        return
    if not report.exists():
        lines = judge.log.read_text(errors="replace").strip().splitlines() if judge.log.exists() else []
        entry.verdict, entry.problem = "error", (lines[-1] if lines else "no output")
        return
    try:
        document = json.loads(report.read_text())
    except ValueError as error:
        entry.verdict, entry.problem = "error", f"unreadable report {report.name}: {error}"
        return
    entry.verdict = document["verdict"]
    entry.failed = tuple(c["id"] for c in document["clauses"] if c["verdict"] == "failed")
    entry.passed = tuple(c["id"] for c in document["clauses"] if c["verdict"] == "passed")
    entry.blocked = tuple(c["id"] for c in document["clauses"] if c["verdict"] == "blocked")


def table(results: list[Entry]) -> str:
    rows = [f"{'variant':<30} {'expected':<34} {'verdict':<17} {'time':>6}  clauses failed [documented] (blocked)"]
    for e in results:
        verdict = e.verdict + ("" if e.ok else "  <-- WRONG")
        own = [c for c in e.failed if c in e.expected]
        documented = [c for c in e.failed if c in e.may_fail and c not in e.expected]
        end_to_end = [c for c in e.failed if c in END_TO_END and c not in e.expected and c not in e.may_fail]
        parts = [", ".join(own) or "-"]
        if documented:
            parts.append("[" + ", ".join(documented) + "]")
        if end_to_end:
            parts.append(f"+{len(end_to_end)} end-to-end")
        if e.collateral:
            parts.append("COLLATERAL: " + ", ".join(e.collateral))
        if e.blocked:
            parts.append("(blocked: " + ", ".join(e.blocked) + ")")
        failed = e.problem or " ".join(parts)
        rows.append(f"{e.name:<30} {e.expected_text:<34} {verdict:<17} {e.seconds:>5.1f}s  {failed}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="implementations checked at once")
    parser.add_argument("--profile", default="fast", help="hypothesis profile (default fast: derandomized, no shrinking)")
    parser.add_argument("--only", nargs="*", default=None, help="names of the variants or mutants to run")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--slow", action="store_true", help="also the slow entries (jax.nn.dot_product_attention)")
    args = parser.parse_args(argv)
    selected = [e for e in entries(args.slow or bool(args.only)) if args.only is None or e.name in args.only]
    if not selected:
        parser.error(f"no variant or mutant named {args.only}")
    if 2 * args.jobs > (os.cpu_count() or 1):  # runs sharing the CPUs sleep while their worker computes
        os.environ[ENV_SPIN] = "0"
    os.environ.pop(ENV_IMPL, None)
    # one thread per process: the matrix runs judges in parallel and the tensors are small; set before the
    # template and the judges fork, so no OpenMP pool is ever forked
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    torch.set_num_threads(1)
    start = time.perf_counter()
    # workers fork from one template (warm torch), judges from this process (warm suite)
    template = Template()
    try:
        warm_up_teaching()
        warm_up(args.profile)
        with tempfile.TemporaryDirectory() as scratch:
            judges = {id(e): judge_of(e, args.profile, Path(scratch), template.handle) for e in selected}
            entry_of = {id(judges[id(e)]): e for e in selected}
            os.chdir(REPO)  # the targets are named relative to the repository, as on the command line
            run_all(list(judges.values()), max(1, args.jobs), TIMEOUT, lambda j: read(entry_of[id(j)], j))
            results = selected
    finally:
        template.close()
    wall = time.perf_counter() - start
    print(table(results))
    correct = [e for e in results if e.correct]
    broken = [e for e in results if not e.correct]
    false_rejections = sum(not e.ok for e in correct)
    rejected = sum(e.rejected for e in broken)
    precise = sum(e.rejected and not e.collateral for e in broken)
    strict = sum(e.rejected and not e.collateral and not (set(e.failed) & set(e.may_fail) - set(e.expected)) for e in broken)
    print()
    print(f"correct variants accepted: {len(correct) - false_rejections}/{len(correct)} (false rejections: {false_rejections})")
    if broken:
        print(f"mutation score: {rejected}/{len(broken)} mutants rejected by the clause they name ({rejected / len(broken):.0%})")
        print(f"blame precision: {precise}/{len(broken)} mutants without collateral failures "
              f"({strict} fail nothing but their own and end-to-end clauses; the rest fail only clauses their "
              f"`breaks` documents)")
    if not HAS_JAX:
        print("jax example: not run (jax is not installed; pip install -e '.[jax]')")
    print(f"matrix wall time: {wall:.1f} s with {args.jobs} jobs")
    if args.json:
        args.json.write_text(json.dumps({"wall_seconds": wall, "results": [asdict(e) | {"ok": e.ok} for e in results]}, indent=1))
    return 0 if false_rejections == 0 and precise == len(broken) else 1


if __name__ == "__main__":
    raise SystemExit(main())
