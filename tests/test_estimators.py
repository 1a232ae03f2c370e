"""Gradient estimators through Poisson sampling on a problem with a known answer.

``k ~ Poisson(λ)``, ``λ = θ·m`` for a fixed positive map ``m``, loss ``f(k) = Σ (k − t)²``:
``E f = Σ (λ − t)² + λ`` (Poisson variance = mean), hence ``dE f/dθ = Σ m (2(λ − t) + 1)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from tem_core.detector import sample_counts
from tem_core.estimators import pathwise_poisson_sample, score_function_surrogate

DTYPE = torch.float64
M = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], dtype=DTYPE)
T = torch.tensor([3.0, 1.0, 5.0, 2.0, 8.0, 4.0], dtype=DTYPE)
THETA = 2.0


def true_gradient(theta: float = THETA, bias_per_pixel: float = 0.0) -> float:
    lam = theta * M
    return float((M * (2.0 * (lam + bias_per_pixel - T) + 1.0)).sum())


def expected_loss(theta: float = THETA) -> float:
    lam = theta * M
    return float(((lam - T) ** 2 + lam).sum())


def score_estimates(baseline, *, n: int, repeats: int, seed: int) -> torch.Tensor:
    """``repeats`` independent score-function estimates, each from a batch of ``n`` samples."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(repeats, dtype=DTYPE)
    for r in range(repeats):
        theta = torch.tensor(THETA, dtype=DTYPE, requires_grad=True)
        lam = theta * M
        k = sample_counts(lam.expand(n, -1), generator=gen)
        f = ((k - T) ** 2).sum(dim=1)
        (grad,) = torch.autograd.grad(score_function_surrogate(f, k, lam, baseline=baseline), theta)
        out[r] = grad
    return out


