"""Tests for tem_core.optics: CTF, envelopes, aperture, phase plate, Thon rings."""

from __future__ import annotations

import math

import pytest
import torch

from tem_core.optics import (
    FWHM_TO_RMS,
    Microscope,
    aberration_phase,
    apply_ctf,
    chromatic_factor,
    ctf,
    ctf_1d,
    ctf_zeros_per_a,
    defocus_from_uv,
    defocus_to_uv,
    image_intensity,
)
from tem_core.propagate import multislice, phase_object_wave
from tem_core.units import (
    KV_TO_EV,
    MM_TO_A,
    MRAD_TO_RAD,
    electron_wavelength_a,
    interaction_parameter,
)

E300 = 300 * KV_TO_EV
LAM = electron_wavelength_a(E300)  # 0.019687 Å
COHERENT = Microscope(energy_ev=E300, energy_spread_ev=0.0)  # no envelopes, no aperture


def _k_grid(shape, s):
    ky = torch.fft.fftfreq(shape[0], d=s, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(shape[1], d=s, dtype=torch.float64)[None, :]
    return torch.sqrt(kx**2 + ky**2)


def _radial_profile(power, shape, s):
    """Mean of ``power`` over rings one Fourier pixel (1 / (n s)) wide; index = k n s."""
    r = torch.round(_k_grid(shape, s) * shape[0] * s).long().reshape(-1)
    total = torch.zeros(int(r.max()) + 1, dtype=torch.float64).index_add_(0, r, power.reshape(-1))
    count = torch.zeros_like(total).index_add_(0, r, torch.ones_like(power.reshape(-1)))
    return total / count


# ----------------------------------------------------------------------------- settings
def test_microscope_validation():
    assert (
        Microscope(energy_ev=E300, cs_a=-0.01 * MM_TO_A).cs_a < 0
    )  # corrected: negative Cs is fine
    for kwargs, match in [
        (dict(energy_ev=0.0), "energy_ev must be > 0"),
        (dict(energy_ev=E300, cs_a=float("nan")), "cs_a must be finite"),
        (dict(energy_ev=E300, cc_a=-1.0), "cc_a must be >= 0"),
        (dict(energy_ev=E300, energy_spread_ev=float("inf")), "energy_spread_ev must be finite"),
        (
            dict(energy_ev=E300, illumination_semiangle_rad=-1e-5),
            "illumination_semiangle_rad must be >= 0",
        ),
        (dict(energy_ev=E300, objective_aperture_rad=0.0), "objective_aperture_rad must be > 0"),
        (dict(energy_ev=E300, lens_current_stability=-1e-7), "lens_current_stability must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            Microscope(**kwargs)


def test_focal_spread_reference_value():
    # κ(300 kV) = (1 + 300/510.999)/(1 + 150/510.999) = 1.22693 (Reimer & Kohl)
    assert math.isclose(chromatic_factor(E300), 1.22693, rel_tol=1e-5)
    # Cc = 2.7 mm, ΔE = 0.7 eV FWHM -> rms 0.29726 eV: Δ = 2.7e7 · 1.22693 · 0.29726/3e5 = 32.83 Å
    m = Microscope(energy_ev=E300, cc_a=2.7 * MM_TO_A, energy_spread_ev=0.7)
    assert math.isclose(m.focal_spread_a, 2.7e7 * 1.22693 * 0.7 * FWHM_TO_RMS / 3e5, rel_tol=1e-5)
    assert math.isclose(m.focal_spread_a, 32.83, rel_tol=1e-3)
    # lens-current term 2ΔI/I, no relativistic factor
    m2 = Microscope(energy_ev=E300, cc_a=1e7, energy_spread_ev=0.0, lens_current_stability=1e-6)
    assert math.isclose(m2.focal_spread_a, 1e7 * 2e-6, rel_tol=1e-12)


def test_defocus_uv_round_trip():
    mean, astig = defocus_from_uv(12000.0, 10000.0)
    assert (mean, astig) == (11000.0, 2000.0)
    assert defocus_to_uv(mean, astig) == (12000.0, 10000.0)


# ----------------------------------------------------------------------------- CTF
def test_coherent_ctf_is_pure_phase_and_one_at_origin():
    h = ctf((64, 48), sampling_a=1.0, microscope=COHERENT, defocus_a=1e4, dtype=torch.complex128)
    assert torch.allclose(h.abs(), torch.ones(64, 48, dtype=torch.float64), atol=1e-12)
    assert h[0, 0] == 1
    pp = Microscope(energy_ev=E300, energy_spread_ev=0.0, phase_plate_rad=math.pi / 2)
    assert ctf((8, 8), sampling_a=1.0, microscope=pp, defocus_a=1e4)[0, 0] == 1  # k = 0 untouched


def test_ctf_matches_closed_form_chi():
    shape, s, df = (32, 32), 1.5, 8000.0
    h = ctf(shape, sampling_a=s, microscope=COHERENT, defocus_a=df, dtype=torch.complex128)
    k = _k_grid(shape, s)
    chi = math.pi * LAM * k**2 * (0.5 * 2.7e7 * LAM**2 * k**2 - df)
    assert torch.allclose(h, torch.polar(torch.ones_like(chi), -chi), atol=1e-10)


def test_envelopes_one_at_origin_and_decreasing():
    m = Microscope(energy_ev=E300, illumination_semiangle_rad=0.05 * MRAD_TO_RAD)
    k = torch.linspace(0, 0.5, 501, dtype=torch.float64)
    h = ctf((256, 256), sampling_a=1.0, microscope=m, defocus_a=1e4, dtype=torch.complex128)
    assert math.isclose(float(h[0, 0].abs()), 1.0, abs_tol=1e-15)
    # temporal envelope exp(-½(πλΔ)²k⁴) along the kx axis (ky = 0)
    from tem_core.optics import spatial_envelope, temporal_envelope

    et = temporal_envelope(k, microscope=m)
    assert float(et[0]) == 1.0 and bool((et[1:] < et[:-1]).all())
    assert math.isclose(
        float(et[250]), math.exp(-0.5 * (math.pi * LAM * m.focal_spread_a) ** 2 * 0.25**4)
    )
    # spatial envelope: closed form exp(-(πα/λ)²(Csλ³k³ − Δf λ k)²) (Kirkland), 1 where ∂χ/∂k = 0
    _, gx, gy = aberration_phase(
        k, torch.zeros_like(k), wavelength_a=LAM, defocus_a=1e4, cs_a=2.7e7
    )
    es = spatial_envelope(gx, gy, microscope=m)
    alpha = 0.05 * MRAD_TO_RAD
    closed = torch.exp(
        -((math.pi * alpha / LAM) ** 2) * (2.7e7 * LAM**3 * k**3 - 1e4 * LAM * k) ** 2
    )
    assert torch.allclose(es, closed, rtol=1e-10)
    assert float(es[0]) == 1.0 and bool((es <= 1).all())
    k_stationary = math.sqrt(1e4 / (2.7e7 * LAM**2))
    _, gx, gy = aberration_phase(
        torch.tensor([k_stationary], dtype=torch.float64),
        torch.zeros(1),
        wavelength_a=LAM,
        defocus_a=1e4,
        cs_a=2.7e7,
    )
    assert math.isclose(float(spatial_envelope(gx, gy, microscope=m)), 1.0, abs_tol=1e-12)
    # the 2-D amplitude decreases along the axis up to the stationary point
    amp = h[0, 1:100].abs()
    assert bool((amp[1:] <= amp[:-1] + 1e-12).all())


def test_aperture_cuts():
    m = Microscope(energy_ev=E300, energy_spread_ev=0.0, objective_aperture_rad=5 * MRAD_TO_RAD)
    shape, s = (128, 128), 1.0
    amp = ctf(shape, sampling_a=s, microscope=m, defocus_a=1e4, dtype=torch.complex128).abs()
    k = _k_grid(shape, s)
    k_max, dk = 5e-3 / LAM, 1 / (128 * s)  # 0.254 /Å
    assert bool((amp[k > k_max + dk / 2] == 0).all())
    assert torch.allclose(amp[k < k_max - dk / 2], torch.ones(1, dtype=torch.float64))
    ring = (k > k_max - dk / 2) & (k < k_max + dk / 2)
    assert bool(((amp[ring] > 0) & (amp[ring] < 1)).any())  # one-pixel soft edge


def test_astigmatism_rotates_the_pattern():
    kw = dict(
        sampling_a=1.0,
        microscope=COHERENT,
        defocus_a=1e4,
        astigmatism_a=3000.0,
        dtype=torch.complex128,
    )
    h0 = ctf((64, 64), astigmatism_angle_rad=0.0, **kw)
    h90 = ctf((64, 64), astigmatism_angle_rad=math.pi / 2, **kw)
    assert torch.allclose(h90, h0.T, atol=1e-10)  # swapping kx, ky maps φ -> π/2 − φ
    # χ is invariant under a joint rotation of k and of the astigmatism axis
    g = torch.Generator().manual_seed(0)
    kx, ky = torch.randn(2, 100, generator=g, dtype=torch.float64) * 0.2
    theta = 0.7
    kxr, kyr = (
        kx * math.cos(theta) - ky * math.sin(theta),
        kx * math.sin(theta) + ky * math.cos(theta),
    )
    common = dict(wavelength_a=LAM, defocus_a=1e4, astigmatism_a=3000.0, cs_a=2.7e7)
    chi0 = aberration_phase(kx, ky, astigmatism_angle_rad=0.3, **common)[0]
    chir = aberration_phase(kxr, kyr, astigmatism_angle_rad=0.3 + theta, **common)[0]
    assert torch.allclose(chi0, chir, atol=1e-9)
    # along φa the defocus is defocus_u = Δf + a/2 (CTFFIND convention)
    k = torch.tensor([0.1], dtype=torch.float64)
    chi_u = aberration_phase(
        k * math.cos(0.3), k * math.sin(0.3), astigmatism_angle_rad=0.3, **common
    )[0]
    expect = math.pi * LAM * 0.01 * (0.5 * 2.7e7 * LAM**2 * 0.01 - 11500.0)
    assert math.isclose(float(chi_u), expect, rel_tol=1e-12)


def test_ctf_1d_zeros_at_analytic_positions():
    zeros = ctf_zeros_per_a(8, defocus_a=1.5e4, cs_a=2.7e7, energy_ev=E300)
    values = ctf_1d(zeros, microscope=COHERENT, defocus_a=1.5e4)
    assert float(values.abs().max()) < 1e-9
    eps = 1e-4
    assert bool(
        (
            ctf_1d(zeros - eps, microscope=COHERENT, defocus_a=1.5e4)
            * ctf_1d(zeros + eps, microscope=COHERENT, defocus_a=1.5e4)
            < 0
        ).all()
    )
    # Cs = 0: zeros of sin(π λ Δf k²) at k_m = sqrt(m / (λ Δf))
    z0 = ctf_zeros_per_a(4, defocus_a=1e4, cs_a=0.0, energy_ev=E300)
    assert torch.allclose(
        z0, torch.tensor([math.sqrt(m / (LAM * 1e4)) for m in range(1, 5)], dtype=torch.float64)
    )
    # underfocus: negative transfer (dark protein) before the first zero
    assert float(ctf_1d(zeros[:1] / 2, microscope=COHERENT, defocus_a=1.5e4)) < 0


def test_phase_plate_turns_sin_into_cos():
    pp = Microscope(energy_ev=E300, energy_spread_ev=0.0, phase_plate_rad=math.pi / 2)
    k = torch.linspace(0, 0.3, 50, dtype=torch.float64)
    chi = math.pi * LAM * k**2 * (0.5 * 2.7e7 * LAM**2 * k**2 - 5000.0)
    assert torch.allclose(ctf_1d(k, microscope=pp, defocus_a=5000.0), -torch.cos(chi), atol=1e-12)
    # image of a weak phase object in focus: no contrast without, dark contrast -2σV with the plate
    g = torch.Generator().manual_seed(0)
    v = 2.0 * torch.randn(64, 64, generator=g, dtype=torch.float64)
    v = v - v.mean()
    psi = phase_object_wave(v, energy_ev=E300)
    sigma = interaction_parameter(E300)
    plain = image_intensity(
        apply_ctf(psi, sampling_a=1.0, microscope=COHERENT, defocus_a=0.0, cs_a=0.0)
    )
    plate = image_intensity(apply_ctf(psi, sampling_a=1.0, microscope=pp, defocus_a=0.0, cs_a=0.0))
    assert float((plain - 1).abs().max()) < 1e-5  # ~ (σV)²
    assert torch.allclose(plate - 1, -2 * sigma * v, atol=1e-4)


def test_underfocus_makes_protein_dark():
    n, s = 128, 1.0
    y, x = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    v = 100.0 * torch.exp(-((x - 64) ** 2 + (y - 64) ** 2) / (2 * 4.0**2))  # a 'protein' blob [V·Å]
    psi = phase_object_wave(v, energy_ev=E300)
    img = image_intensity(apply_ctf(psi, sampling_a=s, microscope=COHERENT, defocus_a=1.5e4))
    assert float(img[64, 64]) < 0.99


def test_thon_rings_of_random_weak_phase_object():
    """Minima of the radially averaged power spectrum sit at the analytic CTF zeros."""
    shape, s, df = (256, 256), 1.0, 5000.0
    g = torch.Generator().manual_seed(4)
    power = torch.zeros(shape, dtype=torch.float64)
    for _ in range(2):
        slices = [5.0 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2)]
        psi = multislice(slices, sampling_a=s, slice_thickness_a=1.0, energy_ev=E300)
        img = image_intensity(apply_ctf(psi, sampling_a=s, microscope=COHERENT, defocus_a=df))
        power += torch.fft.fft2(img - img.mean()).abs() ** 2
    profile = _radial_profile(power, shape, s)
    zeros = ctf_zeros_per_a(6, defocus_a=df, cs_a=2.7e7, energy_ev=E300) * shape[0] * s  # in pixels
    edges = torch.cat([torch.tensor([0.5 * float(zeros[0])]), zeros, zeros[-1:] + 3])
    for j, z in enumerate(zeros.tolist()):
        lo = int(math.ceil(0.5 * (edges[j] + z)))
        hi = int(math.floor(0.5 * (z + edges[j + 2])))
        found = lo + int(torch.argmin(profile[lo : hi + 1]))
        assert abs(found - z) <= 1.0, (j, found, z)


# ----------------------------------------------------------------------------- batch, grads
def test_batched_defocus_matches_single():
    g = torch.Generator().manual_seed(5)
    wave = torch.randn(2, 32, 32, generator=g, dtype=torch.complex128)
    dfs = torch.tensor([8000.0, 12000.0], dtype=torch.float64)
    out = apply_ctf(wave, sampling_a=1.0, microscope=COHERENT, defocus_a=dfs)
    for i in range(2):
        single = apply_ctf(wave[i], sampling_a=1.0, microscope=COHERENT, defocus_a=float(dfs[i]))
        assert torch.allclose(out[i], single, atol=1e-12)


def test_image_intensity():
    w = torch.tensor([3 + 4j, 0j], dtype=torch.complex64)
    assert torch.equal(image_intensity(w), torch.tensor([25.0, 0.0]))


def test_gradcheck_aberrations():
    def f(df, astig, angle, cs):
        h = ctf(
            (6, 6),
            sampling_a=1.0,
            microscope=Microscope(energy_ev=E300, illumination_semiangle_rad=1e-4),
            defocus_a=df,
            astigmatism_a=astig,
            astigmatism_angle_rad=angle,
            cs_a=cs,
            dtype=torch.complex128,
        )
        return torch.view_as_real(h)

    args = [
        torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for v in (9000.0, 800.0, 0.4, 2.7e7)
    ]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_gradcheck_envelopes_and_phase_plate():
    def f(cc, spread, alpha, plate):
        m = Microscope(
            energy_ev=E300,
            cc_a=cc,
            energy_spread_ev=spread,
            illumination_semiangle_rad=alpha,
            phase_plate_rad=plate,
        )
        h = ctf((6, 6), sampling_a=0.5, microscope=m, defocus_a=9000.0, dtype=torch.complex128)
        return torch.view_as_real(h)

    args = [
        torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (2.7e7, 0.7, 2e-4, 0.5)
    ]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_gradcheck_apply_ctf_wrt_wave():
    g = torch.Generator().manual_seed(6)
    wave = torch.randn(6, 6, generator=g, dtype=torch.complex128, requires_grad=True)
    m = Microscope(energy_ev=E300, objective_aperture_rad=10 * MRAD_TO_RAD)

    def f(w):
        return image_intensity(apply_ctf(w, sampling_a=1.0, microscope=m, defocus_a=5000.0))

    assert torch.autograd.gradcheck(f, (wave,))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(defocus_a=float("nan")), "defocus_a must be finite"),
        (dict(astigmatism_a=float("inf")), "astigmatism_a must be finite"),
        (dict(astigmatism_angle_rad=float("nan")), "astigmatism_angle_rad must be finite"),
        (dict(cs_a=float("nan")), "cs_a must be finite"),
        (dict(sampling_a=0.0), "sampling_a must be > 0"),
        (dict(defocus_a=torch.tensor([1.0, float("nan")])), "defocus_a must be finite"),
    ],
)
def test_ctf_errors(kwargs, match):
    args = dict(sampling_a=1.0, microscope=COHERENT, defocus_a=1e4) | kwargs
    with pytest.raises(ValueError, match=match):
        ctf((8, 8), **args)


