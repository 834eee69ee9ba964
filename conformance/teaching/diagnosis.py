"""Work out what a wrong result corresponds to, to say it in words.

These functions never decide a verdict; they only turn "the numbers differ"
into "your weights are softmax(ω / 24), i.e. divided by d_k" (in a failure
message) or "your weights match what you get with the softmax over the
queries" (after a run, for a student).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, replace

import torch
from torch import Tensor

import spec

# ------------------------------------------------------------------------------------------------
# Which known mistake does a submission make? Compare its outputs on the golden inputs with the
# outputs of every mistake in conformance.teaching.mistakes on the same inputs.


@dataclass(frozen=True)
class Probe:
    """One call on the seed's inputs: the function, its arguments and keyword arguments."""

    label: str
    function: str
    args: tuple
    kwargs: dict
    needs: tuple[str, ...] = ()  # what a kernel must declare to be asked it (see _claimed)


@dataclass(frozen=True)
class Diagnosis:
    kind: str  # "mistake" (a known mistake matches) or "observation" (what was seen instead)
    title: str
    text: str
    clauses: tuple[str, ...]
    probes: tuple[str, ...]  # the labels of the seed's calls where it showed
    functions: tuple[str, ...] = ()  # the submission's functions those calls went to, each once

    def sentence(self, hidden: frozenset[str] = frozenset()) -> str:
        """The diagnosis in words; the hint names no clause in `hidden` (a student's rendering before the
        deadline: a mistake whose clauses are all hidden gets no hint)."""
        # each function once (a handful at most): the probe labels ("weights step", "weights step, causal")
        # repeat one another
        names = list(dict.fromkeys(self.functions or self.probes))
        where = f" (seen in: {', '.join(names)})" if names else ""
        shown = [c for c in self.clauses if c not in hidden]
        if self.kind == "mistake" and shown:
            clause_titles = "; ".join(f"{c}: {spec.load().clause(c).title}" for c in shown)
            return f"{self.text}{where}. Hint: see {clause_titles} in spec/SPEC.md."
        return f"{self.text}{where}."


def _golden_probes() -> list[Probe]:
    import golden

    def t(name: str) -> Tensor:
        return torch.from_numpy(golden.load(name).copy())

    sentence = golden.manifest()["sentence"]
    x, w_q, w_k, w_v = t("embedding/x"), t("projection/w_q"), t("projection/w_k"), t("projection/w_v")
    heads = (t("multihead/w_q"), t("multihead/w_k"), t("multihead/w_v"))
    x_kv, omega = t("cross/x_kv"), t("scores/omega")
    mask = torch.ones(6, 6, dtype=torch.bool).tril().flip(-1)
    mask[2] = False  # one query with no key at all
    batch = torch.stack([x, x.flip(0)])
    return [
        Probe("vocabulary", "build_vocab", (sentence,), {}),
        Probe("token ids", "token_ids", (sentence, golden.load_json("tokens/vocab")), {}),
        Probe("embedding", "embed", (t("tokens/ids"), t("embedding/table")), {}),
        Probe("projection", "project", (x, w_k), {}),
        Probe("scores", "attention_scores", (t("projection/queries"), t("projection/keys")), {}),
        Probe("weights step", "attention_weights", (omega, 24), {}),
        Probe("weights step, causal", "attention_weights", (omega, 24), {"causal": True}),
        Probe("weights step, explicit mask", "attention_weights", (omega, 24), {"mask": mask}),
        Probe("self-attention", "self_attention", (x, w_q, w_k, w_v), {}),
        Probe("causal self-attention", "self_attention", (x, w_q, w_k, w_v), {"causal": True}),
        Probe("batched self-attention", "self_attention", (batch, w_q, w_k, w_v), {}),
        # scaled up, to tell the stable softmax from exp(s) / Σ exp(s)
        Probe("weights step, large scores", "attention_weights", (omega * 1000, 24), {}),
        Probe("self-attention, large scores", "self_attention", (x, w_q * 100, w_k, w_v), {}),
        Probe("cross-attention", "cross_attention", (x, x_kv, w_q, w_k, w_v), {}),
        # as many keys as queries, so that mixing up x_q and x_kv runs instead of crashing
        Probe("cross-attention, 6 keys", "cross_attention", (x, x_kv[:6], w_q, w_k, w_v), {}),
        Probe("causal cross-attention", "cross_attention", (x, x_kv, w_q, w_k, w_v), {"causal": True}),
        Probe("multi-head attention", "multihead_attention", (x, *heads), {}),
        Probe("concatenated multi-head attention", "multihead_attention_concat", (x, *heads), {}),
        *_kernel_probes(x, x_kv, heads),
    ]


