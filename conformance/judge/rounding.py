"""Rounding-error bounds derived from the computation: the allowance of the tolerance policy, per element.

Every intermediate of the float64 pipeline is carried as a Bounded: its exact value and, per element, how far
a correct implementation working in the judged dtype can be from it. Each step adds its own rounding to the
error it inherits (first-order propagation on absolute values, second-order terms kept where they are cheap):

- a sum of N terms t_k (a matrix product, a row sum) is off by at most β(N')·Σ|t_k|, whatever the order of
  the additions; β(N') = min(γ_N', γ̃_N'(λ)) is the smaller of the worst-case bound γ_N' = N'u/(1 − N'u) and
  the probabilistic one γ̃_N'(λ) = exp(λ√N'·u + N'u²/(1 − u)) − 1 (Higham and Mary, SIAM J. Sci. Comput.
  2019: with rounding errors independent and of mean zero it holds with probability at least
  1 − 2N'·exp(−λ²(1 − u)²/2)); λ is chosen per N' so that this failure probability is the spec's;
- N' = N + extra: each term may pass through a few roundings beyond those of a plain sum (a scale applied to
  q first, a conversion, an FMA done as two operations); over the keys N' = (1 + online)·N + extra, since an
  online softmax rescales its running sums once per tile (an exp and a multiplication on every path);
- an elementwise function (exp, tanh) is within `function_ulps` ulps; every stored result is rounded once
  more (u·|x|), and underflow or flush-to-zero costs up to the smallest normal number, absolutely;
- half-precision (float16, bfloat16) implementations accumulate in float32, as torch, numpy, cuBLAS,
  FlashAttention and XLA do: reductions use float32's u, stored intermediates the dtype's.

The parameters live in spec/clauses.toml ([tolerance]); none is fitted to a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import torch
from torch import Tensor

import spec

Form = tuple[int, bool, bool]  # (softmax axis, scores transposed, causal mask after the softmax): see readings.py
REFERENCE_FORM: Form = (-1, False, False)

_UNIT = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
_TINY = {"float64": torch.finfo(torch.float64).tiny, "float32": torch.finfo(torch.float32).tiny,
         "float16": torch.finfo(torch.float16).tiny, "bfloat16": torch.finfo(torch.bfloat16).tiny}


@dataclass(frozen=True)
class Arithmetic:
    """The floating-point arithmetic of a correct implementation in `dtype`, as the policy models it."""

    dtype: str
    accumulation: str  # the dtype its sums accumulate in
    u: float  # unit roundoff of the stored results
    u_acc: float  # unit roundoff of the accumulation (float32 for half precision)
    tiny: float  # smallest normal number of the stored dtype (underflow, flush to zero)
    tiny_acc: float
    failure: float  # per element and step: the chance a correct result lands outside the bound
    extra: int  # roundings per term beyond those of a plain sum
    online: int  # roundings per term and tile of an online softmax (reductions over the keys)
    function_ulps: float  # exp, tanh

    @property
    def function(self) -> float:
        """Relative error of an elementwise function (an ulp is at most 2u relative)."""
        return 2 * self.function_ulps * self.u

    def lam(self, n: int) -> float:
        """λ for which the probabilistic bound of a sum of n terms fails with probability `failure`."""
        return math.sqrt(2 * math.log(2 * n / self.failure)) / (1 - self.u_acc)

    def beta(self, n: int) -> float:
        """Relative bound of a sum of n terms, on Σ|terms|, in the accumulation precision."""
        u = self.u_acc
        worst = n * u / (1 - n * u) if n * u < 1 else math.inf
        probable = math.expm1(self.lam(n) * math.sqrt(n) * u + n * u * u / (1 - u))
        return min(worst, probable)

    def terms(self, n: int, over_keys: bool = False) -> int:
        """N': the roundings one term of a sum of n may pass through."""
        return (1 + self.online) * n + self.extra if over_keys else n + self.extra

    @property
    def reference_share(self) -> float:
        """The float64 reference's own error, as a share of the bound: u₆₄/u_acc (every part of the bound is
        increasing and convex in u with nothing at u = 0, so the reference's bound is at most this share)."""
        return _UNIT["float64"] / self.u_acc


@cache
def arithmetic(dtype: str) -> Arithmetic:
    policy = spec.load().rounding
    accumulation = policy.accumulation.get(dtype, dtype)
    return Arithmetic(dtype, accumulation, _UNIT[dtype], _UNIT[accumulation], _TINY[dtype], _TINY[accumulation],
                      policy.failure_probability, policy.extra_roundings, policy.online_roundings,
                      policy.function_ulps)


