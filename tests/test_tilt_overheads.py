"""Per-tilt work kept or lightened in a tilt series (issue 17): each against its reference.

Grids of plain numbers kept per grid (detector MTF, inelastic blur, CTF), the radial MTF by
half-spectrum transforms, the Wald draw on four grids, the slab geometry on one line, and
the bounded heap release between the tilts of small grids.
"""

from __future__ import annotations

import math

import pytest
import torch

from tem_core import _heap, _optics_cache, memory
from tem_core._grid_cache import GridCache, plain_key
from tem_core._optics_inelastic import BLUR_CACHE, _blur_filter, inelastic_background
from tem_core.detector import MTF_CACHE, Detector, _image_mtf, apply_mtf, expected_image
from tem_core.detector.mtf import apply_radial_mtf
from tem_core.detector.noise import _sample_wald
from tem_core.grids import radial_frequency_cycles_per_px
from tem_core.optics import Microscope, apply_ctf, ctf
from tem_core.potential.solvent import SolventGeometry
from tem_core.propagate import PROPAGATOR_CACHE, multislice
from tem_core.specimen import IceSlab, build_specimen, tilt_specimen
from tem_core.units import KV_TO_EV


def test_plain_key_refuses_tensors_and_separates_types() -> None:
    assert plain_key("mtf", (4, 5), 1.0, torch.float32, torch.device("cpu"), None) is not None
    assert plain_key("mtf", 1.0, torch.tensor(1.0)) is None
    assert plain_key((1.0, torch.tensor(2.0))) is None
    assert plain_key(1) != plain_key(1.0) and plain_key(True) != plain_key(1)


def test_grid_cache_makes_once_evicts_oldest_and_keeps_no_graph() -> None:
    cache, made = GridCache(size=2), []

    def make(value):
        made.append(value)
        return torch.full((2, 2), float(value))

    first = cache.get(("a",), 4, lambda: make(1))
    assert cache.get(("a",), 4, lambda: make(9)) is first and made == [1]
    cache.get(("b",), 4, lambda: make(2))
    cache.get(("c",), 4, lambda: make(3))  # evicts "a"
    assert len(cache) == 2
    assert float(cache.get(("a",), 4, lambda: make(4))[0, 0]) == 4.0
    cache.get(None, 4, lambda: make(5))  # no key: made, not kept
    cache.get(("big",), 10**9, lambda: make(6))  # too large: made, not kept
    assert made == [1, 2, 3, 4, 5, 6] and len(cache) == 2
    graph = cache.get(("g",), 4, lambda: torch.ones(2, requires_grad=True) * 2)
    assert graph.requires_grad and len(cache) == 2  # not kept
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("camera", [None, "k2_300kv"])
def test_detector_mtf_cached_per_grid_equals_a_fresh_one(camera) -> None:
    MTF_CACHE.clear()
    detector = Detector(dqe=0.4, gain_counts_per_e=10.0, mtf_camera=camera)
    image = torch.rand(3, 20, 24, dtype=torch.float64)
    first = _image_mtf(detector, image)
    assert _image_mtf(detector, image) is first and len(MTF_CACHE) == 1
    assert torch.equal(first, detector.mtf((20, 24), dtype=torch.float64))
    other = Detector(dqe=0.4, gain_counts_per_e=10.0, alpha=11.0, mtf_camera=camera)
    assert torch.equal(_image_mtf(other, image), other.mtf((20, 24), dtype=torch.float64))
    assert torch.equal(_image_mtf(detector, image.float()), detector.mtf((20, 24)))
    assert Detector(mtf_enabled=False).mtf((4, 4)) is None
    assert _image_mtf(Detector(mtf_enabled=False), image) is None


def test_detector_mtf_with_tensor_parameters_is_never_cached() -> None:
    MTF_CACHE.clear()
    alpha = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    detector = Detector(alpha=alpha)
    image = torch.rand(16, 16, dtype=torch.float64)
    mtf = _image_mtf(detector, image)
    assert mtf.requires_grad and len(MTF_CACHE) == 0
    out = expected_image(image, detector=detector, dose_e_per_a2=2.0, sampling_a=1.0)
    (out * image).sum().backward()  # (the plain sum is the mean: MTF(0) = 1)
    assert alpha.grad is not None and float(alpha.grad.abs()) > 0


