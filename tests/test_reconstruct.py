"""Tomographic reconstruction: strip kernel, adjoint pair, autograd, SIRT vs ASTRA, WBP, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, requires_cuda

from tem_core.reconstruct import (
    TiltGeometry,
    TomographyOperator,
    angular_weights,
    bin_stack,
    correlation,
    fourier_lowpass,
    fourier_shell_correlation,
    geometry_from_files,
    geometry_from_tilt_series,
    image_contrast,
    potential_on_grid,
    psnr_db,
    read_angles,
    resolution_at,
    sirt,
    split_even_odd,
    wbp,
)
from tem_core.reconstruct._strip import footprint_cdf, strip_matrix
from tem_core.simulate import TiltSeriesResult

REFERENCE = Path(__file__).parent / "data" / "astra_sirt_reference.npz"
WEDGE = tuple(math.radians(a) for a in range(-60, 61, 3))


def _geometry(shape=(6, 8), thickness=5.0, angles=WEDGE, axis=0.5 * math.pi) -> TiltGeometry:
    return TiltGeometry(
        angles_rad=angles,
        detector_shape=shape,
        pixel_size_a=1.0,
        thickness_a=thickness,
        tilt_axis_angle_rad=axis,
    )


def _ball(shape, centre=(0.0, 0.0, 0.0), radius=4.0) -> torch.Tensor:
    grids = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in shape), indexing="ij"
    )
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return (r2 < radius**2).double()


# --- strip kernel -------------------------------------------------------------------------
def test_footprint_cdf_is_a_distribution():
    t = np.linspace(-2, 2, 4001)
    for a, b in ((1.0, 0.0), (0.8, 0.6), (math.sqrt(0.5), math.sqrt(0.5))):
        cdf = footprint_cdf(t, a, b)
        assert cdf[0] == 0 and cdf[-1] == 1 and np.all(np.diff(cdf) >= -1e-14)
        assert footprint_cdf(np.array([0.0]), a, b)[0] == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize("theta_deg", [0.0, 17.0, 45.0, -62.0])
def test_strip_weights_are_pixel_strip_intersection_areas(theta_deg):
    """Strip weight = area of (unit pixel ∩ unit strip of a bin), checked by supersampling."""
    theta = math.radians(theta_deg)
    nz, nx, n_det = 3, 4, 6
    a = strip_matrix(np.array([theta]), nz=nz, nx=nx, n_det=n_det).toarray()
    s = 400  # sub-samples per pixel edge: area error about 1/s
    sub = (np.arange(s) + 0.5) / s - 0.5
    for k, i in ((0, 0), (1, 2), (2, 3)):
        z = k - (nz - 1) / 2 + sub[:, None]
        x = i - (nx - 1) / 2 + sub[None, :]
        u = x * math.cos(theta) + z * math.sin(theta) + (n_det - 1) / 2
        bins = np.floor(u + 0.5).astype(int).ravel()
        area = np.bincount(bins[(bins >= 0) & (bins < n_det)], minlength=n_det) / s**2
        np.testing.assert_allclose(a[:, k * nx + i], area, atol=3.0 / s)


def test_strip_row_and_column_sums():
    """A vertical ray crosses nz voxels; a voxel inside the field has weight 1 per angle."""
    op = TomographyOperator(_geometry((4, 32), thickness=6.0), dtype=torch.float64)
    rows = op.ray_lengths().reshape(len(WEDGE), 32)
    zero = WEDGE.index(0.0)
    torch.testing.assert_close(rows[zero, 2:-2], torch.full((28,), 6.0, dtype=torch.float64))
    # at 60° a central ray crosses the slab over nz / cos θ
    assert float(rows[-1, 16]) == pytest.approx(6.0 / math.cos(WEDGE[-1]), rel=2e-2)
    cols = op.voxel_weights().reshape(6, 32)
    torch.testing.assert_close(
        cols[:, 10:22], torch.full((6, 12), float(len(WEDGE)), dtype=torch.float64)
    )


# --- adjoint pair, autograd -----------------------------------------------------------------
@pytest.mark.parametrize("axis", [0.5 * math.pi, 0.0, -0.5 * math.pi, 0.3, 2.0])
def test_adjointness_float64(axis):
    g = _geometry((7, 9), thickness=4.0, axis=axis)
    op = TomographyOperator(g, dtype=torch.float64, chunk_slices=2)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(g.volume_shape, dtype=torch.float64, generator=gen)
    y = torch.rand((g.n_tilts, 7, 9), dtype=torch.float64, generator=gen)
    lhs, rhs = float((op(x) * y).sum()), float((x * op.T(y)).sum())
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs)
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)  # measured: ~1e-16 relative


@pytest.mark.parametrize("axis", [0.5 * math.pi, 0.4])
def test_gradcheck_projector_and_adjoint(axis):
    g = _geometry((3, 4), thickness=3.0, angles=(-0.6, 0.1, 0.9), axis=axis)
    op = TomographyOperator(g, dtype=torch.float64)
    x = torch.rand(g.volume_shape, dtype=torch.float64, requires_grad=True)
    y = torch.rand((3, 3, 4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradcheck(op.T, (y,))
    assert torch.autograd.gradgradcheck(op, (x,))


def test_backward_is_the_adjoint():
    g = _geometry((5, 6), thickness=4.0)
    op = TomographyOperator(g, dtype=torch.float64)
    x = torch.rand(g.volume_shape, dtype=torch.float64, requires_grad=True)
    y = torch.rand((g.n_tilts, 5, 6), dtype=torch.float64)
    (op(x) * y).sum().backward()
    torch.testing.assert_close(x.grad, op.T(y), rtol=0, atol=1e-12)


def test_quarter_turn_and_bilinear_rotation_agree():
    """The exact quarter turn and the bilinear rotation by 90° - 1e-7 rad give the same data."""
    exact = TomographyOperator(_geometry((8, 8), axis=0.0), dtype=torch.float64)
    bilinear = TomographyOperator(_geometry((8, 8), axis=1e-7), dtype=torch.float64)
    assert exact.geometry.quarter_turns == 1 and bilinear.geometry.quarter_turns is None
    x = torch.rand(exact.geometry.volume_shape, dtype=torch.float64)
    torch.testing.assert_close(bilinear(x), exact(x), rtol=0, atol=1e-5)


def test_projection_follows_tilt_specimen_convention():
    """A voxel at (x, z) lands on u = x cos θ + z sin θ: tilt_specimen's right-handed rotation."""
    from tem_core.structure import rotation_about_axis

    g = _geometry((1, 21), thickness=9.0, angles=(math.radians(30.0),))
    vol = torch.zeros(g.volume_shape, dtype=torch.float64)
    vol[8, 0, 13] = 1.0  # z = +4, x = +3 voxels from the centre
    proj = TomographyOperator(g, dtype=torch.float64)(vol)[0, 0]
    u = float((proj * torch.arange(21.0, dtype=torch.float64)).sum() / proj.sum()) - 10
    rot = rotation_about_axis(
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), torch.tensor(math.radians(30.0))
    )
    expected = float((rot @ torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64))[0])
    assert u == pytest.approx(expected, abs=0.02)  # bin-centre centroid: 0.015 off


