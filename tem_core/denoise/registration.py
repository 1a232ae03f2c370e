"""Image registration for neighbouring tilts: rotation (log-polar) and shift (phase correlation).

* Shift: phase correlation (Kuglin & Hines 1975): the normalised cross-power spectrum of two
  images differing by a translation is a pure phase ramp whose inverse FFT peaks at the
  shift; the peak is refined to sub-pixel precision by a parabola through its neighbours.
  Images are Hann-windowed first (non-periodic edges would otherwise dominate).
* Rotation: the amplitude spectrum is invariant to translation and rotates with the image;
  resampled on a polar grid (angle × log-radius, Reddy & Chatterji 1996) a rotation becomes
  a circular shift along the angle axis, found by 1-D phase correlation (angles in
  (−90°, 90°]: the amplitude spectrum is centrosymmetric).

:func:`register` returns the rotation and shift that map ``moving`` onto ``fixed``;
:func:`warp` applies them (bicubic resampling, edges continued). Pure torch; the result
follows the inputs' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tem_core._fft import fft2, ifft2
from tem_core.validation import require_float_dtype, require_same_device

__all__ = ["estimate_rotation", "estimate_shift", "register", "warp"]


def _check_pair(moving: torch.Tensor, fixed: torch.Tensor) -> None:
    for name, x in (("moving", moving), ("fixed", fixed)):
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating (ny, nx) tensor")
        require_float_dtype(name, x)
    require_same_device("moving", moving, "fixed", fixed)
    for name, x in (("moving", moving), ("fixed", fixed)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite, got a non-finite pixel")
    if moving.shape != fixed.shape:
        raise ValueError(
            f"moving must have the shape of fixed ({tuple(fixed.shape)}), got {tuple(moving.shape)}"
        )


def _hann(shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Circular Hann window (rotation invariant, unlike the separable one), 0 outside."""
    ny, nx = shape
    y = torch.arange(ny, device=like.device, dtype=like.dtype) - (ny - 1) / 2
    x = torch.arange(nx, device=like.device, dtype=like.dtype) - (nx - 1) / 2
    r = torch.sqrt((y[:, None] / (ny / 2)) ** 2 + (x[None, :] / (nx / 2)) ** 2)
    return torch.where(r < 1, 0.5 + 0.5 * torch.cos(math.pi * r), torch.zeros_like(r))


def _parabolic(c_m: torch.Tensor, c_0: torch.Tensor, c_p: torch.Tensor) -> float:
    denom = float(c_m - 2 * c_0 + c_p)
    return 0.0 if denom == 0 else 0.5 * float(c_m - c_p) / denom


