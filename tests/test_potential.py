"""Tests of tem_core.potential: Peng 1996 atoms per slice, ice, carbon, absorption."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tem_core import potential as pot
from tem_core import units
from tem_core._taichi import taichi_available
from tem_core.potential import kernels
from tem_core.potential.kernels import GaussianSplatFunction, SplatFunction
from tem_core.specimen import IceSlab, Specimen, tilt_specimen
from tem_core.structure import AtomicModel, read_structure

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Taichi runs on one architecture per process: CUDA when torch sees a GPU. The CPU-tensor Taichi
# tests below therefore run on CPU-only machines (CI); on a GPU machine the CUDA parity tests cover
# the same kernels.
requires_taichi = pytest.mark.skipif(
    not taichi_available() or torch.cuda.is_available(),
    reason="taichi not importable, or Taichi runs on CUDA in this process (see CUDA parity tests)",
)
F64 = torch.float64


def _random_atoms(n, *, seed=0, box=(20.0, 20.0, 10.0), dtype=F64, z_max=98):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=F64) * torch.tensor(box, dtype=F64)
    z = torch.randint(1, z_max + 1, (n,), generator=g)
    b = torch.rand(n, generator=g, dtype=F64) * 40.0
    occ = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=F64)
    return z, pos.to(dtype), b.to(dtype), occ.to(dtype)


def _peng_sum_v_a3(z: int) -> float:
    a, _ = pot.peng_coefficients()
    return units.PENG_PREFACTOR_V_A2 * float(a[z].sum())


def _specimen(atoms=None, *, extent=(48.0, 40.0), thickness=60.0, hole=None, support="carbon"):
    if atoms is None:
        atoms = AtomicModel(
            atomic_numbers=torch.zeros(0, dtype=torch.int64),
            positions_a=torch.zeros(0, 3, dtype=F64),
            b_factors_a2=torch.zeros(0, dtype=F64),
            occupancies=torch.zeros(0, dtype=F64),
        )
    lx, ly = extent
    return Specimen(
        atoms=atoms,
        extent_a=extent,
        ice=IceSlab(
            thickness_a=thickness, hole_diameter_a=hole, support=support, support_thickness_a=100.0
        ),
        slab_center_a=torch.tensor([lx / 2, ly / 2, thickness / 2], dtype=F64),
        slab_normal=torch.tensor([0.0, 0.0, 1.0], dtype=F64),
        particle_centers_a=torch.zeros(0, 3, dtype=F64),
        particle_radii_a=torch.zeros(0, dtype=F64),
        particle_rotations=torch.zeros(0, 3, 3, dtype=F64),
    )


# ----------------------------------------------------------------------------- one atom
@pytest.mark.parametrize("backend", ["torch", pytest.param("taichi", marks=requires_taichi)])
@pytest.mark.parametrize("z", [1, 6, 8, 16, 29, 79, 98])
@pytest.mark.parametrize("b_factor", [0.0, 25.0, 120.0])
def test_plane_integral_of_one_atom_is_c_sum_a(backend, z, b_factor):
    # ∫∫ V_z dx dy = C Σ a_i (physics.md; carbon 120.115 V·Å³), B-factor does not change it;
    # the window truncation loses at most cutoff_tolerance = 1e-4 of it.
    s = 0.45
    v = pot.slice_potential(
        torch.tensor([z]),
        torch.tensor([[11.13, 9.71, 0.37]], dtype=F64),
        torch.tensor([b_factor], dtype=F64),
        torch.ones(1, dtype=F64),
        z0_a=-60.0,
        z1_a=60.0,
        shape=(50, 52),
        sampling_a=s,
        backend=backend,
    )
    rel = float(v.sum()) * s * s / _peng_sum_v_a3(z) - 1.0
    assert -1e-4 < rel <= 1e-12


def test_carbon_peng_integral_reference_value():
    assert _peng_sum_v_a3(6) == pytest.approx(120.115, abs=1e-3)  # physics.md


def test_occupancy_weights_and_pixel_average_of_narrow_atom():
    # A pixel-averaged projection is the plane integral / s² when the atom fits a pixel.
    args = dict(z0_a=-30.0, z1_a=30.0, shape=(16, 16), sampling_a=8.0, backend="torch")
    pos = torch.tensor([[36.0, 36.0, 0.0]], dtype=F64)  # centre of pixel (4, 4)
    full = pot.slice_potential(
        torch.tensor([6]), pos, torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64), **args
    )
    half = pot.slice_potential(
        torch.tensor([6]), pos, torch.zeros(1, dtype=F64), torch.full((1,), 0.5, dtype=F64), **args
    )
    assert torch.allclose(half, 0.5 * full, rtol=1e-13, atol=0)
    assert float(full[4, 4]) == pytest.approx(_peng_sum_v_a3(6) / 64.0, rel=2e-3)


# ----------------------------------------------------------------------------- slicing
def test_slices_sum_to_single_slice_projection():
    z, pos, b, occ = _random_atoms(40, box=(16.0, 14.0, 24.0))
    common = dict(shape=(20, 18), sampling_a=0.8, backend="torch")
    whole = pot.slice_potential(z, pos, b, occ, z0_a=-12.0, z1_a=36.0, **common)
    edges = torch.linspace(-12.0, 36.0, 13, dtype=F64).tolist()
    parts = sum(
        pot.slice_potential(z, pos, b, occ, z0_a=a, z1_a=c, **common)
        for a, c in zip(edges[:-1], edges[1:], strict=True)
    )
    assert torch.allclose(parts, whole, rtol=1e-12, atol=1e-10)


def test_streamed_slices_match_direct_projection_and_cover_atoms():
    z, pos, b, occ = _random_atoms(60, box=(30.0, 30.0, 40.0), seed=3)
    atoms = AtomicModel(
        atomic_numbers=z,
        positions_a=pos + torch.tensor([4.0, 4.0, 10.0], dtype=F64),
        b_factors_a2=b,
        occupancies=occ,
    )
    specimen = _specimen(atoms, extent=(40.0, 40.0), thickness=60.0)
    settings = pot.PotentialSettings(
        shape=(40, 40),
        sampling_a=1.0,
        slice_thickness_a=7.0,
        include_solvent=False,
        absorption=False,
        backend="torch",
    )
    edges = pot.slice_edges_a(specimen, settings)
    slices = list(pot.iter_slice_potentials(specimen, settings))
    assert len(slices) == edges.numel() - 1 and all(sl.dtype == torch.complex128 for sl in slices)
    assert torch.allclose(torch.diff(edges), torch.full((edges.numel() - 1,), 7.0, dtype=F64))
    direct = pot.slice_potential(
        atoms.atomic_numbers,
        atoms.positions_a,
        b,
        occ,
        z0_a=-100.0,
        z1_a=200.0,
        shape=(40, 40),
        sampling_a=1.0,
        backend="torch",
    )
    total = pot.projected_potential(specimen, settings)
    assert float(total.imag.abs().max()) == 0.0
    assert torch.allclose(total.real, direct, rtol=0, atol=1e-4 * float(direct.max()))


# ----------------------------------------------------------------------------- gradients, parity
def test_gradcheck_torch_twin():
    z, pos, b, occ = _random_atoms(3, box=(5.0, 5.0, 4.0), seed=1)
    pos, b, occ = (t.clone().requires_grad_(True) for t in (pos, b, occ))

    def f(p, bb, o):
        return pot.slice_potential(
            z, p, bb, o, z0_a=0.5, z1_a=3.0, shape=(8, 9), sampling_a=0.7, backend="torch"
        )

    assert torch.autograd.gradcheck(f, (pos, b, occ), eps=1e-6, atol=1e-7, rtol=1e-5)


@requires_taichi
def test_gradcheck_taichi_function_float64():
    g = torch.Generator().manual_seed(2)
    n, k, win, ny, nx = 5, 3, 4, 6, 7
    w = torch.rand(n, k, generator=g, dtype=F64, requires_grad=True)
    dx = torch.rand(n, k, win, generator=g, dtype=F64, requires_grad=True)
    dy = torch.rand(n, k, win, generator=g, dtype=F64, requires_grad=True)
    ky0, _ = torch.sort(torch.randint(0, ny, (n,), generator=g))
    kx0 = torch.randint(0, nx, (n,), generator=g)
    wins = torch.randint(1, win + 1, (n,), generator=g)
    f = lambda a, b_, c: SplatFunction.apply(a, b_, c, kx0, ky0, wins, ny, nx)  # noqa: E731
    assert torch.autograd.gradcheck(f, (w, dx, dy), eps=1e-6, atol=1e-8)


@requires_taichi
@pytest.mark.parametrize("periodic", [True, False])
def test_taichi_gradients_match_torch_twin(periodic):
    z, pos, b, occ = _random_atoms(30, box=(12.0, 12.0, 6.0), seed=4)
    weight = torch.rand(14, 15, generator=torch.Generator().manual_seed(5), dtype=F64)
    grads = []
    for backend in ("torch", "taichi"):
        p, bb, o = (t.clone().requires_grad_(True) for t in (pos, b, occ))
        v = pot.slice_potential(
            z,
            p,
            bb,
            o,
            z0_a=1.0,
            z1_a=4.0,
            shape=(14, 15),
            sampling_a=0.75,
            backend=backend,
            periodic=periodic,
        )
        (v * weight).sum().backward()
        grads.append((v.detach(), p.grad, bb.grad, o.grad))
    for a, c in zip(*grads, strict=True):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)


@requires_taichi
def test_taichi_float32_matches_float64_torch_to_rounding():
    z, pos, b, occ = _random_atoms(400, box=(40.0, 40.0, 10.0), seed=6)
    common = dict(z0_a=2.0, z1_a=8.0, shape=(48, 44), sampling_a=0.9)
    ref = pot.slice_potential(z, pos, b, occ, backend="torch", **common)
    f32 = [t.float() for t in (pos, b, occ)]
    fast = pot.slice_potential(z, *f32, backend="taichi", **common)
    assert fast.dtype == torch.float32
    assert float((fast.double() - ref).abs().max()) < 2e-6 * float(ref.abs().max())


@requires_taichi
def test_taichi_forward_is_deterministic():
    z, pos, b, occ = _random_atoms(2000, box=(30.0, 30.0, 10.0), seed=7, dtype=torch.float32)
    common = dict(z0_a=0.0, z1_a=10.0, shape=(32, 32), sampling_a=1.0, backend="taichi")
    first = pot.slice_potential(z, pos, b, occ, **common)
    assert torch.equal(first, pot.slice_potential(z, pos, b, occ, **common))


def _fused_inputs(n, *, seed, ny, nx, sampling_a, dtype=F64, device="cpu", chunk=None):
    """Random atoms prepared for :class:`GaussianSplatFunction` as ``project_gaussians`` does."""
    z, pos, b, occ = _random_atoms(n, seed=seed, box=(nx * sampling_a, ny * sampling_a, 4.0))
    amp, wid, rad = pot._atom_gaussians(z, b, occ, F64, 1e-4)
    w, scale = kernels._weights_and_scale(pos, amp, wid, 0.5, 3.0, sampling_a)
    wins = kernels.window_size_px(rad, sampling_a)
    kx0 = torch.floor((pos[:, 0] - rad) / sampling_a).long()
    ky0 = torch.floor((pos[:, 1] - rad) / sampling_a).long()
    rx = kx0.to(F64) * sampling_a - pos[:, 0]
    ry = ky0.to(F64) * sampling_a - pos[:, 1]
    win_max = int(wins.max())
    cast = dict(device=device, dtype=dtype)
    w, scale, rx, ry = (t.detach().to(**cast) for t in (w, scale, rx, ry))
    chunk = nx if chunk is None else chunk
    order, cell_start, _ = kernels._cell_buckets(kx0 % nx, ky0 % ny, ny, nx, chunk)
    ints = [t[order].to(device=device, dtype=torch.int32) for t in (kx0 % nx, ky0 % ny, wins)]
    floats = [t[order.to(device)].contiguous() for t in (w, scale, rx, ry)]
    static = (cell_start.to(device), ny, nx, sampling_a, win_max, chunk)
    return floats, ints, static, (kx0[order], ky0[order], win_max)


def _fused_torch_twin(w, scale, rx, ry, kx0, ky0, win_max, ny, nx, sampling_a, wins):
    """Torch twin of GaussianSplatFunction: erf edge fractions, masked window, index_add."""
    edges = torch.arange(win_max + 1, dtype=rx.dtype) * sampling_a
    inside = (torch.arange(win_max) < wins[:, None].long())[:, None, :]

    def fractions(rel):
        return 0.5 * torch.diff(torch.special.erf(scale[:, :, None] * rel[:, None]), dim=2)

    fx, fy = fractions(rx[:, None] + edges), fractions(ry[:, None] + edges)
    return kernels.splat_torch(w, fx * inside, fy * inside, kx0 % nx, ky0 % ny, wins, ny, nx)


@requires_taichi
def test_fused_erf_splat_matches_torch_twin_and_gradients():
    """Edge fractions from the kernel's erf table (float64: Taylor truncation < 1e-16)."""
    ny, nx, s = 11, 13, 0.8
    floats, ints, static, (kx0, ky0, win_max) = _fused_inputs(12, seed=3, ny=ny, nx=nx,
                                                                 sampling_a=s)  # fmt: skip
    w, scale, rx, ry = (t.clone().requires_grad_(True) for t in floats)
    fast = GaussianSplatFunction.apply(w, scale, rx, ry, *ints, *static)
    ref_in = [t.detach().clone().requires_grad_(True) for t in floats]
    ref = _fused_torch_twin(*ref_in, kx0, ky0, win_max, ny, nx, s, ints[2])
    # measured: 4e-16 of the maximum (float64 rounding of sums of ~100 terms)
    assert float((fast - ref).detach().abs().max()) < 1e-14 * float(ref.detach().abs().max())
    weight = torch.rand(ny, nx, generator=torch.Generator().manual_seed(4), dtype=F64)
    (fast * weight).sum().backward()
    (ref * weight).sum().backward()
    for mine, theirs in zip((w, scale, rx, ry), ref_in, strict=True):
        scale_ = float(theirs.grad.abs().max())
        assert float((mine.grad - theirs.grad).abs().max()) < 1e-13 * scale_
    small = _fused_inputs(3, seed=5, ny=6, nx=7, sampling_a=1.1)
    f = lambda *a: GaussianSplatFunction.apply(*a, *small[1], *small[2])  # noqa: E731
    args = [t.clone().requires_grad_(True) for t in small[0]]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8)


