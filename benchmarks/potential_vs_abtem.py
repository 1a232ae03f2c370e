"""Compare tem_core's slice potentials of crambin (1CRN) with abTEM's, Peng 1996 on both sides.

Run with the comparison environment (abTEM installed):

    .venv-compare/bin/python benchmarks/potential_vs_abtem.py [--sampling 0.5] [--oversample 4]

What is compared, like with like:

* Same atoms (B = 0, occupancy 1: abTEM's independent-atom potential ignores both), same
  periodic cell, same slice boundaries, same Peng 1996 coefficients (abTEM's
  ``peng_low.json`` = International Tables C 4.3.2.2 = gemmi's ``c4322``; abTEM's default
  ``peng_high.json`` is Peng's s ≤ 6 Å⁻¹ fit, a different table).
* abTEM integrator: ``GaussianProjectionIntegrals``: each Peng Gaussian is integrated over the
  slice with erf weights and evaluated in Fourier space, i.e. the band-limited potential
  point-sampled at the grid points ``x = i·s``. In abTEM 1.0.11 that integrator ignores its
  parametrization arguments (it always uses ``peng_high`` plus an infinite-projection
  Lobato − Peng "correction" in the atom's slice, which makes it Lobato overall), so this script
  pins its two module-level helpers to ``peng_low`` and turns the correction off: pure Peng 1996,
  the same model as tem_core. Also shown: abTEM's infinite projection
  (``ScatteringFactorProjectionIntegrals``, peng_low) against the sum of our slices, and its
  default finite integrator ``QuadratureProjectionIntegrals`` (real-space quadrature of the
  radial Peng potential, with a cut-off taper).
* tem_core returns pixel averages over ``[i·s, (i+1)·s)``. abTEM is therefore run on a grid
  ``oversample`` times finer with the atoms shifted by half a fine pixel (its samples then sit
  at the fine pixel centres) and binned ``oversample × oversample``: the midpoint rule for the
  pixel average. The residual is then split into (a) the midpoint-rule error, measured with
  tem_core's own point-sampled projection, and (b) abTEM's implementation (band limit,
  bilinear delta spreading with a sinc correction, its z cut-off of 1e-3 V).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

import numpy as np
import torch

from tem_core import potential as pot
from tem_core import units
from tem_core.structure import read_structure

DATA = Path(__file__).resolve().parents[1] / "data"


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def point_sampled(z, pos, limits, shape, sampling_a, offset_a):
    """tem_core's model point-sampled at ``x = i·s + offset`` (Peng projection × erf in z)."""
    a, b = pot.peng_coefficients()
    amp = units.PENG_PREFACTOR_V_A2 * a[z]  # (N, 5) V·Å³
    bb = b[z]
    ny, nx = shape
    xs = torch.arange(nx, dtype=torch.float64) * sampling_a + offset_a
    ys = torch.arange(ny, dtype=torch.float64) * sampling_a + offset_a
    lx, ly = nx * sampling_a, ny * sampling_a
    out = []
    for z0, z1 in limits:
        scale = 2 * math.pi / torch.sqrt(bb)
        fz = 0.5 * (
            torch.special.erf(scale * (z1 - pos[:, 2:3]))
            - torch.special.erf(scale * (z0 - pos[:, 2:3]))
        )
        img = torch.zeros(ny, nx, dtype=torch.float64)
        for k in range(5):
            dx = xs[None, :] - pos[:, 0:1]
            dy = ys[None, :] - pos[:, 1:2]
            dx = dx - lx * torch.round(dx / lx)  # periodic minimum image
            dy = dy - ly * torch.round(dy / ly)
            g = 4 * math.pi / bb[:, k : k + 1]
            ex = torch.exp(-(4 * math.pi**2) * dx**2 / bb[:, k : k + 1])
            ey = torch.exp(-(4 * math.pi**2) * dy**2 / bb[:, k : k + 1])
            img += torch.einsum("n,ny,nx->yx", (amp[:, k] * fz[:, k] * g[:, 0]), ey, ex)
        out.append(img)
    return torch.stack(out).numpy()