@dataclass(frozen=True)
class Step:
    """What the last step's own rounding was made of, for the failure message."""

    what: str  # "a sum of 162 terms"
    magnitude: Tensor  # Σ|terms| per element
    local: Tensor  # the step's own rounding allowance per element


@dataclass(frozen=True)
class Bounded:
    """An exact float64 value and, per element, the error a correct implementation's result may have."""

    value: Tensor
    error: Tensor
    step: Step | None = field(default=None, compare=False)

    def map(self, f) -> Bounded:
        """The same tensors rearranged (transpose, index, expand): errors move with their elements."""
        step = self.step
        if step is not None:
            step = Step(step.what, f(step.magnitude.expand_as(self.value)), f(step.local.expand_as(self.value)))
        return Bounded(f(self.value), f(self.error), step)


def given(x: Tensor, error: Tensor | None = None) -> Bounded:
    """An input: exact as passed (its float64 upcast), or off by `error` where the implementation is given a
    rounded copy of it (a golden float32 input cast to float16)."""
    x = x.detach().to("cpu", torch.float64)
    return Bounded(x, torch.zeros_like(x) if error is None else error.to(torch.float64))


def _stored(value: Tensor, a: Arithmetic) -> Tensor:
    return a.u * value.abs() + a.tiny


def _terms_stored(magnitude: Tensor, a: Arithmetic, n: int, squares: Tensor | None = None) -> Tensor | float:
    """Half precision: each term may be rounded once to the stored dtype before the float32 sum (a product
    formed in half precision, then summed): at most u·Σ|t_k|, and, the roundings independent, λu·‖t‖₂."""
    if a.u <= a.u_acc:
        return 0.0
    worst = a.u * magnitude
    return worst if squares is None else torch.minimum(worst, a.lam(n) * a.u * squares.sqrt())


def contract(equation: str, x: Bounded, y: Bounded, n: int, a: Arithmetic, over_keys: bool = False) -> Bounded:
    """einsum(equation, x, y), a sum of n products per element."""
    value = torch.einsum(equation, x.value, y.value)
    magnitude = torch.einsum(equation, x.value.abs(), y.value.abs())
    carried = (torch.einsum(equation, x.error, y.value.abs()) + torch.einsum(equation, x.value.abs(), y.error)
               + torch.einsum(equation, x.error, y.error))
    factor = a.beta(a.terms(n, over_keys))
    squares = torch.einsum(equation, x.value ** 2, y.value ** 2) if a.u > a.u_acc else None
    local = factor * magnitude + _terms_stored(magnitude, a, n, squares) + n * a.tiny_acc + _stored(value, a)
    return Bounded(value, carried + local, Step(f"a sum of {n:,} terms", magnitude, local))


def add(x: Bounded, y: Bounded, a: Arithmetic) -> Bounded:
    value = x.value + y.value
    local = a.u * (x.value.abs() + y.value.abs()) + a.tiny
    return Bounded(value, x.error + y.error + local, Step("a sum of 2 terms", x.value.abs() + y.value.abs(), local))


def scale(x: Bounded, alpha: float, a: Arithmetic) -> Bounded:
    """x·α with α rounded to the dtype first (or applied as a division by √d_k: two roundings either way)."""
    value = x.value * alpha
    local = 2 * a.u * value.abs() + a.tiny
    return Bounded(value, abs(alpha) * x.error + local, Step("a scaling", value.abs(), local))


def softcap(x: Bounded, cap: float, a: Arithmetic) -> Bounded:
    """cap·tanh(x/cap): the inherited error shrinks by tanh's slope; x/cap, tanh and the product round."""
    inner = x.value / cap
    value = cap * torch.tanh(inner)
    slope = 1 - torch.tanh(inner) ** 2
    local = slope * a.u * x.value.abs() + (a.function + 2 * a.u) * value.abs() + a.tiny
    return Bounded(value, slope * x.error + local, Step("a softcap", value.abs(), local))


def bias(x: Bounded, b: Tensor, a: Arithmetic, computed: bool) -> Bounded:
    """x + b for an additive bias b (exact as given; computed: made by the implementation, as ALiBi's
    -slope·|i - j|, which rounds twice)."""
    b = b.to(torch.float64)
    own = Bounded(b, 2 * a.u * b.abs() + a.tiny if computed else torch.zeros_like(b))
    return add(x, own, a)


