"""Measuring in the worker: `python -m conformance.bench` (conformance/bench/) times and weighs calls here,
in the implementation's own process, where grading calls it too.

The shim loads this file by path (it imports nothing of the suite) and hands it each request
{"op": "bench", ...}: one point of the plan, that is one function, one sequence length n, one dtype, one
device and one candidate ("impl": the implementation's function; "sdpa": torch's
F.scaled_dot_product_attention doing the same computation, "sdpa:flash" etc. with one SDPA backend forced).
Standard library only at module level; torch (and numpy or jax, where the implementation takes those) only
inside the functions.

For each point, in this order:
1. the inputs are drawn (seeded: every candidate of a point gets the same numbers), put on the device in the
   dtype, laid out as the candidate takes them; all of it before any timing starts;
2. forward time: warm-up calls (at least one; up to MAX_WARMUP while they take under WARMUP_SHARE of the
   budget), then timed calls until `budget` seconds have passed, at least `min_repeats` and at most
   `max_repeats` of them. The garbage collector is off while a point is measured (as timeit does). On the
   CPU each call is timed with perf_counter; on CUDA between two events, synchronised after each call;
3. peak memory of one more forward call;
4. with "backward": the same for forward + backward (backward() of the context against a fixed random
   cotangent into inputs that require gradients; the gradients are cleared between calls, untimed).

Peak memory is what the call holds at its highest above what was held when it started (the baseline, so the
inputs do not count; its outputs do):
- CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), less memory_allocated() before;
  the bytes of live tensors, not the allocator's cached reserve;
- CPU, "allocator" (torch implementations): the bytes torch's CPU allocator hands out during the call, from
  the profiler's allocation events (torch.autograd.profiler with profile_memory): every allocation and free
  in order, the running sum's maximum. It is the CPU's counterpart of CUDA's measure: exactly the tensors
  the call makes, whatever glibc keeps cached, page granularity or other threads of the process; it is
  deterministic, so exponents fitted to it are not blurred by noise. It cannot see memory that bypasses
  torch's allocator (numpy, jax, a C extension's own malloc), and it uses a private torch API; where that
  API is missing it falls back to "rss", and says so;
- CPU, "rss" (numpy and jax implementations, or --cpu-memory rss): the resident-set high-water mark VmHWM
  after malloc_trim(0) (free heap pages returned, so that reused memory counts again) and a reset of the mark
  (writing 5 to /proc/self/clear_refs, Linux >= 4.0), less VmRSS before the call. It sees every byte the
  process touches, at page granularity, with some noise from the C allocator.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable
from typing import Any

WARMUP_SHARE = 0.2  # of a point's budget that warm-up may take beyond its first call
MAX_WARMUP = 5
MESSAGE_LIMIT = 600
# the SDPA backends a candidate "sdpa:NAME" forces (torch.nn.attention.SDPBackend's names)
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH",
                 "cudnn": "CUDNN_ATTENTION"}
PIPELINE = ("self_attention", "cross_attention", "multihead_attention", "multihead_attention_concat")


def serve(functions: dict[str, Callable], array: str, plan: dict, wire: Any) -> dict:
    """Measure one point of the plan; the reply for the judge, plain data only. `wire` is the shim's codec
    module (its torch_to_jax for a jax implementation)."""
    stage = "the inputs"
    # one full collection now, none while measuring (as timeit does): the collector neither takes its time in
    # a timed call nor frees older garbage in the middle of a call whose memory is being summed up
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        import torch

        point = _Point(functions, array, plan, wire, torch)
        reply: dict[str, Any] = {"ok": True, "environment": _environment(torch, point.device)}
        stage = "the forward call"
        reply["forward"] = point.time(point.forward, lambda: None)
        forward_peak, method, note = point.peak(point.forward, lambda: None)
        reply["memory"] = {"forward": forward_peak, "forward_backward": None, "method": method, "note": note}
        reply["forward_backward"] = None
        if plan.get("backward"):
            try:  # a backward that fails leaves the forward measurements standing
                step, clear = point.with_backward()
                reply["forward_backward"] = point.time(step, clear)
                reply["memory"]["forward_backward"] = point.peak(step, clear)[0]
            except BaseException as error:  # noqa: BLE001
                _release()
                reply["backward_error"] = _described(error)
        return reply
    except BaseException as error:  # noqa: BLE001 - an exception, exit() or running out of memory is a result
        _release()
        return {"ok": False, "stage": stage, "error": _described(error)}
    finally:
        if collecting:
            gc.enable()


def _described(error: BaseException) -> dict:
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 - a __str__ that raises is the implementation's business
        message = "<unprintable>"
    return {"type": type(error).__name__[:80], "message": message[:MESSAGE_LIMIT]}


def _release() -> None:
    """After a failure (out of memory, often): what the failed call held goes back before the next point."""
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _environment(torch: Any, device: str) -> dict:
    described = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if device == "cuda":
        described.update(device_name=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return described


class _Point:
    """One point: its inputs made, the candidate's call ready, and how to time and weigh it."""

    def __init__(self, functions: dict[str, Callable], array: str, plan: dict, wire: Any, torch: Any) -> None:
        self.torch = torch
        self.plan = plan
        self.device = str(plan["device"])
        self.dtype = getattr(torch, str(plan["dtype"]))
        self.function = str(plan["function"])
        self.candidate = str(plan["candidate"])
        self.array = array if self.candidate == "impl" else "torch"
        self.cuda = self.device == "cuda"
        self.generator = torch.Generator().manual_seed(int(plan.get("seed", 0)))
        if self.candidate == "impl":
            if self.function not in functions:
                raise LookupError(f"the implementation has no {self.function}")
            fn, layout = functions[self.function], str(plan.get("layout", "bhnd"))
            keywords = dict(plan.get("keywords") or {})
        elif self.candidate == "sdpa" or self.candidate.removeprefix("sdpa:") in SDPA_BACKENDS:
            fn, layout = _sdpa_counterpart(self.function, self.candidate.partition(":")[2], torch), "bhnd"
            keywords = {"causal": bool(plan.get("causal"))}
        else:
            raise ValueError(f"unknown candidate {self.candidate!r}")
        self.tensors = [t.to(device=self.device, dtype=self.dtype).contiguous() for t in self._draw(layout)]
        passed = [self._to_array(t, wire) for t in self.tensors]
        if self.array == "jax":  # jax dispatches asynchronously: a call ends when its results exist
            import jax

            self.forward = lambda: jax.block_until_ready(fn(*passed, **keywords))
        else:
            self.forward = lambda: fn(*passed, **keywords)
        self._fn, self._keywords = fn, keywords
        self._sync()

    # ---------------------------------------------------------------- inputs
    def _draw(self, layout: str) -> list:
        """The arguments in float64 on the CPU: q, k, v (..., h, n, d), or x and the weights of a pipeline
        function (d_in = width, d_k = d_v = head_dim, h heads, weights scaled by 1/√d_in so that the scores
        stay of order 1)."""
        torch, plan = self.torch, self.plan
        n, shapes = int(plan["n"]), plan["shapes"]
        heads, head_dim, width = int(shapes["heads"]), int(shapes["head_dim"]), int(shapes["width"])
        lead = tuple(int(b) for b in shapes.get("lead", []))

        def draw(*shape: int, scale: float = 1.0):
            return torch.randn(*shape, generator=self.generator, dtype=torch.float64) * scale

        if self.function == "attention":
            qkv = [draw(*lead, heads, n, head_dim) for _ in range(3)]
            if layout == "bnhd":  # (batch, n, heads, d): one batch axis, a batch of 1 when there is none
                qkv = [t.reshape(-1, heads, n, head_dim).transpose(-3, -2) for t in qkv]
            return qkv
        if self.function not in PIPELINE:
            raise LookupError(f"{self.function} is not benched (attention functions only)")
        weight = 1 / width ** 0.5
        per_head = (heads, head_dim, width) if self.function.startswith("multihead") else (head_dim, width)
        inputs = [draw(*lead, n, width)]
        if self.function == "cross_attention":
            inputs.append(draw(*lead, n, width))
        inputs += [draw(*per_head, scale=weight) for _ in range(3)]
        if self.function == "multihead_attention_concat":
            inputs.append(draw(width, heads * head_dim, scale=1 / (heads * head_dim) ** 0.5))
        return inputs

    def _to_array(self, tensor: Any, wire: Any) -> Any:
        if self.array == "numpy":
            return tensor.numpy().copy()
        if self.array == "jax":
            return wire.torch_to_jax(tensor.clone())
        return tensor

    # ---------------------------------------------------------------- backward
    def with_backward(self) -> tuple[Callable[[], Any], Callable[[], None]]:
        """A forward + backward step into fresh leaves (the same values), and what clears their gradients."""
        torch = self.torch
        leaves = [t.detach().requires_grad_() for t in self.tensors]
        fn, keywords = self._fn, self._keywords
        cotangent: list = []

        def step() -> Any:
            out = fn(*leaves, **keywords)
            context = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(context, torch.Tensor) or not context.requires_grad:
                raise TypeError(f"{self.function}'s context carries no gradient: backward cannot be timed")
            if not cotangent:  # drawn once, in the first (warm-up) call
                cotangent.append(torch.randn(context.shape, generator=self.generator, dtype=torch.float64)
                                 .to(device=context.device, dtype=context.dtype))
            torch.autograd.backward([context], [cotangent[0]])
            return out

        def clear() -> None:
            for leaf in leaves:
                leaf.grad = None

        return step, clear

    # ---------------------------------------------------------------- timing
    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time(self, call: Callable[[], Any], clear: Callable[[], None]) -> dict:
        """Warm-up, then timed repeats within the budget (see the module docstring): seconds per call."""
        torch, plan = self.torch, self.plan
        budget = float(plan.get("budget", 0.5))
        least, most = int(plan.get("min_repeats", 3)), int(plan.get("max_repeats", 50))
        events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if self.cuda else None

        def once() -> float:
            clear()
            self._sync()
            if events is not None:
                events[0].record()
                out = call()
                events[1].record()
                torch.cuda.synchronize()
                seconds = events[0].elapsed_time(events[1]) / 1e3
            else:
                start = time.perf_counter()
                out = call()
                seconds = time.perf_counter() - start
            del out  # freed after the clock stopped
            return seconds

        warmup, begin = [once()], time.perf_counter()
        while len(warmup) < MAX_WARMUP and time.perf_counter() - begin < budget * WARMUP_SHARE:
            warmup.append(once())
        samples, begin = [], time.perf_counter()
        while len(samples) < most and (len(samples) < least or time.perf_counter() - begin < budget):
            samples.append(once())
        return {"seconds": samples, "warmup": len(warmup), "warmup_seconds": warmup}

    # ---------------------------------------------------------------- memory
    def peak(self, call: Callable[[], Any], clear: Callable[[], None]) -> tuple[int | None, str, str]:
        """(bytes above the baseline at the call's highest, the method, a note when it fell back or failed)."""
        torch = self.torch
        clear()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
            call()  # what it returns is part of its peak: allocated before it returned
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - baseline, "cuda allocator", ""
        method = str(self.plan.get("cpu_memory") or "auto")
        note = ""
        if method == "allocator" and self.array != "torch":
            note = f"torch's allocator does not see {self.array}'s memory: rss instead"
        if method == "auto" or note:
            method = "allocator" if self.array == "torch" else "rss"
        if method == "allocator":
            try:
                return _allocator_peak(call, torch), "allocator", ""
            except (ImportError, AttributeError) as error:  # the profiler's private API moved
                note = f"torch's allocation events could not be read ({type(error).__name__}: {error}); rss instead"
                method = "rss"
        try:
            return _rss_peak(call), "rss", note
        except OSError as error:
            return None, "rss", "; ".join(filter(None, [note, f"the resident-set peak cannot be reset here ({error})"]))


