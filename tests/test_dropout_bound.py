"""QKV-DROPOUT's bound (conformance/judge/dropout.py) on simulated draws: the mean of correct draws stays within it,
the mean of a kernel that forgets the 1/(1 − p) rescale, or keeps with probability p, leaves it; and the rounding
allowance covers a real float32 draw. Exact float64 simulation from seeded generators: no timing, no flakes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from conformance.judge import dropout, oracle, rounding
from conformance.judge.strategies import DROPOUT_ROWS, KernelProblem
from conformance.judge.tolerance import Expected
from conformance.tests.test_kernel_dropout import DRAWS, RATES


def edge_problems() -> list[KernelProblem]:
    """Problems at the edges of dropout_problems(): the fewest query rows, the fewest and most keys, the narrowest
    values, nearly uniform and peaked weights; where a wrong mean is hardest to tell from chance."""
    made = []
    for heads, n_kv, d_k, magnitude, seed in itertools.product((1, 4), (4, 40), (1, 32), (0.25, 2.0), (0, 1)):
        made.append(KernelProblem(batch=(), heads=heads, kv_heads=heads, n_q=max(4, -(-DROPOUT_ROWS // heads)),
                                  n_kv=n_kv, d_k=d_k, d_v=2, magnitude=magnitude, mask="none", mask_shape="full",
                                  seed=seed))
    return made


def simulated_mean(weights: torch.Tensor, values: torch.Tensor, keep: float, rescale: float,
                   generator: torch.Generator) -> torch.Tensor:
    """The mean context of DRAWS exact draws: each weight kept with probability `keep`, kept ones times `rescale`."""
    kept = torch.rand((DRAWS, *weights.shape), generator=generator, dtype=torch.float64) < keep
    return ((weights * kept * rescale) @ values).mean(dim=0)


def checks(problem: KernelProblem, p: float, keep: float, rescale: float) -> list[dropout.MeanCheck]:
    q, k, v, _ = problem.tensors(torch.float64)
    context, weights = oracle.attention(q, k, v)
    mean = simulated_mean(weights, v, keep, rescale, torch.Generator().manual_seed(problem.seed + 101))
    return dropout.mean_checks(mean, context, weights, v, p, DRAWS, allowed=0.0)


@pytest.mark.parametrize("p", RATES)
def test_correct_draws_stay_within_the_bound(p):
    for problem in edge_problems():
        failed = [c.explain() for c in checks(problem, p, 1 - p, 1 / (1 - p)) if not c.holds]
        assert not failed, (problem, failed)


@pytest.mark.parametrize("p", RATES)
@pytest.mark.parametrize("mistake", ["no rescale", "keeps with probability p"])
def test_a_wrong_mean_leaves_the_bound(p, mistake):
    keep, rescale = (1 - p, 1.0) if mistake == "no rescale" else (p, 1 / (1 - p))
    for problem in edge_problems():
        assert not all(c.holds for c in checks(problem, p, keep, rescale)), (problem, mistake)


def test_hoeffding_on_one_weight():
    """One weight of 1 on one value of 1, u = 1: each draw's uᵀC is 0 or 1/(1 − p), a range of a = 1/(1 − p)."""
    p, alpha, samples = 0.2, 1e-9, 128
    weights, values, u = torch.ones(1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64), \
        torch.ones(1, 1, 1, dtype=torch.float64)
    a = dropout.coefficients(weights, values, u, p)
    assert a.item() == pytest.approx(1 / (1 - p))
    expected = math.sqrt(math.log(2 / alpha) / (2 * samples)) / (1 - p)
    assert dropout.hoeffding(a, samples, alpha) == pytest.approx(expected)


def test_directions_share_alpha_and_a_zero_context_has_none():
    context = torch.tensor([[[3.0, -4.0]]], dtype=torch.float64)
    found = dropout.directions(context)
    assert [round(d.u.norm().item(), 12) for d in found] == [1.0, 1.0]
    weights, values = torch.ones(1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 2, dtype=torch.float64)
    made = dropout.mean_checks(context, context, weights, values, 0.2, 4, 0.0)
    assert [c.alpha for c in made] == [dropout.ALPHA / 2] * 2 and all(c.holds for c in made)
    assert dropout.directions(torch.zeros(1, 1, 2, dtype=torch.float64)) == []


