"""Inelastic background of an unfiltered camera.

Private helper of :mod:`tem_core.optics`. The absorptive (imaginary) potential ``V'``
removes the electrons that lose energy in the specimen from the elastic (zero-loss) wave:
after the whole specimen a fraction ``a(r) = 1 − exp(−2σ ∫V' dz)`` is gone. Behind a
zero-loss energy filter they are lost. Without a filter almost all of them reach the
camera (plasmon losses of ~20-30 eV scatter within ~0.1 mrad, far inside the objective
aperture) but form a low-resolution image: the energy-loss electrons are delocalised
(≈ 3 nm for ice plasmons; Egerton, *EELS in the Electron Microscope*, 3rd ed. 2011, §5.1)
and imaged about 1-2 µm out of focus by the chromatic aberration, which removes their
contrast beyond ~1 nm. TEM-simulator likewise returns the absorbed electrons as a smooth
background. The model here:

``I_inel(r) = η · (G_w ⊗ a)(r)``,

a Gaussian blur of rms width ``w = Microscope.inelastic_blur_a`` (30 Å) and the collected
fraction ``η = Microscope.inelastic_collected_fraction`` (1), so the mean of
``I_elastic + I_inel`` equals the incident dose (less the elastic scattering beyond the
simulation's band limit): an unfiltered camera records dose × gain.
"""

from __future__ import annotations

import math

import torch

from tem_core import units
from tem_core._fft import fft2, ifft2
from tem_core._grid_cache import GridCache, plain_key

#: The blur's Gaussian filters by grid, sampling and width (a tilt series' every tilt)
BLUR_CACHE = GridCache()


def absorbed_fraction(projected_imaginary_v_a: torch.Tensor, *, energy_ev: float) -> torch.Tensor:
    """``1 − exp(−2σ V'_proj)`` [dimensionless] from the projected imaginary potential [V·Å]."""
    sigma = units.interaction_parameter(energy_ev)
    return -torch.expm1(-2.0 * sigma * projected_imaginary_v_a)


def inelastic_background(
    absorbed: torch.Tensor, *, sampling_a: float, blur_a: float, collected_fraction: float
) -> torch.Tensor:
    """``η · G_w ⊗ absorbed``: the inelastic intensity (vacuum = 1), periodic blur by FFT."""
    if blur_a == 0.0:
        return collected_fraction * absorbed
    ny, nx = absorbed.shape[-2:]
    key = plain_key("inelastic blur", (ny, nx), sampling_a, blur_a, absorbed.dtype,
                    absorbed.device)  # fmt: skip
    gauss = BLUR_CACHE.get(key, ny * nx, lambda: _blur_filter(absorbed, sampling_a, blur_a))
    return collected_fraction * ifft2(fft2(absorbed) * gauss).real


def _blur_filter(absorbed: torch.Tensor, sampling_a: float, blur_a: float) -> torch.Tensor:
    """The Gaussian ``exp(−2π² w² k²)`` on ``absorbed``'s FFT grid."""
    ny, nx = absorbed.shape[-2:]
    real = absorbed.dtype
    ky = torch.fft.fftfreq(ny, d=sampling_a, dtype=real, device=absorbed.device)
    kx = torch.fft.fftfreq(nx, d=sampling_a, dtype=real, device=absorbed.device)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    return torch.exp(-2.0 * math.pi**2 * blur_a**2 * k2)


def summing_imaginary(slices, sink: list):
    """Pass complex slices through, appending their summed imaginary part to ``sink``."""
    total = None
    for sl in slices:  # summed in place (add saves nothing for backward): no grid per slice
        total = 0.0 + sl.imag if total is None else total.add_(sl.imag)
        yield sl
    total = 0.0 if total is None else total
    sink.append(total)


def add_inelastic(intensity: torch.Tensor, projected_imaginary_v_a, microscope, sampling_a: float):
    """``(intensity + I_inel, I_inel)`` for ``microscope`` (a :class:`Microscope`)."""
    absorbed = absorbed_fraction(projected_imaginary_v_a, energy_ev=microscope.energy_ev)
    inelastic = inelastic_background(
        absorbed,
        sampling_a=sampling_a,
        blur_a=microscope.inelastic_blur_a,
        collected_fraction=microscope.inelastic_collected_fraction,
    )
    return intensity + inelastic, inelastic
