"""Input checks shared by the denoisers: errors name the parameter, its value and unit."""

from __future__ import annotations

from typing import Any

import torch

from tem_core.detector import Detector
from tem_core.validation import require_float_dtype, require_same_device

#: Smallest MTF value a denoiser divides by (the MTF is inverted there).
MIN_INVERTIBLE_MTF = 1e-3


def check_image_stack(
    name: str, value: Any, *, min_images: int = 1, leading: str = "n_projections"
) -> torch.Tensor:
    """``value`` as a floating ``(..., n, ny, nx)`` tensor with at least ``min_images`` images.

    Raises ``TypeError`` / ``ValueError`` naming ``name`` for a non-tensor, a non-floating or
    complex tensor, fewer than 3 dimensions, too few images along dimension ``-3``, an empty
    image or non-finite pixels.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex() or not value.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor [counts], got {value.dtype}")
    require_float_dtype(name, value)
    if value.ndim < 3:
        raise ValueError(
            f"{name} must have shape (..., {leading}, ny, nx), got {tuple(value.shape)}"
        )
    if value.shape[-1] < 2 or value.shape[-2] < 2:
        raise ValueError(f"{name} images must be at least 2 x 2 pixels, got {tuple(value.shape)}")
    if value.shape[-3] < min_images:
        raise ValueError(
            f"{name} must hold at least {min_images} images along {leading} (dimension -3), "
            f"got {value.shape[-3]}"
        )
    finite = torch.isfinite(value.detach())
    if not bool(finite.all()):
        bad = value.detach()[~finite].reshape(-1)[0].item()
        raise ValueError(f"{name} must be finite, got {bad} counts")
    return value


def check_image(name: str, value: Any, *, min_size: int = 1) -> torch.Tensor:
    """``value`` as a real floating ``(..., ny, nx)`` tensor, each side at least ``min_size``
    pixels, every pixel finite (a NaN would spread through every filter silently)."""
    if not isinstance(value, torch.Tensor) or value.ndim < 2:
        raise ValueError(f"{name} must be a tensor of shape (..., ny, nx), got {value!r:.80}")
    if value.is_complex() or not value.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor, got {value.dtype}")
    require_float_dtype(name, value)
    if min(value.shape[-2:]) < min_size or value.numel() == 0:
        raise ValueError(
            f"{name} must be at least {min_size} x {min_size} pixels, got {tuple(value.shape)}"
        )
    finite = torch.isfinite(value.detach())
    if not bool(finite.all()):
        bad = value.detach()[~finite].reshape(-1)[0].item()
        raise ValueError(f"{name} must be finite, got {int((~finite).sum())} pixels like {bad}")
    return value


def check_positive_counts(name: str, value: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every image of ``(..., ny, nx)`` has a mean > 0 [counts].

    The Poisson noise model needs counts: an image whose mean is zero or negative was
    offset-subtracted or normalised, and the denoiser would return a wrong result quietly.
    """
    means = value.detach().double().mean(dim=(-2, -1)).reshape(-1)
    if means.numel() and float(means.min()) <= 0:
        index = int(means.argmin())
        raise ValueError(
            f"{name} must be counts with a positive mean per image, got mean "
            f"{float(means[index]):.4g} counts in image {index} (an offset-subtracted or "
            "normalised image? the Poisson noise model needs the raw counts)"
        )


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ``ValueError`` unless the image shapes (last two dimensions) agree."""
    if tuple(a.shape[-2:]) != tuple(b.shape[-2:]):
        raise ValueError(
            f"{name_b} images must have the shape of {name_a} ({tuple(a.shape[-2:])}), "
            f"got {tuple(b.shape[-2:])}"
        )


def check_detector(detector: Any) -> Detector:
    if not isinstance(detector, Detector):
        raise TypeError(f"detector must be a tem_core.detector.Detector, got {type(detector)}")
    return detector


def transfer_function(
    detector: Detector,
    shape: tuple[int, int],
    like: torch.Tensor,
    mtf: torch.Tensor | None,
    *,
    invert: bool,
) -> torch.Tensor | None:
    """The ``(ny, nx)`` MTF (FFT order) on ``like``'s device and dtype, or ``None`` (no blur).

    ``mtf`` overrides the detector's MTF (e.g. one measured by :mod:`tem_core.mtf_fit`).
    With ``invert=True`` every value must exceed :data:`MIN_INVERTIBLE_MTF`: the denoiser
    divides by it.
    """
    if mtf is None:
        if not detector.mtf_enabled:
            return None
        mtf = detector.mtf(shape, device=like.device, dtype=like.dtype)
    else:
        if not isinstance(mtf, torch.Tensor):
            raise TypeError(f"mtf must be a torch.Tensor or None, got {type(mtf).__name__}")
        require_same_device("mtf", mtf, "projections", like)
        if tuple(mtf.shape) != tuple(shape):
            raise ValueError(
                f"mtf must have the image shape {tuple(shape)}, got {tuple(mtf.shape)}"
            )
        if not bool(torch.isfinite(mtf).all()):
            raise ValueError("mtf must be finite, got a non-finite value")
        mtf = mtf.detach().to(device=like.device, dtype=like.dtype)
    if invert:
        smallest = float(mtf.abs().min())
        if smallest < MIN_INVERTIBLE_MTF:
            raise ValueError(
                f"mtf must be >= {MIN_INVERTIBLE_MTF} at every frequency (it is inverted), "
                f"got minimum {smallest:.3g}"
            )
    return mtf


def check_generator(generator: Any, like: torch.Tensor) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != like.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the projections are on {like.device}; "
            "create it with torch.Generator(device=projections.device)"
        )
    return generator
