"""Gradient estimators through Poisson shot noise (an inverse-stage helper).

Detector counts ``k ~ Poisson(λ(θ))`` are not differentiable in the parameters ``θ`` behind
the expected counts ``λ`` (defocus, dose, atom positions, ...), but the gradient of an
expected loss ``∇θ E[f(k)]`` can still be estimated from samples:

* **Score function** (REINFORCE, likelihood ratio): ``∇θ E[f(k)] = E[(f(k) − b) ∇θ log p(k; λ)]``
  with ``∂/∂λ log p = k/λ − 1`` for Poisson. It is unbiased for any ``f`` (also
  non-differentiable ones) and any baseline ``b`` that does not depend on ``k`` (the
  leave-one-out mean of the other samples qualifies); its variance grows with ``f`` and with
  the number of pixels, and a baseline reduces it. :func:`score_function_surrogate` returns
  a scalar whose autograd gradient is this estimator.
* **Pathwise** (reparameterisation) through a continuous relaxation of the Poisson sample
  (:func:`pathwise_poisson_sample`): ``k̃ = g(λ, ε)`` with ``ε ~ N(0, 1)`` independent of
  ``θ``, then ``∇θ f(k̃)``. Low variance, but biased unless ``E[f(k̃)] = E[f(k)]``; for the
  Gaussian relaxation this holds for every ``f`` that is a polynomial of degree ≤ 2 in ``k``
  (mean and variance of ``k̃`` equal those of ``k``).

All functions are pure torch (device and dtype of their inputs); randomness only through an
explicit ``torch.Generator``. See ``benchmarks/estimator_variance.py`` for a variance table.
"""

from __future__ import annotations

from typing import Any

import torch

from tem_core.detector import poisson_log_prob
from tem_core.validation import require_generator

__all__ = ["RELAXATIONS", "pathwise_poisson_sample", "score_function_surrogate"]

#: Relaxations offered by :func:`pathwise_poisson_sample`.
RELAXATIONS = ("gaussian", "anscombe")


def _require_tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _require_finite_tensor(name: str, value: torch.Tensor, unit: str) -> None:
    if value.numel() and not bool(torch.isfinite(value.detach()).all()):
        bad = value.detach()[~torch.isfinite(value.detach())].reshape(-1)[0].item()
        raise ValueError(f"{name} must be finite, got {bad} {unit}".rstrip())


def _require_expected(expected: Any) -> torch.Tensor:
    expected = _require_tensor("expected", expected)
    if not expected.is_floating_point():
        raise TypeError(f"expected must be a floating tensor [counts], got {expected.dtype}")
    _require_finite_tensor("expected", expected, "counts")
    if expected.numel() and not bool((expected.detach() >= 0).all()):
        raise ValueError(
            f"expected must be >= 0, got minimum {expected.detach().min().item()} counts"
        )
    return expected