@pytest.mark.parametrize("shape", [(32, 32), (31, 40), (40, 33), (2, 17, 18)])
def test_radial_mtf_by_half_spectra_equals_apply_mtf(shape) -> None:
    """Even (radial) MTFs: the half-spectrum transforms give apply_mtf's image (float64)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=gen, dtype=torch.float64) * 50
    omega = radial_frequency_cycles_per_px(shape[-2:], dtype=torch.float64)
    for mtf in (Detector().mtf(shape[-2:], dtype=torch.float64), torch.exp(-9.0 * omega)):
        torch.testing.assert_close(apply_radial_mtf(image, mtf), apply_mtf(image, mtf),
                                   rtol=1e-13, atol=1e-12)  # fmt: skip
    f32 = apply_radial_mtf(image.float(), Detector().mtf(shape[-2:]))
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), apply_mtf(image, Detector().mtf(
        shape[-2:], dtype=torch.float64)), rtol=1e-6, atol=1e-4)  # fmt: skip


def test_radial_mtf_gradient_equals_apply_mtf_gradient() -> None:
    image = torch.rand(12, 15, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(12, 15, dtype=torch.float64)
    grads = []
    for function in (apply_radial_mtf, apply_mtf):
        mtf = Detector(alpha=alpha).mtf((12, 15), dtype=torch.float64)
        grads.append(torch.autograd.grad((function(image, mtf) * weights).sum(), (image, alpha)))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    mtf = Detector().mtf((12, 15), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: apply_radial_mtf(x, mtf), (image,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1e-3, 1.5, 7.0, 0.0])
def test_wald_in_place_draws_the_reference_bits(dtype, k) -> None:
    gen = torch.Generator().manual_seed(1)
    mean = torch.poisson(torch.rand(60, 61, dtype=dtype, generator=gen) * 30, generator=gen)
    mean[0, :5] = 0.0
    mean[1, :3] = torch.finfo(dtype).tiny
    mean[2, :3] = 1e6
    k_t = torch.tensor(k, dtype=dtype)
    # the same k as a full grid takes _sample_wald's general (out-of-place) expressions
    want = _sample_wald(mean, k_t.expand(mean.shape).clone(), torch.Generator().manual_seed(5))
    got = _sample_wald(mean, k_t, torch.Generator().manual_seed(5))
    assert torch.equal(got, want)


def test_wald_in_place_keeps_mean_and_variance() -> None:
    mean = torch.full((400, 400), 25.0, dtype=torch.float64)
    draws = _sample_wald(mean, torch.tensor(1.5, dtype=torch.float64),
                         torch.Generator().manual_seed(2))  # fmt: skip
    assert abs(float(draws.mean()) - 25.0) < 5 * math.sqrt(1.5 * 25.0 / draws.numel())
    assert abs(float(draws.var()) / (1.5 * 25.0) - 1.0) < 0.03


def test_inelastic_blur_filter_cached_equals_a_fresh_one() -> None:
    BLUR_CACHE.clear()
    absorbed = torch.rand(30, 36, dtype=torch.float64)
    first = inelastic_background(absorbed, sampling_a=2.0, blur_a=30.0, collected_fraction=0.9)
    assert len(BLUR_CACHE) == 1
    again = inelastic_background(absorbed, sampling_a=2.0, blur_a=30.0, collected_fraction=0.9)
    assert torch.equal(first, again) and len(BLUR_CACHE) == 1
    from tem_core._fft import fft2, ifft2

    gauss = _blur_filter(absorbed, 2.0, 30.0)
    assert torch.equal(first, 0.9 * ifft2(fft2(absorbed) * gauss).real)
    inelastic_background(absorbed.float(), sampling_a=2.0, blur_a=20.0, collected_fraction=1.0)
    assert len(BLUR_CACHE) == 2


def test_apply_ctf_reads_the_cached_ctf_without_writing_it() -> None:
    _optics_cache._CTF_CACHE.clear()
    microscope = Microscope(energy_ev=300 * KV_TO_EV, illumination_semiangle_rad=1e-4)
    wave = torch.exp(1j * torch.rand(24, 28, dtype=torch.float64))
    kwargs = dict(sampling_a=1.5, microscope=microscope, defocus_a=1.2e4)
    first = apply_ctf(wave, **kwargs)
    (key, cached), = _optics_cache._CTF_CACHE.items()
    kept = cached.clone()
    second = apply_ctf(wave, **kwargs)
    assert torch.equal(first, second) and torch.equal(_optics_cache._CTF_CACHE[key], kept)
    public = ctf((24, 28), dtype=torch.complex128, **kwargs)
    public.mul_(0.0)  # a copy: the cache is untouched
    assert torch.equal(_optics_cache._CTF_CACHE[key], kept)


def _full_grid_interval(specimen, shape, s):
    """The slab interval on every pixel, as SolventGeometry computed it before the line."""
    f64 = dict(dtype=torch.float64)
    centre = specimen.slab_center_a.to(**f64)
    normal = specimen.slab_normal.to(**f64)
    normal = normal / torch.linalg.norm(normal)
    ny, nx = shape
    yc, xc = torch.meshgrid((torch.arange(ny, **f64) + 0.5) * s,
                            (torch.arange(nx, **f64) + 0.5) * s, indexing="ij")  # fmt: skip
    in_plane = (xc - centre[0]) * normal[0] + (yc - centre[1]) * normal[1]
    t = specimen.ice.thickness_a
    a = centre[2] + (0.5 * t - in_plane) / normal[2]
    b = centre[2] + (-0.5 * t - in_plane) / normal[2]
    return torch.minimum(a, b), torch.maximum(a, b)


@pytest.mark.parametrize("tilt", [(0.0, 0.0), (0.5, 0.0), (-0.7, math.pi / 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slab_geometry_on_one_line_equals_the_full_grid_bitwise(tilt, dtype) -> None:
    """About x: computed on one column and broadcast; about another axis: the full grid."""
    specimen = build_specimen([], [], extent_a=(96.0, 80.0), ice=IceSlab(thickness_a=150.0),
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    if tilt[0]:
        specimen = tilt_specimen(specimen, tilt_angle_rad=tilt[0], tilt_axis_angle_rad=tilt[1])
    geometry = SolventGeometry(specimen, (40, 48), 2.0, dtype, torch.device("cpu"))
    assert (geometry.line_axis is not None) == (tilt[1] == 0.0)  # about x (or none): a line
    lo, hi = _full_grid_interval(specimen, (40, 48), 2.0)
    assert torch.equal(geometry.ice_lo, lo) and torch.equal(geometry.ice_hi, hi)
    for z0 in torch.arange(-80.0, 260.0, 23.0).tolist():
        got, carbon = geometry.lengths(z0, z0 + 23.0)
        want = (torch.clamp(hi, max=z0 + 23.0) - torch.clamp(lo, min=z0)).clamp(min=0)
        assert carbon is None and got.shape == (40, 48) and got.dtype == dtype
        assert torch.equal(got, want.to(dtype))
        assert torch.equal(got, geometry.lengths_reference(z0, z0 + 23.0)[0])


def test_free_heap_bytes_and_the_bounded_release(monkeypatch) -> None:
    free = _heap.free_heap_bytes()
    assert free is None or (isinstance(free, int) and free >= 0)
    calls = []
    monkeypatch.setattr(memory, "release_at_boundary", lambda: calls.append(1) or True)
    assert _heap.release_beyond(-1) is True and calls == [1]  # always beyond -1
    if free is not None:
        assert _heap.release_beyond(2**62) is False and calls == [1]
    monkeypatch.setattr(_heap, "free_heap_bytes", lambda: None)
    assert _heap.release_beyond(2**62) is True and calls == [1, 1]  # cannot say: release


def test_multislice_shares_its_propagator_and_mask_between_calls() -> None:
    # every tilt of a series propagates on the same grid by the same slices: the propagator
    # and the band-limit mask are made once (plain numbers), the waves stay bit for bit the
    # same; a tensor thickness (which may need gradients) is never cached
    PROPAGATOR_CACHE.clear()
    g = torch.Generator().manual_seed(0)
    slices = torch.rand(3, 24, 20, dtype=torch.float64, generator=g)
    kw = dict(sampling_a=0.5, slice_thickness_a=2.0, energy_ev=200e3)
    first = multislice(slices, **kw)
    assert len(PROPAGATOR_CACHE) == 2  # propagator and mask
    assert torch.equal(multislice(slices, **kw), first) and len(PROPAGATOR_CACHE) == 2
    PROPAGATOR_CACHE.clear()
    assert torch.equal(multislice(slices, **kw), first)
    PROPAGATOR_CACHE.clear()
    dz = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    wave = multislice(slices, **{**kw, "slice_thickness_a": dz})
    assert len(PROPAGATOR_CACHE) == 1  # the mask only
    wave.abs().square().sum().backward()
    assert dz.grad is not None