def _kernel_probes(x: Tensor, x_kv: Tensor, heads: tuple[Tensor, Tensor, Tensor]) -> list[Probe]:
    """attention(q, k, v) on the seed's three heads: queries from the sentence, keys and values from the
    second input (8 tokens, so that n_q ≠ n_kv shows the causal alignment)."""
    w_q, w_k, w_v = heads
    q, k, v = x @ w_q.transpose(-2, -1), x_kv @ w_k.transpose(-2, -1), x_kv @ w_v.transpose(-2, -1)
    keep = torch.ones(6, 8, dtype=torch.bool).tril(2)  # every query keeps keys 0..i+2
    bias = -0.5 * (torch.arange(6).unsqueeze(-1) - torch.arange(8)).abs().float()  # ALiBi-like
    return [
        Probe("kernel", "attention", (q, k, v), {}),
        Probe("kernel, scale 0.1", "attention", (q, k, v), {"scale": 0.1}),
        Probe("kernel, causal", "attention", (q, k, v), {"causal": True}),
        Probe("kernel, boolean mask", "attention", (q, k, v), {"mask": keep}),
        Probe("kernel, float mask", "attention", (q, k, v), {"mask": bias}),
        # grouped-query: four query heads over two key/value heads (each serves two consecutive query heads)
        Probe("kernel, grouped heads", "attention", (torch.cat([q, q[:1]]), k[:2], v[:2]), {}),
        # the optional features (asked only of a kernel that declares them)
        Probe("kernel, window (2, 0)", "attention", (q, k, v), {"window": (2, 0)}),
        Probe("kernel, softcap 2", "attention", (q, k, v), {"softcap": 2.0}),
        Probe("kernel, ALiBi", "attention", (q, k, v), {"alibi_slopes": torch.tensor([0.5, 0.25, 0.125])}),
        # query 0 sees no key: asked only of a kernel that declares such a row is zeros (QKV-EMPTY-ROWS)
        Probe("kernel, a query that sees no key", "attention", (q, k, v), {"mask": keep & (torch.arange(6) > 0)[:, None]},
              needs=("masks", "masked_rows:zeros")),
        # two sequences packed (2 and 4 queries over 3 and 5 keys): each attended alone (QKV-VARLEN)
        Probe("kernel, packed sequences", "attention", (q, k, v),
              {"cu_seqlens_q": torch.tensor([0, 2, 6]), "cu_seqlens_k": torch.tensor([0, 3, 8])},
              needs=("varlen",)),
    ]


def _claimed(implementation, requirement: str) -> bool:
    """Implementation.claims, and 'masked_rows:zeros' for a declared row policy of zeros."""
    if requirement == "masked_rows:zeros":
        return implementation.capabilities.masked_rows == "zeros"
    return implementation.claims(requirement)


# a probe keyword -> the capability a kernel declares to be asked it
_FEATURE_OF = {"window": "local_window", "softcap": "softcap", "alibi_slopes": "alibi"}


def _same(a: object, b: object) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return False
        a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
        return bool(torch.allclose(a64, b64, rtol=1e-3, atol=1e-5, equal_nan=True))
    return a == b