@requires_taichi
def test_fused_erf_float32_is_float32_rounding():
    ny, nx, s = 40, 36, 0.9
    f64 = _fused_inputs(300, seed=6, ny=ny, nx=nx, sampling_a=s)
    f32 = _fused_inputs(300, seed=6, ny=ny, nx=nx, sampling_a=s, dtype=torch.float32)
    ref = GaussianSplatFunction.apply(*f64[0], *f64[1], *f64[2])
    fast = GaussianSplatFunction.apply(*f32[0], *f32[1], *f32[2])
    # inputs rounded to float32 (positions near 40 Å: 2e-6 Å) and float32 sums: measured 4e-7
    assert float((fast.double() - ref).abs().max()) < 2e-6 * float(ref.abs().max())


@requires_taichi
@pytest.mark.parametrize("chunk", [1, 4, 5, 13])
def test_column_chunked_splat_visits_every_atom_once(chunk):
    """The CUDA layout (a thread per row and column chunk, atoms bucketed by both) on the CPU."""
    ny, nx, s = 11, 13, 0.8
    whole = _fused_inputs(40, seed=9, ny=ny, nx=nx, sampling_a=s)
    parts = _fused_inputs(40, seed=9, ny=ny, nx=nx, sampling_a=s, chunk=chunk)
    ref = GaussianSplatFunction.apply(*whole[0], *whole[1], *whole[2])
    out = GaussianSplatFunction.apply(*parts[0], *parts[1], *parts[2])
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-13 * float(ref.abs().max()))
    g = torch.Generator().manual_seed(10)
    n, k, win = 30, 3, 9
    dx, dy = torch.rand(n, k, win, generator=g, dtype=F64), torch.rand(n, k, win, generator=g,
                                                                        dtype=F64)  # fmt: skip
    w = torch.rand(n, k, generator=g, dtype=F64)
    kx0, ky0 = torch.randint(0, nx, (n,), generator=g), torch.randint(0, ny, (n,), generator=g)
    wins = torch.randint(1, win + 1, (n,), generator=g)
    inside = (torch.arange(win) < wins[:, None])[:, None, :]
    dx, dy = dx * inside, dy * inside
    ref = kernels.splat_torch(w, dx, dy, kx0, ky0, wins, ny, nx)
    out = kernels.splat_taichi(w, dx, dy, kx0, ky0, wins, ny, nx, chunk=chunk)
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-13 * float(ref.abs().max()))


