"""`python -m conformance.bench --impl X`: the command line of the benchmark (see conformance/bench/__init__.py)."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import spec
from conformance import DEFAULT_IMPL, ENV_IMPL, parts
from conformance.bench import fit as fitting
from conformance.bench import report
from conformance.bench.runner import BENCHED, CUDA_BACKENDS, SEED, SDPA, Candidate, Runner, Settings
from conformance.judge.adapter import Implementation, LoadError, RemoteBackend
from conformance.judge.capabilities import ARRAY_DTYPES, DEVICES
from conformance.judge.workers import plain_config
from conformance.worker.loader import REFERENCE_DIR

DEFAULT_NS = (128, 256, 512, 1024, 2048, 4096)
SCHEMA = "conformance.bench/1"
RULES = {  # how the numbers were made, for the JSON's reader
    "timing": "warm-up, then timed calls for --budget seconds (3 to 50); their median and quartiles",
    "memory": "the peak a call holds above what was held when it started; see conformance/worker/bench.py",
    "fit": "least squares of log y on log n; the standard error from the residuals; a 95% interval with Student's t",
    "claim": fitting.RULE,
}


def _length(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of tokens") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} tokens: a sequence length is at least 1")
    return n


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be above 0")
        return number

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.bench",
        description="Time an attention implementation and measure its peak memory against "
                    "F.scaled_dot_product_attention and the reference, over sequence lengths; fit how both grow "
                    "with n and check a declared CAPABILITIES['memory'] claim.",
    )
    parser.add_argument("--impl", default=None,
                        help=f"module, module:object, file.py, package directory or notebook (default: ${ENV_IMPL} "
                             f"or '{DEFAULT_IMPL}')")
    parser.add_argument("--n", type=_length, nargs="+", default=None, metavar="N",
                        help=f"sequence lengths (default: {' '.join(map(str, DEFAULT_NS))})")
    parser.add_argument("--dtype", nargs="+", default=None, metavar="NAME",
                        help="dtypes, among those the implementation claims (default: float32, else its first)")
    parser.add_argument("--device", choices=DEVICES, default=None, help="default: cuda where present and claimed")
    parser.add_argument("--function", nargs="+", default=None, metavar="NAME",
                        help=f"functions to bench, among {', '.join(BENCHED)} (default: every one it provides)")
    parser.add_argument("--causal", action="store_true", help="causal attention (every call causal)")
    shapes = parser.add_argument_group("shapes")
    shapes.add_argument("--batch", type=_positive(int), default=1, help="batch size (default 1)")
    shapes.add_argument("--heads", type=_positive(int), default=4, help="heads (default 4)")
    shapes.add_argument("--head-dim", type=_positive(int), default=64,
                        help="d_k = d_v (default 64); the pipeline functions take d_in = heads · head-dim")
    how = parser.add_argument_group("measuring")
    how.add_argument("--budget", type=_positive(float), default=0.5, metavar="SECONDS",
                     help="timed calls per measurement: as many as fit in SECONDS after warm-up, 3 at least, "
                          "50 at most (default 0.5)")
    how.add_argument("--threads", type=_positive(int), default=1,
                     help="torch threads in the workers on the CPU (default 1: ratios stay stable on a busy machine)")
    how.add_argument("--cpu-memory", choices=("auto", "allocator", "rss"), default="auto",
                     help="peak memory on the CPU: the bytes torch's allocator hands out (allocator), or the "
                          "resident-set high-water mark (rss); auto: allocator for torch implementations, rss "
                          "for numpy and jax ones")
    how.add_argument("--reference", default=str(REFERENCE_DIR), metavar="TARGET",
                     help="benched beside it (default: the bundled reference, impl); 'none' to leave it out")
    how.add_argument("--timeout", type=_positive(float), default=600.0, metavar="SECONDS",
                     help="limit for one point of one candidate (default 600)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", default=None, metavar="PATH", help="every measurement, the machine and versions")
    out.add_argument("--plot", default=None, metavar="PATH",
                     help="time and memory against n, log-log, one line per implementation (needs matplotlib)")
    return parser


def _label(target: str) -> str:
    """A short name for the table: the file's stem for a file or folder, else the target as given."""
    path = Path(target.rstrip("/"))
    if ":" not in target and (path.suffix in (".py", ".ipynb") or path.is_dir()):
        return path.stem if path.suffix else path.name
    return target


