"""Realistic micrographs: structured amorphous ice, radiation damage, hole geometry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tem_core import simulate
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import (
    ICE_MEAN_INNER_POTENTIAL_V,
    IceStructure,
    PotentialSettings,
    RadiationDamage,
    ice_mean_inner_potential_v,
    iter_slice_potentials,
)
from tem_core.potential.damage import attenuation_filter
from tem_core.potential.ice import IceField, sample_modes, water_form_factor_squared
from tem_core.potential.ice import _rotation as ice_rotation
from tem_core.specimen import IceSlab, build_specimen, tilt_specimen

DTYPE = torch.float64


def _empty_specimen(extent=(29.7, 25.2), thickness=50.0):
    return build_specimen(
        [], [], extent_a=extent, ice=IceSlab(thickness_a=thickness),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def _direct_slice(structure, specimen, shape, s, z0, z1):
    """Analytic slice integral of every mode below Nyquist (no NUFFT)."""
    k, amp, ph = sample_modes(structure)
    rot = ice_rotation(specimen.tilt_axis_angle_rad, specimen.tilt_angle_rad)
    c = specimen.slab_center_a.double()
    kl = k @ rot.T
    keep = ((kl[:, 0] * s).abs() < 0.5) & ((kl[:, 1] * s).abs() < 0.5)
    ny, nx = shape
    y, x = torch.meshgrid(
        (torch.arange(ny, dtype=DTYPE) + 0.5) * s, (torch.arange(nx, dtype=DTYPE) + 0.5) * s,
        indexing="ij",
    )  # fmt: skip
    out = torch.zeros(shape, dtype=DTYPE)
    dz, zc = z1 - z0, 0.5 * (z0 + z1)
    for m in torch.nonzero(keep).flatten().tolist():
        kk = kl[m]
        w = amp[m] * dz * torch.sinc(kk[2] * dz) * torch.sinc(kk[0] * s) * torch.sinc(kk[1] * s)
        arg = kk[0] * (x - c[0]) + kk[1] * (y - c[1]) + kk[2] * (zc - c[2])
        out += w * torch.cos(2 * math.pi * arg + 2 * math.pi * (k[m] @ c) + ph[m])
    return out


@pytest.mark.parametrize("tilt", [0.0, 0.5])
def test_ice_field_nufft_matches_direct_sum(tilt: float) -> None:
    structure = IceStructure(n_modes=400, seed=3)
    specimen = tilt_specimen(_empty_specimen(), tilt_angle_rad=tilt, tilt_axis_angle_rad=0.3)
    field = IceField(structure, specimen, (28, 33), 0.9, DTYPE, torch.device("cpu"))
    got = field.slice_integral(10.0, 17.0)
    want = _direct_slice(structure, specimen, (28, 33), 0.9, 10.0, 17.0)
    # Gaussian gridding with ±3 points and oversampling 2: measured 1.7e-3 of the peak
    assert float((got - want).abs().max() / want.abs().max()) < 3e-3


def test_ice_field_sinc_weights_are_the_pixel_and_slice_average() -> None:
    """The analytic weights equal a brute-force average over the pixel and the slice."""
    structure = IceStructure(n_modes=8, seed=1, max_frequency_per_a=0.3)
    specimen = tilt_specimen(_empty_specimen(), tilt_angle_rad=0.4)
    s, z0, z1 = 0.9, 3.0, 11.0
    want = _direct_slice(structure, specimen, (4, 5), s, z0, z1)
    k, amp, ph = sample_modes(structure)
    kl = k @ ice_rotation(0.0, 0.4).T
    c = specimen.slab_center_a.double()
    n = 24  # midpoint rule, error ~ (π k h)²/24 per axis
    u = (torch.arange(n, dtype=DTYPE) + 0.5) / n
    got = torch.zeros(4, 5, dtype=DTYPE)
    for iy in range(4):
        for ix in range(5):
            xs, ys, zs = (ix + u) * s, (iy + u) * s, z0 + u * (z1 - z0)
            X, Y, Z = torch.meshgrid(xs, ys, zs, indexing="ij")
            keep = ((kl[:, 0] * s).abs() < 0.5) & ((kl[:, 1] * s).abs() < 0.5)
            total = 0.0
            for m in torch.nonzero(keep).flatten().tolist():
                arg = kl[m, 0] * (X - c[0]) + kl[m, 1] * (Y - c[1]) + kl[m, 2] * (Z - c[2])
                val = amp[m] * torch.cos(2 * math.pi * arg + 2 * math.pi * (k[m] @ c) + ph[m])
                total += float(val.mean()) * (z1 - z0)
            got[iy, ix] = total
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3 * float(want.abs().max()))


def test_ice_slices_add_up_whatever_the_slicing() -> None:
    """Streaming: two thin slices give the thick one (the field is one 3-D object)."""
    specimen = tilt_specimen(_empty_specimen(), tilt_angle_rad=-0.6, tilt_axis_angle_rad=1.0)
    field = IceField(IceStructure(n_modes=2000), specimen, (32, 32), 1.0, DTYPE, "cpu")
    thick = field.slice_integral(0.0, 20.0)
    thin = field.slice_integral(0.0, 7.0) + field.slice_integral(7.0, 20.0)
    torch.testing.assert_close(thin, thick, rtol=0, atol=3e-3 * float(thick.abs().max()))


def test_ice_modes_reproduce_the_power_spectrum() -> None:
    """Importance-sampled modes: Σ A²/2 estimates ∫ 4π k² P(k) dk (unbiased)."""
    structure = IceStructure()
    _, amp, _ = sample_modes(structure)
    k = torch.linspace(0, structure.max_frequency_per_a, 20001, dtype=DTYPE)
    want = torch.trapezoid(4 * math.pi * k**2 * structure.power_spectrum(k), k)
    got = (amp**2).sum() / 2
    # Monte-Carlo error of 2^17 importance-weighted modes: measured std 0.3%
    assert float(got / want) == pytest.approx(1.0, abs=0.01)
    # and the same seed gives the same field
    torch.testing.assert_close(sample_modes(IceStructure())[1], amp)


@pytest.mark.parametrize("tilt", [0.0, 0.87])
def test_ice_view_bands_keep_every_direction_unbiased(tilt: float) -> None:
    """Modes crowd near the untilted view's plane, yet the power in any band of directions is
    its isotropic share: |cos| < 0.1 about the 0° and the 50° view normal holds 10 %."""
    k, amp, _ = sample_modes(IceStructure())
    normal = ice_rotation(0.0, tilt)[2]
    cos = (k @ normal).abs() / torch.linalg.vector_norm(k, dim=1)
    power = amp**2
    # 2^17 modes: measured 0.1000 ± 0.0025 over seeds (0.0092-0.0109 at 2^14)
    assert float(power[cos < 0.1].sum() / power.sum()) == pytest.approx(0.1, abs=0.01)
    in_band = (cos < 0.005 / torch.linalg.vector_norm(k, dim=1)).double().mean()
    if tilt == 0.0:  # 75 % of the modes sit in the view band (plus the isotropic ones there)
        assert float(in_band) > 0.75


def _projection_roughness(structure: IceStructure, tilt: float, n: int = 256) -> float:
    """Scatter of the log radial power of projected 100 Å ice (0.05-0.2 Å⁻¹, 1 Å pixels)."""
    spec = tilt_specimen(_empty_specimen((n, n), 100.0), tilt_angle_rad=tilt)
    cz, h = float(spec.slab_center_a[2]), 100.0 / math.cos(tilt) + 100.0
    v = IceField(structure, spec, (n, n), 1.0, DTYPE, "cpu").slice_integral(cz - h / 2, cz + h / 2)
    power = torch.fft.fft2(v - v.mean()).abs() ** 2
    f = torch.fft.fftfreq(n, dtype=DTYPE)
    b = torch.round(torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) * n).long().flatten()
    sums = torch.zeros(int(b.max()) + 1, dtype=DTYPE).index_add_(0, b, power.flatten())
    counts = torch.zeros_like(sums).index_add_(0, b, torch.ones_like(power.flatten()))
    log_profile = torch.log(sums / counts)[int(0.05 * n) : int(0.2 * n)]
    x = torch.arange(log_profile.numel(), dtype=DTYPE)
    basis = torch.stack([torch.ones_like(x), x, x**2], 1)
    trend = basis @ torch.linalg.lstsq(basis, log_profile[:, None]).solution
    return float(torch.std(log_profile - trend[:, 0]))


def test_ice_view_bands_smooth_the_views_spectrum() -> None:
    """The modes that a view's projection keeps (|k_z| ≲ 1/2t) are what make its spectrum
    smooth: the view bands give the untilted view, and a listed tilted view, more of them."""
    iso = _projection_roughness(IceStructure(view_fraction=0.0), 0.0)
    band = _projection_roughness(IceStructure(), 0.0)
    # measured over seeds 0-2: 0.088-0.109 with bands vs 0.168-0.253 isotropic (ratio ≤ 0.52)
    assert band < 0.6 * iso
    unlisted = _projection_roughness(IceStructure(), 0.7)
    listed = _projection_roughness(IceStructure(view_tilts_rad=(0.0, 0.7)), 0.7)
    # 0.128-0.143 listed vs 0.349-0.456 unlisted (ratio ≤ 0.38)
    assert listed < 0.45 * unlisted


def test_tilt_series_places_the_ice_modes_on_its_views() -> None:
    settings = PotentialSettings(
        shape=(8, 8), sampling_a=1.0, slice_thickness_a=2.0, ice_structure=IceStructure()
    )
    series = settings.for_views([0.2, -0.1, 0.2, 0.0], 1.0)
    assert series.ice_structure.view_tilts_rad == (-0.1, 0.0, 0.2)
    assert series.ice_structure.view_tilt_axis_rad == 1.0
    assert series.for_views([0.5], 0.0) is series  # views named: kept
    plain = PotentialSettings(shape=(8, 8), sampling_a=1.0, slice_thickness_a=2.0)
    assert plain.for_views([0.1], 0.0) is plain


def test_structure_factor_and_mean_inner_potential() -> None:
    structure = IceStructure()
    k = torch.linspace(0.1, 0.5, 4001, dtype=DTYPE)
    s = structure.structure_factor(k)
    # the 3.7 Å ring: peak at 0.27 Å⁻¹ (Q = 1.70 Å⁻¹), S ≈ 2.3 (LDA ice)
    assert float(k[s.argmax()]) == pytest.approx(0.27, abs=0.002)
    assert float(s.max()) == pytest.approx(2.3, abs=0.05)
    assert float(structure.structure_factor(torch.zeros(1, dtype=DTYPE))) == pytest.approx(0.05)
    # |F(0)|² n = V₀²/n: the mean inner potential of the uniform ice, 4.575 V at 0.94 g/cm³
    assert ice_mean_inner_potential_v(0.94) == pytest.approx(ICE_MEAN_INNER_POTENTIAL_V, rel=1e-9)
    f0 = float(water_form_factor_squared(torch.zeros(1, dtype=DTYPE)).sqrt())
    assert f0 * structure.molecules_per_a3 == pytest.approx(4.575, abs=0.001)
    assert ice_mean_inner_potential_v(1.17) / ice_mean_inner_potential_v(0.94) == pytest.approx(
        1.17 / 0.94
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"density_g_per_cm3": 0.5}, r"density_g_per_cm3 must lie in \[0.85, 1.3\] g/cm³, got 0.5"),
        ({"density_g_per_cm3": 2.0}, r"density_g_per_cm3 must lie in .* got 2.0 g/cm³"),
        ({"n_modes": 0}, "n_modes must be a positive integer, got 0"),
        ({"peak_width_per_a": -0.1}, r"peak_width_per_a must be > 0, got -0.1 1/Å"),
        ({"s0": 1.5}, r"s0 must lie in \[0.0, 1.0\], got 1.5"),
        ({"view_fraction": 1.0}, r"view_fraction must be < 1 .*got 1"),
        ({"view_fraction": -0.1}, r"view_fraction must lie in \[0.0, 1.0\], got -0.1"),
        ({"view_half_width_per_a": 0.0}, r"view_half_width_per_a must be > 0, got 0.0 1/Å"),
        ({"view_tilts_rad": ()}, r"view_tilts_rad must be None or a non-empty tuple"),
        ({"view_tilts_rad": (0.0, 2.0)}, r"view_tilts_rad must lie in .* rad"),
    ],
)
def test_ice_structure_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        IceStructure(**kwargs)


def test_structured_ice_in_the_potential_keeps_the_mean_and_follows_the_ice() -> None:
    ice = IceSlab(thickness_a=80.0, hole_diameter_a=40.0, support="vacuum")
    specimen = build_specimen(
        [], [], extent_a=(64.0, 64.0), ice=ice, generator=torch.Generator().manual_seed(0)
    )
    plain = PotentialSettings(shape=(64, 64), sampling_a=1.0, slice_thickness_a=20.0)
    structured = dataclasses.replace(plain, ice_structure=IceStructure(n_modes=4096))
    a = torch.stack(list(iter_slice_potentials(specimen, plain))).sum(0)
    b = torch.stack(list(iter_slice_potentials(specimen, structured))).sum(0)
    outside = a.real == 0
    assert bool(outside.any())
    assert float((b.real - a.real)[outside].abs().max()) == 0.0  # no ice, no fluctuation
    inside = a.real > 0.99 * a.real.max()
    diff = (b.real - a.real)[inside]
    assert float(diff.std()) > 0.05 * float(a.real.max())  # structure is there
    # fluctuations average out: mean within 4 standard errors of its ~2000 pixels
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(diff.numel() / 16)
    # the fluctuations (the water's atoms about their mean) absorb the atoms' fraction of
    # their potential; the mean ice absorbs by its inelastic mean free path as before
    f = structured.ice_structure_absorption
    assert f == plain.atom_absorption_fraction
    torch.testing.assert_close(b.imag, a.imag + f * (b.real - a.real))
    # with that fraction 0 (the former model) the absorption follows the mean density only
    mean_only = dataclasses.replace(structured, ice_structure_absorption_fraction=0.0)
    c = torch.stack(list(iter_slice_potentials(specimen, mean_only))).sum(0)
    torch.testing.assert_close(c.imag, a.imag)
    torch.testing.assert_close(c.real, b.real)


# --- radiation damage ---------------------------------------------------------------------


def test_critical_exposure_grant_grigorieff() -> None:
    damage = RadiationDamage()
    k = torch.tensor([1 / 3.7, 1 / 10.0, 1 / 20.0], dtype=DTYPE)
    ne = damage.critical_exposure_e_per_a2(k, 300e3)
    # N_e = 0.245 k^-1.665 + 2.81 (Grant & Grigorieff 2015, eq. 3): 4.98, 14.1, 45.4 e/Å²
    want = 0.245 * k ** (-1.665) + 2.81
    torch.testing.assert_close(ne, want)
    assert float(ne[1]) == pytest.approx(14.13, abs=0.01)
    # 200 kV: damage cross-sections ∝ 1/β²: N_e × 0.80 (the factor G&G quote)
    ratio = damage.critical_exposure_e_per_a2(k, 200e3) / ne
    assert float(ratio[0]) == pytest.approx(0.801, abs=0.002)


def test_exposure_averaged_attenuation() -> None:
    damage = RadiationDamage()
    k = torch.tensor([0.0, 0.1, 0.27], dtype=DTYPE)
    ne = damage.critical_exposure_e_per_a2(k, 300e3)
    a = damage.attenuation(k, prior_dose_e_per_a2=10.0, dose_e_per_a2=5.0, energy_ev=300e3)
    assert float(a[0]) == 1.0  # the mean is never damaged
    # the average of exp(-N/(2 N_e)) over N in [10, 15], by quadrature
    n = torch.linspace(10.0, 15.0, 100001, dtype=DTYPE)
    for i in (1, 2):
        want = torch.trapezoid(torch.exp(-n / (2 * ne[i])), n) / 5.0
        assert float(a[i]) == pytest.approx(float(want), rel=1e-9)
    # splitting an exposure in two keeps the dose-weighted mean
    a1 = damage.attenuation(k, prior_dose_e_per_a2=10.0, dose_e_per_a2=2.0, energy_ev=300e3)
    a2 = damage.attenuation(k, prior_dose_e_per_a2=12.0, dose_e_per_a2=3.0, energy_ev=300e3)
    torch.testing.assert_close((2 * a1 + 3 * a2) / 5, a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a_e_per_a2": -0.1}, "a_e_per_a2 must be >= 0, got -0.1 e/Å²"),
        ({"c_e_per_a2": -2.0}, "c_e_per_a2 must be >= 0, got -2.0 e/Å²"),
        ({"b": 0.5}, r"b must be <= 0 \(high frequencies fade first\), got 0.5"),
        ({"a_e_per_a2": 0.0, "c_e_per_a2": 0.0}, "a_e_per_a2 \\+ c_e_per_a2 must be > 0"),
    ],
)
def test_damage_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        RadiationDamage(**kwargs)


def test_damage_dose_errors() -> None:
    k = torch.ones(1)
    with pytest.raises(ValueError, match="prior_dose_e_per_a2 must be >= 0, got -1.0 e/Å²"):
        RadiationDamage().attenuation(k, prior_dose_e_per_a2=-1.0, dose_e_per_a2=1.0, energy_ev=3e5)
    with pytest.raises(ValueError, match="prior_dose_e_per_a2 must be >= 0, got -5.0 e/Å²"):
        simulate.Imaging(defocus_a=1e4, dose_e_per_a2=1.0, prior_dose_e_per_a2=-5.0)
    with pytest.raises(TypeError, match="damage must be a RadiationDamage or None"):
        simulate.Imaging(defocus_a=1e4, dose_e_per_a2=1.0, damage="grant")


def test_damage_attenuates_high_frequencies_of_the_image() -> None:
    """A late exposure of a series (prior dose 60 e/Å²) loses its high-resolution contrast."""
    from conftest import DATA_DIR

    from tem_core.structure import read_structure

    model = read_structure(DATA_DIR / "1crn.pdb.gz").centered()
    specimen = build_specimen(
        model, 1, extent_a=(96.0, 96.0), ice=IceSlab(thickness_a=40.0),
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    settings = PotentialSettings(shape=(96, 96), sampling_a=1.0, slice_thickness_a=20.0)
    scope = Microscope(energy_ev=300e3, energy_filter=True)
    images = []
    for damage, prior in ((None, 0.0), (RadiationDamage(), 0.0), (RadiationDamage(), 60.0)):
        imaging = simulate.Imaging(
            defocus_a=5000.0, dose_e_per_a2=3.0, damage=damage, prior_dose_e_per_a2=prior,
            method="projection",
        )  # fmt: skip
        r = simulate.micrograph(
            specimen, potential=settings, microscope=scope,
            detector=Detector(mtf_enabled=False), imaging=imaging,
        )  # fmt: skip
        images.append(torch.fft.fft2(r.intensity - r.intensity.mean()).abs())
    k = torch.fft.fftfreq(96, d=1.0)
    kk = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    band = (kk > 0.2) & (kk < 0.3)
    undamaged, first, late = (float(im[band].pow(2).sum()) for im in images)
    a_first = attenuation_filter(
        (96, 96),
        1.0,
        RadiationDamage(),
        prior_dose_e_per_a2=0.0,
        dose_e_per_a2=3.0,
        energy_ev=300e3,
        dtype=DTYPE,
    )
    a_late = attenuation_filter(
        (96, 96),
        1.0,
        RadiationDamage(),
        prior_dose_e_per_a2=60.0,
        dose_e_per_a2=3.0,
        energy_ev=300e3,
        dtype=DTYPE,
    )
    # weak phase object: image power in the band scales with A² (±20%: the image is not
    # exactly linear in the potential)
    assert late / undamaged == pytest.approx(float(a_late[band].pow(2).mean()), rel=0.2)
    # measured ratios to A²: 1.104 (late), 1.004 (first)
    assert first / undamaged == pytest.approx(float(a_first[band].pow(2).mean()), rel=0.02)
    assert late < 0.01 * undamaged


@pytest.mark.parametrize("protein", [False, True])
def test_tilt_series_damage_is_on_by_default_and_follows_acquisition_order(protein) -> None:
    """The protein fades with the prior dose; the ice's structure does not (its molecules
    move under the beam, a loss within each exposure, the same at every tilt)."""
    from conftest import DATA_DIR

    from tem_core.structure import read_structure

    specimen = _empty_specimen(extent=(48.0, 48.0), thickness=40.0)
    if protein:
        model = read_structure(DATA_DIR / "1crn.pdb.gz").centered()
        specimen = build_specimen(model, 1, extent_a=(48.0, 48.0),
                                  ice=IceSlab(thickness_a=40.0),
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    settings = PotentialSettings(
        shape=(48, 48), sampling_a=1.0, slice_thickness_a=20.0,
        ice_structure=IceStructure(n_modes=4096),
    )  # fmt: skip
    scheme = simulate.TiltScheme(
        angles_rad=(0.0, 0.0), dose_e_per_a2=(20.0, 20.0), defocus_a=(1500.0, 1500.0)
    )
    args = dict(
        scheme=scheme,
        potential=settings,
        microscope=Microscope(energy_ev=300e3),
        detector=Detector(mtf_enabled=False),
        progress=False,
    )
    damaged = simulate.tilt_series(specimen, **args).stack
    pristine = simulate.tilt_series(specimen, damage=None, **args).stack
    torch.testing.assert_close(pristine[0], pristine[1])  # same ice, same image
    contrast = [float((im - im.mean()).std()) for im in damaged]
    if protein:
        assert contrast[1] < 0.995 * contrast[0] < float((pristine[0] - pristine[0].mean()).std())
    else:
        assert contrast[1] == pytest.approx(contrast[0], rel=1e-6)
        assert contrast[0] < float((pristine[0] - pristine[0].mean()).std())


# --- hole and support geometry ---------------------------------------------------------------


def _solvent_projection(ice: IceSlab, n: int = 64, s: float = 4.0, tilt: float = 0.0):
    specimen = build_specimen(
        [], [], extent_a=(n * s, n * s), ice=ice, generator=torch.Generator().manual_seed(0)
    )
    specimen = tilt_specimen(specimen, tilt_angle_rad=tilt)
    settings = PotentialSettings(shape=(n, n), sampling_a=s, slice_thickness_a=50.0)
    return torch.stack(list(iter_slice_potentials(specimen, settings))).sum(0), settings


def test_meniscus_thickness_across_the_hole_and_gold_support() -> None:
    from tem_core.potential import GOLD_MEAN_INNER_POTENTIAL_V

    ice = IceSlab(thickness_a=500.0, edge_thickness_a=1000.0, hole_diameter_a=200.0,
                  support="gold", support_thickness_a=300.0)  # fmt: skip
    v, _ = _solvent_projection(ice)
    length = v.real / ICE_MEAN_INNER_POTENTIAL_V  # ice path per pixel [Å]
    # pixel centres at (i + 0.5) · 4 Å, hole centre at 128 Å: pixel 31 is 2 Å off-axis
    assert float(length[31, 31]) == pytest.approx(500.0 + 500.0 * (2 * 2**0.5 / 100) ** 2)
    # ρ = 82 Å (pixel 52 on the row through the centre, 2 Å off in y): t = 500 + 500 ρ²/R²
    rho = math.hypot(52 * 4 + 2 - 128, 2.0)
    assert float(length[31, 52]) == pytest.approx(500.0 + 500.0 * (rho / 100) ** 2, rel=1e-6)
    # outside the hole: 300 Å of gold, 29.9 V (isolated atoms, 19.3 g/cm³)
    assert GOLD_MEAN_INNER_POTENTIAL_V == pytest.approx(29.87, abs=0.01)
    assert float(v.real[0, 0]) == pytest.approx(300.0 * GOLD_MEAN_INNER_POTENTIAL_V, rel=1e-6)
    # absorption ∝ path / Λ: gold Λ = 850 Å, ice 3500 Å (both at 300 kV)
    ratio = float(v.imag[0, 0] / v.imag[31, 31])
    assert ratio == pytest.approx((300.0 / 850.0) / (float(length[31, 31]) / 3500.0), rel=1e-6)


def test_meniscus_under_tilt_keeps_the_ice_volume() -> None:
    """Tilted by 30°, each ray crosses t/cos θ; the mean projected ice is the same."""
    ice = IceSlab(thickness_a=300.0, edge_thickness_a=600.0, hole_diameter_a=1000.0,
                  support="vacuum")  # fmt: skip
    flat, _ = _solvent_projection(ice)
    tilted, _ = _solvent_projection(ice, tilt=math.radians(30))
    centre = (slice(24, 40), slice(24, 40))
    ratio = float(tilted.real[centre].mean() / flat.real[centre].mean())
    # near the centre t varies slowly: path ≈ t / cos 30° (measured within 2%)
    assert ratio == pytest.approx(1 / math.cos(math.radians(30)), rel=0.02)


def test_random_ice_slab_per_micrograph() -> None:
    from tem_core.specimen import random_ice_slab

    g = torch.Generator().manual_seed(5)
    slabs = [random_ice_slab(generator=g, thickness_range_a=(300.0, 800.0),
                             edge_ratio_range=(1.5, 2.0), hole_diameter_a=12000.0)
             for _ in range(50)]  # fmt: skip
    t = torch.tensor([s.thickness_a for s in slabs])
    assert float(t.min()) >= 300.0 and float(t.max()) <= 800.0
    assert float(t.std()) > 100.0  # spread over the range (uniform: 144 Å)
    ratios = torch.tensor([s.edge_thickness_a / s.thickness_a for s in slabs])
    assert float(ratios.min()) >= 1.5 and float(ratios.max()) <= 2.0
    again = random_ice_slab(generator=torch.Generator().manual_seed(5),
                            thickness_range_a=(300.0, 800.0), edge_ratio_range=(1.5, 2.0),
                            hole_diameter_a=12000.0)  # fmt: skip
    assert again == slabs[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"thickness_a": 2e4}, "thickness_a must be <= 10000.0 Å .* got 20000.0 Å"),
        ({"thickness_a": -5.0}, "thickness_a must be > 0, got -5.0 Å"),
        (
            {"thickness_a": 500.0, "edge_thickness_a": 300.0, "hole_diameter_a": 1e3},
            r"edge_thickness_a must lie in \[thickness_a, 10000.0\] Å .* got 300.0 Å",
        ),
        ({"thickness_a": 500.0, "edge_thickness_a": 800.0}, "edge_thickness_a needs a hole"),
        ({"thickness_a": 500.0, "support": "silver"}, "support must be one of"),
    ],
)
def test_ice_slab_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        IceSlab(**kwargs)


def test_hole_larger_than_the_field_without_support_is_rejected() -> None:
    ice = IceSlab(thickness_a=300.0, hole_diameter_a=2000.0, support="vacuum")
    with pytest.raises(
        ValueError,
        match=r"hole_diameter_a = 2000.0 Å \(radius 1000.0 Å\) is "
        r"larger than the field \(half-diagonal 141.4 Å\) with support='vacuum'",
    ):
        build_specimen([], [], extent_a=(200.0, 200.0), ice=ice,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    # with a support, or a meniscus, the same hole is meaningful
    build_specimen([], [], extent_a=(200.0, 200.0), ice=dataclasses.replace(ice, support="carbon"),
                   generator=torch.Generator().manual_seed(0))  # fmt: skip


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_realistic_micrograph_cuda_matches_cpu() -> None:
    """Structured ice, damage and inelastic background on CUDA give the CPU image."""
    from conftest import DATA_DIR

    from tem_core.structure import read_structure

    model = read_structure(DATA_DIR / "1crn.pdb.gz").centered()
    images = []
    for device in ("cpu", "cuda"):
        specimen = build_specimen(
            model.to(device=device), 1, extent_a=(48.0, 48.0),
            ice=IceSlab(thickness_a=60.0, hole_diameter_a=60.0, edge_thickness_a=80.0),
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        specimen = tilt_specimen(specimen, tilt_angle_rad=0.3)
        settings = PotentialSettings(
            shape=(48, 48), sampling_a=1.0, slice_thickness_a=20.0, backend="torch",
            ice_structure=IceStructure(n_modes=4096),
        )  # fmt: skip
        r = simulate.micrograph(
            specimen, potential=settings, microscope=Microscope(energy_ev=300e3),
            detector=Detector(), imaging=simulate.Imaging(
                defocus_a=2000.0, dose_e_per_a2=20.0, damage=RadiationDamage(),
                prior_dose_e_per_a2=10.0),
        )  # fmt: skip
        images.append(r.expected.cpu())
    torch.testing.assert_close(images[1], images[0], rtol=1e-9, atol=1e-9)


# --- beam-induced motion -------------------------------------------------------------------


def test_motion_transfer_is_the_average_over_displacements() -> None:
    from tem_core._optics_motion import apply_motion
    from tem_core.optics import BeamMotion

    g = torch.Generator().manual_seed(0)
    image = torch.rand(32, 40, generator=g, dtype=DTYPE)
    motion = BeamMotion(drift_a=3.0, drift_angle_rad=0.4, jitter_a=0.0)
    got = apply_motion(image, 0.5, motion)
    # average of Fourier-shifted copies along the drift line (midpoint rule, 2001 steps)
    ky = torch.fft.fftfreq(32, d=0.5, dtype=DTYPE)[:, None]
    kx = torch.fft.fftfreq(40, d=0.5, dtype=DTYPE)[None, :]
    t = (torch.arange(2001, dtype=DTYPE) + 0.5) / 2001 * 3.0 - 1.5
    along = (kx * math.cos(0.4) + ky * math.sin(0.4))[None]
    phase = torch.exp(-2j * math.pi * along * t[:, None, None])
    want = torch.fft.ifft2(torch.fft.fft2(image)[None] * phase).real.mean(0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    jitter = BeamMotion(jitter_a=1.0).transfer((32, 40), 0.5, dtype=DTYPE)
    torch.testing.assert_close(jitter, torch.exp(-2 * math.pi**2 * (kx**2 + ky**2)).expand(32, 40))
    assert float(apply_motion(image, 0.5, BeamMotion(jitter_a=2.0)).mean()) == pytest.approx(
        float(image.mean()), rel=1e-12
    )


def test_motion_in_a_micrograph_keeps_the_mean_and_blurs() -> None:
    from tem_core.optics import BeamMotion

    specimen = _empty_specimen(extent=(48.0, 48.0), thickness=60.0)
    settings = PotentialSettings(shape=(48, 48), sampling_a=1.0, slice_thickness_a=20.0,
                                 ice_structure=IceStructure(n_modes=4096))  # fmt: skip
    out = []
    for motion in (None, BeamMotion(drift_a=5.0, jitter_a=1.0)):
        r = simulate.micrograph(
            specimen, potential=settings, microscope=Microscope(energy_ev=300e3),
            detector=Detector(mtf_enabled=False),
            imaging=simulate.Imaging(defocus_a=2000.0, dose_e_per_a2=20.0, motion=motion),
        )  # fmt: skip
        out.append(r.expected)
    assert float(out[1].mean()) == pytest.approx(float(out[0].mean()), rel=1e-9)
    assert float(out[1].std()) < 0.7 * float(out[0].std())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drift_a": -1.0}, "drift_a must be >= 0, got -1.0 Å"),
        ({"jitter_a": -0.5}, "jitter_a must be >= 0, got -0.5 Å"),
        ({"drift_angle_rad": float("nan")}, "drift_angle_rad must be finite, got nan rad"),
    ],
)
def test_motion_errors(kwargs, match) -> None:
    from tem_core.optics import BeamMotion

    with pytest.raises(ValueError, match=match):
        BeamMotion(**kwargs)
    with pytest.raises(TypeError, match="motion must be a BeamMotion or None"):
        simulate.Imaging(defocus_a=1e4, dose_e_per_a2=1.0, motion=3.0)