# --- SIRT ---------------------------------------------------------------------------------
def test_sirt_matches_stored_astra_reconstruction():
    """ASTRA 2.5.0 CPU SIRT (strip projector), 100 iterations: benchmarks/reconstruct.py
    --write-reference. Measured difference 4.8e-6 (float32 rounding)."""
    ref = np.load(REFERENCE)
    angles = tuple(float(a) for a in ref["angles_rad"])
    sino = torch.from_numpy(ref["sinogram"])
    g = TiltGeometry(
        angles_rad=angles,
        detector_shape=tuple(sino.shape[1:]),
        pixel_size_a=1.0,
        thickness_a=float(ref["thickness_voxels"]),
    )
    ours = sirt(sino, g, n_iterations=100, progress=False).numpy()
    theirs = ref["astra_sirt_100"]
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 5e-5


def test_sirt_decreases_the_residual_and_respects_nonnegativity():
    g = _geometry((4, 24), thickness=10.0)
    op = TomographyOperator(g, dtype=torch.float64)
    truth = _ball(g.volume_shape, radius=4.0)
    b = op(truth)
    residuals = [
        float((op(sirt(b, g, n_iterations=n, progress=False)) - b).norm()) for n in (1, 5, 25)
    ]
    assert residuals[0] > residuals[1] > residuals[2]
    noisy = b + 0.3 * torch.randn(
        b.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    free = sirt(noisy, g, n_iterations=20, progress=False)
    clamped = sirt(noisy, g, n_iterations=20, nonnegative=True, progress=False)
    assert free.min() < 0 and clamped.min() >= 0
    assert correlation(clamped, truth) > correlation(free, truth)


def test_sirt_chunks_do_not_change_the_result():
    g = _geometry((5, 12), thickness=6.0)
    b = torch.rand((g.n_tilts, 5, 12), dtype=torch.float64)
    one = sirt(b, g, n_iterations=3, chunk_slices=1, progress=False)
    all_ = sirt(b, g, n_iterations=3, chunk_slices=5, progress=False)
    torch.testing.assert_close(one, all_, rtol=0, atol=1e-12)


# --- WBP ----------------------------------------------------------------------------------
def test_wbp_full_range_recovers_the_value_of_a_disc():
    """±89° in 2° steps: the ramp-filtered back-projection of a disc of 1 gives 1 inside."""
    g = _geometry((2, 64), thickness=64.0, angles=tuple(math.radians(a) for a in range(-89, 90, 2)))
    disc = _ball(g.volume_shape, radius=15.0)
    disc = disc.amax(dim=1, keepdim=True).expand(g.volume_shape).contiguous()
    rec = wbp(TomographyOperator(g, dtype=torch.float64)(disc), g, progress=False)
    inner = _ball(g.volume_shape, radius=11.0).amax(1, keepdim=True).expand(g.volume_shape) > 0
    assert float(rec[inner].mean()) == pytest.approx(1.0, abs=0.01)  # measured 0.998
    outer = ~(_ball(g.volume_shape, radius=19.0).amax(1, keepdim=True).expand(g.volume_shape) > 0)
    assert abs(float(rec[outer].mean())) < 0.02


def test_sirt_like_filter_mimics_sirt():
    g = _geometry((4, 48), thickness=20.0, angles=tuple(math.radians(a) for a in range(-60, 61, 2)))
    op = TomographyOperator(g, dtype=torch.float64)
    b = op(_ball(g.volume_shape, centre=(0, 0, 5), radius=7.0))
    for k in (5, 20):
        ref = sirt(b, g, n_iterations=k, progress=False)
        fake = wbp(b, g, filter="sirt", sirt_iterations=k, progress=False)
        assert correlation(fake, ref) > 0.95


def test_wbp_is_differentiable_in_the_stack():
    g = _geometry((3, 5), thickness=3.0, angles=(-0.5, 0.0, 0.5))
    y = torch.rand((3, 3, 5), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: wbp(s, g, progress=False), (y,))
    # the chunked path (no gradient needed) gives the same volume
    chunked = wbp(y.detach(), g, chunk_slices=1, progress=False)
    torch.testing.assert_close(chunked, wbp(y, g, progress=False).detach(), rtol=0, atol=1e-12)


def test_angular_weights_uniform_and_unsorted():
    a = torch.tensor([0.1, -0.1, 0.3, -0.3])
    torch.testing.assert_close(angular_weights(a), torch.full((4,), 0.2, dtype=torch.float64))


# --- metrics ------------------------------------------------------------------------------
def test_fsc_identical_and_independent():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn((16, 16, 16), generator=gen, dtype=torch.float64)
    freq, fsc = fourier_shell_correlation(a, a, voxel_size_a=2.0)
    torch.testing.assert_close(fsc, torch.ones_like(fsc))
    assert float(freq[-1]) == pytest.approx(0.25)  # Nyquist of 2 Å voxels [1/Å]
    b = torch.randn((16, 16, 16), generator=gen, dtype=torch.float64)
    _, fsc_ab = fourier_shell_correlation(a, b)
    assert float(fsc_ab[2:].abs().max()) < 0.35  # ~ 3/sqrt(voxels per shell)
    assert resolution_at(freq, fsc) == pytest.approx(4.0)


def test_psnr_and_correlation():
    t = torch.linspace(0, 1, 1000, dtype=torch.float64)
    assert correlation(3 * t + 1, t) == pytest.approx(1.0)
    noisy = t + 0.01 * torch.randn(
        1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert psnr_db(2 * noisy, t) == pytest.approx(40.0, abs=0.5)  # 20 log10(1 / 0.01)


# --- geometry from files and simulations; bad input -------------------------------------------
def test_geometry_from_imod_and_mdoc_files(tmp_path):
    path = tmp_path / "ts.rawtlt"
    path.write_text("-60.00\n0.00\n60.00\n")
    g = geometry_from_files(path, detector_shape=(4, 6), thickness_a=20.0, pixel_size_a=5.0)
    assert g.angles_rad == pytest.approx((-math.pi / 3, 0.0, math.pi / 3))
    assert g.volume_shape == (4, 4, 6) and g.voxel_size_a == 5.0
    angles, axis = read_angles(DATA_DIR / "TS_017.mdoc")
    assert len(angles) == 60 and axis is not None
    assert math.degrees(float(angles[0])) == pytest.approx(-52.0064)


def test_geometry_from_tilt_series_result():
    result = TiltSeriesResult(torch.zeros(3, 5, 7), (-0.2, 0.0, 0.2), (1, 0, 2), 2.5, {})
    g = geometry_from_tilt_series(result, thickness_a=10.0, tilt_axis_angle_rad=0.0)
    assert g.volume_shape == (4, 7, 5) and g.voxel_size_a == 2.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(angles_rad=()), "angles_rad must hold at least one"),
        (dict(angles_rad=(0.0, 0.2, 0.1)), "angles_rad must be strictly monotonic"),
        (dict(angles_rad=(0.0, 0.0)), "angles_rad must be strictly monotonic"),
        (dict(angles_rad=(0.0, float("nan"))), "angles_rad must be finite"),
        (dict(angles_rad=(0.0, 1.6)), "angles_rad must lie in"),
        (dict(pixel_size_a=0.0), "pixel_size_a must be > 0.*pass pixel_size_a"),
        (dict(pixel_size_a=None), "pixel_size_a is missing.*pass"),
        (dict(thickness_a=-1.0), "thickness_a must be > 0"),
        (dict(thickness_a=0.2), "thickness_a must be at least one voxel"),
        (dict(detector_shape=(0, 4)), "detector_shape must be"),
    ],
)
def test_geometry_errors(kwargs, match):
    base = dict(angles_rad=(-0.1, 0.1), detector_shape=(4, 4), pixel_size_a=1.0, thickness_a=4.0)
    with pytest.raises(ValueError, match=match):
        TiltGeometry(**{**base, **kwargs})