def binned(stack: np.ndarray, m: int) -> np.ndarray:
    n, ny, nx = stack.shape
    return stack.reshape(n, ny // m, m, nx // m, m).mean(axis=(2, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampling", type=float, default=0.5, help="pixel size [Å]")
    parser.add_argument("--slice-thickness", type=float, default=2.0, help="[Å]")
    parser.add_argument("--oversample", type=int, default=8)
    args = parser.parse_args()

    import abtem
    import abtem.integrals as ai
    from abtem.integrals import (
        GaussianProjectionIntegrals,
        QuadratureProjectionIntegrals,
        ScatteringFactorProjectionIntegrals,
    )
    from abtem.parametrizations import PengParametrization
    from ase import Atoms

    abtem.config.set({"precision": "float64", "device": "cpu"})
    peng = PengParametrization("peng_low.json")
    ai.gaussian_projected_scattering_factors = functools.partial(
        ai.gaussian_projected_scattering_factors, parametrization=peng
    )
    ai.gaussian_projection_weights = functools.partial(
        ai.gaussian_projection_weights, parametrization=peng
    )

    class PurePengGaussian(GaussianProjectionIntegrals):
        def _integrate_corrections(self, positions, symbol, a, b, gpts, sampling, device):
            return 0.0

    s, dz, m = args.sampling, args.slice_thickness, args.oversample
    model = read_structure(DATA / "1crn.pdb.gz").centered()
    pos = model.positions_a.double()
    lo, hi = pos.min(0).values, pos.max(0).values
    margin = 8.0
    n_xy = [int(math.ceil(float(hi[i] - lo[i] + 2 * margin) / s / 4)) * 4 for i in range(2)]
    cell_xy = [n * s for n in n_xy]
    n_slices = int(math.ceil(float(hi[2] - lo[2] + 2 * margin) / dz))
    lz = n_slices * dz
    pos = pos - lo + torch.tensor([margin, margin, margin], dtype=torch.float64)
    pos[:, 0] += (cell_xy[0] - float(pos[:, 0].max()) - margin) / 2
    pos[:, 1] += (cell_xy[1] - float(pos[:, 1].max()) - margin) / 2
    z = model.atomic_numbers
    limits = [(i * dz, (i + 1) * dz) for i in range(n_slices)]
    print(
        f"1CRN: {len(z)} atoms, cell {cell_xy[0]:.1f} x {cell_xy[1]:.1f} x {lz:.1f} Å, "
        f"sampling {s} Å, {n_slices} slices of {dz} Å, abTEM oversampling {m}"
    )

    # --- tem_core: pixel averages
    b0 = torch.zeros(len(z), dtype=torch.float64)
    occ = torch.ones(len(z), dtype=torch.float64)
    t0 = time.perf_counter()
    ours = np.stack(
        [
            pot.slice_potential(
                z, pos, b0, occ, z0_a=a, z1_a=b, shape=(n_xy[1], n_xy[0]), sampling_a=s
            ).numpy()
            for a, b in limits
        ]
    )
    t_ours = time.perf_counter() - t0

    # --- abTEM on the fine grid, atoms shifted by −s_f/2 (samples at fine pixel centres)
    s_f = s / m
    shifted = pos.numpy().copy()
    shifted[:, :2] -= s_f / 2
    atoms = Atoms(numbers=z.numpy(), positions=shifted, cell=[cell_xy[0], cell_xy[1], lz], pbc=True)
    results = {}
    for name, integrator in (
        ("gaussian", PurePengGaussian(parametrization=peng, gaussian_parametrization=peng)),
        ("quadrature", QuadratureProjectionIntegrals(parametrization=peng)),
    ):
        t0 = time.perf_counter()
        potential = abtem.Potential(
            atoms, sampling=s_f, slice_thickness=dz, integrator=integrator, device="cpu"
        )
        assert [tuple(x) for x in np.round(potential.slice_limits, 9)] == [
            tuple(np.round(x, 9)) for x in limits
        ]
        arr = np.asarray(potential.build().compute().array)  # (slices, x, y)
        results[name] = (np.transpose(arr, (0, 2, 1)), time.perf_counter() - t0)

    same_grid = Atoms(
        numbers=z.numpy(),
        positions=pos.numpy() - np.r_[s / 2, s / 2, 0.0],
        cell=[cell_xy[0], cell_xy[1], lz],
        pbc=True,
    )
    direct = abtem.Potential(
        same_grid,
        sampling=s,
        slice_thickness=dz,
        device="cpu",
        integrator=PurePengGaussian(parametrization=peng, gaussian_parametrization=peng),
    )
    direct = np.transpose(np.asarray(direct.build().compute().array), (0, 2, 1))

    t0 = time.perf_counter()
    infinite = abtem.Potential(
        atoms,
        sampling=s_f,
        slice_thickness=lz,
        device="cpu",
        integrator=ScatteringFactorProjectionIntegrals(parametrization=peng),
    )
    infinite = np.transpose(np.asarray(infinite.build().compute().array), (0, 2, 1))[0]
    results["infinite"] = (infinite, time.perf_counter() - t0)

    ours_point_fine = point_sampled(z, pos, limits, (n_xy[1] * m, n_xy[0] * m), s_f, s_f / 2)
    ab_fine = results["gaussian"][0]
    total_ours = ours.sum(0)
    print()
    print(f"{'comparison (relative L2 over all slices)':<72} {'slices':>9} {'projection':>11}")
    rows = [
        (
            f"tem_core pixel average  vs  abTEM Gaussian (Peng) x{m} binned",
            ours,
            binned(ab_fine, m),
        ),
        (
            f"tem_core pixel average  vs  abTEM quadrature (Peng) x{m} binned",
            ours,
            binned(results["quadrature"][0], m),
        ),
        (
            f"tem_core sum of slices vs abTEM infinite projection x{m} binned",
            ours.sum(0)[None],
            binned(infinite[None], m),
        ),
        (
            f"(a) tem_core pixel average vs own point samples x{m} binned (midpoint rule)",
            ours,
            binned(ours_point_fine, m),
        ),
        (
            f"(b) tem_core point samples vs abTEM Gaussian, fine grid {s_f:.3f} Å",
            ours_point_fine,
            ab_fine,
        ),
        (
            f"tem_core pixel average  vs  abTEM point samples at the same {s:.2f} Å grid",
            ours,
            direct,
        ),
    ]
    for label, a, b in rows:
        print(f"{label:<72} {rel_l2(a, b):>9.2e} {rel_l2(a.sum(0), b.sum(0)):>11.2e}")
    c_sum = sum(
        units.PENG_PREFACTOR_V_A2 * float(pot.peng_coefficients()[0][zz].sum()) for zz in z.tolist()
    )
    print()
    print(
        f"plane integral C·Σa over all atoms: {c_sum:.2f} V·Å³; "
        f"tem_core {total_ours.sum() * s * s:.2f}; "
        f"abTEM Gaussian {binned(ab_fine, m).sum() * s * s:.2f}"
    )
    print(
        f"time: tem_core {t_ours:.2f} s (float64, {s} Å grid); "
        f"abTEM Gaussian {results['gaussian'][1]:.2f} s, "
        f"quadrature {results['quadrature'][1]:.2f} s ({s_f} Å grid)"
    )


if __name__ == "__main__":
    main()