def test_the_same_draw_is_unlikely_over_many_weights():
    assert dropout.same_draw_probability(0.2, 0) == 1.0
    assert dropout.same_draw_probability(0.2, 128) < 1e-20
    weights = torch.tensor([[[0.5, 0.5], [1e-9, 1.0]]], dtype=torch.float64)
    values = torch.ones(1, 2, 3, dtype=torch.float64)
    assert dropout.influential(weights, values, 0.2, 1e-6) == 3  # the weight of 1e-9 changes nothing visible


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_rounding_allowance_covers_a_real_draw(dtype):
    """impl's float32 (and bfloat16) draw, its keeps read off the weights it returns, is within the allowance of
    the exact draw with the same keeps, element by element."""
    from conformance.judge.cases import expect_output
    from impl.kernel import attention

    name = str(dtype).removeprefix("torch.")
    for problem, p in itertools.product(edge_problems()[:8], RATES):
        q, k, v, _ = problem.tensors(dtype)
        exact = oracle.upcast(q, k, v)
        reference_context, reference_weights = oracle.attention(*exact)
        plain_context, plain_weights = oracle.attention(q, k, v)
        bound = rounding.attend(*(rounding.given(t) for t in exact), 1 / math.sqrt(problem.d_k), None,
                                rounding.arithmetic(name))
        plain = (expect_output("context", reference_context, plain_context, name, bound.context),
                 expect_output("weights", reference_weights, plain_weights, name, bound.weights))
        context_allowance, weights_allowance = dropout.draw_expectations(q, k, v, None, name, p, plain)
        assert isinstance(context_allowance, Expected)
        torch.manual_seed(problem.seed)
        context, weights = attention(q, k, v, dropout_p=p)
        keep = weights != 0
        exact_draw = reference_weights * keep / (1 - p)
        assert bool(((weights.double() - exact_draw).abs() <= weights_allowance.allowance).all())
        assert bool(((context.double() - exact_draw @ exact[2]).abs() <= context_allowance.allowance).all())


NUMPY_DROPOUT = '''
import numpy as np

CAPABILITIES = {"array": "numpy", "dropout": True}

def attention(q, k, v, causal=False, mask=None, scale=None, dropout_p=0.0):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    w = w / w.sum(axis=-1, keepdims=True)
    if dropout_p:
        w = w * (np.random.random_sample(w.shape) >= dropout_p) / (1 - dropout_p)
    return w @ v, w
'''


@pytest.mark.parametrize("where", ["worker", "in process", "numpy in process"])
def test_the_seed_reaches_the_generator_before_the_call(tmp_path, where):
    """Implementation.kernel(..., seed=s) seeds the generator the implementation draws from right before the
    call: torch's in the worker and in process, numpy's legacy global one for a numpy implementation."""
    from conformance.judge.adapter import Implementation

    target = "impl"
    if where.startswith("numpy"):
        target = str(tmp_path / "numpy_dropout.py")
        (tmp_path / "numpy_dropout.py").write_text(NUMPY_DROPOUT)
    implementation = Implementation.load(target, in_process=where != "worker")
    try:
        assert implementation.claims("dropout")
        q, k, v, _ = edge_problems()[0].tensors(torch.float64)
        first, again, other = (implementation.kernel(q, k, v, dropout_p=0.5, seed=s) for s in (7, 7, 8))
        assert torch.equal(first.context, again.context) and torch.equal(first.weights, again.weights)
        assert not torch.equal(first.weights, other.weights)
    finally:
        implementation.close()


def test_a_jax_implementation_cannot_claim_dropout():
    """jax has no global generator for the suite to seed: declaring dropout is refused, with the reason."""
    from conformance.judge.capabilities import CapabilityError, parse

    with pytest.raises(CapabilityError, match="dropout.*jax has none"):
        parse({"array": "jax", "dropout": True})
    assert parse({"array": "numpy", "dropout": True}).dropout