def softmax(s: Bounded, keep: Tensor | None, a: Arithmetic, dim: int = -1) -> Bounded:
    """exp(s - max s) / Σ exp(s - max s) along `dim` over the kept entries (0 elsewhere, exactly, and on rows
    that keep nothing).

    The computed maximum is off by at most the row's largest error; s - max rounds, and so does a change of
    base (exp2 of s·log₂e) and, in an online softmax, the rescaling by exp(m_old - m_new) over at most the
    row's range: 2u(|s - max| + range); a log-sum-exp softmax subtracts log Σ exp, rounded: u·log l. p = exp(·) has the function's error on top; p̂ ≤ 1 always, since the
    computed maximum is the largest computed score. The row sum is a sum over the keys; the division (or a
    reciprocal and a product) rounds twice. A weight is in [0, 1]: no bound exceeds 1."""
    value, error = s.value, s.error
    if keep is not None:
        keep = keep.expand_as(value)
        value = value.masked_fill(~keep, -math.inf)
        error = error.masked_fill(~keep, 0.0)
    top = value.amax(dim, keepdim=True).nan_to_num(neginf=0.0)
    z = value - top
    distance = z.abs().nan_to_num(posinf=0.0)  # masked entries: -inf - top
    row_range = distance.amax(dim, keepdim=True)
    p = z.exp()
    total = p.sum(dim, keepdim=True)
    # a log-sum-exp softmax normalises as exp(z - log l), log l ∈ [0, log n] stored in the dtype
    normaliser = a.u * torch.log(total.clamp(min=1.0))
    argument = error + error.amax(dim, keepdim=True) + 2 * a.u * (distance + row_range) + normaliser
    growth = torch.expm1(argument.clamp(max=700.0)) * (1 + a.function) * (1 + a.u) + a.function + a.u
    p_error = torch.minimum(p * growth + a.tiny, torch.ones_like(p))
    if keep is not None:
        p_error = p_error.masked_fill(~keep, 0.0)
    n = value.shape[dim]
    factor = a.beta(a.terms(n, over_keys=True))
    total_error = p_error.sum(dim, keepdim=True) + factor * total + n * a.tiny_acc
    w = torch.where(total > 0, p / total, torch.zeros_like(p))
    room = (total - total_error).clamp(min=0.0)
    w_error = torch.where(room > 0, (p_error + w * total_error) / room.clamp(min=1e-300), torch.ones_like(p))
    w_error = (w_error + 2 * a.u * w + a.tiny).clamp(max=1.0)
    w_error = torch.where(total > 0, w_error, torch.zeros_like(w_error))
    if keep is not None:
        w_error = w_error.masked_fill(~keep, 0.0)
    local = w * (factor + 2 * a.u) + a.tiny
    return Bounded(w, w_error, Step(f"a softmax over {n:,} keys", w, local))


def zero(x: Bounded, where: Tensor) -> Bounded:
    """x with the entries `where` set to exactly 0 (a mask applied after the softmax)."""
    return Bounded(x.value.masked_fill(where, 0.0), x.error.masked_fill(where, 0.0), x.step)


# ------------------------------------------------------------------------- the pipeline's forward pass

@dataclass(frozen=True)
class Forward:
    """The bounded intermediates of one attention forward pass (kept for the backward pass)."""

    q: Bounded
    k: Bounded
    v: Bounded
    scaled: Bounded  # α·ω (after softcap and bias, before the mask)
    weights: Bounded
    context: Bounded
    alpha: float
    keep: Tensor | None
    form: Form


def weights_of(omega: Bounded, alpha: float, keep: Tensor | None, a: Arithmetic, form: Form = REFERENCE_FORM,
               cap: float | None = None, biases: tuple[tuple[Tensor, bool], ...] = ()) -> tuple[Bounded, Bounded]:
    """(the scaled scores, the weights) from the scores ω (..., n_q, n_kv): α·ω, softcap, biases, the mask
    (True where a query may attend) and the softmax; form: a reading's mistake (readings.py)."""
    axis, transposed, masked_after = form
    if transposed:
        omega = omega.map(lambda t: t.transpose(-2, -1))
    scaled = scale(omega, alpha, a)
    if cap is not None:
        scaled = softcap(scaled, cap, a)
    for b, computed in biases:
        scaled = bias(scaled, b, a, computed)
    weights = softmax(scaled, None if masked_after else keep, a, dim=axis)
    if masked_after and keep is not None:
        weights = zero(weights, ~keep.expand_as(weights.value))
    return scaled, weights