def _allocator_peak(call: Callable[[], Any], torch: Any) -> int:
    """The running sum of the CPU allocator's allocations (+) and frees (-) during the call, at its highest."""
    from torch._C._profiler import _EventType  # private: the profiler's event tree holds the allocations

    with torch.autograd.profiler.profile(profile_memory=True) as profile:
        call()
    changes, pending = [], list(profile.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation and str(event.extra_fields.device) == "cpu":
            changes.append((event.start_time_ns, event.extra_fields.alloc_size))
    held = highest = 0
    for _, size in sorted(changes):
        held += size
        highest = max(highest, held)
    return highest


def _status(key: str) -> int:
    """A size from /proc/self/status, in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def _rss_peak(call: Callable[[], Any]) -> int:
    """VmHWM after the call less VmRSS before it, with the free heap returned and the mark reset first."""
    gc.collect()  # garbage (cycles) the timed calls left: its pages go back with the rest
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc: free heap pages go back, so reusing them counts again
    except (OSError, AttributeError):  # not glibc: the peak may miss memory reused from the heap
        pass
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # resets the high-water mark to the current resident set
    baseline = _status("VmRSS")
    call()
    return max(0, _status("VmHWM") - baseline)


def _sdpa_counterpart(function: str, backend: str, torch: Any) -> Callable:
    """The same computation with F.scaled_dot_product_attention as its attention (SDPA's layout, no weights):
    the kernel itself, or the pipeline function's projections around it."""
    import contextlib

    sdpa = torch.nn.functional.scaled_dot_product_attention
    if backend:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        chosen = getattr(SDPBackend, SDPA_BACKENDS[backend])
        forced = lambda: sdpa_kernel(chosen)  # noqa: E731
    else:
        forced = contextlib.nullcontext

    def attend(q: Any, k: Any, v: Any, causal: bool) -> Any:
        # as (1, heads, n, d): SDPA's fused CPU kernels take 4-d inputs only (others fall back to the math path)
        lead = q.shape[:-2]
        q, k, v = (t.reshape(1, -1, *t.shape[-2:]) for t in (q, k, v))
        with forced():
            return sdpa(q, k, v, is_causal=causal).reshape(*lead, q.shape[-2], v.shape[-1])

    def heads(x: Any, w: Any) -> Any:  # (..., n, d_in) by (h, d, d_in) -> (..., h, n, d)
        return x.unsqueeze(-3) @ w.transpose(-2, -1)

    if function == "attention":
        return lambda q, k, v, causal=False: attend(q, k, v, causal)
    if function == "self_attention":
        return lambda x, w_q, w_k, w_v, causal=False: attend(x @ w_q.mT, x @ w_k.mT, x @ w_v.mT, causal)
    if function == "cross_attention":
        return lambda x_q, x_kv, w_q, w_k, w_v, causal=False: attend(x_q @ w_q.mT, x_kv @ w_k.mT, x_kv @ w_v.mT,
                                                                     causal)
    if function == "multihead_attention":
        return lambda x, w_q, w_k, w_v, causal=False: attend(heads(x, w_q), heads(x, w_k), heads(x, w_v), causal)
    if function == "multihead_attention_concat":
        def concat(x: Any, w_q: Any, w_k: Any, w_v: Any, w_o: Any, causal: bool = False) -> Any:
            context = attend(heads(x, w_q), heads(x, w_k), heads(x, w_v), causal)
            return context.transpose(-3, -2).flatten(-2) @ w_o.mT  # (..., n, h·d_v), projected by w_o

        return concat
    raise LookupError(f"{function} has no SDPA counterpart")
