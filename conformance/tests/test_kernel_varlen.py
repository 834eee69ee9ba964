"""Spec section "kernel", clause QKV-VARLEN: packed variable-length batches (FlashAttention's cu_seqlens). Each
sequence of a pack is attended alone, and no sequence's keys or values reach another sequence's output.

Every sequence is a KernelCase of its own (the same inputs attended alone, an ordinary call), so its rows of the
packed context are judged against its own reference under the usual tolerance policy."""

from __future__ import annotations

from dataclasses import replace

import torch
from hypothesis import example, given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge.assertions import ClauseFailure, assert_matches, check_shape, fail, matches
from conformance.judge.blocking import prerequisite
from conformance.judge.cases import KernelCase, KernelInputs
from conformance.judge.strategies import MAX_PACKED_SEQUENCES, PackedProblem, cu_seqlens, packed_problems
from conformance.tests.test_kernel import _holds

SCALES = (None, 0.3, 2.5)  # the default 1/√d_k, and explicit scales below and above it


def _sequences(cases, problem: PackedProblem, causal: bool, scale: float | None) -> list[KernelCase]:
    """Each sequence of the pack as its own ordinary call (fitted to the declared shapes like any KernelCase)."""
    return [cases.kernel(p, causal=causal, scale=scale, masked=False) for p in problem.sequences()]


def _starts(sequences: list[KernelCase], axis: str) -> list[int]:
    """Where each sequence's queries ("q") or keys ("k") start in the pack, and the total at the end."""
    lengths = [getattr(s.inputs, axis).shape[-2] for s in sequences]
    return [int(x) for x in cu_seqlens(lengths).tolist()]


def _where(sequences: list[KernelCase], s: int) -> str:
    q, k = _starts(sequences, "q"), _starts(sequences, "k")
    return (f"sequence {s} of {len(sequences)} in the pack, rows counted from its first query: its queries are "
            f"packed rows {q[s]}..{q[s + 1] - 1} (cu_seqlens_q={q}), its keys {k[s]}..{k[s + 1] - 1} "
            f"(cu_seqlens_k={k})")


def _packed(sequences: list[KernelCase]) -> torch.Tensor:
    """The packed call on the sequences' inputs, packed in order; its context (h, Σ n_q, d_v)."""
    first = sequences[0]
    q, k, v = (torch.cat([getattr(s.inputs, name) for s in sequences], dim=-2) for name in ("q", "k", "v"))
    lengths_q = [s.inputs.q.shape[-2] for s in sequences]
    lengths_k = [s.inputs.k.shape[-2] for s in sequences]
    out = first.implementation.kernel(q, k, v, causal=first.causal, scale=first.scale,
                                      cu_seqlens_q=cu_seqlens(lengths_q), cu_seqlens_k=cu_seqlens(lengths_k))
    check_shape("packed attention context", out.context, (q.shape[-3], q.shape[-2], v.shape[-1]), "(h, Σ n_q, d_v)")
    return out.context


def _rows(context: torch.Tensor, sequences: list[KernelCase], s: int) -> torch.Tensor:
    """Sequence s's rows of the packed context; those of its queries that see no key are not judged (zeroed on
    both sides, as KernelCase.run_checked does)."""
    starts = _starts(sequences, "q")
    rows = context[..., starts[s]:starts[s + 1], :]
    empty = sequences[s].empty_rows()
    return rows if empty is None else rows.masked_fill(empty.to(rows.device)[:, None], 0)


def _alone(sequences: list[KernelCase], s: int, failure: str) -> None:
    """When sequence s attended alone (an ordinary call, same causal and scale) does not match the reference
    either, the pack cannot be judged on it: the example is blocked by the clause the ordinary call breaks."""
    case = sequences[s]
    if _holds(case):
        return
    alone = f"sequence {s} attended alone (an ordinary call on its {case.problem.n_q} queries and " \
            f"{case.problem.n_kv} keys) does not match the reference either"
    if not _holds(case.plain()):
        prerequisite(case, "QKV-ATTEND", f"{alone}, even without causal or scale", failure)
    if case.causal and not _holds(case.twin(scale=None)):
        prerequisite(case, "QKV-CAUSAL", f"{alone} with causal=True ({case.alignment} aligned)", failure)
    if case.scale is not None:
        prerequisite(case, "QKV-SCALE", f"{alone} with scale={case.scale:g}", failure)
    prerequisite(case, "QKV-ATTEND", alone, failure)