def attend(q: Bounded, k: Bounded, v: Bounded, alpha: float, keep: Tensor | None, a: Arithmetic,
           form: Form = REFERENCE_FORM, cap: float | None = None, biases: tuple[tuple[Tensor, bool], ...] = ()
           ) -> Forward:
    """q (..., n_q, d_k), k (..., n_kv, d_k), v (..., n_kv, d_v): scores, weights and context, bounded."""
    omega = contract("...id,...jd->...ij", q, k, q.value.shape[-1], a)
    scaled, weights = weights_of(omega, alpha, keep, a, form, cap, biases)
    context = contract("...ij,...jd->...id", weights, v, v.value.shape[-2], a, over_keys=True)
    return Forward(q, k, v, scaled, weights, context, alpha, keep, form)


def _input(x: Tensor | Bounded) -> Bounded:
    return x if isinstance(x, Bounded) else given(x)


def pipeline(x_q: Tensor | Bounded, x_kv: Tensor | Bounded, w_q: Tensor | Bounded, w_k: Tensor | Bounded,
             w_v: Tensor | Bounded, keep: Tensor | None, alpha: float, dtype: str, form: Form = REFERENCE_FORM
             ) -> Forward:
    """The spec's pipeline: projections x Wᵀ, then attend(); weights may carry a head axis. Inputs are exact
    (tensors) or Bounded (given() with the rounding of a golden input to a narrower dtype)."""
    a = arithmetic(dtype)
    xq, xkv = _input(x_q), _input(x_kv)
    if _input(w_q).value.dim() == 3:  # multi-head: one copy of the tokens per head
        xq, xkv = xq.map(lambda t: t.unsqueeze(-3)), xkv.map(lambda t: t.unsqueeze(-3))

    def project(x: Bounded, w: Tensor | Bounded) -> Bounded:
        w = _input(w)
        return contract("...nd,...od->...no", x, w, w.value.shape[-1], a)

    return attend(project(xq, w_q), project(xkv, w_k), project(xkv, w_v), alpha, keep, a, form)


def concat(per_head: Bounded, w_o: Tensor | Bounded | None, dtype: str) -> Bounded:
    """(..., h, n, d_v) → (..., n, h·d_v), then W_o if given (a sum of h·d_v terms per output)."""
    joined = per_head.map(lambda t: torch.cat(t.unbind(dim=-3), dim=-1))
    if w_o is None:
        return joined
    w_o = _input(w_o)
    return contract("...nd,...od->...no", joined, w_o, w_o.value.shape[-1], arithmetic(dtype))


# ------------------------------------------------------------------------ the pipeline's backward pass

def _merge_leading(x: Bounded) -> Bounded:
    """(b..., n, d) → (b·n, d): a weight gradient sums over the batch and the tokens alike."""
    return x.map(lambda t: t.reshape(-1, t.shape[-1]))


def softmax_backward(f: Forward, dw: Bounded, a: Arithmetic) -> Bounded:
    """ds = w ⊙ (dw − D) along the softmax's axis, D = Σ w ⊙ dw (with_other_row_term adds the bound of the
    other way to compute D)."""
    axis, _, masked_after = f.form
    w = f.weights
    if masked_after and f.keep is not None:  # the gradient reaches the softmax through the kept entries only
        dw = zero(dw, ~f.keep.expand_as(dw.value))
        w = softmax(f.scaled, None, a, dim=axis)
    n = w.value.shape[axis]
    product = Bounded(w.value * dw.value, w.value.abs() * dw.error + w.error * dw.value.abs() + w.error * dw.error)
    d_value = product.value.sum(axis, keepdim=True)
    magnitude = product.value.abs().sum(axis, keepdim=True)
    d_error = product.error.sum(axis, keepdim=True) + a.beta(a.terms(n, over_keys=True)) * magnitude \
        + _terms_stored(magnitude, a, n) + _stored(d_value, a)
    y_value = dw.value - d_value
    y_error = dw.error + d_error + a.u * (dw.value.abs() + d_value.abs()) + a.tiny
    value = w.value * y_value
    error = w.value.abs() * y_error + w.error * y_value.abs() + w.error * y_error + 2 * a.u * (
        w.value.abs() * (dw.value.abs() + d_value.abs())) + a.tiny
    return Bounded(value, error, Step("the softmax's backward pass", w.value.abs() * (dw.value.abs() + d_value.abs()),
                                      error))


