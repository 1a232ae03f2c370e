"""CTF fitting (CTFFIND-like): defocus and astigmatism recovered from simulated micrographs."""

from __future__ import annotations

import math

import pytest
import torch

from tem_core import simulate
from tem_core.ctf_fit import fit_ctf, micrograph_power_spectrum, ring_background
from tem_core.detector import Detector
from tem_core.optics import Microscope, apply_ctf, image_intensity
from tem_core.potential import IceStructure, PotentialSettings, slice_edges_a
from tem_core.specimen import IceSlab, amorphous_film, build_specimen

SCOPE = Microscope(energy_ev=300e3)


def _weak_object_micrograph(n, s, defocus, astig, angle, dose, seed, phase_plate=0.0):
    """Random weak phase + 7% amplitude object, imaged with the package's CTF, Poisson noise."""
    g = torch.Generator().manual_seed(seed)
    phi = 0.3 * torch.randn(n, n, generator=g, dtype=torch.float64)
    wave = torch.exp(1j * phi - 0.07 * phi)
    scope = Microscope(energy_ev=300e3, phase_plate_rad=phase_plate)
    imaged = apply_ctf(
        wave, sampling_a=s, microscope=scope, defocus_a=defocus, astigmatism_a=astig,
        astigmatism_angle_rad=angle,
    )  # fmt: skip
    return torch.poisson(image_intensity(imaged) * dose * s * s, generator=g)


def _angle_error_deg(a: float, b: float) -> float:
    return abs(math.degrees(math.remainder(a - b, math.pi)))


@pytest.mark.parametrize(
    ("defocus", "astig", "angle", "sampling", "tile"),
    [(15000.0, 800.0, 0.5, 1.0, 256), (25000.0, 1500.0, 1.2, 1.5, 256)],
)
def test_fit_recovers_defocus_and_astigmatism(defocus, astig, angle, sampling, tile) -> None:
    image = _weak_object_micrograph(512, sampling, defocus, astig, angle, 20.0, seed=1)
    fit = fit_ctf(image, sampling_a=sampling, microscope=SCOPE, tile_px=tile,
                  resolution_range_a=(30.0, max(4.0, 2.5 * sampling)))  # fmt: skip
    # targets: defocus within 1%, astigmatism angle within 5° (measured 0.1% and < 1°)
    assert abs(fit.defocus_a / defocus - 1) < 0.01
    assert _angle_error_deg(fit.astigmatism_angle_rad, angle) < 5.0
    assert fit.astigmatism_a == pytest.approx(astig, rel=0.1)
    assert fit.defocus_u_a - fit.defocus_v_a == pytest.approx(fit.astigmatism_a)
    assert 0 <= fit.astigmatism_angle_rad < math.pi


