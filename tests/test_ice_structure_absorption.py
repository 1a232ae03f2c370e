"""The ice structure's fluctuations absorb like the atoms they stand for (amplitude contrast)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tem_core import simulate
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import (
    ATOM_ABSORPTION_FRACTION,
    IceStructure,
    PotentialSettings,
    iter_slice_potentials,
    projected_potential,
)
from tem_core.specimen import IceSlab, build_specimen

DTYPE = torch.float64


def _slab(extent=64.0, thickness=60.0):
    return build_specimen([], [], extent_a=(extent, extent), ice=IceSlab(thickness_a=thickness),
                          generator=torch.Generator().manual_seed(3))  # fmt: skip


def _settings(n=64, **kwargs):
    return PotentialSettings(shape=(n, n), sampling_a=1.0, slice_thickness_a=20.0,
                             ice_structure=IceStructure(n_modes=4096, seed=2), **kwargs)


@pytest.mark.parametrize(
    "kwargs, fraction",
    [
        ({}, ATOM_ABSORPTION_FRACTION),  # default: the atoms' fraction
        (dict(atom_absorption_fraction=0.1), 0.1),  # follows the atoms' setting
        (dict(ice_structure_absorption_fraction=0.03), 0.03),
        (dict(ice_structure_absorption_fraction=0.0), 0.0),  # the former model
        (dict(absorption=False, ice_structure_absorption_fraction=0.05), 0.0),
    ],
)
def test_fluctuations_carry_their_fraction_as_imaginary_potential(kwargs, fraction) -> None:
    """With and without the ice structure, on the same slab: the difference of the slices is
    the fluctuation field δV (real) plus i·f·δV, for every slice and for the projection."""
    slab = _slab()
    settings = _settings(**kwargs)
    uniform = dataclasses.replace(settings, ice_structure=None)
    assert settings.ice_structure_absorption == pytest.approx(fraction)
    pairs = list(zip(iter_slice_potentials(slab, settings), iter_slice_potentials(slab, uniform),
                     strict=True))  # fmt: skip
    pairs.append((projected_potential(slab, settings), projected_potential(slab, uniform)))
    assert len(pairs) > 2
    for structured, plain in pairs:
        delta = (structured - plain).to(torch.complex128)
        assert float(delta.real.abs().max()) > 1e-3  # the fluctuations are there
        torch.testing.assert_close(delta.imag, fraction * delta.real, rtol=0, atol=1e-5)


def test_ice_thon_rings_have_the_amplitude_contrast_of_the_fraction() -> None:
    """Plain structured ice: the cross-spectrum Re⟨V V'*⟩/⟨|V|²⟩ of the projected fluctuations
    equals f, and the weak-phase image's rings follow (sin χ + f cos χ)² instead of sin² χ
    (χ = πλΔf k² − ½πCsλ³k⁴): where sin χ cos χ > 0 the power rises by the factor, where it is
    < 0 it falls; a sign error or no absorption would swap or flatten the two halves."""
    n = 128
    slab = _slab(extent=float(n), thickness=100.0)
    f = torch.fft.fftfreq(n, d=1.0, dtype=DTYPE)
    k = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    band = (k > 0.03) & (k < 0.3)
    for fraction in (0.0, 0.07, 0.15):
        settings = _settings(n, ice_structure_absorption_fraction=fraction)
        uniform = dataclasses.replace(settings, ice_structure=None)
        delta = projected_potential(slab, settings) - projected_potential(slab, uniform)
        vr = torch.fft.fft2(delta.real.to(DTYPE))
        vi = torch.fft.fft2(delta.imag.to(DTYPE))
        ratio = (vr * vi.conj()).real[band].sum() / (vr.abs() ** 2)[band].sum()
        assert float(ratio) == pytest.approx(fraction, abs=1e-6)
    scope = Microscope(energy_ev=300e3, energy_filter=True, energy_spread_ev=0.0)
    det = Detector(gain_counts_per_e=1.0, mtf_camera=None)
    imaging = simulate.Imaging(defocus_a=8000.0, dose_e_per_a2=1e4, method="projection")

    def spectrum(fraction):
        settings = _settings(n, ice_structure_absorption_fraction=fraction)
        r = simulate.micrograph(slab, potential=settings, microscope=scope, detector=det,
                                imaging=imaging)  # fmt: skip
        e = r.expected.to(DTYPE)
        return torch.fft.fft2(e - e.mean()).abs() ** 2

    lam = scope.wavelength_a
    chi = math.pi * lam * 8000.0 * k**2 - 0.5 * math.pi * float(scope.cs_a) * lam**3 * k**4
    sin, cos = torch.sin(chi), torch.cos(chi)
    plain, absorbing = spectrum(0.0), spectrum(0.15)
    factor = (sin + 0.15 * cos) ** 2 / sin**2
    safe = band & (sin.abs() > 0.5)  # away from the pure phase object's zeros
    for half, direction in ((sin * cos > 0, 1), (sin * cos < 0, -1)):
        m = safe & half
        measured = float(absorbing[m].sum() / plain[m].sum())
        expected = float((factor * plain)[m].sum() / plain[m].sum())
        assert measured == pytest.approx(expected, abs=0.01)
        assert direction * (measured - 1) > 0.1


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan")])
def test_ice_structure_absorption_fraction_errors(value) -> None:
    with pytest.raises(ValueError, match="ice_structure_absorption_fraction"):
        PotentialSettings(shape=(8, 8), sampling_a=1.0, slice_thickness_a=10.0,
                          ice_structure_absorption_fraction=value)  # fmt: skip
