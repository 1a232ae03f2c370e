"""Bias and variance of gradient estimators through Poisson sampling (prints a table).

Problem with a known answer: ``k ~ Poisson(λ)``, ``λ = θ·m`` for a fixed positive map ``m``
(``P`` pixels), loss ``f(k) = Σ (k − t)²``; ``E f = Σ (λ − t)² + λ`` and
``dE f/dθ = Σ m (2(λ − t) + 1)``. For each estimator the table gives the mean of ``R``
independent estimates (each from a batch of ``n`` samples), its standard error, the true
gradient, and the variance of one estimate scaled to one sample (``n · Var``), so rows with
different ``n`` compare per sample drawn.

Usage: ``python benchmarks/estimator_variance.py [--repeats R] [--pixels P] [--counts C]``.
"""

from __future__ import annotations

import argparse
import math

import torch

from tem_core.detector import sample_counts
from tem_core.estimators import pathwise_poisson_sample, score_function_surrogate

DTYPE = torch.float64


def problem(pixels: int, counts: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = 0.5 + torch.rand(pixels, generator=gen, dtype=DTYPE)  # positive map
    theta = counts / float(m.mean())  # mean λ = counts
    t = theta * m + 2.0 * torch.randn(pixels, generator=gen, dtype=DTYPE)
    lam = theta * m
    truth = float((m * (2.0 * (lam - t) + 1.0)).sum())
    expected_loss = float(((lam - t) ** 2 + lam).sum())
    return m, t, theta, truth, expected_loss


def score_estimates(m, t, theta0, baseline, *, n, repeats, gen):
    out = torch.empty(repeats, dtype=DTYPE)
    for r in range(repeats):
        theta = torch.tensor(theta0, dtype=DTYPE, requires_grad=True)
        lam = theta * m
        k = sample_counts(lam.expand(n, -1), generator=gen)
        f = ((k - t) ** 2).sum(dim=1)
        surrogate = score_function_surrogate(f, k, lam, baseline=baseline)
        out[r] = torch.autograd.grad(surrogate, theta)[0]
    return out


def pathwise_estimates(m, t, theta0, relaxation, *, repeats, gen):
    theta = torch.full((repeats,), theta0, dtype=DTYPE, requires_grad=True)
    k = pathwise_poisson_sample(theta[:, None] * m, generator=gen, relaxation=relaxation)
    f = ((k - t) ** 2).sum(dim=1)
    return torch.autograd.grad(f.sum(), theta)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--pixels", type=int, default=16)
    parser.add_argument("--counts", type=float, default=5.0, help="mean λ per pixel")
    args = parser.parse_args()
    m, t, theta, truth, expected_loss = problem(args.pixels, args.counts)
    gen = torch.Generator().manual_seed(1)
    r = args.repeats

    def score(baseline, n):
        return lambda: score_estimates(m, t, theta, baseline, n=n, repeats=r, gen=gen)

    def pathwise(relaxation):
        return lambda: pathwise_estimates(m, t, theta, relaxation, repeats=r, gen=gen)

    rows = [
        ("score, no baseline", 1, score(None, 1)),
        ("score, no baseline", 8, score(None, 8)),
        ("score, b = E f (oracle)", 1, score(expected_loss, 1)),
        ("score, leave-one-out mean", 8, score("mean", 8)),
        ("pathwise, gaussian", 1, pathwise("gaussian")),
        ("pathwise, anscombe", 1, pathwise("anscombe")),
    ]
    print(
        f"P = {args.pixels} pixels, mean λ = {args.counts} counts/pixel, R = {args.repeats} "
        f"estimates per row; true dE f/dθ = {truth:.3f} (anscombe: expect "
        f"{truth + float(m.sum()) * 0.5:.3f}, bias Σm/2)"
    )
    header = (
        f"{'estimator':28s} {'n':>3s} {'mean':>11s} {'SE':>9s} {'(mean-true)/SE':>15s} "
        f"{'n·Var':>12s}"
    )
    print(header)
    print("-" * len(header))
    for name, n, run in rows:
        est = run()
        mean, var = float(est.mean()), float(est.var())
        se = math.sqrt(var / est.numel())
        z = (mean - truth) / se
        print(f"{name:28s} {n:3d} {mean:11.3f} {se:9.3f} {z:15.2f} {n * var:12.1f}")


if __name__ == "__main__":
    main()