@pytest.mark.filterwarnings("ignore:1 of 1 posed particles stick out")
def test_fit_on_a_full_simulation_with_structured_ice() -> None:
    """Multislice of a carbon film in structured ice, K2 MTF, counting noise, known CTF."""
    n, s = 512, 1.0
    film = amorphous_film(extent_a=(n * s, n * s), thickness_a=50.0, z0_a=75.0,
                          generator=torch.Generator().manual_seed(2))  # fmt: skip
    specimen = build_specimen(film, 1, extent_a=(n * s, n * s), ice=IceSlab(thickness_a=200.0),
                              generator=torch.Generator().manual_seed(3),
                              poses=(torch.eye(3, dtype=torch.float64)[None],
                                     torch.tensor([[n * s / 2, n * s / 2, 100.0]])))  # fmt: skip
    settings = PotentialSettings(shape=(n, n), sampling_a=s, slice_thickness_a=25.0,
                                 ice_structure=IceStructure(n_modes=2**14))  # fmt: skip
    defocus, astig, angle = 12000.0, 600.0, 2.2
    result = simulate.micrograph(
        specimen, potential=settings, microscope=SCOPE,
        detector=Detector(mtf_camera="k2_300kv", mtf_after_noise=False),
        imaging=simulate.Imaging(defocus_a=defocus, dose_e_per_a2=40.0, astigmatism_a=astig,
                                 astigmatism_angle_rad=angle),
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    fit = fit_ctf(result.counts.double(), sampling_a=s, microscope=SCOPE, tile_px=256,
                  resolution_range_a=(25.0, 5.0))  # fmt: skip
    # the defocus applies at the exit plane (z = 200 Å); the film and the ice sit around the
    # slab's mid-plane z = 100 Å, which is imaged 100 Å less underfocused
    effective = defocus - (slice_edges_a(specimen, settings)[-1].item() - 100.0)
    assert effective == pytest.approx(11900.0)
    assert abs(fit.defocus_a / effective - 1) < 0.01  # measured 0.18%
    assert _angle_error_deg(fit.astigmatism_angle_rad, angle) < 5.0
    assert fit.score > 0.2
    # no phase plate: the additional phase shift is the simulation's amplitude contrast
    # (absorptive potentials, ≈ 0.05 for ice) minus the assumed 0.07, i.e. ≈ 0; fitting it
    # must not hurt the defocus (≤ 1 %) or the astigmatism angle (≤ 5°)
    free = fit_ctf(result.counts.double(), sampling_a=s, microscope=SCOPE, tile_px=256,
                   resolution_range_a=(25.0, 5.0), find_phase_shift=True,
                   phase_shift_range_rad=(-math.pi / 2, math.pi / 2))  # fmt: skip
    # measured: +0.035 ± 0.030 rad, defocus -0.26 %, angle 2.9°
    assert abs(free.phase_shift_rad) < 3 * free.phase_shift_error_rad
    assert abs(free.defocus_a / effective - 1) < 0.01
    assert _angle_error_deg(free.astigmatism_angle_rad, angle) < 5.0


@pytest.mark.parametrize("phase_plate", [0.0, 0.8, 1.5])
def test_fit_recovers_an_additional_phase_shift(phase_plate) -> None:
    """Phase plate of the simulation recovered (CTFFIND's "find additional phase shift").

    The object's amplitude contrast is the fit's assumed 0.07, so the additional phase is
    the phase plate. Over 6 seeds at 0.8 rad (this 512² image, 9 tiles of 256²) the fits
    gave 0.813 ± 0.030 rad (worst 0.044 off) with jackknife errors 0.017-0.026 (about 0.7×
    the seed scatter), defocus within 0.18 %, astigmatism angle within 1.3°.
    """
    defocus, astig, angle = 15000.0, 800.0, 0.5
    image = _weak_object_micrograph(512, 1.0, defocus, astig, angle, 20.0, seed=1,
                                    phase_plate=phase_plate)  # fmt: skip
    fit = fit_ctf(image, sampling_a=1.0, microscope=SCOPE, tile_px=256, find_phase_shift=True,
                  phase_shift_range_rad=(-0.5, 2.5))  # fmt: skip
    assert abs(fit.phase_shift_rad - phase_plate) < 0.07
    assert abs(fit.phase_shift_rad - phase_plate) < 3 * fit.phase_shift_error_rad
    assert 0.005 < fit.phase_shift_error_rad < 0.05
    assert abs(fit.defocus_a / defocus - 1) < 0.01
    assert 0 < fit.defocus_error_a < 0.005 * defocus
    assert _angle_error_deg(fit.astigmatism_angle_rad, angle) < 5.0
    if phase_plate:  # without the phase, the fit is wrong: the option is needed
        plain = fit_ctf(image, sampling_a=1.0, microscope=SCOPE, tile_px=256)
        assert plain.score < fit.score - 0.05
        assert math.isnan(plain.phase_shift_error_rad) and plain.phase_shift_rad == 0.0


def test_phase_shift_is_clamped_to_its_range() -> None:
    """A phase plate of 0.5 rad fitted in (0, 0.3): the bound, defocus refined with it."""
    image = _weak_object_micrograph(512, 1.0, 15000.0, 800.0, 0.5, 20.0, seed=1, phase_plate=0.5)
    fit = fit_ctf(image, sampling_a=1.0, microscope=SCOPE, tile_px=256, find_phase_shift=True,
                  phase_shift_range_rad=(0.0, 0.3))  # fmt: skip
    assert fit.phase_shift_rad == pytest.approx(0.3, abs=1e-12)
    assert 0.0 <= fit.phase_shift_rad <= 0.3


def test_ring_background_is_exact_for_rings_on_a_linear_background() -> None:
    """``B + c sin²(χ − φ)`` with ``B`` linear in the phase: the background is ``B + c/2``.

    A running mean centred in k (the earlier background) leaves part of the chirped rings
    in it: residual up to 0.07-0.15 (for c = 2) over 0.06-0.38 Å⁻¹. The phase-centred
    window (trapezoid rule in phase): measured ≤ 0.0033 where a full period fits."""
    k = torch.arange(0, 400, dtype=torch.float64) * 0.001
    lam, df = SCOPE.wavelength_a, 10000.0
    chi = math.pi * lam * (df * k**2 - 0.5 * 2.7e7 * lam**2 * k**4)
    base = 5.0 + 0.01 * chi
    for phi in (0.07, 0.5, 1.3):
        profile = base + 2.0 * torch.sin(chi + phi) ** 2
        b = ring_background(profile, k, defocus_a=df, microscope=SCOPE)
        inner = (chi > math.pi) & (k < 0.38)
        assert float((b - base - 1.0)[inner].abs().max()) < 0.005
    with pytest.raises(ValueError, match="profile and k_per_a must be 1-D of one length"):
        ring_background(profile[:-1], k, defocus_a=df, microscope=SCOPE)


def test_power_spectrum_of_white_noise_is_flat() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.poisson(torch.full((256, 256), 50.0, dtype=torch.float64), generator=g)
    p = micrograph_power_spectrum(image, tile_px=64)
    assert p.shape == (64, 64)
    # Poisson: power = variance = mean = 50 per bin (Hann-normalised periodogram)
    assert float(p[1:, 1:].mean()) == pytest.approx(50.0, rel=0.03)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampling_a": -1.0}, "sampling_a must be > 0, got -1.0 Å"),
        ({"defocus_range_a": (2e4, 1e4)}, "defocus_range_a must be increasing"),
        ({"resolution_range_a": (4.0, 30.0)}, "resolution_range_a must be \\(low, high\\)"),
        ({"resolution_range_a": (30.0, 1.0)}, "high >= 2 × sampling_a \\(2.0 Å\\)"),
        ({"tile_px": 1024}, "tile_px must be <= the image size \\(128, 128\\), got 1024"),
        ({"amplitude_contrast": 1.5}, "amplitude_contrast must lie in"),
        ({"find_phase_shift": True, "phase_shift_rad": 0.3},
         "phase_shift_rad is fitted when find_phase_shift=True .* got 0.3 rad"),
        ({"find_phase_shift": True, "phase_shift_range_rad": (0.0, 4.0)},
         "phase_shift_range_rad must be \\(low, high\\) with 0 < high - low <= π"),
        ({"find_phase_shift": True, "phase_shift_range_rad": (1.0, 0.5)},
         "phase_shift_range_rad must be \\(low, high\\)"),
        ({"find_phase_shift": True, "phase_shift_range_rad": (0.0, float("nan"))},
         "phase_shift_range_rad must be finite"),
        ({"phase_shift_rad": float("inf")}, "phase_shift_rad must be finite"),
    ],
)
def test_fit_errors(kwargs, match) -> None:
    args = dict(sampling_a=1.0, microscope=SCOPE, tile_px=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_ctf(torch.ones(128, 128), **args)


def test_find_phase_shift_must_be_bool() -> None:
    with pytest.raises(TypeError, match="find_phase_shift must be a bool, got str"):
        fit_ctf(torch.ones(128, 128), sampling_a=1.0, microscope=SCOPE, tile_px=64,
                find_phase_shift="yes")  # fmt: skip