def estimate_shift(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[float, float]:
    """Shift ``(dy, dx)`` [px] such that ``moving`` shifted by it matches ``fixed``."""
    _check_pair(moving, fixed)
    w = _hann(tuple(fixed.shape), fixed)
    fa = fft2((fixed - fixed.mean()) * w)
    ny, nx = fixed.shape
    fy = torch.fft.fftfreq(ny, device=fixed.device, dtype=fixed.dtype)[:, None]
    fx = torch.fft.fftfreq(nx, device=fixed.device, dtype=fixed.dtype)[None, :]
    # low-pass (σ = 0.1 cycles/px, as tilt-series aligners filter): interpolation and noise
    # scramble the phase at high frequencies
    lowpass = torch.exp(-(fx**2 + fy**2) / (2 * 0.1**2))
    total_dy = total_dx = 0.0
    moving = moving - moving.mean()
    for _ in range(3):  # refine: the parabola is unbiased for residuals near 0
        shifted = ifft2(fft2(moving) * torch.exp(-2j * math.pi * (fy * total_dy + fx * total_dx)))
        fb = fft2(shifted.real * w)
        cross = fa * fb.conj()
        # partial whitening: phase correlation's sharp peak without amplifying empty bands
        corr = ifft2(cross / (cross.abs() + cross.abs().median()) * lowpass).real
        iy, ix = divmod(int(torch.argmax(corr)), nx)
        dy = iy + _parabolic(corr[(iy - 1) % ny, ix], corr[iy, ix], corr[(iy + 1) % ny, ix])
        dx = ix + _parabolic(corr[iy, (ix - 1) % nx], corr[iy, ix], corr[iy, (ix + 1) % nx])
        total_dy += dy - ny if dy > ny / 2 else dy
        total_dx += dx - nx if dx > nx / 2 else dx
    return float(total_dy), float(total_dx)


def _polar_spectrum(image: torch.Tensor, n_angles: int, n_radii: int) -> torch.Tensor:
    """|FFT| (log, Hann-windowed) on an (angle in [0, π)) × (log-radius) grid."""
    ny, nx = image.shape
    spec = torch.fft.fftshift(fft2((image - image.mean()) * _hann((ny, nx), image)).abs())
    spec = torch.log1p(spec)
    theta = torch.arange(n_angles, device=image.device, dtype=image.dtype) * (math.pi / n_angles)
    r_max = 0.45 * min(ny, nx)
    log_r = torch.linspace(
        math.log(2.0), math.log(r_max), n_radii, device=image.device, dtype=image.dtype
    )
    r = torch.exp(log_r)
    # grid_sample's normalised coordinates: x ∈ [-1, 1] over nx pixels (align_corners=True)
    x = (r[None, :] * torch.cos(theta[:, None]) + nx // 2) / (nx - 1) * 2 - 1
    y = (r[None, :] * torch.sin(theta[:, None]) + ny // 2) / (ny - 1) * 2 - 1
    grid = torch.stack([x, y], dim=-1)[None]
    polar = F.grid_sample(spec[None, None], grid, mode="bilinear", align_corners=True)[0, 0]
    return polar - polar.mean(dim=0, keepdim=True)


def estimate_rotation(
    moving: torch.Tensor, fixed: torch.Tensor, *, n_angles: int = 720, n_radii: int = 128
) -> float:
    """Rotation [rad] (counter-clockwise in (x, y), in (−π/2, π/2]) of ``moving`` onto ``fixed``."""
    _check_pair(moving, fixed)
    pa = _polar_spectrum(fixed, n_angles, n_radii)
    pb = _polar_spectrum(moving, n_angles, n_radii)
    cross = torch.fft.fft(pa, dim=0) * torch.fft.fft(pb, dim=0).conj()
    corr = torch.fft.ifft(cross.sum(dim=1)).real  # plain circular cross-correlation
    i = int(torch.argmax(corr))
    n = corr.numel()
    k = i + _parabolic(corr[(i - 1) % n], corr[i], corr[(i + 1) % n])
    k = k - n if k > n / 2 else k
    return float(k * math.pi / n_angles)


def warp(
    image: torch.Tensor, *, angle_rad: float = 0.0, shift_px: tuple[float, float] = (0, 0)
) -> torch.Tensor:
    """Rotate ``image`` by ``angle_rad`` about its centre, then shift it by ``(dy, dx)`` [px].

    Bicubic resampling; pixels from outside the image repeat the nearest edge pixel.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 2:
        raise ValueError("image must be a (ny, nx) tensor")
    ny, nx = image.shape
    yy, xx = torch.meshgrid(
        torch.arange(ny, device=image.device, dtype=image.dtype),
        torch.arange(nx, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    cy, cx = (ny - 1) / 2, (nx - 1) / 2
    # output pixel p comes from the source at R(−angle)(p − shift − c) + c
    y0, x0 = yy - shift_px[0] - cy, xx - shift_px[1] - cx
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    xs = c * x0 + s * y0 + cx
    ys = -s * x0 + c * y0 + cy
    grid = torch.stack([xs / (nx - 1) * 2 - 1, ys / (ny - 1) * 2 - 1], dim=-1)[None]
    out = F.grid_sample(
        image[None, None], grid, mode="bicubic", padding_mode="border", align_corners=True
    )
    return out[0, 0]


def register(
    moving: torch.Tensor, fixed: torch.Tensor, *, rotation: bool = True
) -> tuple[float, tuple[float, float]]:
    """Rotation [rad] and shift ``(dy, dx)`` [px] such that ``warp(moving, ...)`` ≈ ``fixed``.

    The rotation first (:func:`estimate_rotation`, translation invariant), then the shift of
    the rotated image (:func:`estimate_shift`).
    """
    _check_pair(moving, fixed)
    angle = estimate_rotation(moving, fixed) if rotation else 0.0
    rotated = warp(moving, angle_rad=angle) if angle else moving
    return angle, estimate_shift(rotated, fixed)