@requires_cuda
def test_cuda_fused_splat_and_gradients_match_cpu_twin():
    ny, nx, s = 70, 90, 0.8  # 3 column chunks of 32
    cpu = _fused_inputs(500, seed=11, ny=ny, nx=nx, sampling_a=s)
    gpu = _fused_inputs(500, seed=11, ny=ny, nx=nx, sampling_a=s, device="cuda",
                        chunk=kernels.CUDA_COLUMN_CHUNK)  # fmt: skip
    (kx0, ky0, win_max) = cpu[3]
    ref_in = [t.clone().requires_grad_(True) for t in cpu[0]]
    ref = _fused_torch_twin(*ref_in, kx0, ky0, win_max, ny, nx, s, cpu[1][2])
    gpu_in = [t.clone().requires_grad_(True) for t in gpu[0]]
    out = GaussianSplatFunction.apply(*gpu_in, *gpu[1], *gpu[2])
    assert float((out.cpu() - ref).abs().max()) < 1e-12 * float(ref.abs().max())
    weight = torch.rand(ny, nx, generator=torch.Generator().manual_seed(12), dtype=F64)
    (ref * weight).sum().backward()
    (out * weight.cuda()).sum().backward()
    for mine, theirs in zip(gpu_in, ref_in, strict=True):
        scale_ = float(theirs.grad.abs().max())
        assert float((mine.grad.cpu() - theirs.grad).abs().max()) < 1e-11 * scale_


