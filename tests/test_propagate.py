"""Tests for tem_core.propagate: multislice, Fresnel propagator, projection approximation."""

from __future__ import annotations

import gc
import math
import warnings
import weakref

import pytest
import torch

from tem_core.propagate import (
    SamplingWarning,
    bandlimit_mask,
    check_sampling,
    estimate_wave_memory_bytes,
    fresnel_propagator,
    multislice,
    multislice_step,
    phase_object_wave,
    plane_wave,
    transmission_function,
)
from tem_core.units import KV_TO_EV, electron_wavelength_a, interaction_parameter

E300 = 300 * KV_TO_EV


def _random_slices(n, shape=(32, 32), std=20.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [std * torch.randn(shape, generator=g, dtype=dtype) for _ in range(n)]


def _lowpass(x, fraction):
    """Keep |k| < fraction x Nyquist."""
    mask = bandlimit_mask(x.shape[-2:], bandlimit_fraction=fraction)
    return torch.fft.ifft2(torch.fft.fft2(x) * mask).real


# ----------------------------------------------------------------------------- basics
def test_transmission_function_reference_phase():
    # σ(300 kV) = 6.5262e-4 rad/(V·Å) (shared/docs/physics.md): V = 1000 V·Å gives 0.65262 rad
    v = torch.full((2, 2), 1000.0, dtype=torch.float64)
    t = transmission_function(v, energy_ev=E300)
    assert t.dtype == torch.complex128
    assert torch.allclose(torch.angle(t), torch.full_like(v, 0.65262), atol=1e-5)
    assert torch.allclose(t.abs(), torch.ones_like(v))
    # the absorptive part attenuates by exp(-σ V')
    t_abs = transmission_function(torch.complex(v, torch.full_like(v, 100.0)), energy_ev=E300)
    sigma = interaction_parameter(E300)
    assert torch.allclose(t_abs.abs(), torch.full_like(v, math.exp(-sigma * 100.0)))
    assert transmission_function(v.float(), energy_ev=E300).dtype == torch.complex64


def test_vacuum_is_identity():
    for dtype in (torch.float32, torch.float64):
        slices = [torch.zeros(48, 40, dtype=dtype) for _ in range(25)]
        psi = multislice(iter(slices), sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
        assert psi.dtype == (torch.complex128 if dtype == torch.float64 else torch.complex64)
        assert torch.allclose(psi, plane_wave((48, 40), dtype=psi.dtype), atol=1e-6)


def test_propagator_sign_on_plane_wave():
    # ψ = exp(2πi k0 x) propagated by dz picks up exp(-iπλ dz k0²) (design.md)
    n, s, dz = 64, 0.5, 1000.0
    k0 = 5 / (n * s)
    x = torch.arange(n, dtype=torch.float64) * s
    psi = torch.exp(2j * math.pi * k0 * x)[None, :].expand(n, n)
    p = fresnel_propagator(
        (n, n), sampling_a=s, thickness_a=dz, energy_ev=E300, dtype=torch.complex128
    )
    out = torch.fft.ifft2(torch.fft.fft2(psi) * p)
    expected = psi * complex(
        math.cos(-math.pi * electron_wavelength_a(E300) * dz * k0**2),
        math.sin(-math.pi * electron_wavelength_a(E300) * dz * k0**2),
    )
    assert torch.allclose(out, expected, atol=1e-10)


def test_propagator_composition():
    kw = dict(sampling_a=0.7, energy_ev=E300, dtype=torch.complex128)
    half = fresnel_propagator((30, 36), thickness_a=1.5, **kw)
    full = fresnel_propagator((30, 36), thickness_a=3.0, **kw)
    assert torch.allclose(half * half, full, atol=1e-12)
    # and through multislice: two vacuum half-slices == one vacuum slice, on a random wave
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(30, 36, generator=g, dtype=torch.complex128)
    zero = torch.zeros(30, 36, dtype=torch.float64)
    two = multislice([zero, zero], slice_thickness_a=1.5, wave=wave, sampling_a=0.7, energy_ev=E300)
    one = multislice([zero], slice_thickness_a=3.0, wave=wave, sampling_a=0.7, energy_ev=E300)
    assert torch.allclose(two, one, atol=1e-12)
    # backwards propagation undoes forwards propagation inside the band limit
    back = fresnel_propagator((30, 36), thickness_a=-3.0, **kw)
    mask = bandlimit_mask((30, 36))
    assert torch.allclose(full * back, mask.to(full.dtype), atol=1e-12)


def test_bandlimit_mask_radius():
    mask = bandlimit_mask((96, 96))  # k_bl = (2/3)(1/2) = 1/3 cycles/px: 32 pixels
    assert bool(mask[0, 31]) and not bool(mask[0, 32]) and not bool(mask[32, 0])
    assert bool(bandlimit_mask((5, 5), bandlimit_fraction=None).all())


# ----------------------------------------------------------------------------- norm
def test_norm_conserved_without_bandlimit():
    slices = _random_slices(60, std=50.0)
    psi = multislice(
        slices, sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300, bandlimit_fraction=None
    )
    assert abs(float((psi.abs() ** 2).mean()) - 1.0) < 1e-12
    psi32 = multislice(
        [s.float() for s in slices],
        sampling_a=0.5,
        slice_thickness_a=2.0,
        energy_ev=E300,
        bandlimit_fraction=None,
    )
    assert psi32.dtype == torch.complex64
    assert abs(float((psi32.abs() ** 2).mean()) - 1.0) < 1e-5


def test_norm_conserved_with_bandlimit_for_smooth_potential():
    # a weak potential band-limited to 1/6 Nyquist scatters almost nothing beyond 2/3 Nyquist
    slices = [_lowpass(s, 1 / 6) for s in _random_slices(40, shape=(64, 64), std=30.0)]
    psi = multislice(slices, sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    assert abs(float((psi.abs() ** 2).mean()) - 1.0) < 1e-5


def test_bandlimit_norm_loss_equals_power_outside_aperture():
    (v,) = _random_slices(1, std=200.0)
    shape = v.shape
    mask = bandlimit_mask(shape)
    t = transmission_function(v, energy_ev=E300)
    prop = fresnel_propagator(
        shape, sampling_a=0.5, thickness_a=2.0, energy_ev=E300, dtype=torch.complex128
    )
    psi = multislice_step(plane_wave(shape, dtype=torch.complex128), t, prop, mask=mask)
    t_bl = torch.fft.ifft2(torch.fft.fft2(t) * mask)
    spectrum = torch.fft.fft2(t_bl)  # ψ₀ = 1
    inside = float((spectrum.abs() ** 2 * mask).sum()) / shape.numel() ** 2  # Parseval
    assert abs(float((psi.abs() ** 2).mean()) - inside) < 1e-12
    assert inside < 1.0  # a strong random potential does lose norm to the band limit


def test_absorption_reduces_norm_by_expected_factor():
    sigma = interaction_parameter(E300)
    n, v_abs = 12, 3.0  # V' per slice [V·Å]
    g = torch.Generator().manual_seed(2)
    slices = [
        torch.complex(
            torch.full((16, 16), float(torch.rand(1, generator=g)) * 100.0, dtype=torch.float64),
            torch.full((16, 16), v_abs, dtype=torch.float64),
        )
        for _ in range(n)
    ]
    psi = multislice(slices, sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    assert math.isclose(
        float((psi.abs() ** 2).mean()), math.exp(-2 * sigma * n * v_abs), rel_tol=1e-12
    )


# ----------------------------------------------------------------------------- projection
def test_projection_approximation_is_the_thin_specimen_limit():
    slices = [_lowpass(s, 0.5) for s in _random_slices(10, shape=(64, 64), std=40.0)]
    projected = torch.stack(slices).sum(0)
    po = phase_object_wave(projected, energy_ev=E300)
    errors = []
    for total_a in (100.0, 10.0, 1.0):
        psi = multislice(
            slices,
            sampling_a=0.5,
            slice_thickness_a=total_a / len(slices),
            energy_ev=E300,
            bandlimit_fraction=None,
        )
        errors.append(float((psi - po).norm() / po.norm()))
    # error O(λ T k²): falls tenfold per tenfold thinner specimen
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5
    assert errors[2] < 2e-3
    # one infinitely thin slice with the band limit: the band-limited transmission function
    (v,) = _random_slices(1, shape=(64, 64), std=200.0)
    psi = multislice([v], sampling_a=0.5, slice_thickness_a=1e-9, energy_ev=E300)
    t_bl = torch.fft.ifft2(
        torch.fft.fft2(phase_object_wave(v, energy_ev=E300)) * bandlimit_mask((64, 64))
    )
    assert torch.allclose(psi, t_bl, atol=1e-9)


def test_phase_object_with_incident_wave():
    v = _random_slices(1)[0]
    wave = torch.full(v.shape, 0.5 + 0.5j, dtype=torch.complex64)
    out = phase_object_wave(v, energy_ev=E300, wave=wave)
    assert out.dtype == torch.complex128
    assert torch.allclose(out, wave.to(torch.complex128) * transmission_function(v, energy_ev=E300))


# ----------------------------------------------------------------------------- streaming
def test_multislice_streams_slices_one_at_a_time():
    refs = []

    def generate():
        for i in range(6):
            if i >= 2:
                gc.collect()
                assert refs[i - 2]() is None, "multislice kept an old slice alive"
            s = torch.randn(16, 16, dtype=torch.float64)
            refs.append(weakref.ref(s))
            yield s

    psi = multislice(generate(), sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    assert psi.shape == (16, 16) and len(refs) == 6


def test_per_slice_thickness_matches_scalar():
    slices = _random_slices(4)
    a = multislice(slices, sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    b = multislice(slices, sampling_a=0.5, slice_thickness_a=[2.0] * 4, energy_ev=E300)
    c = multislice(slices, sampling_a=0.5, slice_thickness_a=torch.full((4,), 2.0), energy_ev=E300)
    assert torch.allclose(a, b, atol=1e-12) and torch.allclose(a, c, atol=1e-6)


def test_dtype_promotion_and_batch():
    slices = _random_slices(2, dtype=torch.float32)
    wave = torch.ones(3, 32, 32, dtype=torch.complex128)
    out = multislice(slices, sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300, wave=wave)
    assert out.dtype == torch.complex128 and out.shape == (3, 32, 32)


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_wrt_potential_slices_and_wave():
    g = torch.Generator().manual_seed(3)
    v = [
        (50 * torch.randn(6, 6, generator=g, dtype=torch.float64)).requires_grad_()
        for _ in range(2)
    ]
    v_abs = (5 * torch.rand(6, 6, generator=g, dtype=torch.float64)).requires_grad_()
    wave = torch.randn(6, 6, generator=g, dtype=torch.complex128).requires_grad_()

    def f(a, b, c, w):
        out = multislice(
            [a, torch.complex(b, c)], sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300, wave=w
        )
        return torch.view_as_real(out)

    assert torch.autograd.gradcheck(f, (v[0], v[1], v_abs, wave))


def test_gradcheck_wrt_thickness():
    slices = _random_slices(3, shape=(6, 6), std=200.0)
    dz = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    per = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64, requires_grad=True)

    def f(t):
        return torch.view_as_real(
            multislice(slices, sampling_a=0.2, slice_thickness_a=t, energy_ev=E300)
        )

    assert torch.autograd.gradcheck(f, (dz,))
    assert torch.autograd.gradcheck(f, (per,))


# ----------------------------------------------------------------------------- warnings
def test_no_warning_for_typical_settings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            check_sampling((512, 512), sampling_a=1.0, slice_thickness_a=10.0, energy_ev=E300) == []
        )


def test_sampling_warnings():
    with (
        pytest.warns(SamplingWarning, match="undersampled"),
        pytest.warns(SamplingWarning, match="depth"),
    ):
        check_sampling((16, 16), sampling_a=0.1, slice_thickness_a=200.0, energy_ev=E300)
    with pytest.warns(SamplingWarning, match="depth of field"):
        check_sampling((512, 512), sampling_a=1.0, slice_thickness_a=500.0, energy_ev=E300)
    with pytest.warns(SamplingWarning, match="depth of field"):
        multislice([torch.zeros(64, 64)], sampling_a=0.25, slice_thickness_a=100.0, energy_ev=E300)


def test_memory_estimate():
    # 7 complex arrays per step and the boolean band-limit mask; 3 complex per slice kept
    assert estimate_wave_memory_bytes((128, 128), torch.complex64) == (7 * 8 + 1) * 128 * 128
    assert (
        estimate_wave_memory_bytes((128, 128), torch.complex128, n_slices=10, requires_grad=True)
        == ((7 + 30) * 16 + 1) * 128 * 128
    )
    with pytest.raises(ValueError, match=r"needs about .* GB but cpu has"):
        estimate_wave_memory_bytes((2**20, 2**20), torch.complex128)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sampling_a=0.0), "sampling_a must be > 0"),
        (dict(sampling_a=float("nan")), "sampling_a must be finite"),
        (dict(energy_ev=-1.0), "energy_ev must be > 0"),
        (dict(slice_thickness_a=float("inf")), "slice_thickness_a must be finite"),
        (dict(slice_thickness_a=-1.0), "slice_thickness_a must be > 0"),
        (dict(slice_thickness_a=[1.0, 2.0, 3.0]), "3 thicknesses for 2 slices"),
        (dict(bandlimit_fraction=1.5), "bandlimit_fraction must lie in"),
        (dict(wave=torch.ones(8, 8, dtype=torch.complex64)), "wave has shape"),
    ],
)
def test_multislice_errors(kwargs, match):
    args = dict(sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300) | kwargs
    with pytest.raises(ValueError, match=match):
        multislice([torch.zeros(16, 16), torch.zeros(16, 16)], **args)


