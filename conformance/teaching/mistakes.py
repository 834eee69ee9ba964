"""A catalogue of known mistakes: broken implementations people really write.

Pipeline is a correct implementation written as small overridable steps.
Each mistake subclasses it and changes one step, the way the mistake is
usually made; its docstring says what is wrong in plain words, `catches`
names the clause(s) whose failure must reject it, and `breaks` names every
other clause it truly breaks, each with the reason. Any other failure outside
the end-to-end clauses is collateral: one mistake failing a clause it did not
break, which the matrix reports as an error of the suite.

Two uses, neither of which influences a verdict:
- the suite's self-test: every mistake plugs in through the public path
  (`--impl conformance.teaching.mistakes:NoScale`, a class is instantiated) and must be
  rejected by the clause it names (`python -m tests.matrix`). A mistake is
  never recognised by name by any test: if one survives, the fix is a missing
  property or a strategy that does not reach the bug;
- diagnosis: when a submission fails, its outputs on the golden inputs are
  compared with each mistake's, to tell a student which mistake it looks like.
"""

from __future__ import annotations

import math
import string

import torch
import torch.nn.functional as F
from torch import Tensor

import golden


class Pipeline:
    """Correct attention, one overridable method per step."""

    CAPABILITIES = {
        "array": "torch",
        "dtypes": ["float64", "float32", "float16", "bfloat16"],
        "devices": ["cpu", "cuda"],
        "batching": True,
        "autograd": True,
        "returns_weights": True,
    }
    catches: tuple[str, ...] = ()
    breaks: dict[str, str] = {}  # other clauses this mistake truly breaks -> why

    # tokens ---------------------------------------------------------------
    def words(self, sentence: str) -> list[str]:
        return sentence.translate(str.maketrans("", "", string.punctuation)).split()

    def build_vocab(self, sentence: str) -> dict[str, int]:
        return {w: i for i, w in enumerate(sorted(set(self.words(sentence))))}

    def token_ids(self, sentence: str, vocab: dict[str, int]) -> Tensor:
        return torch.tensor([vocab[w] for w in self.words(sentence)], dtype=torch.int64)

    def embed(self, ids: Tensor, table: Tensor) -> Tensor:
        return table[ids]

    # steps ----------------------------------------------------------------
    def project(self, x: Tensor, weight: Tensor) -> Tensor:
        return x @ weight.transpose(-2, -1)

    def attention_scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        return queries @ keys.transpose(-2, -1)

    def scale(self, scores: Tensor, d_k: int, d_v: int, d_in: int) -> Tensor:
        return scores / math.sqrt(d_k)

    def visible(self, n_q: int, n_kv: int, causal: bool, mask: Tensor | None, device) -> Tensor | None:
        allowed = mask
        if causal:
            lower = torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril()
            allowed = lower if allowed is None else allowed & lower
        return allowed

    def hide(self, scaled: Tensor, allowed: Tensor) -> Tensor:
        return scaled.masked_fill(~allowed, float("-inf"))

    def softmax(self, scaled: Tensor) -> Tensor:
        top = scaled.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        exp = torch.exp(scaled - top)
        return exp / exp.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(exp.dtype).tiny)

    def normalise(self, scores: Tensor, d_k: int, d_v: int, d_in: int, causal: bool, mask: Tensor | None) -> Tensor:
        scaled = self.scale(scores, d_k, d_v, d_in)
        allowed = self.visible(scores.shape[-2], scores.shape[-1], causal, mask, scores.device)
        if allowed is not None:
            scaled = self.hide(scaled, allowed)
        return self.softmax(scaled)

    def mix(self, weights: Tensor, values: Tensor, keys: Tensor) -> Tensor:
        return weights @ values

    def attention_weights(self, scores: Tensor, d_k: int, causal: bool = False, mask: Tensor | None = None) -> Tensor:
        return self.normalise(scores, d_k, d_k, d_k, causal, mask)

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal: bool) -> tuple[Tensor, Tensor]:
        queries, keys, values = self.project(x_q, w_q), self.project(x_kv, w_k), self.project(x_kv, w_v)
        scores = self.attention_scores(queries, keys)
        weights = self.normalise(scores, keys.shape[-1], values.shape[-1], x_q.shape[-1], causal, None)
        return self.mix(weights, values, keys), weights

    # attention functions ----------------------------------------------------
    def cross_attention(self, x_q, x_kv, w_q, w_k, w_v, causal: bool = False) -> tuple[Tensor, Tensor]:
        return self.attend(x_q, x_kv, w_q, w_k, w_v, causal)

    def self_attention(self, x, w_q, w_k, w_v, causal: bool = False) -> tuple[Tensor, Tensor]:
        return self.cross_attention(x, x, w_q, w_k, w_v, causal)

    def heads(self, x: Tensor, w: Tensor) -> Tensor:
        """x (..., n, d_in), w (h, d_out, d_in) -> (..., h, n, d_out)."""
        return self.project(x.unsqueeze(-3), w)

    def multihead_attention(self, x, w_q, w_k, w_v, causal: bool = False) -> tuple[Tensor, Tensor]:
        queries, keys, values = self.heads(x, w_q), self.heads(x, w_k), self.heads(x, w_v)
        scores = self.attention_scores(queries, keys)
        weights = self.normalise(scores, keys.shape[-1], values.shape[-1], x.shape[-1], causal, None)
        return self.mix(weights, values, keys), weights

    def concat(self, per_head: Tensor) -> Tensor:
        """(..., h, n, d_v) -> (..., n, h·d_v), head-major."""
        return per_head.movedim(-3, -2).flatten(-2)

    def multihead_attention_concat(self, x, w_q, w_k, w_v, w_o=None, causal: bool = False):
        per_head, weights = self.multihead_attention(x, w_q, w_k, w_v, causal)
        joined = self.concat(per_head)
        return (joined if w_o is None else joined @ w_o.transpose(-2, -1)), weights