def pathwise_estimates(relaxation: str, *, repeats: int, seed: int) -> torch.Tensor:
    """``repeats`` single-sample pathwise estimates (vectorised: one θ per repeat)."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.full((repeats,), THETA, dtype=DTYPE, requires_grad=True)
    lam = theta[:, None] * M
    k = pathwise_poisson_sample(lam, generator=gen, relaxation=relaxation)
    f = ((k - T) ** 2).sum(dim=1)
    (grad,) = torch.autograd.grad(f.sum(), theta)
    return grad


def within_3_se(estimates: torch.Tensor, truth: float) -> tuple[bool, str]:
    mean = float(estimates.mean())
    se = float(estimates.std()) / math.sqrt(estimates.numel())
    return abs(mean - truth) < 3.0 * se, f"mean {mean:.3f} ± {se:.3f} (SE), truth {truth:.3f}"


@pytest.mark.parametrize("baseline", [None, "mean", "constant"])
def test_score_function_is_unbiased(baseline) -> None:
    b = expected_loss() if baseline == "constant" else baseline
    est = score_estimates(b, n=8, repeats=1500, seed=1)
    ok, msg = within_3_se(est, true_gradient())
    assert ok, msg


def test_baseline_reduces_variance() -> None:
    var_none = float(score_estimates(None, n=8, repeats=600, seed=2).var())
    var_mean = float(score_estimates("mean", n=8, repeats=600, seed=2).var())
    var_const = float(score_estimates(expected_loss(), n=8, repeats=600, seed=2).var())
    # E f is large against the fluctuation of f: a baseline removes most of the variance
    # (measured about 5x less; see benchmarks/estimator_variance.py)
    assert var_mean < 0.5 * var_none, (var_mean, var_none)
    assert var_const < 0.5 * var_none, (var_const, var_none)


def test_pathwise_gaussian_is_unbiased_and_low_variance() -> None:
    est = pathwise_estimates("gaussian", repeats=20000, seed=3)
    ok, msg = within_3_se(est, true_gradient())
    assert ok, msg
    # per-sample variance, far below the score function's even with a baseline (single sample)
    var_sf = float(score_estimates("mean", n=2, repeats=400, seed=4).var()) * 2
    assert float(est.var()) < 0.2 * var_sf


def test_pathwise_anscombe_has_the_documented_bias() -> None:
    # E k̃ = λ + 1/4, Var k̃ = λ + 1/2: dE f/dθ = Σ m (2(λ + 1/4 − t) + 1)
    est = pathwise_estimates("anscombe", repeats=20000, seed=5)
    ok, msg = within_3_se(est, true_gradient(bias_per_pixel=0.25))
    assert ok, msg


@pytest.mark.parametrize(
    ("relaxation", "mean_offset", "var_offset"), [("gaussian", 0.0, 0.0), ("anscombe", 0.25, 0.5)]
)
def test_relaxed_sample_moments(relaxation, mean_offset, var_offset) -> None:
    gen = torch.Generator().manual_seed(6)
    lam = torch.tensor([0.0, 0.5, 3.0, 40.0], dtype=DTYPE)
    k = pathwise_poisson_sample(lam.expand(200_000, -1), generator=gen, relaxation=relaxation)
    n = k.shape[0]
    var_true = lam + var_offset
    se_mean = torch.sqrt(var_true / n)
    torch.testing.assert_close(k.mean(0), lam + mean_offset, atol=4 * float(se_mean.max()), rtol=0)
    torch.testing.assert_close(k.var(0), var_true, rtol=0.02, atol=1e-3)
    assert k.dtype == DTYPE and k.shape == (n, 4)


def test_gaussian_relaxation_gradient_finite_at_zero() -> None:
    lam = torch.zeros(5, dtype=DTYPE, requires_grad=True)
    k = pathwise_poisson_sample(lam, generator=torch.Generator().manual_seed(0))
    k.sum().backward()
    # k = λ + √λ·ε with the √ given a zero gradient at 0: dk/dλ = 1 exactly (not inf or nan)
    assert torch.equal(lam.grad, torch.ones(5, dtype=DTYPE))


def test_surrogate_value_and_single_sample_gradient() -> None:
    # one sample: the gradient is exactly (f − b) Σ m (k/λ − 1)
    theta = torch.tensor(THETA, dtype=DTYPE, requires_grad=True)
    k = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0, 7.0], dtype=DTYPE)
    f = ((k - T) ** 2).sum()
    for b in (None, 10.0, torch.tensor(3.0, dtype=DTYPE)):
        lam = theta * M
        s = score_function_surrogate(f, k, lam, baseline=b)
        torch.testing.assert_close(s, f)  # the value is the loss
        (g,) = torch.autograd.grad(s, theta)
        b_value = 0.0 if b is None else float(b)
        want = (f - b_value) * (M * (k / lam.detach() - 1.0)).sum()
        torch.testing.assert_close(g, want.detach())


def test_surrogate_keeps_the_pathwise_part() -> None:
    # f depends on θ directly: f = θ·Σk, E f = θ² Σm → d/dθ = 2θ Σm; per sample:
    # Σk + θΣk Σ m (k/λ − 1)
    theta = torch.tensor(THETA, dtype=DTYPE, requires_grad=True)
    lam = theta * M
    k = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0, 7.0], dtype=DTYPE)
    f = theta * k.sum()
    (g,) = torch.autograd.grad(score_function_surrogate(f, k, lam), theta)
    want = k.sum() + THETA * k.sum() * (M * (k / (THETA * M) - 1.0)).sum()
    torch.testing.assert_close(g, want)


def test_leave_one_out_baseline_values() -> None:
    # with baseline "mean", sample s is weighted by f_s − mean(f_other)
    lam = torch.tensor([2.0], dtype=DTYPE, requires_grad=True)
    k = torch.tensor([[1.0], [2.0], [4.0]], dtype=DTYPE)
    f = torch.tensor([1.0, 2.0, 6.0], dtype=DTYPE)
    (g,) = torch.autograd.grad(score_function_surrogate(f, k, lam, baseline="mean"), lam)
    loo = torch.tensor([4.0, 3.5, 1.5], dtype=DTYPE)
    want = ((f - loo) * (k[:, 0] / 2.0 - 1.0)).mean()
    torch.testing.assert_close(g, want[None])


def test_errors() -> None:
    lam = torch.ones(3, dtype=DTYPE)
    k = torch.ones(2, 3, dtype=DTYPE)
    f = torch.ones(2, dtype=DTYPE)
    gen = torch.Generator()
    with pytest.raises(ValueError, match="baseline must be None"):
        score_function_surrogate(f, k, lam, baseline="median")
    with pytest.raises(ValueError, match="at least 2 samples"):
        score_function_surrogate(f[:1], k[:1], lam, baseline="mean")
    with pytest.raises(ValueError, match=r"baseline must have shape"):
        score_function_surrogate(f, k, lam, baseline=torch.ones(3))
    with pytest.raises(TypeError, match="baseline must be"):
        score_function_surrogate(f, k, lam, baseline=[1.0])
    with pytest.raises(ValueError, match="leading sample dimension of size 2"):
        score_function_surrogate(f, k[0], lam)
    with pytest.raises(ValueError, match="counts must be non-negative integers, got 0.5"):
        score_function_surrogate(f, k * 0.5, lam)
    with pytest.raises(ValueError, match="expected must be >= 0, got minimum -1.0 counts"):
        score_function_surrogate(f, k, -lam)
    with pytest.raises(ValueError, match="expected must be finite, got nan counts"):
        score_function_surrogate(f, k, lam * math.nan)
    with pytest.raises(ValueError, match="must broadcast to counts"):
        score_function_surrogate(f, k, torch.ones(4, dtype=DTYPE))
    with pytest.raises(ValueError, match="loss_per_sample must be finite"):
        score_function_surrogate(f * math.inf, k, lam)
    with pytest.raises(TypeError, match="loss_per_sample must be a torch.Tensor"):
        score_function_surrogate([1.0, 1.0], k, lam)
    with pytest.raises(ValueError, match="relaxation must be one of"):
        pathwise_poisson_sample(lam, generator=gen, relaxation="poisson")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        pathwise_poisson_sample(lam, generator=0)
    with pytest.raises(TypeError, match="expected must be a floating tensor"):
        pathwise_poisson_sample(torch.ones(3, dtype=torch.int64), generator=gen)