def test_multislice_errors_on_slices():
    with pytest.raises(ValueError, match="slices is empty"):
        multislice([], sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    with pytest.raises(ValueError, match="slice 1 has shape"):
        multislice(
            [torch.zeros(8, 8), torch.zeros(8, 9)],
            sampling_a=0.5,
            slice_thickness_a=2.0,
            energy_ev=E300,
        )
    with pytest.raises(TypeError, match="slice 0 must be a torch.Tensor"):
        multislice([[0.0]], sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    with pytest.raises(ValueError, match="thickness_a must be finite"):
        fresnel_propagator((4, 4), sampling_a=1.0, thickness_a=float("nan"), energy_ev=E300)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    slices = _random_slices(5, shape=(64, 64), dtype=torch.float32)
    cpu = multislice(slices, sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300)
    gpu = multislice(
        [s.cuda() for s in slices], sampling_a=0.5, slice_thickness_a=2.0, energy_ev=E300
    )
    assert gpu.device.type == "cuda" and gpu.dtype == torch.complex64
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)


def _generic_multislice(slices, **kw):
    """Reference: every slice through the 2-D path (``constant_axis`` switched off)."""
    import tem_core.propagate as propagate

    original = propagate.constant_axis
    propagate.constant_axis = lambda potential: None
    try:
        return multislice(slices, **kw)
    finally:
        propagate.constant_axis = original


def test_slices_constant_along_one_axis_take_the_line_path_exactly():
    # A slab tilted about x gives ice-only slices that vary along y only (and about y, x
    # only); their transmission function and band limit are computed on one line. Same
    # exit wave as the 2-D path: measured 1.8e-15 (|ψ| ≈ 1) in complex128.
    g = torch.Generator().manual_seed(4)
    ny, nx = 24, 30
    atoms = torch.rand(ny, nx, generator=g, dtype=torch.float64) * 40.0
    ramp_y = torch.linspace(0.0, 300.0, ny, dtype=torch.float64)[:, None].expand(ny, nx)
    ramp_x = torch.linspace(0.0, 250.0, nx, dtype=torch.float64)[None, :].expand(ny, nx)
    slices = [
        torch.complex(ramp_y, 0.05 * ramp_y),
        torch.complex(atoms, 0.07 * atoms),
        torch.complex(ramp_x, 0.05 * ramp_x).contiguous(),
        torch.full((ny, nx), 70.0 + 3.0j, dtype=torch.complex128),
    ]
    import tem_core.propagate as propagate

    assert [propagate.constant_axis(v) for v in slices] == [-1, None, -2, -1]
    kw = dict(sampling_a=0.7, slice_thickness_a=12.0, energy_ev=300e3)
    with torch.no_grad():
        fast = multislice(slices, **kw)
        reference = _generic_multislice(slices, **kw)
    assert float((fast - reference).abs().max()) < 1e-13
    # without the band limit too
    fast = multislice(slices, bandlimit_fraction=None, **kw)
    reference = _generic_multislice(slices, bandlimit_fraction=None, **kw)
    assert float((fast - reference).abs().max()) < 1e-13


def _scene_of_lines(axis, ny=18, nx=22, dtype=torch.float64):
    """Runs of slices constant along ``axis`` before, between and after two slices with
    "atoms", as a tilted slab gives them (ramps of ice, broadcast views or full grids)."""
    g = torch.Generator().manual_seed(11)
    n = ny if axis == -1 else nx

    def line(scale):
        values = scale * torch.rand(n, generator=g, dtype=dtype)
        v = torch.complex(values, 0.05 * values)
        return v[:, None].expand(ny, nx) if axis == -1 else v[None, :].expand(ny, nx)

    def atoms():
        values = 40.0 * torch.rand(ny, nx, generator=g, dtype=dtype)
        return torch.complex(values, 0.07 * values)

    return [
        line(60.0),
        line(80.0).contiguous(),
        line(70.0),
        atoms(),
        line(50.0),
        line(90.0),
        atoms(),
        line(30.0),
        line(60.0).contiguous(),
        line(10.0),
    ]


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("fraction", [2.0 / 3.0, None])
def test_runs_of_line_slices_step_one_frequency_at_a_time(axis, fraction):
    # Slices constant along one axis step the wave as its transform along that axis
    # (lines.LineWave): the plane wave before the first atoms as one frequency, the runs
    # between and after the atoms on the frequencies the aperture keeps. The same arithmetic
    # in another order: equal to every slice through the 2-D step within rounding
    # (complex128), for a plane wave, a batched incident wave, and per-slice thicknesses.
    import tem_core.propagate as propagate

    slices = _scene_of_lines(axis)
    kinds = [propagate.constant_axis(v) for v in slices]
    assert kinds == [axis, axis, axis, None, axis, axis, None, axis, axis, axis]
    g = torch.Generator().manual_seed(5)
    wave = torch.randn(2, *slices[0].shape, generator=g, dtype=torch.complex128)
    per_slice = [14.0, 14.0, 9.0, 9.0, 14.0, 20.0, 20.0, 14.0, 14.0, 7.0]
    for extra in (dict(), dict(wave=wave), dict(slice_thickness_a=per_slice)):
        kw = dict(sampling_a=0.9, slice_thickness_a=14.0, energy_ev=200e3,
                  bandlimit_fraction=fraction)  # fmt: skip
        kw.update(extra)
        with torch.no_grad():
            fast = multislice(slices, **kw)
            reference = _generic_multislice(slices, **kw)
        assert fast.shape == reference.shape and fast.dtype == torch.complex128
        assert float((fast - reference).abs().max()) < 1e-12
    # float32: within float32 rounding of the 2-D path (|ψ| ≈ 1)
    slices32 = [v.to(torch.complex64) for v in slices]
    kw = dict(sampling_a=0.9, slice_thickness_a=14.0, energy_ev=200e3)
    with torch.no_grad():
        diff = multislice(slices32, **kw) - _generic_multislice(slices32, **kw)
    assert float(diff.abs().max()) < 2e-6


def test_line_slices_keep_gradients_of_the_wave_and_thickness():
    # The line steps are pure torch: gradients with respect to the incident wave and a
    # slice thickness pass through them (gradcheck, complex128, a 6 x 8 grid).
    slices = _scene_of_lines(-1, ny=6, nx=8)[:5]

    def f(wave, dz):
        psi = multislice(slices, wave=wave, sampling_a=1.1, slice_thickness_a=dz,
                         energy_ev=200e3)  # fmt: skip
        return psi.abs() ** 2

    g = torch.Generator().manual_seed(3)
    wave = torch.randn(6, 8, generator=g, dtype=torch.complex128, requires_grad=True)
    dz = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (wave, dz))