def test_stack_errors():
    g = _geometry((4, 5), angles=(-0.1, 0.0, 0.1))
    with pytest.raises(ValueError, match="angles_rad has 3 angles but stack has shape"):
        sirt(torch.zeros(4, 4, 5), g)
    with pytest.raises(ValueError, match="detector_shape"):
        sirt(torch.zeros(3, 5, 5), g)
    bad = torch.zeros(3, 4, 5)
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="stack must be finite.*tilt 1"):
        wbp(bad, g)
    with pytest.raises(ValueError, match="relaxation must lie in"):
        sirt(torch.zeros(3, 4, 5), g, relaxation=2.5)
    with pytest.raises(ValueError, match="filter must be one of"):
        wbp(torch.zeros(3, 4, 5), g, filter="hann")
    with pytest.raises(ValueError, match="volume must have the geometry's volume_shape"):
        TomographyOperator(g)(torch.zeros(2, 2, 2))


def test_volume_too_big_is_refused_before_allocating():
    g = TiltGeometry(
        angles_rad=WEDGE, detector_shape=(40000, 40000), pixel_size_a=1.0, thickness_a=4000.0
    )
    with pytest.raises(
        MemoryError, match=r"volume_shape \(4000, 40000, 40000\).*reduce thickness_a"
    ):
        TomographyOperator(g)