@requires_cuda
def test_cuda_gradients_match_cpu():
    z, pos, b, occ = _random_atoms(200, box=(30.0, 30.0, 6.0), seed=13)
    weight = torch.rand(40, 36, generator=torch.Generator().manual_seed(14), dtype=F64)
    common = dict(z0_a=1.0, z1_a=4.0, shape=(40, 36), sampling_a=0.75)
    grads = []
    for device, backend in (("cpu", "torch"), ("cuda", "auto")):
        p, bb, o = (t.to(device).clone().requires_grad_(True) for t in (pos, b, occ))
        v = pot.slice_potential(z.to(device), p, bb, o, backend=backend, **common)
        (v * weight.to(device)).sum().backward()
        grads.append([t.detach().cpu() for t in (v, p.grad, bb.grad, o.grad)])
    for a, c in zip(*grads, strict=True):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-10 * float(c.abs().max()))


@requires_cuda
def test_cuda_matches_cpu():
    z, pos, b, occ = _random_atoms(300, seed=8, dtype=torch.float32)
    common = dict(z0_a=0.0, z1_a=10.0, shape=(32, 32), sampling_a=0.7)
    cpu = pot.slice_potential(z, pos, b, occ, backend="torch", **common)
    gpu = pot.slice_potential(z.cuda(), pos.cuda(), b.cuda(), occ.cuda(), **common)
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5 * float(cpu.max()))


