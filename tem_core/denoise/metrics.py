"""Image-quality metrics for denoising: MSE, PSNR, SSIM, focal frequency loss, FRC.

All are pure torch functions over the last two dimensions (batch dimensions allowed) that
follow their inputs' device and dtype. PSNR and SSIM take an explicit ``data_range``; the
benchmark compares images after :func:`normalise_minmax` (each image mapped to [0, 1] by its
own extremes, as the diff-tem release does), so ``data_range=1``.
"""

from __future__ import annotations

import math

import torch

from tem_core._fft import fft2
from tem_core.detector import radial_frequency_cycles_per_px
from tem_core.validation import refuse_half_precision, require_same_device

__all__ = [
    "focal_frequency_loss",
    "fourier_ring_correlation",
    "mse",
    "normalise_minmax",
    "psnr",
    "ssim",
]


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    for name, x in (("prediction", prediction), ("target", target)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (..., ny, nx), got {tuple(x.shape)}")
        refuse_half_precision(name, x)
    require_same_device("prediction", prediction, "target", target)
    if prediction.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"prediction and target must have the same image shape, got "
            f"{tuple(prediction.shape[-2:])} and {tuple(target.shape[-2:])}"
        )


def _check_range(data_range: float) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, int | float):
        raise TypeError(f"data_range must be a number, got {type(data_range).__name__}")
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be finite and > 0, got {data_range}")
    return float(data_range)


def normalise_minmax(image: torch.Tensor) -> torch.Tensor:
    """Map each image to [0, 1] by its own minimum and maximum (detached, as diff-tem does).

    A constant image maps to 0. Gradients flow through the pixels, not through the extremes.
    """
    if not isinstance(image, torch.Tensor) or image.ndim < 2:
        raise ValueError("image must be a tensor of shape (..., ny, nx)")
    flat = image.detach().flatten(-2)
    lo = flat.min(dim=-1).values[..., None, None]
    hi = flat.max(dim=-1).values[..., None, None]
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (image - lo) / span


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, shape ``(...)``."""
    _check_pair(prediction, target)
    return ((prediction - target) ** 2).mean(dim=(-2, -1))


def psnr(prediction: torch.Tensor, target: torch.Tensor, *, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` per image [dB]."""
    r = _check_range(data_range)
    return 10.0 * torch.log10(r**2 / mse(prediction, target))


def _gaussian_window(sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' convolution over the last two dimensions of ``(B, ny, nx)``."""
    k = g.numel()
    x = x[:, None]
    x = torch.nn.functional.conv2d(x, g.reshape(1, 1, 1, k))
    x = torch.nn.functional.conv2d(x, g.reshape(1, 1, k, 1))
    return x[:, 0]


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    sigma_px: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image with an 11 × 11 Gaussian window.

    ``σ = 1.5`` px, ``K1 = 0.01``, ``K2 = 0.03``, ``C = (K·data_range)²``, sample
    covariances, averaged over the valid region (no padding), as in scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
    """
    _check_pair(prediction, target)
    r = _check_range(data_range)
    radius = int(3.5 * sigma_px + 0.5)
    if min(prediction.shape[-2:]) <= 2 * radius:
        raise ValueError(
            f"images must be larger than the SSIM window ({2 * radius + 1} px), "
            f"got {tuple(prediction.shape[-2:])}"
        )
    dtype = torch.promote_types(prediction.dtype, target.dtype)
    prediction, target = prediction.to(dtype), target.to(dtype)
    batch = torch.broadcast_shapes(prediction.shape[:-2], target.shape[:-2])
    x = torch.broadcast_to(prediction, batch + prediction.shape[-2:]).reshape(
        -1, *prediction.shape[-2:]
    )
    y = torch.broadcast_to(target, batch + target.shape[-2:]).reshape(-1, *target.shape[-2:])
    g = _gaussian_window(sigma_px, radius, x)
    mx, my = _blur(x, g), _blur(y, g)
    vx = _blur(x * x, g) - mx * mx
    vy = _blur(y * y, g) - my * my
    cxy = _blur(x * y, g) - mx * my
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).reshape(batch)


def focal_frequency_loss(
    prediction: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0
) -> torch.Tensor:
    """Focal frequency loss (Jiang et al. 2021, ICCV), one value per image.

    ``F = FFT2(x, ortho)``; weight ``w = |ΔF|^α`` divided by its per-image maximum, clamped to
    [0, 1] and detached; loss = ``mean(w · |ΔF|²)`` (the reference implementation's defaults:
    no patches, no log, no spectrum averaging, per-image maximum).
    """
    _check_pair(prediction, target)
    diff = fft2(prediction, norm="ortho") - fft2(target, norm="ortho")
    dist = diff.real**2 + diff.imag**2
    w = torch.sqrt(dist.detach()) ** alpha
    wmax = w.flatten(-2).max(dim=-1).values[..., None, None]
    w = torch.nan_to_num(w / wmax).clamp(0.0, 1.0)
    return (w * dist).mean(dim=(-2, -1))


def fourier_ring_correlation(
    image_a: torch.Tensor, image_b: torch.Tensor, *, n_rings: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier ring correlation of two ``(ny, nx)`` images.

    ``FRC(r) = Re Σ F_a F_b* / √(Σ |F_a|² Σ |F_b|²)`` over rings of radial frequency
    ``[r, r + Δ)`` with ``Δ = 0.5 / n_rings`` cycles/pixel, up to Nyquist (0.5).

    Returns
    -------
    (Tensor, Tensor)
        Ring centre frequencies [cycles/pixel] and the FRC (in [-1, 1]), each ``(n_rings,)``.
    """
    _check_pair(image_a, image_b)
    if image_a.ndim != 2 or image_b.ndim != 2:
        raise ValueError("image_a and image_b must be single images (ny, nx)")
    shape = tuple(image_a.shape)
    n = n_rings if n_rings is not None else min(shape) // 2
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_rings must be a positive integer, got {n_rings!r}")
    fa = fft2(image_a - image_a.mean())
    fb = fft2(image_b - image_b.mean())
    omega = radial_frequency_cycles_per_px(shape, device=image_a.device, dtype=image_a.real.dtype)
    ring = torch.floor(omega / (0.5 / n)).long()
    keep = ring < n
    ring = ring[keep]
    num = torch.zeros(n, dtype=omega.dtype, device=omega.device)
    da, db = torch.zeros_like(num), torch.zeros_like(num)
    num.index_add_(0, ring, (fa * fb.conj()).real[keep])
    da.index_add_(0, ring, (fa.abs() ** 2)[keep])
    db.index_add_(0, ring, (fb.abs() ** 2)[keep])
    frc = num / torch.sqrt(da * db).clamp_min(torch.finfo(num.dtype).tiny)
    centres = (torch.arange(n, device=omega.device, dtype=omega.dtype) + 0.5) * (0.5 / n)
    return centres, frc