def test_constant_slices_keep_the_2d_path_under_autograd():
    # A slice that is constant along x at this value may still have gradients that are not:
    # with autograd the generic path runs, and the gradient matches the reference.
    ny, nx = 10, 12
    base = torch.linspace(0.0, 50.0, ny, dtype=torch.float64)[:, None].repeat(1, nx)
    v = base.clone().requires_grad_(True)
    kw = dict(sampling_a=1.0, slice_thickness_a=8.0, energy_ev=200e3)
    w = torch.rand(ny, nx, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((multislice([v], **kw).abs() ** 2 * w).sum(), v)
    (ref,) = torch.autograd.grad((_generic_multislice([v], **kw).abs() ** 2 * w).sum(), v)
    assert torch.equal(grad, ref)
    assert float((grad - grad[:, :1]).abs().max()) > 0.0  # not constant along x


def _recorded_multislice(slices, wave=None, **kw):
    """Reference: every step through the autograd path (the wave requires a gradient)."""
    shape = slices[0].shape[-2:]
    cdtype = (
        torch.complex128
        if slices[0].dtype in (torch.float64, torch.complex128)
        else (torch.complex64)
    )
    if wave is None:
        wave = torch.ones(shape, dtype=cdtype)
    with torch.enable_grad():
        psi = multislice(slices, wave=wave.clone().requires_grad_(True), **kw)
    return psi.detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fraction", [2.0 / 3.0, None])
@pytest.mark.parametrize("thickness", [15.0, [15.0, 9.0, 9.0, 21.0]])
def test_buffered_steps_equal_the_recorded_steps_bitwise(dtype, fraction, thickness):
    # Without a graph to record, multislice writes every step into reused buffers and
    # batches the band limit of slice n + 1 with the wave step of slice n
    # (propagate/workspace.py); the arithmetic is the same operation by operation and
    # transform by transform, so the exit wave is bitwise that of the autograd path: real
    # and complex slices, a line slice between them (the pending step is flushed first),
    # per-slice thicknesses, and a batched incident wave (which must not be modified).
    g = torch.Generator().manual_seed(7)
    ny, nx = 20, 26
    real = [30.0 * torch.rand(ny, nx, generator=g, dtype=dtype) for _ in range(3)]
    ramp = torch.linspace(0.0, 90.0, ny, dtype=dtype)[:, None].expand(ny, nx)
    slices = [real[0], torch.complex(real[1], 0.07 * real[1]), torch.complex(ramp, 0.05 * ramp)]
    slices.append(real[2])
    kw = dict(
        sampling_a=0.8, slice_thickness_a=thickness, energy_ev=E300, bandlimit_fraction=fraction
    )
    with torch.no_grad():
        buffered = multislice(slices, **kw)
    assert torch.equal(buffered, _recorded_multislice(slices, **kw))
    cdtype = buffered.dtype
    wave = torch.randn(2, ny, nx, generator=g, dtype=cdtype)
    kept = wave.clone()
    with torch.no_grad():
        buffered = multislice(slices, wave=wave, **kw)
    assert torch.equal(wave, kept)
    assert torch.equal(buffered, _recorded_multislice(slices, wave=wave, **kw))
    # grad mode on but nothing requires a gradient: the buffered path as well
    assert torch.equal(multislice(slices, wave=wave, **kw), buffered)


def test_buffered_then_recorded_steps_keep_gradients():
    # Slices before the first one that requires a gradient run buffered; the gradient wrt the
    # later slice equals the one with every step recorded.
    slices = _random_slices(3, shape=(16, 18))
    v = slices[2].clone().requires_grad_(True)
    kw = dict(sampling_a=1.0, slice_thickness_a=10.0, energy_ev=E300)
    w = torch.rand(16, 18, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((multislice([*slices[:2], v], **kw).abs() ** 2 * w).sum(), v)
    wave = torch.ones(16, 18, dtype=torch.complex128, requires_grad=True)
    psi = multislice([*slices[:2], v], wave=wave, **kw)
    (ref,) = torch.autograd.grad((psi.abs() ** 2 * w).sum(), v)
    assert torch.equal(grad, ref)


def test_constant_axis_precheck_keeps_the_answer():
    # The sampled-rows pre-check rejects slices early; it must not change the answer, also
    # when only the rows between the sampled ones break the constancy.
    import tem_core.propagate as propagate

    v = torch.linspace(0.0, 5.0, 32, dtype=torch.float64)[:, None].repeat(1, 24)
    assert propagate.constant_axis(v) == -1
    v[3, 5] += 1.0  # row 3 is not among the sampled rows (every 4th)
    assert propagate.constant_axis(v) is None
    u = v.t().contiguous()
    assert propagate.constant_axis(u) is None
    u[5, 3] -= 1.0
    assert propagate.constant_axis(u) == -2


def test_forward_mode_ad_keeps_the_unbuffered_path():
    # Dual tensors (forward-mode AD, as chapter 04 uses) must not go through the buffered
    # out= steps, which do not propagate tangents: the tangent of Σ w|ψ|² equals the
    # reverse-mode gradient projected on the same direction.
    import torch.autograd.forward_ad as fwad

    slices = _random_slices(3, shape=(16, 14))
    g = torch.Generator().manual_seed(5)
    direction = torch.randn(16, 14, generator=g, dtype=torch.float64)
    w = torch.rand(16, 14, generator=g, dtype=torch.float64)
    kw = dict(sampling_a=1.0, slice_thickness_a=10.0, energy_ev=E300)
    with torch.no_grad(), fwad.dual_level():
        dual = fwad.make_dual(slices[1], direction)
        psi = multislice([slices[0], dual, slices[2]], **kw)
        tangent = fwad.unpack_dual((psi.abs() ** 2 * w).sum()).tangent
    v = slices[1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        (multislice([slices[0], v, slices[2]], **kw).abs() ** 2 * w).sum(), v
    )
    expected = float((grad * direction).sum())
    assert abs(float(tangent) - expected) <= 1e-12 * max(1.0, abs(expected))