def _check_pack(sequences: list[KernelCase], context: torch.Tensor) -> None:
    """Every sequence's rows of the packed context match attending that sequence alone."""
    for s, case in enumerate(sequences):
        rows, expected = _rows(context, sequences, s), case.expected().context
        if matches(rows, expected):
            continue
        where = f"{_where(sequences, s)}, with {_options(case)}; the rows must equal attending it alone"
        try:
            assert_matches(rows, expected, where)
        except ClauseFailure as error:
            _alone(sequences, s, str(error))
            raise


def _options(case: KernelCase) -> str:
    scale = "1/√d_k" if case.scale is None else f"{case.scale:g}"
    return f"causal={case.causal} ({case.alignment} aligned), scale={scale}"


@clause("QKV-VARLEN")
@needs("attention", "varlen")
@example(problem=PackedProblem(heads=2, lengths=((1, 1), (3, 5), (4, 2)), d_k=8, d_v=5, magnitude=1.0, seed=3),
         causal=True, scale=None)
@example(problem=PackedProblem(heads=3, lengths=((5, 5), (1, 7), (6, 6)), d_k=4, d_v=6, magnitude=1.0, seed=5),
         causal=False, scale=0.3)
@example(problem=PackedProblem(heads=1, lengths=((9, 3),), d_k=5, d_v=3, magnitude=1.0, seed=7),
         causal=True, scale=2.5)
@given(problem=packed_problems(), causal=st.booleans(), scale=st.sampled_from(SCALES))
def test_each_packed_sequence_is_attended_alone(cases, problem, causal, scale):
    sequences = _sequences(cases, problem, causal, scale)
    _check_pack(sequences, _packed(sequences))


@clause("QKV-VARLEN")
@needs("attention", "varlen")
@example(problem=PackedProblem(heads=2, lengths=((4, 4), (4, 4), (4, 4)), d_k=6, d_v=4, magnitude=1.0, seed=11),
         changed=1, causal=False)
@example(problem=PackedProblem(heads=2, lengths=((3, 6), (5, 2)), d_k=4, d_v=4, magnitude=1.0, seed=13),
         changed=0, causal=True)
@given(problem=packed_problems(min_sequences=2), changed=st.integers(0, MAX_PACKED_SEQUENCES - 1),
       causal=st.booleans())
def test_no_sequence_leaks_into_another(cases, problem, changed, causal):
    """Sequence t's keys and values replaced by fresh ones: every other sequence's rows stay those of attending
    it alone."""
    sequences = _sequences(cases, problem, causal, None)
    t = changed % len(sequences)
    before = _packed(sequences)
    fresh = cases.kernel(replace(problem.sequences()[t], seed=(problem.seed + 1) % 2**32), causal=causal,
                         masked=False).inputs
    changed_sequences = list(sequences)
    changed_sequences[t] = sequences[t].twin(KernelInputs(sequences[t].inputs.q, fresh.k, fresh.v, None))
    after = _packed(changed_sequences)
    for s, case in enumerate(sequences):
        expected, rows = case.expected().context, _rows(after, sequences, s)
        if s == t or matches(rows, expected):
            continue
        moved = (rows.detach().cpu().double() - _rows(before, sequences, s).detach().cpu().double()).abs().max().item()
        # rows of a kernel that attends each sequence alone are both within `allowed` of the same reference, so
        # they move by 2·allowed at most; rows as wrong before the change as after are not a leak but wrong
        if not matches(_rows(before, sequences, s), expected) and not moved > 2 * expected.allowed:
            _check_pack(sequences, before)
        starts = _starts(sequences, "k")
        try:
            assert_matches(rows, expected, f"{_where(sequences, s)}, with {_options(case)}")
        except ClauseFailure as error:
            fail(f"sequence {t} leaks into sequence {s}: replacing sequence {t}'s keys and values (packed keys "
                 f"{starts[t]}..{starts[t + 1] - 1}) moved sequence {s}'s rows by up to {moved:.3g}; after the "
                 f"change, {error}")