def score_function_surrogate(
    loss_per_sample: torch.Tensor,
    counts: torch.Tensor,
    expected: torch.Tensor,
    *,
    baseline: None | float | str | torch.Tensor = None,
) -> torch.Tensor:
    """Surrogate loss whose gradient is the score-function estimator of ``∇θ E[f(k)]``.

    For ``S`` samples ``k_s ~ Poisson(λ(θ))`` with losses ``f_s = f(k_s)`` this returns

    ``(1/S) Σ_s [ f_s + (f_s − b_s)·(log p(k_s; λ) − stop_grad(log p(k_s; λ))) ]``

    whose value is the sample mean of ``f`` and whose gradient wrt ``θ`` is
    ``(1/S) Σ_s [ ∇θ f_s + (f_s − b_s) ∇θ log p(k_s; λ) ]``, an unbiased estimator of
    ``∇θ E[f(k)]`` when ``b_s`` does not depend on ``k_s``. ``log p`` is summed over all
    pixels of a sample (:func:`tem_core.detector.poisson_log_prob`). ``∇θ f_s`` is the
    pathwise part, non-zero only when ``f`` also depends on ``θ`` directly (e.g. through a
    gain or a DQE scale); ``f_s − b_s`` is detached.

    Parameters
    ----------
    loss_per_sample
        ``(S,)`` losses ``f(k_s)``, one per sample (a 0-d tensor for a single sample; then
        ``counts`` holds one sample without a leading sample dimension).
    counts
        ``(S, ...)`` Poisson samples ``k_s`` (non-negative integers, any real dtype) [counts];
        detached.
    expected
        Poisson means ``λ(θ)`` (≥ 0), broadcastable to ``counts`` (typically the shape of
        one sample), carrying the autograd graph to ``θ`` [counts].
    baseline
        ``None`` (no baseline), a float or tensor of shape ``()`` or ``(S,)`` (detached; must
        not depend on the samples it is subtracted from), or ``"mean"``: for each sample the
        mean loss of the *other* samples (leave-one-out, unbiased; needs ``S ≥ 2``).

    Returns
    -------
    Tensor
        0-d surrogate loss: call ``.backward()`` on it (its value is ``mean(f)``).
    """
    loss = _require_tensor("loss_per_sample", loss_per_sample)
    counts = _require_tensor("counts", counts)
    expected = _require_expected(expected)
    if loss.ndim > 1:
        raise ValueError(f"loss_per_sample must have shape (S,) or (), got {tuple(loss.shape)}")
    if not loss.is_floating_point():
        raise TypeError(f"loss_per_sample must be a floating tensor, got {loss.dtype}")
    _require_finite_tensor("loss_per_sample", loss, "")
    if loss.ndim == 0:
        loss, counts = loss[None], counts[None]
    n = loss.shape[0]
    if n == 0:
        raise ValueError("loss_per_sample must hold at least one sample, got 0")
    if counts.ndim == 0 or counts.shape[0] != n:
        raise ValueError(
            f"counts must have a leading sample dimension of size {n} (one per loss), "
            f"got shape {tuple(counts.shape)}"
        )
    if counts.is_complex():
        raise TypeError(f"counts must be a real tensor, got {counts.dtype}")
    counts = counts.detach()
    c = counts if counts.is_floating_point() else counts.double()
    _require_finite_tensor("counts", c, "counts")
    if c.numel() and (bool((c < 0).any()) or bool((c != torch.round(c)).any())):
        bad = c[(c < 0) | (c != torch.round(c))].reshape(-1)[0].item()
        raise ValueError(f"counts must be non-negative integers, got {bad} counts")
    try:
        broadcast = torch.broadcast_shapes(counts.shape, expected.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != counts.shape:
        raise ValueError(
            f"expected (shape {tuple(expected.shape)}) must broadcast to counts "
            f"(shape {tuple(counts.shape)})"
        )

    f = loss.detach()
    if baseline is None:
        b = torch.zeros_like(f)
    elif isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(
                f"baseline must be None, a number, a tensor or 'mean', got {baseline!r}"
            )
        if n < 2:
            raise ValueError(f"baseline='mean' needs at least 2 samples, got {n}")
        b = (f.sum() - f) / (n - 1)
    elif isinstance(baseline, bool) or not isinstance(baseline, int | float | torch.Tensor):
        raise TypeError(
            f"baseline must be None, a number, a tensor or 'mean', got {type(baseline).__name__}"
        )
    else:
        b = torch.as_tensor(baseline).detach().to(device=f.device, dtype=f.dtype)
        if b.shape not in ((), (n,)):
            raise ValueError(f"baseline must have shape () or ({n},), got {tuple(b.shape)}")
        _require_finite_tensor("baseline", b, "")
        b = torch.broadcast_to(b, f.shape)

    log_p = poisson_log_prob(counts, expected).reshape(n, -1).sum(dim=1)
    score_term = (f - b) * (log_p - log_p.detach())
    return (loss + score_term.to(loss.dtype)).mean()


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``√x`` for ``x ≥ 0`` with a zero (not infinite) gradient at ``x = 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def pathwise_poisson_sample(
    expected: torch.Tensor, *, generator: torch.Generator, relaxation: str = "gaussian"
) -> torch.Tensor:
    """A reparameterised, differentiable relaxation of a Poisson sample with mean ``λ``.

    With ``ε ~ N(0, 1)`` drawn from ``generator`` (independent of ``λ``):

    * ``"gaussian"``: ``k̃ = λ + √λ·ε``. Exactly the Poisson mean ``λ`` and variance ``λ``,
      so ``E[f(k̃)] = E[f(k)]`` for every ``f`` of degree ≤ 2 (e.g. squared errors) and the
      pathwise gradient is then unbiased; for other ``f`` the bias is of order of the
      Poisson skewness ``λ^(−1/2)`` (large at low counts). Samples may be negative. The
      gradient ``∂k̃/∂λ = 1 + ε/(2√λ)`` diverges as ``λ → 0`` (set to 1 at ``λ = 0``).
    * ``"anscombe"``: ``k̃ = (y/2)² − 3/8`` with ``y = 2√(λ + 3/8) + ε``, the algebraic
      inverse of the Anscombe transform (variance-stabilised Gaussian). Exactly
      ``E[k̃] = λ + 1/4`` (bias +1/4 count per pixel) and ``Var[k̃] = λ + 1/2``; samples are
      ≥ −3/8 and right-skewed like Poisson, and ``∂k̃/∂λ = 1 + ε/(2√(λ + 3/8))`` stays
      bounded at ``λ = 0``. Subtract 1/4 for an unbiased mean.

    Parameters
    ----------
    expected
        Poisson means ``λ`` (≥ 0, floating, any shape) [counts]; gradients flow through it.
    generator
        ``torch.Generator`` on ``expected``'s device.
    relaxation
        One of :data:`RELAXATIONS`.

    Returns
    -------
    Tensor
        Relaxed counts, same shape, dtype and device as ``expected`` [counts].
    """
    expected = _require_expected(expected)
    require_generator(generator, expected, "expected")
    if relaxation not in RELAXATIONS:
        raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {relaxation!r}")
    eps = torch.randn(
        expected.shape, generator=generator, device=expected.device, dtype=expected.dtype
    )
    if relaxation == "gaussian":
        return expected + _safe_sqrt(expected) * eps
    half_y = torch.sqrt(expected + 0.375) + 0.5 * eps
    return half_y**2 - 0.375