def _is_reference(target: str) -> bool:
    if target == DEFAULT_IMPL:
        return True
    try:
        return Path(target).resolve() == REFERENCE_DIR.resolve()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    parts.keep()  # this process is the judge's: `spec`, `impl` are the suite's own
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error(report.PLOT_MISSING)  # before minutes of measuring, not after
    target = args.impl or os.environ.get(ENV_IMPL) or DEFAULT_IMPL
    reference = None if args.reference.lower() == "none" or _is_reference(target) else args.reference
    names = list(spec.load().function_names)
    backends = [RemoteBackend(replace(plain_config(t, names), threads=args.threads))
                for t in [target] + ([reference] if reference else [])]
    for backend in backends:
        backend.start()  # the workers import torch at the same time
    loaded: list[Implementation] = []
    try:
        for backend, what in zip(backends, ("--impl", "--reference")):
            try:
                loaded.append(Implementation(backend))
            except LoadError as error:
                parser.error(f"{what} {backend.config.target}: {error}")
        return _run(parser, args, target, loaded[0], loaded[1] if reference else None, argv)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing written", file=sys.stderr)
        return 130
    finally:
        for backend in backends:
            backend.close()


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace, subject: Implementation) -> Settings:
    """The settings, or a clear error for what the implementation does not claim."""
    import torch

    caps, name = subject.capabilities, subject.name
    provided = [f for f in BENCHED if subject.has(f)]
    if not provided:
        parser.error(f"{name} provides none of the attention functions ({', '.join(BENCHED)}): nothing to bench")
    functions = args.function or provided
    for function in functions:
        if function not in BENCHED:
            parser.error(f"--function {function}: not an attention function; benched: {', '.join(BENCHED)}")
        if function not in provided:
            parser.error(f"--function {function}: {name} does not provide it (it provides {', '.join(provided)})")
    claimed = list(caps.dtypes)
    dtypes = args.dtype or (["float32"] if "float32" in claimed else claimed[:1])
    for dtype in dtypes:
        if dtype not in ARRAY_DTYPES["torch"]:
            parser.error(f"--dtype {dtype}: unknown; dtypes: {', '.join(ARRAY_DTYPES['torch'])}")
        if dtype not in claimed:
            why = subject.why_not(f"dtype:{dtype}")
            parser.error(f"--dtype {dtype}: not claimed by {name}, which claims {', '.join(claimed)}"
                         + (f" ({why})" if why else ""))
    device = args.device or ("cuda" if torch.cuda.is_available() and "cuda" in caps.devices else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device on this machine")
    if device not in caps.devices:
        why = subject.why_not(f"device:{device}")
        parser.error(f"--device {device}: not claimed by {name}" + (f" ({why})" if why else ""))
    if args.batch > 1 and not caps.batching:
        parser.error(f"--batch {args.batch}: {name} does not take batches (batching is not claimed)")
    if args.causal and not caps.causal_only:
        refuse = [f for f in functions if not any(subject.accepts(f, p) for p in ("causal", "is_causal"))]
        if refuse:
            parser.error(f"--causal: {name}'s {', '.join(refuse)} takes no causal argument")
    ns = sorted(set(args.n or DEFAULT_NS))
    # one memory method for every candidate, so that the ratios compare like with like
    memory = args.cpu_memory if args.cpu_memory != "auto" else "allocator" if caps.array == "torch" else "rss"
    return Settings(functions=list(functions), dtypes=list(dict.fromkeys(dtypes)), device=device, ns=ns,
                    budget=args.budget, timeout=args.timeout, causal=args.causal or caps.causal_only,
                    batch=args.batch, heads=args.heads, head_dim=args.head_dim, cpu_memory=memory,
                    backward=caps.array == "torch" and subject.claims("autograd"))


def _candidates(settings: Settings, subject: Implementation, reference: Implementation | None,
                label: str) -> list[Candidate]:
    candidates = [Candidate(label, "implementation", subject, "impl", settings.backward),
                  Candidate(SDPA, "sdpa", subject, SDPA, settings.backward)]
    if settings.device == "cuda":  # each backend forced in turn, where it runs for these inputs
        candidates += [Candidate(f"{SDPA}:{b}", "sdpa", subject, f"{SDPA}:{b}", settings.backward)
                       for b in CUDA_BACKENDS]
    if reference is not None:
        candidates.append(Candidate(f"reference ({_label(reference.name)})", "reference", reference, "impl",
                                    settings.backward and reference.claims("autograd")))
    return candidates


def _headers(settings: Settings, threads: int | None) -> dict[tuple[str, str, str], str]:
    """A title per (function, dtype, device): what was run, on which shapes, where."""
    s = settings
    where = "CUDA" if s.device == "cuda" else f"CPU, {threads} thread{'s' if threads != 1 else ''}"
    batch = f"{s.batch}, " if s.batch > 1 else ""
    headers = {}
    for function in s.functions:
        if function == "attention":
            shapes = f"q, k, v ({s.batch}, {s.heads}, n, {s.head_dim})"
        elif function.startswith("multihead"):
            shapes = f"x ({batch}n, {s.width}), {s.heads} heads of {s.head_dim}"
        else:
            shapes = f"x ({batch}n, {s.width}), d_k = d_v = {s.head_dim}"
        for dtype in s.dtypes:
            causal = " · causal" if s.causal else ""
            headers[(function, dtype, s.device)] = f"{function} · {dtype} · {s.device}{causal} — {shapes}; {where}"
    return headers


def machine(environment: dict[str, dict]) -> dict:
    """The machine the numbers come from."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": _cpu_model(),
            "cpus": os.cpu_count(), "memory_bytes": _memory_total(), "python": platform.python_version()}
    for described in environment.values():
        if "device_name" in described:
            info["cuda_device"], info["cuda"] = described["device_name"], described.get("cuda")
        info.setdefault("worker_threads", described.get("threads"))
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            return int(meminfo.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None


def versions(environment: dict[str, dict]) -> dict:
    import numpy
    import torch

    def installed(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    worker_torch = sorted({e.get("torch") for e in environment.values() if e.get("torch")})
    return {"python": platform.python_version(), "torch": torch.__version__, "worker_torch": worker_torch,
            "numpy": numpy.__version__, "attention-conformance": installed("attention-conformance"),
            "matplotlib": installed("matplotlib")}


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, target: str, subject: Implementation,
         reference: Implementation | None, argv: list[str] | None) -> int:
    settings = _settings(parser, args, subject)
    label = _label(target)
    if label == SDPA or label.startswith(f"{SDPA}:") or label.startswith("reference ("):
        label += " (--impl)"  # its rows must not be taken for SDPA's or the reference's
    candidates = _candidates(settings, subject, reference, label)
    runner = Runner(settings, candidates)
    progress = report.Progress([n for _, _, n, _ in runner.points()])
    runner.report = progress.advance
    measurements = runner.run()

    fitted = report.fits(measurements)
    claim = subject.capabilities.memory
    claims = _claims(claim, label, settings, measurements, fitted) if claim else {}
    threads = args.threads if settings.device == "cpu" else None
    headers = _headers(settings, threads)
    print(report.table(measurements, fitted, claims, label, headers), end="")
    if not claim:
        print(f"{label} declares no memory claim: CAPABILITIES['memory'] = 'linear' or 'quadratic' would be checked "
              f"against the exponents above")
    if args.json:
        document = {
            "schema": SCHEMA,
            "command": ["python", "-m", "conformance.bench", *(sys.argv[1:] if argv is None else argv)],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "implementation": {"target": target, "name": subject.name, "label": label,
                               "capabilities": subject.capabilities.describe(), "memory_claim": claim},
            "reference": None if reference is None else {"target": reference.name, "label": candidates[-1].label},
            "settings": {**asdict(settings), "width": settings.width, "threads": threads, "seed": SEED,
                         "sdpa_backends": list(CUDA_BACKENDS) if settings.device == "cuda" else []},
            "candidates": [{"label": c.label, "role": c.role, "kind": c.kind, "backward": c.backward}
                           for c in candidates],
            "machine": machine(runner.environment),
            "versions": versions(runner.environment),
            "measurements": measurements,
            "fits": report.fit_rows(fitted),
            "claims": [{"function": k[0], "dtype": k[1], "device": k[2], **c.as_dict()} for k, c in claims.items()],
            "rules": RULES,
        }
        Path(args.json).write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        print(f"measurements written to {args.json}")
    if args.plot:
        report.plot(Path(args.plot), measurements, fitted, headers)
        print(f"plot written to {args.plot}")
    return 1 if any(c.verdict == fitting.NOT_HELD for c in claims.values()) else 0


def _claims(claim: str, label: str, settings: Settings, measurements: list[dict],
            fitted: list[dict]) -> dict[tuple[str, str, str], fitting.ClaimCheck]:
    """The memory claim checked per function, dtype and device on the implementation's memory exponents:
    forward, and forward + backward where that was measured."""
    series = {"forward": "memory forward"}
    if settings.backward:
        series["forward+backward"] = "memory forward+backward"
    checks = {}
    for key in report.groups(measurements):
        mine = {f["series"]: f["fit"] for f in fitted
                if f["candidate"] == label and (f["function"], f["dtype"], f["device"]) == key}
        checks[key] = fitting.check_claim(claim, {name: mine.get(s) for name, s in series.items()})
    return checks
