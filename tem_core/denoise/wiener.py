"""Local spectral Wiener filtering for images with white Gaussian noise of known variance.

The particles of a cryo-EM field are compact in space (a few tens of pixels in a field of
flat ice) and their contrast sits in the rings where the contrast transfer function is
large. A filter that knows neither the particles nor the CTF can still find both from the
data, because the noise power is known exactly after the Anscombe transform (1 per pixel):

1. **Pilot** — the image is cut into overlapping Hann-windowed patches (a short-time
   Fourier transform, STFT). In each patch the power of the windowed spectrum is averaged
   over rings of radial frequency (the CTF is isotropic, so a ring shares one signal-to-noise
   ratio) and over the ``pool`` × ``pool`` neighbouring patches; the ring gain is the
   James–Stein shrinkage ``max(0, 1 − σ²_w / P̄)``, ``σ²_w`` being the windowed noise power.
   Rings with only noise (the ice, frequencies beyond the information limit) are removed,
   rings with signal kept in proportion to their signal-to-noise ratio, locally.
2. **Empirical Wiener** — a second STFT of the data takes per-coefficient gains
   ``|P|² / (|P|² + σ²_w)`` from the pilot's windowed spectrum ``P`` (the second stage of
   BM3D, Dabov et al. 2007, without block matching; patches here are fixed STFT tiles).

The patches are recombined by weighted overlap-add. Everything is torch (unfold, FFT, fold)
and follows the input's device and dtype. The settings were chosen once on a separate
image (the TMV scene with the segments moved and turned; ``benchmarks/denoise.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tem_core.validation import require_float_dtype, require_positive

__all__ = ["WienerSettings", "local_wiener"]


@dataclass(frozen=True, kw_only=True)
class WienerSettings:
    """Settings of :func:`local_wiener` (chosen once on a separate image, never per image).

    Parameters
    ----------
    patch_px
        Side of the square STFT patches [px] (even, ≥ 8).
    step_px
        Distance between patch origins [px] (divides ``patch_px``; ``patch_px / 4`` gives
        16-fold overlap).
    n_rings
        Radial-frequency rings per patch for the pilot's power estimate.
    pool
        The pilot's ring powers are averaged over ``pool × pool`` neighbouring patches
        (odd, ≥ 1).
    threshold
        James–Stein constant ``c`` of the pilot gain ``max(0, 1 − c σ²_w / P̄)``.
    """

    patch_px: int = 32
    step_px: int = 8
    n_rings: int = 12
    pool: int = 5
    threshold: float = 1.0

    def __post_init__(self) -> None:
        for name in ("patch_px", "step_px", "n_rings", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.patch_px < 8 or self.patch_px % 2:
            raise ValueError(f"patch_px must be even and >= 8, got {self.patch_px} px")
        if self.patch_px % self.step_px:
            raise ValueError(
                f"step_px must divide patch_px ({self.patch_px} px), got {self.step_px} px"
            )
        if self.pool % 2 == 0:
            raise ValueError(f"pool must be odd, got {self.pool}")
        require_positive("threshold", self.threshold)


def _ring_index(patch: int, n_rings: int, device: torch.device) -> torch.Tensor:
    f = torch.fft.fftfreq(patch, device=device, dtype=torch.float64)
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    return torch.clamp((r / math.sqrt(0.5) * n_rings).long(), max=n_rings - 1)


class _Stft:
    """Hann-windowed overlapping patches of ``(B, ny, nx)`` images and their overlap-add."""

    def __init__(self, shape: tuple[int, int], patch: int, step: int, like: torch.Tensor):
        self.ny, self.nx = shape
        self.patch, self.step = patch, step
        self.pad = patch // 2
        # pad so that the padded size minus the patch is a multiple of the step
        self.size = tuple(
            n + 2 * self.pad + (-(n + 2 * self.pad - patch)) % step for n in (self.ny, self.nx)
        )
        self.grid = tuple((s - patch) // step + 1 for s in self.size)
        w = torch.hann_window(patch, periodic=False, device=like.device, dtype=like.dtype) + 1e-3
        self.window = w[:, None] * w[None, :]
        self.noise_power = float((self.window**2).sum())  # per coefficient, unit noise
        fold_w = (self.window**2).reshape(1, -1, 1).expand(1, -1, self.grid[0] * self.grid[1])
        self.norm = F.fold(fold_w, self.size, patch, stride=step)[0, 0].clamp_min(1e-12)

    def patches(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, gy, gx, p, p)`` windowed patches of ``(B, ny, nx)`` images."""
        p = self.pad
        extra_y, extra_x = self.size[0] - self.ny - 2 * p, self.size[1] - self.nx - 2 * p
        padded = F.pad(image[:, None], (p, p + extra_x, p, p + extra_y), mode="reflect")
        cols = F.unfold(padded, self.patch, stride=self.step)  # (B, p², L)
        b = image.shape[0]
        cols = cols.transpose(1, 2).reshape(b, *self.grid, self.patch, self.patch)
        return cols * self.window

    def overlap_add(self, patches: torch.Tensor) -> torch.Tensor:
        """Weighted overlap-add of ``(B, gy, gx, p, p)`` windowed patches → ``(B, ny, nx)``."""
        b = patches.shape[0]
        cols = (patches * self.window).reshape(b, -1, self.patch**2).transpose(1, 2)
        out = F.fold(cols, self.size, self.patch, stride=self.step)[:, 0] / self.norm
        return out[:, self.pad : self.pad + self.ny, self.pad : self.pad + self.nx]