def _with_other_row_term(ds: Bounded, f: Forward, g: Bounded, a: Arithmetic) -> Bounded:
    """ds's bound widened by that of D computed as Σ_d G ⊙ context (FlashAttention's backward) instead of
    Σ_j w ⊙ dw: the sum covers either way."""
    if f.form != REFERENCE_FORM:
        return ds
    c = f.context
    d_v = c.value.shape[-1]
    magnitude = (g.value.abs() * c.value.abs()).sum(-1, keepdim=True)
    d_error = (g.value.abs() * c.error + g.error * c.value.abs()).sum(-1, keepdim=True) \
        + a.beta(a.terms(d_v)) * magnitude + _terms_stored(magnitude, a, d_v) \
        + _stored((g.value * c.value).sum(-1, keepdim=True), a)
    w = f.weights
    other = w.value.abs() * d_error + w.error * d_error
    return Bounded(ds.value, ds.error + other, ds.step)


def gradients(x_q: Tensor, x_kv: Tensor | None, w_q: Tensor, w_k: Tensor, w_v: Tensor, upstream: Tensor,
              keep: Tensor | None, alpha: float, dtype: str, form: Form = REFERENCE_FORM) -> list[Bounded]:
    """The gradients of Σ context ⊙ upstream with respect to (x_q, x_kv, w_q, w_k, w_v) (x_kv None: self-
    attention, x_q is both, and its gradient sums the three paths), bounded; `upstream` as the implementation
    receives it (exact in the dtype)."""
    a = arithmetic(dtype)
    same = x_kv is None
    f = pipeline(x_q, x_q if same else x_kv, w_q, w_k, w_v, keep, alpha, dtype, form)
    heads = w_q.dim() == 3
    g = given(upstream)
    dv = contract("...ij,...id->...jd", f.weights, g, f.weights.value.shape[-2], a)
    dw = contract("...id,...jd->...ij", g, f.v, g.value.shape[-1], a)
    ds = _with_other_row_term(softmax_backward(f, dw, a), f, g, a)
    domega = scale(ds, f.alpha, a)
    if form[1]:
        domega = domega.map(lambda t: t.transpose(-2, -1))
    dq = contract("...ij,...jd->...id", domega, f.k, domega.value.shape[-1], a)
    dk = contract("...ij,...id->...jd", domega, f.q, domega.value.shape[-2], a)
    xq, xkv = given(x_q), given(x_q if same else x_kv)
    if heads:
        xq, xkv = xq.map(lambda t: t.unsqueeze(-3)), xkv.map(lambda t: t.unsqueeze(-3))

    def weight_grad(d: Bounded, x: Bounded) -> Bounded:  # dW[o, i] = Σ over batch and tokens of d[·, o] x[·, i]
        x = x.map(lambda t: t.expand(*d.value.shape[:-1], t.shape[-1]))
        if heads:  # (b..., h, n, d) → (h, b·n, d)
            d, x = (t.map(lambda v: v.movedim(-3, 0).reshape(v.shape[-3], -1, v.shape[-1])) for t in (d, x))
            return contract("hnd,hne->hde", d, x, d.value.shape[1], a)
        d, x = _merge_leading(d), _merge_leading(x)
        return contract("nd,ne->de", d, x, d.value.shape[0], a)

    grads_w = [weight_grad(dq, xq), weight_grad(dk, xkv), weight_grad(dv, xkv)]
    paths = [(dq, w_q), (dk, w_k), (dv, w_v)]

    def input_grad(parts: list[tuple[Bounded, Tensor]], shape: torch.Size) -> Bounded:
        """Σ over the paths (and heads) of d W: one sum of all their terms."""
        n = sum(w.shape[-2] for _, w in parts) * (w_q.shape[0] if heads else 1)
        value = magnitude = carried = None
        for d, w in parts:
            wb = given(w)
            v_ = torch.einsum("...no,...od->...nd", d.value, wb.value)
            m_ = torch.einsum("...no,...od->...nd", d.value.abs(), wb.value.abs())
            c_ = torch.einsum("...no,...od->...nd", d.error, wb.value.abs())
            if heads:
                v_, m_, c_ = v_.sum(-3), m_.sum(-3), c_.sum(-3)
            value = v_ if value is None else value + v_
            magnitude = m_ if magnitude is None else magnitude + m_
            carried = c_ if carried is None else carried + c_
        factor = a.beta(a.terms(n))
        local = factor * magnitude + _terms_stored(magnitude, a, n) + n * a.tiny_acc + _stored(value, a)
        out = Bounded(value, carried + local, Step(f"a sum of {n:,} terms", magnitude, local))
        return out.map(lambda t: t.expand(shape)) if tuple(out.value.shape) != tuple(shape) else out

    if same:
        grads_x = [input_grad(paths, x_q.shape)]
    else:
        grads_x = [input_grad(paths[:1], x_q.shape), input_grad(paths[1:], x_kv.shape)]
    return grads_x + grads_w