# ---------------------------------------------------------------- tokens
class VocabByAppearance(Pipeline):
    """The vocabulary numbers the words in the order they appear instead of in sorted order."""

    catches = ("TOK-VOCAB",)

    def build_vocab(self, sentence):
        return {w: i for i, w in enumerate(dict.fromkeys(self.words(sentence)))}


class VocabKeepsPunctuation(Pipeline):
    """The vocabulary keeps punctuation other than commas, so "first." and "first" are different words."""

    catches = ("TOK-VOCAB",)

    def build_vocab(self, sentence):
        return {w: i for i, w in enumerate(sorted(set(sentence.replace(",", "").split())))}


class EmbedThroughOneHot(Pipeline):
    """The embedding is computed through a one-hot matrix in low precision instead of copying table rows."""

    catches = ("EMB-LOOKUP",)

    def embed(self, ids, table):
        one_hot = F.one_hot(ids, table.shape[0]).to(torch.bfloat16)
        return (one_hot @ table.to(torch.bfloat16)).to(table.dtype)


# ------------------------------------------------------------ projection
class ProjectWithoutTranspose(Pipeline):
    """The projections multiply by the weight without transposing it (x W instead of x Wᵀ); that only runs when the weight is square."""

    catches = ("PROJ-LAYOUT",)
    breaks = {
        "API-SHAPES": "x W only runs when W is square; every other shape of weight raises",
    }

    def project(self, x, weight):
        return x @ weight


class KeysFromValueWeights(Pipeline):
    """The keys are projected with W_V instead of W_K."""

    catches = ("PROJ-ROLES",)
    breaks = {
        "API-SHAPES": "keys x W_Vᵀ have d_v features, so Q Kᵀ raises unless d_v = d_k",
    }

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        return super().attend(x_q, x_kv, w_q, w_v, w_v, causal)


# ----------------------------------------------------------------- scores
class ScoresTransposed(Pipeline):
    """The scores are transposed (K Qᵀ): each row belongs to a key instead of a query."""

    catches = ("SCORE-DOT",)
    breaks = {
        "API-SHAPES": "K Qᵀ has shape (n_kv, n_q): wrong whenever n_q ≠ n_kv, where the weights · values product also raises",
    }

    def attention_scores(self, queries, keys):
        return keys @ queries.transpose(-2, -1)


# ---------------------------------------------------------------- weights
class NoScale(Pipeline):
    """The scores are not divided by √d_k before the softmax."""

    catches = ("WEIGHTS-SCALE",)

    def scale(self, scores, d_k, d_v, d_in):
        return scores


class ScaleByDk(Pipeline):
    """The scores are divided by d_k instead of √d_k."""

    catches = ("WEIGHTS-SCALE",)

    def scale(self, scores, d_k, d_v, d_in):
        return scores / d_k


class ScaleBySqrtDv(Pipeline):
    """The scores are divided by √d_v (the width of the values) instead of √d_k."""

    catches = ("WEIGHTS-SCALE",)

    def scale(self, scores, d_k, d_v, d_in):
        return scores / math.sqrt(d_v)


class ScaleBySqrtModelWidth(Pipeline):
    """The scores are divided by √d_in (the width of the inputs) instead of √d_k."""

    catches = ("WEIGHTS-SCALE",)

    def scale(self, scores, d_k, d_v, d_in):
        return scores / math.sqrt(d_in)


class ScaleMultiplied(Pipeline):
    """The scores are multiplied by √d_k instead of divided."""

    catches = ("WEIGHTS-SCALE",)

    def scale(self, scores, d_k, d_v, d_in):
        return scores * math.sqrt(d_k)


class SoftmaxOverQueries(Pipeline):
    """The softmax runs over the queries instead of over the keys: your columns sum to 1, not your rows."""

    catches = ("WEIGHTS-SOFTMAX",)
    breaks = {
        "WEIGHTS-PROBABILITY": "the rows of a softmax over the queries do not sum to 1",
        "WEIGHTS-SHIFT": "adding a constant to one row changes every column's softmax",
    }

    def softmax(self, scaled):
        return torch.softmax(scaled, dim=-2).nan_to_num(0.0)