# ----------------------------------------------------------------------------- errors
def _call(**over):
    z, pos, b, occ = _random_atoms(2)
    kwargs = dict(
        atomic_numbers=z,
        positions_a=pos,
        b_factors_a2=b,
        occupancies=occ,
        z0_a=0.0,
        z1_a=5.0,
        shape=(8, 8),
        sampling_a=1.0,
        backend="torch",
    )
    kwargs.update(over)
    return pot.slice_potential(
        kwargs.pop("atomic_numbers"),
        kwargs.pop("positions_a"),
        kwargs.pop("b_factors_a2"),
        kwargs.pop("occupancies"),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("over", "exc", "match"),
    [
        (
            dict(positions_a=torch.tensor([[0.0, 0, 0], [math.nan, 0, 0]], dtype=F64)),
            ValueError,
            "positions_a must be finite, got nan Å",
        ),
        (
            dict(positions_a=torch.tensor([[0.0, 0, 0], [math.inf, 0, 0]], dtype=F64)),
            ValueError,
            "positions_a must be finite",
        ),
        (
            dict(atomic_numbers=torch.tensor([6, 0])),
            ValueError,
            r"atomic_numbers must lie in \[1, 98\], got 0",
        ),
        (
            dict(atomic_numbers=torch.tensor([6, 99])),
            ValueError,
            r"atomic_numbers must lie in \[1, 98\], got 99",
        ),
        (
            dict(atomic_numbers=torch.tensor([6.0, 7.0])),
            TypeError,
            "atomic_numbers must be an integer",
        ),
        (
            dict(b_factors_a2=torch.tensor([1.0, -2.0], dtype=F64)),
            ValueError,
            "b_factors_a2 must be >= 0, got -2.0 Å²",
        ),
        (
            dict(occupancies=torch.tensor([1.0, 1.5], dtype=F64)),
            ValueError,
            r"occupancies must lie in \[0, 1\]",
        ),
        (
            dict(positions_a=torch.zeros(2, 2, dtype=F64)),
            ValueError,
            r"positions_a must have shape \(N, 3\)",
        ),
        (
            dict(b_factors_a2=torch.zeros(3, dtype=F64)),
            ValueError,
            r"b_factors_a2 must have shape \(2,\)",
        ),
        (dict(positions_a=[[0.0, 0, 0]] * 2), TypeError, "positions_a must be a torch.Tensor"),
        (dict(sampling_a=0.0), ValueError, "sampling_a must be > 0, got 0.0 Å"),
        (dict(sampling_a=-1.0), ValueError, "sampling_a must be > 0"),
        (dict(z1_a=0.0), ValueError, "z1_a must be > z0_a"),
        (dict(z0_a=math.nan), ValueError, "z0_a must"),
        (dict(shape=(8, 0)), ValueError, r"shape \(nx\) must be a positive integer, got 0"),
        (dict(shape=(8,)), ValueError, r"shape must be a pair \(ny, nx\)"),
        (dict(backend="cupy"), ValueError, "backend must be 'auto', 'taichi' or 'torch'"),
    ],
)
def test_bad_inputs_raise_clear_errors(over, exc, match):
    with pytest.raises(exc, match=match):
        _call(**over)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        (dict(slice_thickness_a=0.0), "slice_thickness_a must be > 0, got 0.0 Å"),
        (dict(slice_thickness_a=-5.0), "slice_thickness_a must be > 0"),
        (dict(sampling_a=math.inf), "sampling_a must be finite"),
        (dict(shape=(0, 4)), r"shape \(ny\) must be a positive integer, got 0"),
        (dict(cutoff_tolerance=0.5), "cutoff_tolerance must lie in"),
        (dict(backend="gpu"), "backend must be"),
        (dict(ice_potential_v=-1.0), "ice_potential_v must be >= 0"),
        (dict(energy_ev=0.0), "energy_ev must be > 0"),
        (dict(atom_absorption_fraction=2.0), "atom_absorption_fraction must lie in"),
    ],
)
def test_bad_settings_raise(over, match):
    kwargs = dict(shape=(8, 8), sampling_a=1.0, slice_thickness_a=5.0) | over
    with pytest.raises(ValueError, match=match):
        pot.PotentialSettings(**kwargs)


def test_iter_rejects_wrong_settings_type():
    with pytest.raises(TypeError, match="settings must be a PotentialSettings"):
        next(pot.iter_slice_potentials(_specimen(), {"shape": (8, 8)}))


