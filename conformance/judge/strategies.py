"""All hypothesis strategies of the suite.

A drawn Problem holds sizes and a seed, not tensors: hypothesis shrinks it to
small, readable failing examples ("Problem(n_q=1, n_kv=1, ...)"), and its
tensors are generated from the seed on whichever device and dtype the test
asks for, so every device and dtype sees the very same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from hypothesis import reject
from hypothesis import strategies as st
from torch import Tensor

# Lengths around the tile sizes fused and blocked kernels use (16..128), so
# that bugs in the last, partial tile are reached, and lengths well past 128.
TILE_EDGES = (15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 130)
MAX_LEN = 200
# Upper bound on batch × heads × n_q × n_kv: keeps one example in the
# millisecond range for a plain Python implementation.
WORK_BUDGET = 40_000
# Standard deviations of the inputs; scaled scores grow like its square.
MAGNITUDES = (0.25, 1.0, 2.0, 4.0)
# Target sizes of the largest scaled score: up to 1e4 for the stability clause,
# and mixed with ordinary sizes (None) up to 1e5 for masking, where a mask
# filled with -1e4 instead of -inf only shows when real scores are that large.
LARGE_LOGITS = (1e2, 1e3, 1e4)
MIXED_LOGITS = (None, None, None, 1e2, 1e4)
MASKING_LOGITS = (None, None, None, 1e3, 1e5)
MULTIHEAD_KINDS = ("multihead", "concat")


@dataclass(frozen=True)
class Inputs:
    """Tensors of one problem. Weights follow the spec's (d_out, d_in) layout,
    with a leading head axis for multi-head problems."""

    x_q: Tensor
    x_kv: Tensor
    w_q: Tensor
    w_k: Tensor
    w_v: Tensor
    w_o: Tensor | None

    def to(self, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> Inputs:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return Inputs(*(move(t) for t in (self.x_q, self.x_kv, self.w_q, self.w_k, self.w_v, self.w_o)))


@dataclass(frozen=True)
class Problem:
    """Sizes and seed of one attention problem."""

    kind: str  # "self", "cross", "multihead" (per-head outputs) or "concat" (heads concatenated)
    batch: tuple[int, ...]
    n_q: int
    n_kv: int
    d_in: int
    d_in_kv: int
    d_k: int
    d_v: int
    heads: int
    d_o: int | None
    magnitude: float
    logit_target: float | None  # when set, W_Q is rescaled so max |ω|/√d_k is about this
    seed: int

    def unbatched(self) -> Problem:
        return replace(self, batch=())

    def tensors(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Inputs:
        """Deterministic tensors for this problem: drawn in float64 on the CPU, then cast."""
        generator = torch.Generator().manual_seed(self.seed)

        def randn(*shape: int, std: float = 1.0) -> Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64) * std

        head = (self.heads,) if self.kind in MULTIHEAD_KINDS else ()
        x_q = randn(*self.batch, self.n_q, self.d_in, std=self.magnitude)
        x_kv = x_q if self.kind != "cross" else randn(*self.batch, self.n_kv, self.d_in_kv, std=self.magnitude)
        # 1/√d_in keeps projections at the size of the inputs
        w_q = randn(*head, self.d_k, self.d_in, std=1 / math.sqrt(self.d_in))
        w_k = randn(*head, self.d_k, x_kv.shape[-1], std=1 / math.sqrt(x_kv.shape[-1]))
        w_v = randn(*head, self.d_v, x_kv.shape[-1], std=1 / math.sqrt(x_kv.shape[-1]))
        w_o = None if self.d_o is None else randn(self.d_o, self.heads * self.d_v, std=1 / math.sqrt(self.heads * self.d_v))
        if self.logit_target is not None:
            tokens_q, tokens_kv = (x_q.unsqueeze(-3), x_kv.unsqueeze(-3)) if head else (x_q, x_kv)
            q = tokens_q @ w_q.transpose(-2, -1)
            k = tokens_kv @ w_k.transpose(-2, -1)
            largest = (q @ k.transpose(-2, -1)).abs().max().item() / math.sqrt(self.d_k)
            w_q = w_q * (self.logit_target / max(largest, 1e-12))
        _intermediates_representable(x_q, x_kv, w_q, w_k, w_v, w_o, head, dtype)
        return _representable(Inputs(x_q, x_kv, w_q, w_k, w_v, w_o).to(dtype=dtype, device=device))


def _intermediates_representable(x_q, x_kv, w_q, w_k, w_v, w_o, head, dtype: torch.dtype) -> None:
    """Discard the example when a quantity the spec defines (Q, K, V, ω, the context, W_O's output) is
    beyond the dtype's range: the inputs fit, but no implementation can compute it (issue 10: Q reached
    1.45e5 in float16 on the large-score problems)."""
    if not dtype.is_floating_point or dtype == torch.float64:
        return
    largest = torch.finfo(dtype).max
    tokens_q, tokens_kv = (x_q.unsqueeze(-3), x_kv.unsqueeze(-3)) if head else (x_q, x_kv)
    q, k, v = tokens_q @ w_q.transpose(-2, -1), tokens_kv @ w_k.transpose(-2, -1), tokens_kv @ w_v.transpose(-2, -1)
    steps = [q, k, v, q @ k.transpose(-2, -1)]
    if w_o is not None:  # each context feature is within its values' range; W_O mixes the heads' features
        per_feature = v.abs().amax(dim=-2).reshape(-1, w_o.shape[-1]).amax(dim=0)
        steps.append(per_feature @ w_o.abs().transpose(-2, -1))
    if any(t.numel() and t.abs().max().item() > largest for t in steps):
        reject()


def _representable(value):
    """Discard the example when its inputs overflow the dtype (large scores in float16): not a fair test."""
    tensors = [t for t in getattr(value, "__dict__", {}).values() if isinstance(t, Tensor)] or [value]
    if not all(torch.isfinite(t).all() for t in tensors):
        reject()
    return value


def lengths() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1, 6), st.sampled_from(TILE_EDGES), st.integers(1, MAX_LEN))


@st.composite
def problems(
    draw: st.DrawFn,
    kind: str = "self",
    batched: bool = True,
    logit_targets: tuple[float | None, ...] = (None,),
    max_len: int = MAX_LEN,
    with_w_o: bool | None = None,
    square: bool = False,
    max_dim: int = 32,
    max_heads: int = 8,
) -> Problem:
    """An attention problem of the given kind: 'self', 'cross', 'multihead' or 'concat'.

    Lengths from 1 to MAX_LEN (tile edges included), n_q and n_kv
    drawn apart for cross, d_k and d_v drawn apart, 0-2 batch dimensions, 1-8 heads, inputs of several
    magnitudes; logit_targets are the sizes the largest scaled score is pushed
    to (None: left as drawn);
    square makes every weight square (d_in = d_k = d_v), where transposition
    mistakes run without an error.
    """
    n_q = min(draw(lengths()), max_len)
    n_kv = min(draw(lengths()), max_len) if kind == "cross" else n_q
    room = max(1, WORK_BUDGET // (n_q * n_kv))
    heads = draw(st.integers(1, min(max_heads, room))) if kind in MULTIHEAD_KINDS else 1
    room //= heads
    batch: tuple[int, ...] = ()
    if batched:
        for _ in range(draw(st.integers(0, 2))):
            size = draw(st.integers(1, max(1, min(3, room))))
            room = max(1, room // size)
            batch += (size,)
    d_in = draw(st.integers(1, min(24, max_dim)))
    if with_w_o is None:
        with_w_o = kind == "concat" and draw(st.booleans())
    d_in_kv = draw(st.integers(1, min(24, max_dim))) if kind == "cross" and not square else d_in
    d_k = d_in if square else draw(st.integers(1, max_dim))
    d_v = d_in if square else draw(st.integers(1, max_dim))
    return Problem(
        kind=kind,
        batch=batch,
        n_q=n_q,
        n_kv=n_kv,
        d_in=d_in,
        d_in_kv=d_in_kv,
        d_k=d_k,
        d_v=d_v,
        heads=heads,
        d_o=draw(st.integers(1, min(24, max_dim))) if with_w_o else None,
        magnitude=draw(st.sampled_from(MAGNITUDES)),
        logit_target=draw(st.sampled_from(logit_targets)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def permutations(n: int) -> st.SearchStrategy[list[int]]:
    return st.permutations(range(n))


@dataclass(frozen=True)
class ScoresProblem:
    """Raw scores for the weights step (attention_weights), optionally with a boolean mask."""

    batch: tuple[int, ...]
    n_q: int
    n_kv: int
    d_k: int
    magnitude: float
    masked: bool
    empty_rows: bool  # some rows of the mask allow no key at all
    seed: int

    def unbatched(self) -> ScoresProblem:
        return replace(self, batch=())

    def scores(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        raw = torch.randn(*self.batch, self.n_q, self.n_kv, generator=generator, dtype=torch.float64)
        return _representable((raw * self.magnitude).to(device=device, dtype=dtype))

    def mask(self, device: str | torch.device = "cpu") -> Tensor | None:
        """True = may attend. Every row keeps a key unless empty_rows; then about a third keep none."""
        if not self.masked:
            return None
        generator = torch.Generator().manual_seed(self.seed + 1)
        keep = torch.rand(*self.batch, self.n_q, self.n_kv, generator=generator) < 0.6
        first = torch.randint(0, self.n_kv, (*self.batch, self.n_q, 1), generator=generator)
        keep.scatter_(-1, first, True)
        if self.empty_rows:
            empty = torch.rand(*self.batch, self.n_q, 1, generator=generator) < 0.35
            empty.view(-1)[0] = True  # at least one empty row
            keep &= ~empty
        return keep.to(device)


@st.composite
def score_problems(
    draw: st.DrawFn, masked: bool = False, empty_rows: bool = False, large: bool = False
) -> ScoresProblem:
    """Scores of magnitude 0.1 to 100 (up to 1e4·√d_k with large=True), 0-2 batch dims."""
    magnitudes = (1e2, 1e3, 1e4) if large else (0.1, 1.0, 10.0, 100.0)
    d_k = draw(st.integers(1, 64))
    return ScoresProblem(
        batch=tuple(draw(st.lists(st.integers(1, 3), max_size=2))),
        n_q=draw(lengths().map(lambda n: min(n, 64))),
        n_kv=draw(lengths().map(lambda n: min(n, 160))),
        d_k=d_k,
        magnitude=draw(st.sampled_from(magnitudes)) * (d_k**0.5 if large else 1.0),
        masked=masked or empty_rows,
        empty_rows=empty_rows,
        seed=draw(st.integers(0, 2**32 - 2)),
    )


@st.composite
def sentences(draw: st.DrawFn) -> str:
    """Sentences with capitals, repeated words and punctuation attached to words."""
    word = st.text(alphabet="abcdeLMNxyz", min_size=1, max_size=6)
    words = draw(st.lists(word, min_size=1, max_size=12))
    if len(words) > 1 and draw(st.booleans()):
        words.append(words[0])  # a repeated word
    marks = st.sampled_from(["", "", "", ",", ".", "!", "?", ";", ":", "'", '"', "-"])
    return " ".join(w + draw(marks) for w in words)


@dataclass(frozen=True)
class KernelProblem:
    """q, k, v (and a mask) for the kernel section, attention(q, k, v), in SDPA's layout (..., h, n, d)."""

    batch: tuple[int, ...]
    heads: int
    kv_heads: int  # < heads only for grouped-query attention; it divides heads
    n_q: int
    n_kv: int
    d_k: int
    d_v: int
    magnitude: float
    mask: str  # "none", "bool" or "float"
    mask_shape: str  # "full" (..., h, n_q, n_kv) or "shared" (n_q, n_kv), broadcast over batch and heads
    seed: int

    def unbatched(self) -> KernelProblem:
        return replace(self, batch=())

    def tensors(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        """(q, k, v, mask): drawn in float64 on the CPU, then cast; a boolean mask leaves every query a key."""
        generator = torch.Generator().manual_seed(self.seed)

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64) * self.magnitude

        q = randn(*self.batch, self.heads, self.n_q, self.d_k)
        k = randn(*self.batch, self.kv_heads, self.n_kv, self.d_k)
        v = randn(*self.batch, self.kv_heads, self.n_kv, self.d_v)
        shape = (*self.batch, self.heads, self.n_q, self.n_kv) if self.mask_shape == "full" else (self.n_q, self.n_kv)
        mask = None
        if self.mask == "bool":
            mask = torch.rand(*shape, generator=generator) < 0.6
            first = torch.randint(0, self.n_kv, (*shape[:-1], 1), generator=generator)
            mask.scatter_(-1, first, True)
        elif self.mask == "float":  # a finite bias of the size of the scores (ALiBi-like)
            mask = torch.randn(*shape, generator=generator, dtype=torch.float64) * 2.0
        _intermediates_fit(q, k, v, dtype)
        moved = [_representable(t.to(device=device, dtype=dtype)) for t in (q, k, v)]
        if mask is not None:
            mask = mask.to(device) if mask.dtype == torch.bool else _representable(mask.to(device=device, dtype=dtype))
        return (*moved, mask)


