"""Particle maps (``PotentialSettings(particle_representation="map")``) against the exact atoms.

Tolerances are the measured errors (crambin, 1CRN, 2 copies at 2 Å pixels, float64) times
about 1.5: the map is an approximation whose error shrinks with ``map_voxel_a``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import tem_core.potential as pot
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import maps as maps_module
from tem_core.simulate import Imaging, TiltScheme, micrograph, tilt_series
from tem_core.specimen import IceSlab, build_specimen, tilt_specimen
from tem_core.specimen.particles import random_rotations
from tem_core.structure import AtomicModel, read_structure


def _scene(data_dir, *, dtype=torch.float64, solvent=True, slice_a=20.0, shift=(0.0, 0.0, 0.0)):
    model = read_structure(data_dir / "1crn.pdb.gz", dtype=dtype)
    rotations = random_rotations(2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    centres = torch.tensor([[30.3, 33.1, 40.0], [66.7, 60.2, 38.5]], dtype=dtype)
    centres = centres + torch.tensor(shift, dtype=dtype)
    specimen = build_specimen(
        model, 2, extent_a=(96.0, 96.0), ice=IceSlab(thickness_a=80.0),
        generator=torch.Generator().manual_seed(0), poses=(rotations, centres),
    )  # fmt: skip
    settings = pot.PotentialSettings(
        shape=(48, 48), sampling_a=2.0, slice_thickness_a=slice_a, include_solvent=solvent
    )
    return specimen, settings


def _as_map(settings, voxel):
    return dataclasses.replace(settings, particle_representation="map", map_voxel_a=voxel)


def _rel(a, b):
    """‖a − b‖ relative to the contrast ‖b − mean(b)‖ of the exact real part."""
    return float((a - b).abs().norm() / (b.real - b.real.mean()).norm())


# measured (float64 and float32 alike): vacuum 1.5e-3, 1.7e-3, 1.8e-3 at v = s/4 and
# 2.4e-2, 2.6e-2, 2.9e-2 at v = s/2 (crambin's B-factors are small: sharp atoms need a fine
# map); in ice (one slice: the same clamp as the atoms) 4.3e-3, 5.1e-3, 4.8e-3 at v = s/4
@pytest.mark.parametrize(
    ("solvent", "voxel", "tol"),
    [(False, 0.5, 3e-3), (False, 1.0, 4.5e-2), (True, 0.5, 8e-3)],
)
def test_map_projection_matches_atoms(data_dir, solvent, voxel, tol):
    specimen, settings = _scene(data_dir, solvent=solvent, slice_a=20.0 if not solvent else 200.0)
    mapped = _as_map(settings, voxel)
    maps = pot.ParticleMaps(specimen, mapped)
    assert len(maps.types) == 1  # two copies of one model share a map
    for theta in (0.0, 40.0, -60.0):
        tilted = tilt_specimen(specimen, tilt_angle_rad=math.radians(theta))
        exact = pot.projected_potential(tilted, settings)
        approx = pot.projected_potential(tilted, mapped, coefficients=maps)
        assert _rel(approx, exact) < tol
        # the mean (integral) is kept: measured 7.7e-4 relative in vacuum (the Kaiser-Bessel
        # kernel's leakage; 1e-5 with 6 taps), 4e-6 in ice
        assert float(approx.real.mean()) == pytest.approx(float(exact.real.mean()), rel=1.5e-3)


def test_map_float32_matches_float64(data_dir):
    # measured: the float32 and float64 map projections differ by 1.6e-6 of their maximum
    out = []
    for dtype in (torch.float64, torch.float32):
        specimen, settings = _scene(data_dir, dtype=dtype)
        tilted = tilt_specimen(specimen, tilt_angle_rad=math.radians(25.0))
        out.append(pot.projected_potential(tilted, _as_map(settings, 1.0)))
    assert out[1].dtype == torch.complex64
    scale = float(out[0].abs().max())
    assert float((out[1].to(out[0].dtype) - out[0]).abs().max()) < 5e-6 * scale


def test_map_slices_sum_to_projection_and_follow_atoms(data_dir):
    specimen, settings = _scene(data_dir, solvent=False)
    mapped = _as_map(settings, 0.5)
    maps = pot.ParticleMaps(specimen, mapped)
    tilted = tilt_specimen(specimen, tilt_angle_rad=math.radians(40.0))
    slices = list(pot.iter_slice_potentials(tilted, mapped, coefficients=maps))
    exact = list(pot.iter_slice_potentials(tilted, settings))
    assert len(slices) == len(exact)  # same slice edges as the atoms (their z ± window)
    total = pot.projected_potential(tilted, mapped, coefficients=maps)
    # the split fractions add up to 1: measured 1e-16 of the maximum in float64
    assert float((sum(slices) - total).abs().max()) < 1e-12 * float(total.abs().max())
    stacked, ref = torch.stack(slices), torch.stack(exact)
    # each slice (split along the beam by the coarse map): measured 4.2e-2 of the contrast
    contrast = (ref.real - ref.real.mean((1, 2), keepdim=True)).norm()
    assert float((stacked - ref).abs().norm() / contrast) < 7e-2


def test_rotated_map_of_a_symmetric_object_does_not_change(data_dir):
    # one carbon atom at the particle centre is spherically symmetric: its map projection
    # must not depend on the rotation, and must match the exact atom
    dtype = torch.float64
    atom = AtomicModel(
        atomic_numbers=torch.tensor([6]), positions_a=torch.zeros(1, 3, dtype=dtype),
        b_factors_a2=torch.tensor([20.0], dtype=dtype), occupancies=torch.ones(1, dtype=dtype),
        name="C",
    )  # fmt: skip
    settings = pot.PotentialSettings(
        shape=(32, 32), sampling_a=1.0, slice_thickness_a=10.0, include_solvent=False
    )
    results = []
    for seed in range(3):
        rotation = random_rotations(1, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        specimen = build_specimen(
            atom, 1, extent_a=(32.0, 32.0), ice=IceSlab(thickness_a=30.0),
            generator=torch.Generator().manual_seed(0),
            poses=(rotation, torch.tensor([[15.3, 16.7, 15.0]], dtype=dtype)),
        )  # fmt: skip
        exact = pot.projected_potential(specimen, settings)
        results.append(pot.projected_potential(specimen, _as_map(settings, 0.5)))
        # measured 1.7e-4, 1.8e-4, 1.7e-4 of the peak
        assert float((results[-1] - exact).abs().max()) < 3e-4 * float(exact.abs().max())
    for other in results[1:]:  # rotations: measured 3.3e-4, 2.4e-4 of the peak
        assert float((other - results[0]).abs().max()) < 5e-4 * float(results[0].abs().max())


def test_loose_atoms_stay_exact_and_copies_that_differ_get_their_own_map(data_dir):
    specimen, settings = _scene(data_dir, solvent=False)
    mapped = _as_map(settings, 1.0)
    # no particles at all: every atom is loose, the result is the exact one
    no_particles = dataclasses.replace(
        specimen,
        particle_centers_a=specimen.particle_centers_a[:0],
        particle_radii_a=specimen.particle_radii_a[:0],
        particle_rotations=specimen.particle_rotations[:0],
    )
    assert torch.equal(
        pot.projected_potential(no_particles, mapped),
        pot.projected_potential(no_particles, settings),
    )
    # move one atom of the second copy by 0.1 Å: two maps
    positions = specimen.atoms.positions_a.clone()
    positions[-1, 0] += 0.1
    moved = dataclasses.replace(specimen, atoms=specimen.atoms._replace_positions(positions))
    assert len(pot.ParticleMaps(moved, mapped).types) == 2


def test_light_specimen_images_like_the_full_one(data_dir):
    specimen, settings = _scene(data_dir)
    mapped = _as_map(settings, 1.0)
    maps = pot.ParticleMaps(specimen, mapped)
    assert maps.light.atoms.positions_a.shape[0] == 0
    for method in ("projection", "multislice"):
        full = tilt_specimen(specimen, tilt_angle_rad=0.3)
        light = tilt_specimen(maps.light, tilt_angle_rad=0.3)
        a = pot.projected_potential(full, mapped, coefficients=maps)
        b = pot.projected_potential(light, mapped, coefficients=maps)
        assert torch.equal(a, b), method


def test_tilt_series_with_maps_matches_atoms(data_dir):
    # 40 Å slices: with 20 Å slices the atoms' path clamps the excluded ice per slice where
    # the maps' projection clamps it per column: then projection differs by 7-19 % (measured)
    specimen, settings = _scene(data_dir, dtype=torch.float32, slice_a=40.0)
    scheme = TiltScheme(
        angles_rad=(-0.5, 0.0, 0.6), dose_e_per_a2=(10.0,) * 3, defocus_a=(5000.0,) * 3
    )
    common = dict(
        scheme=scheme, microscope=Microscope(energy_ev=300e3), detector=Detector(),
        generator=None, progress=False, damage=None,
    )  # fmt: skip
    for method in ("projection", "multislice"):
        exact = tilt_series(specimen, potential=settings, method=method, **common).stack
        approx = tilt_series(specimen, potential=_as_map(settings, 0.5), method=method, **common)
        # measured (float32, expected counts): projection 3.8e-3, 3.4e-3, 4.0e-3, multislice
        # 4.0e-3, 3.9e-3, 3.8e-3 of the image contrast (20 Å slices: 4.2e-3 to 5.4e-3)
        for a, e in zip(approx.stack, exact, strict=True):
            assert float((a - e).norm() / (e - e.mean()).norm()) < 6e-3, method


def test_map_path_keeps_optics_gradients(data_dir):
    # the maps are constants: gradients flow through everything after the potential
    specimen, settings = _scene(data_dir)
    defocus = torch.tensor(12000.0, dtype=torch.float64, requires_grad=True)
    result = micrograph(
        specimen, potential=_as_map(settings, 1.0), microscope=Microscope(energy_ev=300e3),
        detector=Detector(), imaging=Imaging(defocus_a=defocus, dose_e_per_a2=20.0),
    )  # fmt: skip
    (result.expected**2).sum().backward()
    assert defocus.grad is not None and torch.isfinite(defocus.grad)


def test_map_path_refuses_atom_gradients_and_bad_inputs(data_dir):
    specimen, settings = _scene(data_dir)
    mapped = _as_map(settings, 1.0)
    positions = specimen.atoms.positions_a.clone().requires_grad_(True)
    wants_grad = dataclasses.replace(specimen, atoms=specimen.atoms._replace_positions(positions))
    with pytest.raises(ValueError, match="no gradient wrt the atoms"):
        pot.projected_potential(wants_grad, mapped)
    with pytest.raises(ValueError, match="map_voxel_a must not exceed sampling_a"):
        _as_map(settings, 3.0)
    with pytest.raises(ValueError, match="map_voxel_a must be"):
        _as_map(settings, -1.0)
    with pytest.raises(ValueError, match="particle_representation must be one of"):
        dataclasses.replace(settings, particle_representation="voxels")
    maps = pot.ParticleMaps(specimen, mapped)
    with pytest.raises(ValueError, match="particle_representation is 'atoms'"):
        pot.projected_potential(specimen, settings, coefficients=maps)
    with pytest.raises(ValueError, match="particle maps were computed for other"):
        pot.projected_potential(specimen, _as_map(settings, 0.5), coefficients=maps)
    with pytest.raises(MemoryError, match="map_voxel_a"):
        pot.ParticleMaps(specimen, _as_map(settings, 0.005))  # 1e13 bytes


def test_map_bytes_grows_as_the_voxel_cubed():
    a = maps_module.map_bytes(100.0, 2.0, torch.float32)
    b = maps_module.map_bytes(100.0, 1.0, torch.float32)
    assert 7.5 < b / a < 8.5


@pytest.mark.cuda
def test_map_projection_cuda_matches_cpu(data_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    specimen, settings = _scene(data_dir)
    mapped = _as_map(settings, 1.0)
    cpu = pot.projected_potential(specimen, mapped)
    moved = dataclasses.replace(
        specimen,
        atoms=specimen.atoms.to(device="cuda"),
        slab_center_a=specimen.slab_center_a.cuda(), slab_normal=specimen.slab_normal.cuda(),
        particle_centers_a=specimen.particle_centers_a.cuda(),
        particle_radii_a=specimen.particle_radii_a.cuda(),
        particle_rotations=specimen.particle_rotations.cuda(),
    )  # fmt: skip
    gpu = pot.projected_potential(moved, mapped).cpu()
    assert float((gpu - cpu).abs().max()) < 1e-9 * float(cpu.abs().max())


# --- the Taichi kernels of the map path against their torch references ----------------------
from tem_core._taichi import taichi_available  # noqa: E402
from tem_core.potential import kaiser_bessel as kb  # noqa: E402

requires_taichi_cpu = pytest.mark.skipif(
    not taichi_available() or torch.cuda.is_available(),
    reason="needs Taichi on the CPU (the CPU tensors of these tests)",
)


def _random_grid(big, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    grid = torch.randn((big, big, big), generator=g, dtype=cdtype)
    return torch.cat([grid, grid[..., : kb.KB_WIDTH - 1]], dim=-1).reshape(-1)


@requires_taichi_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kb_gather_kernel_matches_torch_reference(dtype):
    big = 12
    flat = _random_grid(big, dtype)
    g = torch.Generator().manual_seed(1)
    # points inside and outside [0, big) on every axis (periodic), some on grid nodes
    coords = [(torch.rand(500, generator=g, dtype=torch.float64) - 0.5) * 3 * big
              for _ in range(3)]  # fmt: skip
    coords[0][:10] = torch.arange(10, dtype=torch.float64) - 3.0
    ref = kb.kb_interpolate(flat, big, coords)
    out = kb.kb_gather(flat, big, coords, use_taichi=True)
    assert out.dtype == ref.dtype
    # measured: 9.6e-8 (float32) and 2.2e-16 (float64) of the largest value
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert float((out - ref).abs().max()) < tol * float(ref.abs().max())
    assert torch.equal(kb.kb_gather(flat, big, coords, use_taichi=False), ref)


@requires_taichi_cpu
def test_kb_gather_backward_is_the_adjoint():
    big = 6
    flat = _random_grid(big, torch.float64).requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    coords = [torch.rand(7, generator=g, dtype=torch.float64) * big for _ in range(3)]
    assert torch.autograd.gradcheck(
        lambda f: kb.KBGatherFunction.apply(f, big, *coords), (flat,), eps=1e-6, atol=1e-8
    )
    with pytest.raises(ValueError, match="coords of kb_gather must not require grad"):
        kb.KBGatherFunction.apply(flat, big, *[c.requires_grad_(True) for c in coords])


@requires_taichi_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_map_kernels_match_the_torch_path(data_dir, dtype):
    # the Taichi gather and ray march (default on the CPU) against the torch twins
    # (backend="torch"): projections and slices equal within rounding (measured, of the
    # maximum: float32 1.4e-7 and 2.4e-7, float64 3.9e-16 and 1.4e-15)
    specimen, settings = _scene(data_dir, dtype=dtype, solvent=True, slice_a=20.0)
    mapped = _as_map(settings, 0.5)
    twin = dataclasses.replace(mapped, backend="torch")
    maps, maps_twin = pot.ParticleMaps(specimen, mapped), pot.ParticleMaps(specimen, twin)
    assert maps.types[0].use_taichi and not maps_twin.types[0].use_taichi
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for theta in (0.0, 35.0, -60.0):
        tilted = tilt_specimen(specimen, tilt_angle_rad=math.radians(theta))
        a = pot.projected_potential(tilted, mapped, coefficients=maps)
        b = pot.projected_potential(tilted, twin, coefficients=maps_twin)
        assert float((a - b).abs().max()) < tol * float(b.abs().max())
        sa = torch.stack(list(pot.iter_slice_potentials(tilted, mapped, coefficients=maps)))
        sb = torch.stack(list(pot.iter_slice_potentials(tilted, twin, coefficients=maps_twin)))
        assert float((sa - sb).abs().max()) < tol * float(sb.abs().max())


@requires_taichi_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_march_skips_leave_the_sums_bitwise_the_same(dtype):
    # the march skips samples whose taps are all zero (busy_blocks' flags and ball): the sums
    # equal those of a march that reads every sample, bit for bit; a sparse map with a blob
    # and non-zero voxels on its faces, rays in and around it
    from tem_core.potential.map_kernels import busy_blocks, split_cumulative

    g = torch.Generator().manual_seed(3)
    n = 12
    coarse = torch.zeros((2, n, n, n), dtype=dtype)
    coarse[:, 4:8, 3:9, 5:8] = torch.randn((2, 4, 6, 3), generator=g, dtype=dtype)
    coarse[0, 0, 5, 5], coarse[1, 6, n - 1, 2], coarse[0, 3, 4, 0] = 1.0, -2.0, 0.5
    flags, ball = busy_blocks(coarse)
    assert flags.shape == ((n - 1) ** 3,) and 0 < int(flags.sum()) < (n - 1) ** 3
    every = (torch.ones_like(flags), torch.tensor([0.0, 0.0, 0.0, 1e9], dtype=torch.float64))
    last = coarse.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)  # as maps.py keeps it
    for _ in range(4):
        q = torch.linalg.qr(torch.randn((3, 3), generator=g, dtype=torch.float64))[0]
        steps = [q[axis] * (3.0 / n) for axis in range(3)]  # 1.5 voxels
        g0 = torch.rand(3, generator=g, dtype=torch.float64) * 0.2 - 7.5 * sum(steps)
        j = torch.tensor([0, 3, 7, 12, 15])
        w = torch.rand(5, generator=g, dtype=torch.float64).to(dtype)
        args = (g0, steps, (16, 16), j, w, True)
        skipped = split_cumulative(last, *args, busy=(flags, ball))
        full = split_cumulative(coarse, *args, busy=every)
        made = split_cumulative(coarse, *args)  # flags made from the map
        twin = split_cumulative(coarse, g0, steps, (16, 16), j, w, False)
        for a, b, c, t in zip(skipped, full, made, twin, strict=True):
            assert torch.equal(a, b) and torch.equal(a, c)
            assert float((a - t).abs().max()) <= 1e-5 * float(t.abs().max())
        assert float(full[1].abs().min()) == 0.0 < float(full[1].abs().max())  # rays miss, hit
    # a beam step of 1e-12 voxel: the ray's interval in the ball is huge (clamped, not cast)
    steps = [torch.tensor(v, dtype=torch.float64) * (3.0 / n)
             for v in ([1.0, 0, 0], [0, 1.0, 0], [0, 0, 1e-12])]  # fmt: skip
    g0 = torch.tensor([-0.9, -0.9, -0.1], dtype=torch.float64)
    j, w = torch.tensor([0, 2, 5]), torch.full((3,), 0.5, dtype=dtype)
    skipped = split_cumulative(last, g0, steps, (16, 6), j, w, True, busy=(flags, ball))
    full = split_cumulative(coarse, g0, steps, (16, 6), j, w, True, busy=every)
    assert all(torch.equal(a, b) for a, b in zip(skipped, full, strict=True))