# ----------------------------------------------------------------------------- solvent
def test_ice_and_carbon_mean_inner_potentials():
    # C (Σa_O + 2 Σa_H) = 47.8776 × (1.9834 + 2 × 0.5288) = 145.60 V·Å³ per molecule.
    per_molecule = units.PENG_PREFACTOR_V_A2 * (1.9834 + 2 * 0.5288)
    assert pot.ICE_MOLECULES_PER_A3 == pytest.approx(0.031422, rel=1e-4)  # 0.94 g/cm³
    assert pot.ICE_MEAN_INNER_POTENTIAL_V == pytest.approx(per_molecule * 0.031422, rel=1e-4)
    assert pot.ICE_MEAN_INNER_POTENTIAL_V == pytest.approx(4.575, abs=2e-3)
    # TEM-simulator: 33.5 molecules/nm³ gives 4.88 V; carbon support 12.0 V (2.0 g/cm³ here).
    assert pot.mean_inner_potential_v({8: 1, 1: 2}, 33.5 / units.NM3_TO_A3) == pytest.approx(
        4.88, abs=0.01
    )
    assert pot.CARBON_MEAN_INNER_POTENTIAL_V == pytest.approx(12.0, abs=0.1)
    # Absorption: V' = 1/(2σΛ) = 1/(2 × 6.5262e-4 × 3500) = 0.2189 V at 300 kV.
    settings = pot.PotentialSettings(shape=(4, 4), sampling_a=1.0, slice_thickness_a=1.0)
    assert settings.ice_absorption_v() == pytest.approx(0.21890, rel=1e-3)
    assert pot.inelastic_mean_free_path_a(3500.0, 200e3) < 3500.0


@pytest.mark.parametrize("backend", ["torch", pytest.param("auto", marks=requires_taichi)])
def test_ice_slab_without_particles_is_v_ice_times_thickness(backend):
    specimen = _specimen(extent=(40.0, 48.0), thickness=250.0)  # (Lx, Ly) = (nx, ny) * 4 Å
    settings = pot.PotentialSettings(
        shape=(12, 10), sampling_a=4.0, slice_thickness_a=30.0, backend=backend
    )
    slices = list(pot.iter_slice_potentials(specimen, settings))
    assert len(slices) == 9  # ceil(250 / 30)
    total = sum(slices)
    assert torch.allclose(
        total.real, torch.full((12, 10), pot.ICE_MEAN_INNER_POTENTIAL_V * 250.0, dtype=F64)
    )
    assert torch.allclose(
        total.imag, torch.full((12, 10), settings.ice_absorption_v() * 250.0, dtype=F64)
    )


def test_hole_in_carbon_film_and_vacuum_support():
    specimen = _specimen(extent=(200.0, 200.0), thickness=80.0, hole=122.0)
    settings = pot.PotentialSettings(shape=(50, 50), sampling_a=4.0, slice_thickness_a=25.0)
    total = pot.projected_potential(specimen, settings).real
    assert float(total[25, 25]) == pytest.approx(pot.ICE_MEAN_INNER_POTENTIAL_V * 80.0, rel=1e-9)
    assert float(total[0, 0]) == pytest.approx(pot.CARBON_MEAN_INNER_POTENTIAL_V * 100.0, rel=1e-9)
    edge = total[25, 40]  # pixel centre 62 Å from the axis, 1 Å outside the hole: smoothed edge
    assert (
        pot.ICE_MEAN_INNER_POTENTIAL_V * 80.0
        < float(edge)
        < pot.CARBON_MEAN_INNER_POTENTIAL_V * 100.0
    )
    vacuum = pot.projected_potential(
        _specimen(extent=(200.0, 200.0), thickness=80.0, hole=122.0, support="vacuum"), settings
    )
    assert float(vacuum[0, 0].abs()) == 0.0


def test_tilted_slab_is_thicker_along_the_beam():
    theta = math.radians(30.0)
    specimen = tilt_specimen(
        _specimen(extent=(100.0, 100.0), thickness=100.0), tilt_angle_rad=theta
    )
    settings = pot.PotentialSettings(shape=(25, 25), sampling_a=4.0, slice_thickness_a=20.0)
    total = pot.projected_potential(specimen, settings).real
    assert torch.allclose(
        total, torch.full_like(total, pot.ICE_MEAN_INNER_POTENTIAL_V * 100.0 / math.cos(theta))
    )


