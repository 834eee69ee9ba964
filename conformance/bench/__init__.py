"""`python -m conformance.bench --impl X`: how fast an attention implementation is, and how its time and peak
memory grow with the sequence length, next to F.scaled_dot_product_attention and the bundled reference.

    python -m conformance.bench --impl examples/tiled_attention.py --plot bench.png --json bench.json

The targets are those of `python -m conformance --impl` (a file, a module, `module:object`, a package
directory, a notebook); the implementation runs in a worker process as in grading, and every number is
measured there (conformance/worker/bench.py), its inputs made before the clock starts.

For each attention function it provides (the kernel `attention`, and self_attention, cross_attention,
multihead_attention, multihead_attention_concat: n tokens, d_in = heads · head_dim), each sequence length
(--n, 128 ... 4096 by default), each dtype asked for among those it claims (--dtype; float32 by default) and
the device (--device; CUDA where present and claimed):
- forward time, and forward + backward time where it claims autograd: warm-up, then as many timed calls as
  fit in --budget seconds (3 at least, 50 at most), their median and interquartile range;
- the peak memory of one call above what was held before it (CUDA: the allocator's peak; CPU: the bytes
  torch's CPU allocator hands out, or the resident-set high-water mark for numpy and jax; see
  conformance/worker/bench.py for the methods and why);
- the same for SDPA on the same inputs (on CUDA also for each SDPA backend that runs) and for the reference:
  the ratios to SDPA are the headline, absolute times depend on the machine;
- the growth with n: the exponent of a power law fitted on the log-log points, with its standard error
  (conformance/bench/fit.py), and the check of a declared CAPABILITIES["memory"] = "linear" or "quadratic"
  against the memory exponents (held, not held, undetermined; the exit status is 1 when not held).

Output: a table on stdout, a progress bar on stderr, `--json PATH` (every measurement and sample, the machine,
the versions, the fits and the claim) and `--plot PATH` (matplotlib, the [teaching] extra). Benchmarks
measure; the project's tests check that the command works, never how fast anything is.
"""
