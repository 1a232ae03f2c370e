"""Beam-induced motion of the amorphous ice: its exposure average, and no protein damage on it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tem_core import simulate
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import (
    IceStructure,
    PotentialSettings,
    RadiationDamage,
    iter_slice_potentials,
    projected_potential,
)
from tem_core.potential.damage import attenuation_filter, damaged, ice_exposed
from tem_core.potential.ice import exposure_average, sample_modes
from tem_core.specimen import IceSlab, build_specimen

DTYPE = torch.float64


def _slab(extent=64.0, thickness=60.0, atoms=None):
    model = ([], []) if atoms is None else (atoms, 1)
    return build_specimen(
        *model, extent_a=(extent, extent), ice=IceSlab(thickness_a=thickness),
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip


def test_exposure_average_is_the_power_of_the_averaged_random_walk() -> None:
    """F = (1/D²)∬ exp(−γ|N₁−N₂|) dN₁dN₂, γ = (2πk)² μ/6, by quadrature; limits 1 and 2/x."""
    k = torch.tensor([0.0, 0.02, 0.07, 0.1, 0.27, 0.5], dtype=DTYPE)
    dose, msd = 47.6, 1.1
    n = torch.linspace(0.0, dose, 2001, dtype=DTYPE)
    gamma = (2 * math.pi * k) ** 2 * msd / 6
    corr = torch.exp(-gamma[:, None, None] * (n[:, None] - n[None, :]).abs())
    w = torch.full_like(n, 1.0)
    w[0] = w[-1] = 0.5  # trapezoid
    quad = torch.einsum("kij,i,j->k", corr, w, w) / (w.sum() ** 2)
    torch.testing.assert_close(exposure_average(k, dose, msd) ** 2, quad, rtol=2e-4, atol=0)
    assert float(exposure_average(k, dose, msd)[0]) == 1.0
    x = float(gamma[-1]) * dose
    assert float(exposure_average(k[-1:], dose, msd)[0]) ** 2 == pytest.approx(2 * (x - 1) / x**2)
    # at the 3.7 Å ring (k = 0.27) the sum of frames' power spectra is best at frames of
    # ~4 e/Å² (McMullan et al. 2015 quote 4.0): maximum of √N F(γN)
    frames = torch.linspace(0.5, 20.0, 391, dtype=DTYPE)
    snr = [math.sqrt(f) * float(exposure_average(k[4:5], float(f), msd)[0]) ** 2 for f in frames]
    assert float(frames[max(range(len(snr)), key=snr.__getitem__)]) == pytest.approx(4.0, abs=0.3)


def test_exposed_ice_keeps_its_modes_and_scales_their_amplitudes() -> None:
    ice = IceStructure(n_modes=4096, seed=5)
    k0, a0, p0 = sample_modes(ice)
    k1, a1, p1 = sample_modes(dataclasses.replace(ice, exposure_e_per_a2=30.0))
    torch.testing.assert_close(k1, k0)
    torch.testing.assert_close(p1, p0)
    expected = exposure_average(torch.linalg.vector_norm(k0, dim=1), 30.0, 1.1)
    torch.testing.assert_close(a1, a0 * expected)
    still = dataclasses.replace(ice, exposure_e_per_a2=30.0, motion_msd_a2_per_e_per_a2=0.0)
    torch.testing.assert_close(sample_modes(still)[1], a0)


def test_ice_exposed_follows_the_dose_and_the_beam_energy() -> None:
    plain = PotentialSettings(shape=(32, 32), sampling_a=1.0, slice_thickness_a=20.0)
    assert ice_exposed(plain, 40.0, 300e3) is plain  # no ice structure: nothing to average
    settings = dataclasses.replace(plain, ice_structure=IceStructure(n_modes=64))
    assert ice_exposed(settings, 40.0, 300e3).ice_structure.exposure_e_per_a2 == pytest.approx(40.0)
    # 200 kV: the cross-sections scale as 1/β², so 40 e/Å² act as 40/0.80 at 300 kV
    at_200 = ice_exposed(settings, 40.0, 200e3).ice_structure.exposure_e_per_a2
    assert at_200 == pytest.approx(40.0 / 0.80, rel=0.01)


def test_damage_filters_the_atoms_and_the_ice_mean_but_not_the_ice_structure() -> None:
    """The filter acts on every slice except the fluctuations: on plain structured ice (whose
    rest is uniform, kept by A(0) = 1) the slices equal the unfiltered ones; atoms are filtered."""
    settings = PotentialSettings(shape=(64, 64), sampling_a=1.0, slice_thickness_a=20.0,
                                 ice_structure=IceStructure(n_modes=4096))  # fmt: skip
    a = attenuation_filter((64, 64), 1.0, RadiationDamage(), prior_dose_e_per_a2=20.0,
                           dose_e_per_a2=30.0, energy_ev=300e3, dtype=DTYPE)  # fmt: skip
    slab = _slab()
    plain = list(iter_slice_potentials(slab, settings))
    filtered = list(iter_slice_potentials(slab, settings, attenuation=a))
    assert len(plain) == len(filtered) > 1
    for u, v in zip(plain, filtered, strict=True):
        torch.testing.assert_close(v, u)
    torch.testing.assert_close(projected_potential(slab, settings, attenuation=a),
                               projected_potential(slab, settings))  # fmt: skip
    # a specimen with atoms, no ice structure: the whole slice is filtered, as before
    from conftest import DATA_DIR

    from tem_core.structure import read_structure

    model = read_structure(DATA_DIR / "1crn.pdb.gz", dtype=DTYPE).centered()
    protein = _slab(atoms=model, thickness=40.0)
    bare = dataclasses.replace(settings, ice_structure=None)
    old = list(damaged(iter_slice_potentials(protein, bare), a))
    new = list(iter_slice_potentials(protein, bare, attenuation=a))
    for u, v in zip(old, new, strict=True):
        torch.testing.assert_close(v, u)


def test_micrograph_with_damage_averages_the_ice_over_the_exposure() -> None:
    """With damage, plain structured ice is imaged as the ice averaged over the exposure
    (exactly: the protein curve touches only its uniform rest); its power at the Thon rings
    falls by about F(γD), far less than by the protein curve's A²."""
    n, s = 128, 1.0
    settings = PotentialSettings(shape=(n, n), sampling_a=s, slice_thickness_a=20.0,
                                 ice_structure=IceStructure(n_modes=2**15))  # fmt: skip
    slab = _slab(extent=n * s, thickness=100.0)
    scope = Microscope(energy_ev=300e3, energy_filter=True)
    det = Detector(gain_counts_per_e=1.0, mtf_camera=None)
    dose = 47.6

    def run(damage, potential=settings, method="projection"):
        imaging = simulate.Imaging(defocus_a=5000.0, dose_e_per_a2=dose, damage=damage,
                                   method=method)  # fmt: skip
        return simulate.micrograph(slab, potential=potential, microscope=scope, detector=det,
                                   imaging=imaging)  # fmt: skip

    exposed = ice_exposed(settings, dose, 300e3)
    for method in ("projection", "multislice"):
        torch.testing.assert_close(run(RadiationDamage(), method=method).expected,
                                   run(None, exposed, method=method).expected)  # fmt: skip

    def exit_power(damage):
        return torch.fft.fft2(torch.angle(run(damage).exit_wave.to(torch.complex128))).abs() ** 2

    f = torch.fft.fftfreq(n, d=s, dtype=DTYPE)
    k = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    band = (k > 0.06) & (k < 0.14)
    instant = exit_power(None)
    ratio = float(exit_power(RadiationDamage())[band].sum() / instant[band].sum())
    # F at the pixel's |k|; the modes of the 3.7 Å peak that leak through the slab's sinc
    # tails (|k_z| large, ~7 % of this band's power) have a smaller F: hence the tolerance
    weights = (instant * exposure_average(k, dose, 1.1) ** 2)[band].sum()
    assert ratio == pytest.approx(float(weights / instant[band].sum()), rel=0.15)
    protein = attenuation_filter((n, n), s, RadiationDamage(), prior_dose_e_per_a2=0.0,
                                 dose_e_per_a2=dose, energy_ev=300e3, dtype=DTYPE)  # fmt: skip
    assert ratio > 1.3 * float((protein[band] ** 2).mean())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(exposure_e_per_a2=-1.0), "exposure_e_per_a2"),
        (dict(motion_msd_a2_per_e_per_a2=-0.1), "motion_msd_a2_per_e_per_a2"),
        (dict(exposure_e_per_a2=float("nan")), "exposure_e_per_a2"),
    ],
)
def test_ice_motion_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        IceStructure(**kwargs)
