"""Beam-induced motion during one exposure, as a blur of the image that reaches the camera.

Private helper of the optics stage. Over an exposure the specimen drifts as a whole (stage
drift and the doming of the ice) and every particle jitters around its mean position
(Brilot et al. 2012, J. Struct. Biol. 177:630; Li et al. 2013, Nat. Methods 10:584). The
recorded frame sum is the expected image averaged over these displacements:

* whole-frame drift along a straight line of length ``d`` (``drift_a``) at azimuth
  ``drift_angle_rad`` from +x: a box blur, transfer ``sinc(k·u d)`` (``u`` the unit
  direction, ``sinc(x) = sin(πx)/(πx)``);
* jitter: isotropic Gaussian displacements of rms ``σ`` per axis (``jitter_a``), transfer
  ``exp(−2π² σ² |k|²)``; the same for the whole field (per-particle differences in jitter are
  not modelled: one blur stands for the field's average).

The transfer is 1 at ``k = 0``, so the mean dose is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tem_core._fft import fft2, ifft2
from tem_core.validation import require_finite, require_nonnegative


@dataclass(frozen=True, kw_only=True)
class BeamMotion:
    """Beam-induced motion of one exposure (module docstring).

    Parameters
    ----------
    drift_a
        Whole-frame drift over the exposure [Å] (≥ 0).
    drift_angle_rad
        Azimuth of the drift from +x [rad].
    jitter_a
        rms jitter per axis [Å] (≥ 0).
    """

    drift_a: float = 0.0
    drift_angle_rad: float = 0.0
    jitter_a: float = 0.0

    def __post_init__(self) -> None:
        require_nonnegative("drift_a", self.drift_a, "Å")
        require_finite("drift_angle_rad", self.drift_angle_rad, "rad")
        require_nonnegative("jitter_a", self.jitter_a, "Å")

    def transfer(self, shape, sampling_a: float, *, device=None, dtype=torch.float64):
        """The blur's transfer function on the ``(ny, nx)`` FFT grid [dimensionless]."""
        ny, nx = shape
        ky = torch.fft.fftfreq(ny, d=sampling_a, dtype=dtype, device=device)[:, None]
        kx = torch.fft.fftfreq(nx, d=sampling_a, dtype=dtype, device=device)[None, :]
        along = kx * math.cos(self.drift_angle_rad) + ky * math.sin(self.drift_angle_rad)
        gauss = torch.exp(-2.0 * math.pi**2 * self.jitter_a**2 * (kx**2 + ky**2))
        return torch.sinc(along * self.drift_a) * gauss


def apply_motion(image: torch.Tensor, sampling_a: float, motion: BeamMotion) -> torch.Tensor:
    """``image`` averaged over the motion (periodic boundaries), same shape and dtype."""
    h = motion.transfer(tuple(image.shape[-2:]), sampling_a, device=image.device,
                        dtype=image.dtype)  # fmt: skip
    return ifft2(fft2(image) * h).real