def test_excluded_volume_removes_ice_inside_a_particle(data_dir):
    model = read_structure(data_dir / "1crn.pdb.gz", dtype=torch.float64).centered()
    volume = float(pot.displaced_volumes_a3(model.atomic_numbers).sum())
    # Partial specific volume 0.73 cm³/g × 4730 Da (crambin with H) = 5734 Å³;
    # van der Waals spheres of the heavy atoms: 6103 Å³.
    assert volume == pytest.approx(5734.0, rel=0.08)
    atoms = model.transformed(
        torch.eye(3, dtype=model.positions_a.dtype),
        torch.tensor([32.0, 32.0, 40.0], dtype=model.positions_a.dtype),
    )
    specimen = _specimen(atoms, extent=(64.0, 64.0), thickness=80.0)
    base = dict(shape=(64, 64), sampling_a=1.0, slice_thickness_a=10.0, absorption=False)
    with_ex = pot.projected_potential(specimen, pot.PotentialSettings(**base)).real
    without = pot.projected_potential(
        specimen, pot.PotentialSettings(**base, exclude_solvent=False)
    ).real
    removed = float((without - with_ex).sum())  # [V·Å] per pixel area 1 Å²
    assert 0.9 < removed / (pot.ICE_MEAN_INNER_POTENTIAL_V * volume) <= 1.0 + 1e-6
    assert (
        float(with_ex[32, 32])
        < float(without[32, 32]) - 0.5 * pot.ICE_MEAN_INNER_POTENTIAL_V * 20.0
    )
    assert float(with_ex[1, 1]) == pytest.approx(pot.ICE_MEAN_INNER_POTENTIAL_V * 80.0, rel=1e-6)


# ----------------------------------------------------------------------------- tilt-series reuse
def _tilted_crambin(data_dir, theta_deg=35.0):
    model = read_structure(data_dir / "1crn.pdb.gz", dtype=torch.float64).centered()
    atoms = model.transformed(
        torch.eye(3, dtype=model.positions_a.dtype),
        torch.tensor([32.0, 32.0, 30.0], dtype=model.positions_a.dtype),
    )
    specimen = _specimen(atoms, extent=(64.0, 64.0), thickness=60.0)
    return tilt_specimen(specimen, tilt_angle_rad=math.radians(theta_deg))


@pytest.mark.parametrize("structured", [False, True])
def test_one_pass_projection_equals_sum_of_streamed_slices(data_dir, structured):
    # The atoms' slice fractions telescope, so projecting them once with the fraction
    # between their first and last slice edge equals Σ slices; the excluded-volume clamp
    # stays per slice. Measured difference in float64: 3e-16 of the maximum (summation order).
    specimen = _tilted_crambin(data_dir)
    settings = pot.PotentialSettings(
        shape=(64, 64),
        sampling_a=1.0,
        slice_thickness_a=6.0,
        backend="torch",
        ice_structure=pot.IceStructure(seed=3, n_modes=2**10) if structured else None,
    )
    streamed = sum(pot.iter_slice_potentials(specimen, settings))
    one_pass = pot.projected_potential(specimen, settings)
    scale = float(streamed.abs().max())
    assert float((one_pass - streamed).abs().max()) <= 1e-13 * scale
    # the clamp per slice matters here: one thick slice differs by 8 % (55 % with structure)
    thick = dataclasses.replace(settings, slice_thickness_a=500.0)
    assert float((pot.projected_potential(specimen, thick) - one_pass).abs().max()) > 0.05 * scale


def test_atom_coefficients_are_reused_bitwise_and_checked(data_dir):
    specimen = _tilted_crambin(data_dir, 0.0)
    settings = pot.PotentialSettings(shape=(64, 64), sampling_a=1.0, slice_thickness_a=9.0)
    coefficients = pot.AtomCoefficients(specimen, settings)
    for theta in (-50.0, 20.0):  # the same atoms, tilted: Gaussians computed once
        tilted = tilt_specimen(specimen, tilt_angle_rad=math.radians(theta))
        fresh = list(pot.iter_slice_potentials(tilted, settings))
        reused = list(pot.iter_slice_potentials(tilted, settings, coefficients=coefficients))
        assert len(fresh) == len(reused)
        assert all(torch.equal(a, b) for a, b in zip(fresh, reused, strict=True))
        assert torch.equal(
            pot.projected_potential(tilted, settings),
            pot.projected_potential(tilted, settings, coefficients=coefficients),
        )
    other = dataclasses.replace(settings, cutoff_tolerance=1e-3)
    with pytest.raises(ValueError, match="coefficients were computed for other atoms"):
        next(pot.iter_slice_potentials(specimen, other, coefficients=coefficients))
    heavier = dataclasses.replace(
        specimen,
        atoms=AtomicModel(
            atomic_numbers=specimen.atoms.atomic_numbers,
            positions_a=specimen.atoms.positions_a,
            b_factors_a2=specimen.atoms.b_factors_a2 + 10.0,
            occupancies=specimen.atoms.occupancies,
        ),
    )
    with pytest.raises(ValueError, match="coefficients were computed for other atoms"):
        pot.projected_potential(heavier, settings, coefficients=coefficients)
    with pytest.raises(TypeError, match="coefficients must be an AtomCoefficients"):
        next(pot.iter_slice_potentials(specimen, settings, coefficients="cached"))