def _returns_no_weights(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and value[1] is None


def _drop_weights(value: object) -> object:
    """(context, None) from a (context, weights) pair; anything else unchanged."""
    return (value[0], None) if isinstance(value, tuple) and len(value) == 2 else value


def _reference_call(pipeline: object, probe: Probe) -> object:
    # copies: some mistakes write into their inputs, which must not leak into the next call
    args = [a.clone() if isinstance(a, Tensor) else a for a in probe.args]
    kwargs = {k: v.clone() if isinstance(v, Tensor) else v for k, v in probe.kwargs.items()}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return getattr(pipeline, probe.function)(*args, **kwargs)
        except Exception:  # a mistake that crashes on this input matches nothing
            return None


def _submission_call(implementation, probe: Probe) -> object:
    """The submission's output on the probe, None if unusable, or the ImplementationError it raised."""
    from conformance.judge.adapter import ImplementationError

    try:
        result = implementation.call(probe.function, *probe.args, **probe.kwargs)
    except ImplementationError as error:
        return error
    if isinstance(result, (tuple, list)):
        return tuple(implementation._from_impl(probe.function, r) if r is not None else None for r in result)
    if isinstance(result, dict):
        return result
    try:
        array = implementation._from_impl(probe.function, result)
    except AssertionError:
        return None
    return (array, None) if probe.function == "attention" else array  # a kernel may return the context alone


def _observe(probe: Probe, got: object, expected: object) -> str:
    """What is wrong with a probe's output, in numbers, when no known mistake explains it."""
    pairs = list(zip(got, expected)) if isinstance(got, tuple) and isinstance(expected, tuple) else [(got, expected)]
    names = ["context", "weights"] if len(pairs) == 2 else ["output"]
    for name, (a, b) in zip(names, pairs):
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            if a != b:
                return f"{probe.function} returned {a!r}; expected {b!r}"
            continue
        if a.shape != b.shape:
            return f"your {name} has shape {tuple(a.shape)}; expected {tuple(b.shape)}"
        a64 = a.detach().double().cpu()
        if not torch.isfinite(a64).all():
            return f"your {name} contains NaN or inf"
        if name == "weights" or probe.function == "attention_weights":
            sums, expected_sums = a64.sum(-1), b.double().sum(-1)
            off = (sums - expected_sums).abs()
            if off.max().item() > 1e-3:
                row = int(off.flatten().argmax())
                return (
                    f"row {row} of your weights sums to {sums.flatten()[row].item():.3g}, expected "
                    f"{expected_sums.flatten()[row].item():.3g} (your rows sum to {sums.min().item():.3g}–{sums.max().item():.3g})"
                )
        error = (a64 - b.detach().double()).abs().max().item()
        if error > 1e-3 * (1 + b.abs().max().item()):
            return f"your {name} differs from the expected one by up to {error:.3g}"
    return ""


def _as_declared(implementation, probe: Probe) -> Probe | None:
    """The probe as the implementation takes it (None: a call it does not claim). A causal-only
    implementation gets only causal calls, with `causal` passed only to a function that takes it; the
    kernel gets SDPA's names (is_causal, attn_mask) where its signature has those, and grouped heads
    only when it declares them."""
    from conformance.judge.adapter import ATTENTION_FUNCTIONS

    if not implementation.has(probe.function):
        return None
    if probe.function == "attention":
        if implementation.capabilities.layout != "bhnd":  # the probes are written in (..., h, n, d)
            return None
        q, k = probe.args[0], probe.args[1]
        grouped = k.shape[-3] != q.shape[-3]
        if grouped and not implementation.claims("grouped_kv_heads"):
            return None
        if any(key in _FEATURE_OF and not implementation.claims(_FEATURE_OF[key]) for key in probe.kwargs):
            return None
        if not all(_claimed(implementation, requirement) for requirement in probe.needs):
            return None
        options = {key: value for key, value in probe.kwargs.items() if not key.startswith("cu_seqlens")}
        keywords = implementation.kernel_keywords(**options, grouped=grouped)
        if "cu_seqlens_q" in probe.kwargs:  # a pack, as the kernel takes one (offsets, max_seqlen where named)
            tensors, offsets = implementation.packed_arguments(*probe.args, probe.kwargs["cu_seqlens_q"],
                                                               probe.kwargs["cu_seqlens_k"])
            return replace(probe, args=tuple(tensors), kwargs={**keywords, **offsets})
        if implementation.packed_only:
            return None  # every other probe is a single example: not asked of a kernel that takes packs only
        return replace(probe, kwargs=keywords)
    if not implementation.capabilities.causal_only or probe.function not in ATTENTION_FUNCTIONS:
        return probe
    if not probe.kwargs.get("causal"):
        return None
    if implementation.accepts(probe.function, "causal"):
        return probe
    return replace(probe, kwargs={k: v for k, v in probe.kwargs.items() if k != "causal"})


def diagnose(implementation) -> list[Diagnosis]:
    """Known mistakes that explain the submission's outputs on the golden inputs, else observations.

    A mistake's signature is the probes where it differs from a correct
    implementation. It is named when the submission equals it on at least half
    of the signature probes the submission answered (a student may have fixed
    one corner of a mistake, or made a second one elsewhere).
    """
    from conformance.teaching import mistakes

    pipeline = mistakes.Pipeline()
    # the correct kernel aligns causal attention as the submission declares (a bottom-right kernel is right)
    bottom_right = implementation.capabilities.causal_alignment == "bottom_right"
    kernel = mistakes.KernelBottomRight() if bottom_right else mistakes.Kernel()
    # a causal-only mistake repeats its causal twin's signature: named once, by the twin
    candidates = {m: m() for m in mistakes.MISTAKES if not m.CAPABILITIES.get("causal")}
    agree: dict[type, list[str]] = {m: [] for m in candidates}
    disagree: dict[type, int] = {m: 0 for m in candidates}
    observations: dict[str, list[Probe]] = {}
    probes = _golden_probes()
    for probe in probes:
        asked = _as_declared(implementation, probe)
        if asked is None or any(
            not implementation.accepts(probe.function, k) for k in asked.kwargs
        ):
            continue
        got = _submission_call(implementation, asked)
        if isinstance(got, AssertionError):  # it raised or hung on the seed's own inputs: say so
            observations.setdefault(f"{got} on the seed's inputs", []).append(probe)
            continue
        if got is None:
            continue
        # a submission that declares returns_weights=False answers (context, None): judge the context alone
        # a pack returns no weights (QKV-VARLEN): its context alone is compared
        packed = "cu_seqlens_q" in probe.kwargs
        keep = _drop_weights if packed or _returns_no_weights(got) else (lambda value: value)
        correct = kernel if probe.function == "attention" else pipeline
        expected = keep(_reference_call(correct, probe))
        explained = False
        for kind, candidate in candidates.items():
            if not hasattr(candidate, probe.function):
                continue  # a kernel mistake says nothing about the pipeline's functions, and the other way round
            theirs = keep(_reference_call(candidate, probe))
            if theirs is None or _same(theirs, expected):
                continue  # not part of this mistake's signature
            if _same(got, theirs):
                agree[kind].append(probe.label)
                explained = True
            else:
                disagree[kind] += 1
        if not explained and not _same(got, expected):
            text = _observe(probe, got, expected)
            if text:
                observations.setdefault(text, []).append(probe)
    ranked = [kind for kind in candidates if agree[kind] and len(agree[kind]) >= disagree[kind]]
    ranked.sort(key=lambda kind: (-len(agree[kind]), disagree[kind]))
    named: list[type] = []
    for kind in ranked:  # a mistake that explains nothing a better-ranked one does not is left out
        if not any(set(agree[kind]) <= set(agree[other]) for other in named):
            named.append(kind)
    function_of = {probe.label: probe.function for probe in probes}
    result = [
        Diagnosis("mistake", kind.__name__, (kind.__doc__ or kind.__name__).strip().rstrip("."), tuple(kind.catches),
                  tuple(agree[kind]), tuple(dict.fromkeys(function_of[label] for label in agree[kind])))
        for kind in named
    ]
    # what a named mistake already explains in a function is a consequence of it there (values from x_q
    # cannot be multiplied with 8 keys), not a second problem: only observations elsewhere are kept
    covered = {function for d in result for function in d.functions}
    for text, seen in observations.items():
        functions = tuple(dict.fromkeys(p.function for p in seen))
        if not set(functions) <= covered:
            result.append(Diagnosis("observation", "observed", text, (), tuple(p.label for p in seen), functions))
    return result