class UnstableExp(Pipeline):
    """The softmax does not subtract the row maximum before exp, so large scores overflow to inf and give NaN."""

    catches = ("WEIGHTS-STABLE",)
    breaks = {
        "MASK-EMPTY-ROW": "a row with every key masked sums exp(-inf) = 0 and divides 0 by 0",
    }

    def softmax(self, scaled):
        exp = torch.exp(scaled)
        return exp / exp.sum(dim=-1, keepdim=True)


class WeightsBeforeSoftmax(Pipeline):
    """The weights returned are the scaled scores before the softmax (the context itself is right)."""

    catches = ("WEIGHTS-PROBABILITY",)
    breaks = {
        "WEIGHTS-SOFTMAX": "the weights it returns are no softmax at all",
        "CONTEXT-MIX": "the context is not the returned weights times the values",
    }

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        context, _ = super().attend(x_q, x_kv, w_q, w_k, w_v, causal)
        scores = self.attention_scores(self.project(x_q, w_q), self.project(x_kv, w_k))
        return context, scores / math.sqrt(w_k.shape[-2])


class ChunkNormalisedPastLength(Pipeline):
    """Beyond 128 keys each block of 128 keys is normalised on its own, so a row sums to more than 1."""

    catches = ("WEIGHTS-PROBABILITY",)
    breaks = {
        "WEIGHTS-SOFTMAX": "past 128 keys the weights are a softmax per block, not over all keys",
    }

    def softmax(self, scaled):
        if scaled.shape[-1] <= 128:
            return super().softmax(scaled)
        return torch.cat([super(ChunkNormalisedPastLength, self).softmax(c) for c in scaled.split(128, dim=-1)], dim=-1)