def test_one_pass_projection_keeps_gradients(data_dir):
    z, pos, b, occ = _random_atoms(4, box=(6.0, 6.0, 9.0), seed=5)
    atoms = AtomicModel(
        atomic_numbers=z,
        positions_a=(pos + torch.tensor([3.0, 3.0, 2.0], dtype=F64)).requires_grad_(True),
        b_factors_a2=b,
        occupancies=occ,
    )
    specimen = _specimen(atoms, extent=(12.0, 12.0), thickness=14.0)
    settings = pot.PotentialSettings(
        shape=(12, 12), sampling_a=1.0, slice_thickness_a=3.0, backend="torch"
    )
    weights = torch.rand(12, 12, dtype=F64, generator=torch.Generator().manual_seed(2))

    def loss(fn):
        (g,) = torch.autograd.grad((fn(specimen, settings).real * weights).sum(), atoms.positions_a)
        return g

    streamed = loss(lambda s, p: sum(pot.iter_slice_potentials(s, p)))
    one_pass = loss(pot.projected_potential)
    assert torch.allclose(one_pass, streamed, rtol=1e-10, atol=1e-12)


def test_plain_ice_slices_on_one_line_equal_the_full_grid(data_dir, monkeypatch):
    # A slab tilted about x without a hole varies along y only: its plain-ice slices are
    # computed on one column and broadcast, bitwise equal to the full-grid computation.
    # (About y, cos(π/2) = 6e-17 leaves the normal a hair off the plane: full grid.)
    from tem_core.potential import streaming

    model = read_structure(data_dir / "1crn.pdb.gz").centered()
    atoms = model.transformed(
        torch.eye(3, dtype=model.positions_a.dtype),
        torch.tensor([32.0, 32.0, 30.0], dtype=model.positions_a.dtype),
    )
    specimen = tilt_specimen(
        _specimen(atoms, extent=(64.0, 64.0), thickness=60.0),
        tilt_angle_rad=math.radians(40.0),
    )
    settings = pot.PotentialSettings(shape=(64, 64), sampling_a=1.0, slice_thickness_a=8.0)
    fast = list(pot.iter_slice_potentials(specimen, settings))
    broadcast = [v.stride(-1) == 0 for v in fast]
    assert sum(broadcast) >= 4 and not all(broadcast)
    monkeypatch.setattr(streaming._Solvent, "line_slice", lambda self, z0, z1: None)
    full = list(pot.iter_slice_potentials(specimen, settings))
    assert all(torch.equal(a, b) for a, b in zip(fast, full, strict=True))


@pytest.mark.parametrize("support", ["carbon", "gold", "vacuum"])
@pytest.mark.parametrize("tilt_rad", [0.0, 0.6])
@pytest.mark.parametrize("edge_a", [None, 400.0])
def test_solvent_lengths_in_place_equal_the_expression_bitwise(support, tilt_rad, edge_a) -> None:
    """The in-place ice/support lengths (few heap temporaries) are the expression's bits."""
    from tem_core.potential.solvent import SolventGeometry
    from tem_core.specimen import build_specimen

    ice = IceSlab(
        thickness_a=200.0, hole_diameter_a=150.0, support=support, edge_thickness_a=edge_a
    )
    specimen = build_specimen(
        [], [], extent_a=(192.0, 160.0), ice=ice, generator=torch.Generator().manual_seed(0)
    )
    if tilt_rad:
        specimen = tilt_specimen(specimen, tilt_angle_rad=tilt_rad, tilt_axis_angle_rad=0.3)
    for dtype in (torch.float32, torch.float64):
        geometry = SolventGeometry(specimen, (80, 96), 2.0, dtype, torch.device("cpu"))
        for z0 in torch.arange(-40.0, 260.0, 37.0).tolist():
            got, want = geometry.lengths(z0, z0 + 37.0), geometry.lengths_reference(z0, z0 + 37.0)
            assert got[0].dtype == dtype and torch.equal(got[0], want[0])
            assert (got[1] is None) == (want[1] is None) == (support == "vacuum")
            if got[1] is not None:
                assert torch.equal(got[1], want[1])


def test_solvent_lengths_follow_forward_mode_tangents() -> None:
    """Geometry with a forward-mode tangent (chapter 04) takes the expression form."""
    import torch.autograd.forward_ad as fwad

    from tem_core.potential.solvent import SolventGeometry
    from tem_core.specimen import build_specimen

    ice = IceSlab(thickness_a=200.0, hole_diameter_a=150.0, support="carbon")
    specimen = build_specimen(
        [], [], extent_a=(96.0, 96.0), ice=ice, generator=torch.Generator().manual_seed(0)
    )
    geometry = SolventGeometry(specimen, (48, 48), 2.0, torch.float64, torch.device("cpu"))
    plain = geometry.lengths(-1000.0, 1000.0)  # the whole slab: d(length)/d(ice_hi) = inside
    with fwad.dual_level():
        geometry.ice_hi = fwad.make_dual(geometry.ice_hi, torch.ones_like(geometry.ice_hi))
        ice_len, carbon_len = geometry.lengths(-1000.0, 1000.0)
        primal, tangent = fwad.unpack_dual(ice_len)
        assert torch.equal(primal, plain[0]) and torch.equal(carbon_len, plain[1])
        assert tangent is not None and float(tangent.abs().max()) > 0