@pytest.mark.cuda
@requires_cuda
def test_cuda_matches_cpu():
    g = _geometry((6, 16), thickness=8.0)
    b = torch.rand((g.n_tilts, 6, 16), generator=torch.Generator().manual_seed(0))
    cpu = sirt(b, g, n_iterations=20, progress=False)
    gpu = sirt(b.cuda(), g, n_iterations=20, progress=False)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
    x = torch.rand(g.volume_shape, dtype=torch.float64)
    op_c = TomographyOperator(g, dtype=torch.float64)
    op_g = TomographyOperator(g, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(op_g(x.cuda()).cpu(), op_c(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        wbp(b.cuda(), g, progress=False).cpu(), wbp(b, g, progress=False), rtol=1e-4, atol=1e-5
    )


# --- evaluation helpers ------------------------------------------------------------------------
def _crambin_specimen():
    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import read_structure

    model = read_structure(DATA_DIR / "1crn.pdb.gz", dtype=torch.float64)
    return build_specimen(
        model,
        1,
        extent_a=(64.0, 64.0),
        ice=IceSlab(thickness_a=48.0),
        generator=torch.Generator().manual_seed(0),
    )


def test_truth_on_grid_projects_like_the_tilted_specimen():
    """A of the potential on the grid = the potential stage's projection of the tilted
    specimen: crambin at 2 Å, measured correlation 0.989 (-40°) and 0.990 (30°), the
    resampling of atomic detail onto voxels; the opposite tilt sign gives 0.57 and 0.68."""
    from tem_core.potential import PotentialSettings, projected_potential
    from tem_core.specimen import tilt_specimen

    specimen = _crambin_specimen()
    angles = (math.radians(-40.0), 0.0, math.radians(30.0))
    g = TiltGeometry(angles_rad=angles, detector_shape=(32, 32), pixel_size_a=2.0, thickness_a=48.0)
    truth = potential_on_grid(specimen, g, energy_ev=300e3, include_solvent=False)
    assert truth.shape == (24, 32, 32)
    ours = TomographyOperator(g, dtype=torch.float64)(truth) * g.voxel_size_a
    settings = PotentialSettings(
        shape=(32, 32),
        sampling_a=2.0,
        slice_thickness_a=2.0,
        energy_ev=300e3,
        include_solvent=False,
    )
    for i, a in enumerate(angles):
        tilted = tilt_specimen(specimen, tilt_angle_rad=a, tilt_axis_angle_rad=0.5 * math.pi)
        sim = projected_potential(tilted, settings).real.double()
        assert correlation(ours[i], sim) > 0.985
        assert float(ours[i].sum() / sim.sum()) == pytest.approx(1.0, rel=1e-6)  # 7e-8


def test_split_bin_contrast_and_lowpass():
    g = _geometry((8, 6), angles=(-0.2, -0.1, 0.0, 0.1, 0.2))
    stack = torch.rand(5, 8, 6, dtype=torch.float64) + 1.0
    (even, g_even), (odd, g_odd) = split_even_odd(stack, g)
    assert g_even.angles_rad == (-0.2, 0.0, 0.2) and g_odd.angles_rad == (-0.1, 0.1)
    torch.testing.assert_close(odd, stack[1::2])
    binned, g2 = bin_stack(stack, g, 2)
    assert binned.shape == (5, 4, 3) and g2.pixel_size_a == 2.0
    torch.testing.assert_close(binned[0, 0, 0], stack[0, :2, :2].mean())
    c = image_contrast(stack, invert=True)
    torch.testing.assert_close(c.mean(dim=(1, 2)), torch.zeros(5, dtype=torch.float64))
    vol = torch.rand(8, 8, 8, dtype=torch.float64)
    lp = fourier_lowpass(vol, resolution_a=1e-3, voxel_size_a=1.0)  # keeps everything
    torch.testing.assert_close(lp, vol)
    flat = fourier_lowpass(vol, resolution_a=1e3, voxel_size_a=1.0)  # keeps the mean only
    torch.testing.assert_close(flat, torch.full_like(vol, float(vol.mean())))
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        bin_stack(stack, g, 0)


def test_fully_sampled_columns_see_the_detector_at_every_tilt():
    g = _geometry((2, 40), thickness=40.0, angles=(-1.0, 0.0, 1.0))
    x0, x1 = g.fully_sampled_x()
    assert (x0, x1) == (15, 25)
    op = TomographyOperator(g, dtype=torch.float64)
    weights = op.voxel_weights().reshape(40, 40)  # the angle count where nothing is lost
    full = torch.full((40, x1 - x0), 3.0, dtype=torch.float64)
    torch.testing.assert_close(weights[:, x0:x1], full)
    assert float(weights[:, x0 - 1].min()) < 3.0 - 1e-3
    assert float(weights[:, x1].min()) < 3.0 - 1e-3
    assert _geometry((2, 40), angles=(0.0,)).fully_sampled_x() == (0, 40)