# ---------------------------------------------------------------- context
class ContextDropsLastPartialTile(Pipeline):
    """The context leaves out the last keys when the number of keys is not a multiple of 16."""

    catches = ("CONTEXT-MIX",)
    breaks = {
        "SYM-KV-INVARIANT": "which keys are dropped depends on their position, so permuting x_kv changes the context",
    }

    def mix(self, weights, values, keys):
        full = (values.shape[-2] // 16) * 16
        if full == 0:
            return weights @ values
        return weights[..., :full] @ values[..., :full, :]


class ContextFromKeys(Pipeline):
    """The context mixes the keys instead of the values."""

    catches = ("CONTEXT-MIX",)
    breaks = {
        "PROJ-ROLES": "the keys take the values' place: W_K does W_V's job",
        "API-SHAPES": "the context has the keys' d_k features instead of the values' d_v",
    }

    def mix(self, weights, values, keys):
        return weights @ keys


# ----------------------------------------------------------------- causal
class MaskAfterSoftmax(Pipeline):
    """The causal mask is applied after the softmax without renormalising, so rows sum to less than 1."""

    catches = ("CAUSAL-RENORM",)
    breaks = {
        "CAUSAL-FUTURE": "the softmax runs over every key, so a future key's score changes the weights of the past",
        "MASK-EXPLICIT": "explicit masks are applied after the softmax too: the visible weights do not sum to 1",
        "MASK-EMPTY-ROW": "explicit masks are applied after the softmax too: the visible weights do not sum to 1",
    }

    def normalise(self, scores, d_k, d_v, d_in, causal, mask):
        weights = self.softmax(self.scale(scores, d_k, d_v, d_in))
        allowed = self.visible(scores.shape[-2], scores.shape[-1], causal, mask, scores.device)
        return weights if allowed is None else weights.masked_fill(~allowed, 0.0)


class MaskFilledWithZero(Pipeline):
    """Masked scores are set to 0 instead of -inf, so hidden keys keep a share of the weight."""

    catches = ("CAUSAL-MASK",)
    breaks = {
        "CAUSAL-FUTURE": "hidden future keys keep a share of the weight, so future tokens change the past",
        "MASK-EXPLICIT": "explicit masks are filled with 0 too and leak the same way",
        "MASK-EMPTY-ROW": "a fully masked row becomes a softmax over zeros, uniform instead of all zeros",
    }

    def hide(self, scaled, allowed):
        return scaled.masked_fill(~allowed, 0.0)


class MaskFilledWithMinus1e4(Pipeline):
    """Masked scores are set to -10000 instead of -inf, which leaks weight to hidden keys when scores are large."""

    catches = ("CAUSAL-MASK",)
    breaks = {
        "MASK-EMPTY-ROW": "a fully masked row of -10000s becomes uniform instead of all zeros",
    }

    def hide(self, scaled, allowed):
        return scaled.masked_fill(~allowed, -1e4)


class MaskOffByOne(Pipeline):
    """The causal mask is off by one: a query cannot see its own position."""

    catches = ("CAUSAL-MASK",)

    def visible(self, n_q, n_kv, causal, mask, device):
        allowed = mask
        if causal:
            lower = torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril(-1)
            allowed = lower if allowed is None else allowed & lower
        return allowed


class MaskInverted(Pipeline):
    """The causal mask is inverted: queries see the keys after them instead of before them."""

    catches = ("CAUSAL-MASK",)
    breaks = {
        "CAUSAL-FUTURE": "queries see the keys after them, so future tokens change the past",
    }

    def visible(self, n_q, n_kv, causal, mask, device):
        allowed = mask
        if causal:
            upper = torch.ones(n_q, n_kv, dtype=torch.bool, device=device).triu()
            allowed = upper if allowed is None else allowed & upper
        return allowed


class MaskBottomRight(Pipeline):
    """The causal mask is aligned bottom-right instead of top-left when there are more keys than queries."""

    catches = ("CAUSAL-MASK",)

    def visible(self, n_q, n_kv, causal, mask, device):
        allowed = mask
        if causal:
            lower = torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril(n_kv - n_q)
            allowed = lower if allowed is None else allowed & lower
        return allowed


class DecoderMaskInverted(MaskInverted):
    """A causal-only decoder (no `causal` argument) whose mask is inverted: queries see the keys after them."""

    CAPABILITIES = {**Pipeline.CAPABILITIES, "causal": "only"}
    catches = ("CAUSAL-MASK",)
    breaks = {
        "CAUSAL-FUTURE": "queries see the keys after them, so future tokens change the past",
    }

    def self_attention(self, x, w_q, w_k, w_v):
        return self.attend(x, x, w_q, w_k, w_v, causal=True)

    def cross_attention(self, x_q, x_kv, w_q, w_k, w_v):
        return self.attend(x_q, x_kv, w_q, w_k, w_v, causal=True)

    def multihead_attention(self, x, w_q, w_k, w_v):
        return super().multihead_attention(x, w_q, w_k, w_v, causal=True)

    def multihead_attention_concat(self, x, w_q, w_k, w_v, w_o=None):
        per_head, weights = self.multihead_attention(x, w_q, w_k, w_v)
        joined = self.concat(per_head)
        return (joined if w_o is None else joined @ w_o.transpose(-2, -1)), weights


class ExplicitMaskTrueMeansHidden(Pipeline):
    """An explicit mask is read the wrong way round: True is treated as "hidden" instead of "may attend"."""

    catches = ("MASK-EXPLICIT",)
    breaks = {
        "MASK-EMPTY-ROW": "a row whose mask is all False becomes fully visible instead of all zeros",
    }

    def visible(self, n_q, n_kv, causal, mask, device):
        return super().visible(n_q, n_kv, causal, None if mask is None else ~mask, device)


class EmptyRowGivesNaN(Pipeline):
    """A row whose mask hides every key comes out as NaN instead of all zeros."""

    catches = ("MASK-EMPTY-ROW",)

    def softmax(self, scaled):
        return torch.softmax(scaled, dim=-1)


# -------------------------------------------------------------- multi-head
class HeadsShareFirstWeights(Pipeline):
    """Every head uses the weights of the first head."""

    catches = ("MH-HEADS",)

    def heads(self, x, w):
        return super().heads(x, w[:1].expand_as(w))


class HeadsScaledByTotalWidth(Pipeline):
    """Each head divides by √(h·d_k), the width of all heads together, instead of its own √d_k."""

    catches = ("MH-HEADS",)

    def multihead_attention(self, x, w_q, w_k, w_v, causal=False):
        queries, keys, values = self.heads(x, w_q), self.heads(x, w_k), self.heads(x, w_v)
        heads, d_k = keys.shape[-3], keys.shape[-1]
        scores = self.attention_scores(queries, keys)
        weights = self.normalise(scores, heads * d_k, values.shape[-1], x.shape[-1], causal, None)
        return self.mix(weights, values, keys), weights


class ConcatFeatureMajor(Pipeline):
    """The heads are interleaved feature by feature instead of placed one after another."""

    catches = ("MH-CONCAT",)

    def concat(self, per_head):
        return per_head.movedim(-3, -1).flatten(-2)


# ------------------------------------------------------------------ cross
class CrossValuesFromQueries(Pipeline):
    """In cross-attention the values come from x_q instead of x_kv."""

    catches = ("CROSS-SOURCES",)
    breaks = {
        "CONTEXT-MIX": "in cross-attention the context mixes x_q W_Vᵀ, not the values x_kv W_Vᵀ",
        "API-SHAPES": "weights (n_q, n_kv) times values (n_q, d_v) raises whenever n_q ≠ n_kv",
    }

    def cross_attention(self, x_q, x_kv, w_q, w_k, w_v, causal=False):
        queries, keys, values = self.project(x_q, w_q), self.project(x_kv, w_k), self.project(x_q, w_v)
        weights = self.normalise(self.attention_scores(queries, keys), keys.shape[-1], 0, 0, causal, None)
        return weights @ values, weights


class CrossKeysFromQueries(Pipeline):
    """In cross-attention the keys come from x_q instead of x_kv."""

    catches = ("CROSS-SOURCES",)
    breaks = {
        "API-SHAPES": "weights (n_q, n_q) times values (n_kv, d_v) raises whenever n_q ≠ n_kv",
    }

    def cross_attention(self, x_q, x_kv, w_q, w_k, w_v, causal=False):
        queries, keys, values = self.project(x_q, w_q), self.project(x_q, w_k), self.project(x_kv, w_v)
        weights = self.normalise(self.attention_scores(queries, keys), keys.shape[-1], 0, 0, causal, None)
        return weights @ values, weights


# -------------------------------------------------------------- interface
class BatchAttendsAcrossExamples(Pipeline):
    """The examples of a batch attend to each other, as if they were one long sequence."""

    catches = ("API-BATCH",)

    def cross_attention(self, x_q, x_kv, w_q, w_k, w_v, causal=False):
        if x_q.dim() <= 2:
            return self.attend(x_q, x_kv, w_q, w_k, w_v, causal)
        batch = x_q.shape[:-2]
        flat_q = x_q.reshape(-1, x_q.shape[-1])
        flat_kv = x_kv.reshape(-1, x_kv.shape[-1])
        context, weights = self.attend(flat_q, flat_kv, w_q, w_k, w_v, causal)
        n_q, n_kv = x_q.shape[-2], x_kv.shape[-2]
        blocks = [weights[i * n_q:(i + 1) * n_q, i * n_kv:(i + 1) * n_kv] for i in range(flat_q.shape[0] // n_q)]
        return context.reshape(*batch, n_q, -1), torch.stack(blocks).reshape(*batch, n_q, n_kv)


class SqueezesSingleToken(Pipeline):
    """Axes of length 1 are squeezed away, so a single token (or head) loses its axis."""

    catches = ("API-SHAPES",)

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        context, weights = super().attend(x_q, x_kv, w_q, w_k, w_v, causal)
        return context.squeeze(), weights.squeeze()


class ReturnsFloat64(Pipeline):
    """The results come back in float64 whatever the input dtype."""

    catches = ("API-DTYPE",)

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        return super().attend(x_q.double(), x_kv.double(), w_q.double(), w_k.double(), w_v.double(), causal)


class ScalesScoresInPlace(Pipeline):
    """attention_weights divides the scores it was given in place, changing the caller's tensor."""

    catches = ("API-PURE",)

    def attention_weights(self, scores, d_k, causal=False, mask=None):
        scores /= math.sqrt(d_k)
        return self.normalise(scores, 1, 1, 1, causal, mask)


class DropoutLeftOn(Pipeline):
    """Dropout is left on, so the same inputs give different weights."""

    catches = ("API-DETERMINISTIC",)
    breaks = {
        "WEIGHTS-SOFTMAX": "training-mode dropout scales the weights it keeps by 1/(1 - p): no softmax, even when nothing is dropped",
        "WEIGHTS-PROBABILITY": "training-mode dropout scales the weights it keeps by 1/(1 - p), so rows do not sum to 1",
    }

    def softmax(self, scaled):
        return F.dropout(super().softmax(scaled), p=0.1, training=True)


class PrintsEverything(Pipeline):
    """Debug prints of every intermediate are left in."""

    catches = ("API-QUIET",)

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        context, weights = super().attend(x_q, x_kv, w_q, w_k, w_v, causal)
        for step in range(20):
            print(f"step {step}: weights {tuple(weights.shape)} context {tuple(context.shape)} " + "." * 5000)
        return context, weights


class PositionBiasWithoutMask(Pipeline):
    """The scores get a bias that depends on the position, so reordering the tokens changes the result."""

    catches = ("SYM-EQUIVARIANT",)
    breaks = {
        "SYM-KV-INVARIANT": "the bias follows the keys' positions, so permuting x_kv changes the weights",
        "WEIGHTS-SOFTMAX": "attention_weights adds the bias too: softmax(ω/√d_k + b) is no softmax of ω for any scale",
        "WEIGHTS-STABLE": "attention_weights adds the bias too, also for large scores",
        "MASK-EXPLICIT": "attention_weights adds the bias too, also under a mask",
        "MASK-EMPTY-ROW": "attention_weights adds the bias too, also under a mask",
    }

    def scale(self, scores, d_k, d_v, d_in):
        bias = torch.arange(scores.shape[-1], device=scores.device, dtype=scores.dtype) * 1e-2
        return scores / math.sqrt(d_k) + bias


# --------------------------------------------------------------- numerics
class HalfPrecisionInside(Pipeline):
    """Everything is computed in bfloat16 whatever the input dtype, which loses accuracy."""

    catches = ("NUM-ACCURACY",)

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        low = [t.to(torch.bfloat16) for t in (x_q, x_kv, w_q, w_k, w_v)]
        context, weights = super().attend(*low, causal)
        return context.to(x_q.dtype), weights.to(x_q.dtype)


class DetachesTheWeights(Pipeline):
    """The weights are detached from the graph, so no gradient reaches W_Q or W_K."""

    catches = ("NUM-GRADIENTS",)

    def softmax(self, scaled):
        return super().softmax(scaled).detach()


# ----------------------------------------------------------------- golden
class ReproducesOnlyTheSeed(Pipeline):
    """The seed's own answer is returned for the seed's inputs; other inputs are computed without the scale."""

    catches = ("WEIGHTS-SCALE",)
    breaks = {
        "CAUSAL-MASK": "other inputs are computed without any mask",
        "CAUSAL-RENORM": "other inputs are computed without any mask",
        "CAUSAL-FUTURE": "other inputs are computed without any mask",
    }

    def attend(self, x_q, x_kv, w_q, w_k, w_v, causal):
        seed_x = torch.from_numpy(golden.load("embedding/x").copy())
        if not causal and x_q.shape == seed_x.shape and torch.equal(x_q.detach().cpu().float(), seed_x):
            context = torch.from_numpy(golden.load("self/context").copy())
            weights = torch.from_numpy(golden.load("self/weights").copy())
            return context.to(x_q), weights.to(x_q)
        queries, keys, values = self.project(x_q, w_q), self.project(x_kv, w_k), self.project(x_kv, w_v)
        weights = self.softmax(self.attention_scores(queries, keys))
        return weights @ values, weights


# ---------------------------------------------------------------- the kernel section: attention(q, k, v)
class Kernel:
    """Correct attention(q, k, v, causal, mask, scale, window, softcap, alibi_slopes) in SDPA's layout, one
    overridable method per step."""

    CAPABILITIES = {**Pipeline.CAPABILITIES, "grouped_kv_heads": True}
    catches: tuple[str, ...] = ()
    breaks: dict[str, str] = {}

    def expand(self, kv: Tensor, group: int) -> Tensor:
        """Key/value heads (..., h_kv, n, d) -> one per query head: head i serves queries i·group..(i+1)·group-1."""
        return kv.repeat_interleave(group, dim=-3)

    def factor(self, d_k: int, scale: float | None) -> float:
        return 1 / math.sqrt(d_k) if scale is None else scale

    def positions(self, n_q: int, n_kv: int, device) -> Tensor:
        """Each query's position among the keys (n_q, 1), as the declared causal alignment puts it."""
        bottom = self.CAPABILITIES.get("causal_alignment") == "bottom_right"
        return torch.arange(n_q, device=device).unsqueeze(-1) + (n_kv - n_q if bottom else 0)

    def visible(self, n_q: int, n_kv: int, device) -> Tensor:
        return torch.arange(n_kv, device=device) <= self.positions(n_q, n_kv, device)

    def in_window(self, n_q: int, n_kv: int, window: tuple[int, int], device) -> Tensor:
        left, right = window
        p, j = self.positions(n_q, n_kv, device), torch.arange(n_kv, device=device)
        return ((j >= p - left) | (left < 0)) & ((j <= p + right) | (right < 0))

    def scaled(self, scores: Tensor, factor: float, softcap: float | None) -> Tensor:
        scaled = scores * factor
        return scaled if softcap is None else softcap * torch.tanh(scaled / softcap)

    def alibi(self, slopes: Tensor, n_q: int, n_kv: int) -> Tensor:
        distance = (self.positions(n_q, n_kv, slopes.device) - torch.arange(n_kv, device=slopes.device)).abs()
        return -slopes[:, None, None] * distance

    def keep(self, mask: Tensor) -> Tensor:
        """A boolean mask as the keys that may be attended to."""
        return mask

    def biased(self, scores: Tensor, factor: float, bias: Tensor) -> Tensor:
        return scores * factor + bias

    def hide(self, scaled: Tensor, allowed: Tensor) -> Tensor:
        """The keys a query may not see get −∞: weight exactly 0, and a row with none left is all −∞."""
        return scaled.masked_fill(~allowed, float("-inf"))

    def softmax(self, scaled: Tensor) -> Tensor:
        """softmax over the keys; a query that sees no key (a row all −∞, NaN in torch) gets weight 0."""
        return torch.softmax(scaled, dim=-1).nan_to_num(0.0)

    def dropout(self, weights: Tensor, p: float) -> Tensor:
        """Each weight kept with probability 1 - p (torch's global generator, which the caller seeds) and
        scaled by 1/(1 - p): the expected weights are the dropout-free ones."""
        keep = torch.bernoulli(torch.full(weights.shape, 1 - p, dtype=torch.float64, device=weights.device))
        return weights * keep.to(weights.dtype) / (1 - p)

    def packed_keys(self, s: int, cu_seqlens_k: Tensor) -> slice:
        """The packed keys the queries of sequence s may see: its own, cu_seqlens_k[s] .. cu_seqlens_k[s+1] - 1."""
        return slice(int(cu_seqlens_k[s]), int(cu_seqlens_k[s + 1]))

    def packed(self, q, k, v, cu_seqlens_q, cu_seqlens_k, **options) -> Tensor:
        """Sequences packed along the token axis, (h, Σ n, d): each one's queries attended alone over the keys
        packed_keys gives them (causal and positions count from those keys' start); the contexts concatenated."""
        contexts = []
        for s in range(len(cu_seqlens_q) - 1):
            rows, keys = slice(int(cu_seqlens_q[s]), int(cu_seqlens_q[s + 1])), self.packed_keys(s, cu_seqlens_k)
            contexts.append(self.attention(q[..., rows, :], k[..., keys, :], v[..., keys, :], **options)[0])
        return torch.cat(contexts, dim=-2)

    def attention(self, q, k, v, causal: bool = False, mask=None, scale=None, window=None, softcap=None,
                  alibi_slopes=None, dropout_p=0.0, cu_seqlens_q=None, cu_seqlens_k=None) -> tuple[Tensor, Tensor]:
        if cu_seqlens_q is not None or cu_seqlens_k is not None:  # no weights for a pack
            return self.packed(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale, window=window,
                               softcap=softcap, alibi_slopes=alibi_slopes, dropout_p=dropout_p), None
        group = q.shape[-3] // k.shape[-3]
        keys, values = self.expand(k, group), self.expand(v, group)
        scores = q @ keys.transpose(-2, -1)
        factor = self.factor(q.shape[-1], scale)
        n_q, n_kv = q.shape[-2], k.shape[-2]
        boolean = mask is not None and mask.dtype == torch.bool
        if mask is not None and not boolean:  # a float mask: a bias on the scaled (and capped) scores
            capped = softcap is not None
            scaled = self.scaled(scores, factor, softcap) + mask if capped else self.biased(scores, factor, mask)
        else:
            scaled = self.scaled(scores, factor, softcap)
        if alibi_slopes is not None:
            scaled = scaled + self.alibi(alibi_slopes.to(scaled.dtype), n_q, n_kv)
        allowed = self.keep(mask) if boolean else None
        if causal:
            lower = self.visible(n_q, n_kv, q.device)
            allowed = lower if allowed is None else allowed & lower
        if window is not None:
            inside = self.in_window(n_q, n_kv, window, q.device)
            allowed = inside if allowed is None else allowed & inside
        if allowed is not None:
            scaled = self.hide(scaled, allowed)
        weights = self.softmax(scaled)
        if dropout_p:
            weights = self.dropout(weights, dropout_p)  # the weights returned are the ones applied
        return weights @ values, weights


class KernelFeatures(Kernel):
    """Correct, declaring the optional features it has always had: local windows, softcapping, ALiBi, packed
    variable-length batches, dropout, and zeros for a query that sees no key."""

    CAPABILITIES = {**Kernel.CAPABILITIES, "local_window": True, "softcap": True, "alibi": True, "varlen": True,
                    "dropout": True, "masked_rows": "zeros"}


class KernelBottomRight(KernelFeatures):
    """Correct, with causal attention aligned bottom-right as declared (FlashAttention, decoding)."""

    CAPABILITIES = {**KernelFeatures.CAPABILITIES, "causal_alignment": "bottom_right"}


class KernelNoScale(Kernel):
    """The kernel does not scale the scores by default (softmax(q kᵀ) v instead of softmax(q kᵀ / √d_k) v)."""

    catches = ("QKV-ATTEND",)

    def factor(self, d_k, scale):
        return 1.0 if scale is None else scale


class KernelIgnoresScale(Kernel):
    """The kernel ignores its scale argument and always divides by √d_k."""

    catches = ("QKV-SCALE",)

    def factor(self, d_k, scale):
        return 1 / math.sqrt(d_k)


class KernelCausalBottomRight(Kernel):
    """The kernel's causal mask is aligned bottom-right (FlashAttention ≥ 2.1) although it declares top-left."""

    catches = ("QKV-CAUSAL",)

    def visible(self, n_q, n_kv, device):
        return torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril(n_kv - n_q)


class KernelCausalTopLeft(KernelBottomRight):
    """The kernel declares bottom-right causal alignment but aligns its causal mask top-left (SDPA's), so one
    decoding step (a single query against the KV cache) sees only the first key."""

    catches = ("QKV-CAUSAL",)

    def visible(self, n_q, n_kv, device):
        return torch.ones(n_q, n_kv, dtype=torch.bool, device=device).tril()


class KernelWindowOffByOne(KernelFeatures):
    """The local window's left edge is exclusive (j > p_i - left): one key too few on the left."""

    catches = ("QKV-WINDOW",)

    def in_window(self, n_q, n_kv, window, device):
        left, right = window
        p, j = self.positions(n_q, n_kv, device), torch.arange(n_kv, device=device)
        return ((j > p - left) | (left < 0)) & ((j <= p + right) | (right < 0))


class KernelSoftcapBeforeScale(KernelFeatures):
    """Softcapping is applied to the raw scores before the scale: c · tanh(q kᵀ / c) · scale."""

    catches = ("QKV-SOFTCAP",)

    def scaled(self, scores, factor, softcap):
        return scores * factor if softcap is None else softcap * torch.tanh(scores / softcap) * factor


class KernelAlibiWrongSign(KernelFeatures):
    """The ALiBi bias is added with the wrong sign (+slope · |i - j|): far keys are favoured."""

    catches = ("QKV-ALIBI",)

    def alibi(self, slopes, n_q, n_kv):
        return -super().alibi(slopes, n_q, n_kv)


class KernelEmptyRowsUniform(KernelFeatures):
    """Hidden keys get a large finite negative number instead of −∞ (as jax.nn.dot_product_attention masks):
    every other row is right, but a query that sees no key spreads its weight evenly over all the keys."""

    catches = ("QKV-EMPTY-ROWS",)

    def hide(self, scaled, allowed):
        # 0.7 of the largest finite value: finite in every dtype, and no overflow when the row maximum is taken off
        return scaled.masked_fill(~allowed, -0.7 * torch.finfo(scaled.dtype).max)


class KernelEmptyRowsNaN(KernelFeatures):
    """The kernel declares zeros for a query that sees no key but returns softmax over nothing as it comes:
    NaN in its weights and context rows."""

    catches = ("QKV-EMPTY-ROWS",)

    def softmax(self, scaled):
        return torch.softmax(scaled, dim=-1)


class KernelDropoutNoRescale(KernelFeatures):
    """Dropout zeroes weights with probability p but does not scale the kept ones by 1/(1 - p): on average the
    context shrinks to (1 - p) times the dropout-free one."""

    catches = ("QKV-DROPOUT",)

    def dropout(self, weights, p):
        keep = torch.bernoulli(torch.full(weights.shape, 1 - p, dtype=torch.float64, device=weights.device))
        return weights * keep.to(weights.dtype)


class KernelDropoutKeepsP(KernelFeatures):
    """Dropout keeps each weight with probability p instead of 1 - p (bernoulli(p) read as the keep mask), then
    scales by 1/(1 - p): on average the context is p/(1 - p) times the dropout-free one."""

    catches = ("QKV-DROPOUT",)

    def dropout(self, weights, p):
        keep = torch.bernoulli(torch.full(weights.shape, p, dtype=torch.float64, device=weights.device))
        return weights * keep.to(weights.dtype) / (1 - p)


class KernelDropoutOnValues(KernelFeatures):
    """Dropout drops the entries of v one by one (and rescales them) instead of the weights, returning no weights:
    on average the context is right, but one weight is kept for some of v's columns and dropped for others."""

    CAPABILITIES = {**KernelFeatures.CAPABILITIES, "returns_weights": False}
    catches = ("QKV-DROPOUT",)

    def attention(self, q, k, v, *args, dropout_p=0.0, **kwargs):
        if dropout_p:
            v = self.dropout(v, dropout_p)
        return super().attention(q, k, v, *args, **kwargs)[0], None


class KernelVarlenLeaks(KernelFeatures):
    """Packed sequences are not cut at their start: the queries of sequence s also see every earlier sequence's
    keys (one causal mask over the whole pack instead of one per sequence)."""

    catches = ("QKV-VARLEN",)

    def packed_keys(self, s, cu_seqlens_k):
        return slice(0, int(cu_seqlens_k[s + 1]))


class KernelVarlenOffsetsOffByOne(KernelFeatures):
    """cu_seqlens_k[s + 1] is read as sequence s's last key instead of one past it: each sequence's queries
    also see the next sequence's first key."""

    catches = ("QKV-VARLEN",)

    def packed_keys(self, s, cu_seqlens_k):
        return slice(int(cu_seqlens_k[s]), int(cu_seqlens_k[s + 1]) + 1)


class KernelMaskTrueHides(Kernel):
    """The kernel reads a boolean mask as True = hidden (key_padding_mask's convention)."""

    catches = ("QKV-MASK",)

    def keep(self, mask):
        return ~mask


class KernelBiasBeforeScale(Kernel):
    """The kernel adds a float mask to the scores before scaling them, so the bias is scaled too."""

    catches = ("QKV-MASK",)

    def biased(self, scores, factor, bias):
        return (scores + bias) * factor


class KernelHeadsTiled(Kernel):
    """Grouped-query attention tiles the key/value heads (query head i uses head i mod h_kv) instead of
    repeating each one for its group of consecutive query heads."""

    catches = ("QKV-GQA",)

    def expand(self, kv, group):
        return kv.repeat(*([1] * (kv.dim() - 3)), group, 1, 1)


class KernelScalesQueriesInPlace(Kernel):
    """The kernel scales its queries in place (q.mul_(scale)) to spare a pass over the scores: the result is
    right, but the caller's q is changed (autograd forbids it on a leaf, so only q without a gradient is)."""

    catches = ("API-PURE",)

    def attention(self, q, k, v, causal=False, mask=None, scale=None, window=None, softcap=None, alibi_slopes=None):
        if not q.requires_grad:
            q.mul_(self.factor(q.shape[-1], scale))
            scale = 1.0
        return super().attention(q, k, v, causal, mask, scale, window, softcap, alibi_slopes)


CORRECT_KERNELS = (Pipeline, Kernel, KernelFeatures, KernelBottomRight)


def _is_mistake(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, (Pipeline, Kernel)) and cls not in CORRECT_KERNELS


MISTAKES: list[type[Pipeline] | type[Kernel]] = [cls for cls in list(globals().values()) if _is_mistake(cls)]