def _ring_gains(spectra: torch.Tensor, stft: _Stft, settings: WienerSettings) -> torch.Tensor:
    """James–Stein gains per ring from pooled ring powers, ``(B, gy, gx, p, p)``."""
    rings = _ring_index(stft.patch, settings.n_rings, spectra.device)
    power = spectra.abs() ** 2 / stft.noise_power  # noise → 1
    b, gy, gx = power.shape[:3]
    flat = power.reshape(b, gy, gx, -1)
    idx = rings.reshape(-1)
    sums = torch.zeros(b, gy, gx, settings.n_rings, device=power.device, dtype=power.dtype)
    sums.index_add_(3, idx, flat)
    counts = torch.zeros(settings.n_rings, device=power.device, dtype=power.dtype)
    counts.index_add_(0, idx, torch.ones_like(idx, dtype=power.dtype))
    mean = sums / counts.clamp_min(1.0)
    if settings.pool > 1:
        k = settings.pool
        pooled = F.avg_pool2d(
            mean.permute(0, 3, 1, 2), k, stride=1, padding=k // 2, count_include_pad=False
        )
        mean = pooled.permute(0, 2, 3, 1)
    gains = (1.0 - settings.threshold / mean.clamp_min(1e-12)).clamp_min(0.0)[..., rings]
    gains[..., 0, 0] = 1.0  # the patch's mean level is kept
    return gains


def local_wiener(
    image: torch.Tensor, *, noise_var: float = 1.0, settings: WienerSettings | None = None
) -> torch.Tensor:
    """Two-stage local spectral Wiener filter (module docstring) of ``(..., ny, nx)`` images.

    Parameters
    ----------
    image
        Images with additive white noise of variance ``noise_var`` [image units²].
    noise_var
        The noise variance (> 0), e.g. 1 after the Anscombe transform.
    settings
        :class:`WienerSettings`.

    Returns
    -------
    torch.Tensor
        The filtered images, same shape, device and dtype.
    """
    settings = WienerSettings() if settings is None else settings
    if not isinstance(settings, WienerSettings):
        raise TypeError(f"settings must be WienerSettings, got {type(settings).__name__}")
    if not isinstance(image, torch.Tensor) or image.ndim < 2 or not image.is_floating_point():
        raise ValueError("image must be a floating tensor of shape (..., ny, nx)")
    require_float_dtype("image", image)
    require_positive("noise_var", noise_var)
    shape = tuple(image.shape[-2:])
    if min(shape) <= settings.patch_px // 2:
        raise ValueError(
            f"image must be larger than patch_px / 2 ({settings.patch_px // 2} px) in y and "
            f"x, got {shape}"
        )
    scale = math.sqrt(float(noise_var))
    z = image.reshape(-1, *shape) / scale  # unit noise
    mean = z.mean(dim=(-2, -1), keepdim=True)
    stft = _Stft(shape, settings.patch_px, settings.step_px, z)
    spectra = torch.fft.fft2(stft.patches(z - mean))
    # stage 1: ring-wise James–Stein pilot
    pilot = stft.overlap_add(torch.fft.ifft2(spectra * _ring_gains(spectra, stft, settings)).real)
    # stage 2: empirical Wiener with the pilot's windowed spectrum
    pilot_power = torch.fft.fft2(stft.patches(pilot)).abs() ** 2
    gains = pilot_power / (pilot_power + stft.noise_power)
    out = stft.overlap_add(torch.fft.ifft2(spectra * gains).real) + mean
    return (out * scale).reshape(image.shape)