def test_ctf_zeros_errors():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ctf_zeros_per_a(0, defocus_a=1e4, cs_a=2.7e7, energy_ev=E300)
    with pytest.raises(ValueError, match="energy_ev must be > 0"):
        ctf_zeros_per_a(3, defocus_a=1e4, cs_a=2.7e7, energy_ev=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    m = Microscope(energy_ev=E300, illumination_semiangle_rad=1e-4, objective_aperture_rad=0.01)
    cpu = ctf((64, 64), sampling_a=1.0, microscope=m, defocus_a=1e4, astigmatism_a=500.0)
    gpu = ctf(
        (64, 64), sampling_a=1.0, microscope=m, defocus_a=1e4, astigmatism_a=500.0, device="cuda"
    )
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)


def test_ctf_of_plain_numbers_is_reused_and_tensors_are_not_cached():
    # a tilt series asks for the same CTF at every tilt: the second call is a copy of the
    # first (bitwise), mutating it does not touch the cache, tensors bypass the cache
    from tem_core import _optics_cache

    _optics_cache._CTF_CACHE.clear()
    scope = Microscope(energy_ev=300e3)
    first = ctf((32, 32), sampling_a=1.0, microscope=scope, defocus_a=12000.0)
    assert len(_optics_cache._CTF_CACHE) == 1
    again = ctf((32, 32), sampling_a=1.0, microscope=scope, defocus_a=12000.0)
    assert torch.equal(first, again) and first.data_ptr() != again.data_ptr()
    again.mul_(0.0)
    assert torch.equal(ctf((32, 32), sampling_a=1.0, microscope=scope, defocus_a=12000.0), first)
    _optics_cache._CTF_CACHE.clear()
    assert torch.equal(ctf((32, 32), sampling_a=1.0, microscope=scope, defocus_a=12000.0), first)
    defocus = torch.tensor(12000.0, dtype=torch.float64, requires_grad=True)
    h = ctf((32, 32), sampling_a=1.0, microscope=scope, defocus_a=defocus)
    assert h.requires_grad and len(_optics_cache._CTF_CACHE) == 1
    for k in range(2 * _optics_cache.CTF_CACHE_SIZE):  # bounded
        ctf((32, 32), sampling_a=1.0, microscope=scope, defocus_a=1000.0 * (k + 1))
    assert len(_optics_cache._CTF_CACHE) == _optics_cache.CTF_CACHE_SIZE
    cc = torch.tensor(2.7e7, dtype=torch.float64)  # a tensor in the microscope: not cached
    ctf((32, 32), sampling_a=1.0, microscope=Microscope(energy_ev=300e3, cc_a=cc), defocus_a=1e3)
    assert len(_optics_cache._CTF_CACHE) == _optics_cache.CTF_CACHE_SIZE
    assert all(key[2].cc_a is not cc for key in _optics_cache._CTF_CACHE)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_ctf_built_in_place_equals_the_expressions_bitwise(dtype):
    """One CTF without a graph is built in place (tem_core/_optics_phase.py, 6 grids instead
    of 10): the same bits as the expressions autograd needs (parameters requiring grad)."""
    scope = Microscope(
        energy_ev=200e3, objective_aperture_rad=0.012, illumination_semiangle_rad=2e-5,
        phase_plate_rad=1.2,
    )  # fmt: skip
    for shape, kw in (
        ((96, 130), dict(defocus_a=1.5e4)),
        ((128, 77), dict(defocus_a=-8e3, astigmatism_a=400.0, astigmatism_angle_rad=0.6)),
    ):
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        lean = ctf(shape, sampling_a=1.1, microscope=scope, dtype=dtype, cs_a=2e7, **kw)
        graph = {k: torch.tensor(v, dtype=real, requires_grad=True) for k, v in kw.items()}
        full = ctf(shape, sampling_a=1.1, microscope=scope, dtype=dtype, cs_a=2e7, **graph)
        assert full.requires_grad and lean.dtype == full.dtype == dtype
        assert torch.equal(lean, full.detach())