def _intermediates_fit(q: Tensor, k: Tensor, v: Tensor, dtype: torch.dtype) -> None:
    """Discard the example when q kᵀ overflows the dtype (the kernel section's only large intermediate)."""
    if dtype.is_floating_point and dtype != torch.float64:
        group = q.shape[-3] // k.shape[-3]
        largest = (q.abs() @ k.abs().repeat_interleave(group, dim=-3).transpose(-2, -1)).max().item()
        if largest > torch.finfo(dtype).max:
            reject()


@st.composite
def kernel_problems(
    draw: st.DrawFn, mask: tuple[str, ...] = ("none",), grouped: bool = False
) -> KernelProblem:
    """q, k, v of 1-8 query heads (with grouped, fewer key/value heads that divide them), lengths drawn
    apart (tile edges included), d_k and d_v drawn apart, 0-2 batch dimensions, a mask of the given kinds."""
    n_q, n_kv = min(draw(lengths()), 160), min(draw(lengths()), 160)
    if grouped:  # a group is two query heads at least: room for two within the budget
        n_kv = min(n_kv, max(1, WORK_BUDGET // (2 * n_q)))
    room = max(1, WORK_BUDGET // (n_q * n_kv))
    if grouped:
        kv_heads = draw(st.integers(1, max(1, min(3, room // 2))))
        heads = kv_heads * draw(st.integers(2, max(2, min(4, room // kv_heads))))
    else:
        heads = kv_heads = draw(st.integers(1, max(1, min(8, room))))
    room = max(1, room // heads)
    batch: tuple[int, ...] = ()
    for _ in range(draw(st.integers(0, 2))):
        size = draw(st.integers(1, max(1, min(3, room))))
        room = max(1, room // size)
        batch += (size,)
    return KernelProblem(
        batch=batch,
        heads=heads,
        kv_heads=kv_heads,
        n_q=n_q,
        n_kv=n_kv,
        d_k=draw(st.integers(1, 64)),
        d_v=draw(st.integers(1, 64)),
        magnitude=draw(st.sampled_from(MAGNITUDES[:3])),
        mask=draw(st.sampled_from(mask)),
        mask_shape=draw(st.sampled_from(("full", "shared"))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# ---------------------------------------------------------------- the kernel's optional features (issue 19)
# window sides: -1 unbounded, 0 (the query's own position), small and tile-sized reaches
WINDOW_SIDES = (-1, 0, 1, 2, 5, 16)
# caps from well inside the drawn scaled scores (strongly bent) to far outside them (plain attention)
SOFTCAPS = (0.5, 2.0, 10.0, 50.0, 1e6)
MAX_KERNEL_HEADS = 12  # kernel_problems draws at most 12 query heads (3 key/value heads × 4)
SLOPES = (0.0, 1 / 256, 1 / 16, 0.125, 0.5, 1.0)


def windows() -> st.SearchStrategy[tuple[int, int]]:
    """(left, right) local windows, -1 meaning unbounded on that side."""
    return st.tuples(st.sampled_from(WINDOW_SIDES), st.sampled_from(WINDOW_SIDES))


def softcaps() -> st.SearchStrategy[float]:
    return st.sampled_from(SOFTCAPS)


def alibi_slopes() -> st.SearchStrategy[tuple[float, ...]]:
    """One ALiBi slope per query head (the first `heads` are used): the geometric slopes of the ALiBi paper
    (2^(-8h/H)), or drawn ones, zero included."""
    geometric = st.integers(1, MAX_KERNEL_HEADS).map(
        lambda n: tuple(2 ** (-8 * (h + 1) / n) for h in range(MAX_KERNEL_HEADS)))
    drawn = st.lists(st.sampled_from(SLOPES), min_size=MAX_KERNEL_HEADS, max_size=MAX_KERNEL_HEADS).map(tuple)
    return st.one_of(geometric, drawn)


def alignment_problem(n_q: int, n_kv: int, heads: int = 2, seed: int = 19) -> KernelProblem:
    """A fixed problem with the given lengths: the alignment cases every profile tries (explicit examples)."""
    return KernelProblem(batch=(), heads=heads, kv_heads=heads, n_q=n_q, n_kv=n_kv, d_k=8, d_v=5, magnitude=1.0,
                         mask="none", mask_shape="shared", seed=seed)


# n_q = 1 < n_kv (one decoding step), n_q < n_kv (a chunk of new queries), n_q > n_kv, n_kv = 1
ALIGNMENT_CASES = ((1, 9), (3, 9), (9, 3), (4, 1))

# dropout (QKV-DROPOUT) is judged on a mean over draws: a missing 1/(1 - p) shifts the mean by p·‖context‖, which
# stands out of the Hoeffding bound only over enough query rows (heads × n_q); with this many and 128 draws it
# does on every edge problem simulated in tests/test_dropout_bound.py (by 2.3× the bound at least)
DROPOUT_ROWS = 32


@st.composite
def dropout_problems(draw: st.DrawFn) -> KernelProblem:
    """Unmasked q, k, v of 1-4 heads with heads × n_q ≥ DROPOUT_ROWS query rows and 4-40 keys, d_k and d_v
    drawn apart, magnitudes from nearly uniform weights (0.25) to peaked ones (2.0)."""
    heads = draw(st.integers(1, 4))
    n_q = draw(st.integers(max(4, -(-DROPOUT_ROWS // heads)), 40))
    return KernelProblem(batch=(), heads=heads, kv_heads=heads, n_q=n_q, n_kv=draw(st.integers(4, 40)),
                         d_k=draw(st.integers(1, 32)), d_v=draw(st.integers(2, 32)),
                         magnitude=draw(st.sampled_from(MAGNITUDES[:3])), mask="none", mask_shape="full",
                         seed=draw(st.integers(0, 2**32 - 1)))


# ---------------------------------------------------------------- packed variable-length batches (QKV-VARLEN)
MAX_PACKED_SEQUENCES = 4
# short lengths (1 included) and lengths around the first tile edges: a pack of a few crosses 64 and 128
PACKED_LENGTHS = (1, 2, 3, 5, 15, 16, 17, 31, 32, 33)


@dataclass(frozen=True)
class PackedProblem:
    """Sequences of different lengths packed one after another along the token axis (FlashAttention's varlen
    layout, cu_seqlens). Each sequence is a KernelProblem of its own (no batch axis, its own seed), so that the
    same sequence can also be attended alone."""

    heads: int
    lengths: tuple[tuple[int, int], ...]  # (n_q, n_kv) of each sequence, in packing order
    d_k: int
    d_v: int
    magnitude: float
    seed: int

    def sequences(self) -> list[KernelProblem]:
        return [KernelProblem(batch=(), heads=self.heads, kv_heads=self.heads, n_q=n_q, n_kv=n_kv, d_k=self.d_k,
                              d_v=self.d_v, magnitude=self.magnitude, mask="none", mask_shape="shared",
                              seed=(self.seed + 7919 * s) % 2**32)
                for s, (n_q, n_kv) in enumerate(self.lengths)]


def cu_seqlens(lengths: list[int] | tuple[int, ...]) -> Tensor:
    """The offsets of sequences of these lengths packed in order: int32 (count + 1,), 0 then the running totals."""
    return torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0).to(torch.int32)


@st.composite
def packed_problems(draw: st.DrawFn, min_sequences: int = 1) -> PackedProblem:
    """min_sequences-4 sequences, query and key lengths drawn apart (length 1 and n_q ≠ n_kv included), 1-4 heads,
    d_k and d_v drawn apart; heads × Σ n_q·n_kv within WORK_BUDGET."""
    length = st.one_of(st.sampled_from(PACKED_LENGTHS), st.integers(1, 40))
    count = draw(st.integers(min_sequences, MAX_PACKED_SEQUENCES))
    lengths = tuple((draw(length), draw(length)) for _ in range(count))
    room = max(1, WORK_BUDGET // sum(n_q * n_kv for n_q, n_kv in lengths))
    return PackedProblem(
        heads=draw(st.integers(1, max(1, min(4, room)))),
        lengths=lengths,
        d_k=draw(st.integers(1, 32)),
        d_v=draw(st.integers(1, 32)),
        magnitude=draw(st.sampled_from(MAGNITUDES[:3])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
