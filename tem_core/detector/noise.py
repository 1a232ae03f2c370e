"""Dose and shot noise: expected electrons, Poisson and DQE noise models, log-likelihood."""

from __future__ import annotations

import torch

from tem_core.detector.params import Scalar, _as_tensor, _batch_shaped, _check_dqe
from tem_core.interop import accepts_arrays
from tem_core.validation import require_generator, require_nonnegative, require_positive

#: Noise models for the DQE: see :class:`tem_core.detector.Detector`.
NOISE_MODELS = ("poisson_wald", "scaled_poisson")


def expected_electrons(
    intensity: torch.Tensor, *, dose_e_per_a2: Scalar, sampling_a: Scalar
) -> torch.Tensor:
    """Expected electrons per pixel ``N = intensity · dose · sampling²``.

    Parameters
    ----------
    intensity
        ``(..., ny, nx)`` image intensity, 1 for vacuum [dimensionless].
    dose_e_per_a2
        Electron dose per area (≥ 0) [e/Å²]; a float, a scalar tensor, or a tensor of the
        batch shape ``intensity.shape[:-2]`` (one dose per image, e.g. per tilt).
    sampling_a
        Pixel size (> 0) [Å].
    """
    require_nonnegative("dose_e_per_a2", dose_e_per_a2, "e/Å²")
    require_positive("sampling_a", sampling_a, "Å")
    dose = _batch_shaped(_as_tensor(dose_e_per_a2, intensity))
    sampling = _as_tensor(sampling_a, intensity)
    return intensity * dose * sampling**2


@accepts_arrays
def sample_counts(expected: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Poisson samples with mean ``expected`` (not differentiable; the input is detached).

    Parameters
    ----------
    expected
        Expected counts (≥ 0, floating).
    generator
        Random generator on ``expected``'s device.
    """
    require_generator(generator, expected, "expected")
    expected = expected.detach()
    if expected.numel() and not bool(torch.all(expected >= 0)):
        raise ValueError(
            f"expected counts must be >= 0 and finite, got minimum {expected.min().item()}"
        )
    return torch.poisson(expected, generator=generator)


def _sample_wald(mean: torch.Tensor, k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Inverse-Gaussian samples with the given mean and variance ``k · mean`` (Michael et al. 1976).

    Written in a cancellation-free form; ``mean = 0`` gives 0, ``k = 0`` gives ``mean``.
    """
    y = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype) ** 2
    u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    if k.numel() == 1 and not k.requires_grad and float(k) > 0:
        return _wald_in_place(mean, k.reshape(()), y, u)
    k = torch.broadcast_to(k, mean.shape)
    positive = (mean > 0) & (k > 0)
    k_safe = torch.where(positive, k, torch.ones_like(k))
    root = torch.sqrt(y * y + 4.0 * mean * y / k_safe)
    x = mean - 2.0 * mean * y / (y + root).clamp_min(torch.finfo(mean.dtype).tiny)
    x_safe = torch.where(x > 0, x, torch.ones_like(x))
    pick_small = u * (mean + x) <= mean
    sample = torch.where(pick_small, x, mean * mean / x_safe)
    sample = torch.where(x > 0, sample, mean)  # x underflows only when y = 0: then x = mean
    return torch.where(positive, sample, mean)


def _wald_in_place(mean, k, y, u):
    """:func:`_sample_wald`'s expressions for one ``k > 0`` on four grids (``y``, ``u`` and
    two more, reused): the same operations on the same values, so the same bits."""
    tiny = torch.finfo(mean.dtype).tiny
    t = torch.mul(mean, 4.0).mul_(y).div_(k)  # 4 mean y / k
    d = torch.mul(y, y).add_(t).sqrt_().add_(y).clamp_min_(tiny)  # y + root, clamped
    x = torch.mul(mean, 2.0, out=t).mul_(y).div_(d).neg_().add_(mean)  # mean − 2 mean y / d
    pick_small = u.mul_(torch.add(mean, x, out=d)) <= mean
    x_positive = x > 0
    large = torch.mul(mean, mean, out=d).div_(torch.where(x_positive, x, x.new_ones(()), out=u))
    sample = torch.where(pick_small, x, large, out=y)
    sample = torch.where(x_positive, sample, mean)  # x underflows only when y = 0
    return torch.where(mean > 0, sample, mean)


def sample_electrons(
    expected: torch.Tensor,
    *,
    dqe: Scalar,
    generator: torch.Generator,
    noise_model: str = "poisson_wald",
) -> torch.Tensor:
    """Detected electrons per pixel: mean ``expected``, variance ``expected / dqe``.

    ``noise_model="poisson_wald"`` (TEM-simulator's ``detector_apply_quantization``):
    ``c ~ Poisson(N)``, then an inverse-Gaussian (Wald) sample with mean ``c`` and variance
    ``(1/DQE − 1)·c``: continuous values for DQE < 1, exact Poisson for DQE = 1.
    ``noise_model="scaled_poisson"``: ``Poisson(DQE·N) / DQE`` (values on a grid of
    ``1/DQE``; its likelihood is Poisson, see :func:`poisson_log_prob`). Not differentiable.

    Parameters
    ----------
    expected
        Expected electrons per pixel ``N`` (≥ 0).
    dqe
        Detective quantum efficiency in (0, 1] (scalar, or one per image of the batch).
    generator
        Random generator on ``expected``'s device.
    noise_model
        One of :data:`NOISE_MODELS`.
    """
    _check_dqe(dqe)
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"noise_model must be one of {NOISE_MODELS}, got {noise_model!r}")
    expected = expected.detach()
    dqe_t = _batch_shaped(_as_tensor(dqe, expected).detach())
    if noise_model == "scaled_poisson":
        return sample_counts(expected * dqe_t, generator=generator) / dqe_t
    counts = sample_counts(expected, generator=generator)
    if bool(torch.all(dqe_t == 1)):
        return counts
    return _sample_wald(counts, 1.0 / dqe_t - 1.0, generator)


def poisson_log_prob(counts: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Elementwise Poisson log-probability ``k log λ − λ − log k!`` (differentiable wrt λ).

    For the score-function estimator ``∇θ E[f(k)] = E[(f(k) − b) ∇θ log p(k; λ(θ))]``
    (``∂/∂λ log p = k/λ − 1``). ``λ = 0`` gives 0 for ``k = 0`` and ``−inf`` for ``k > 0``.

    Parameters
    ----------
    counts
        Observed counts ``k`` (non-negative integers, any floating or integer dtype).
    expected
        Poisson means ``λ`` (≥ 0), broadcastable with ``counts``.
    """
    k = counts.to(expected.dtype) if expected.dtype.is_floating_point else counts.double()
    lam = expected
    lam_safe = torch.where(lam > 0, lam, torch.ones_like(lam))
    k_log_lam = torch.where(k > 0, k * torch.log(lam_safe), torch.zeros_like(lam_safe))
    k_log_lam = torch.where((lam <= 0) & (k > 0), torch.full_like(k_log_lam, -torch.inf), k_log_lam)
    return k_log_lam - lam - torch.lgamma(k + 1.0)
