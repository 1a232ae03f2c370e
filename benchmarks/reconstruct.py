"""tem_core SIRT versus ASTRA's SIRT, side by side on the same sinograms, same run.

Run with the comparison environment (astra-toolbox installed):

    .venv-compare/bin/python benchmarks/reconstruct.py [--quick] [--write-reference]
        [--json benchmarks/results/reconstruct_vs_astra.json]

Like with like:

* Same phantom, same sinograms: a 3-D phantom of ellipsoids is projected once with
  tem_core's strip projector (its matrix equals ASTRA's ``strip`` projector matrix, checked
  here too) plus Gaussian noise; both reconstruct exactly these numbers.
* Same geometry: parallel beam, tilt axis along y, ±60° in 2° steps (a missing wedge), the
  volume ``nz`` voxels thick. ASTRA's 2-D angle is the negative of tem_core's tilt angle
  (ASTRA rotates the source; tem_core rotates the specimen).
* Same algorithm: 100 SIRT iterations from zeros, relaxation 1, no constraint. On the CPU
  ASTRA has only 2-D SIRT (its 3-D algorithms need CUDA and abort without it), so it
  reconstructs slice by slice in a loop; tem_core reconstructs all slices at once (one sparse
  matrix shared by all slices along the tilt axis). With CUDA (``astra.use_cuda()``) ASTRA's
  ``SIRT3D_CUDA`` and tem_core on the GPU are timed as well.
* Times: wall and process CPU time (all threads) of each reconstruction, in this process;
  ``torch`` uses its default threads, ASTRA's 2-D CPU code one.

``--write-reference`` stores a small ASTRA reconstruction (sinogram and result) in
``tests/data/astra_sirt_reference.npz`` for the CI parity test, which needs no ASTRA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tem_core.reconstruct import TiltGeometry, TomographyOperator, sirt

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "astra_sirt_reference.npz"


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Sum of random ellipsoids (values 0.2-1) inside a ``(nz, ny, nx)`` box."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    vol = np.zeros(shape)
    for _ in range(12):
        c = rng.uniform(-0.35, 0.35, 3) * np.array([nz, ny, nx])
        r = rng.uniform(0.06, 0.2, 3) * np.array([nz, ny, nx])
        inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        vol += rng.uniform(0.2, 1.0) * (inside < 1)
    return vol.astype(np.float32)


def astra_sirt_2d(sinogram: np.ndarray, angles_rad: np.ndarray, nz: int, nx: int, n_iter: int):
    """ASTRA CPU SIRT of every slice: ``sinogram`` is ``(n_tilts, ny, n_det)``."""
    import astra

    vol_geom = astra.create_vol_geom(nz, nx)
    proj_geom = astra.create_proj_geom("parallel", 1.0, sinogram.shape[2], -angles_rad)
    projector = astra.create_projector("strip", proj_geom, vol_geom)
    out = np.zeros((nz, sinogram.shape[1], nx), dtype=np.float32)
    for j in range(sinogram.shape[1]):
        sino_id = astra.data2d.create("-sino", proj_geom, sinogram[:, j, :])
        rec_id = astra.data2d.create("-vol", vol_geom, 0.0)
        cfg = astra.astra_dict("SIRT")
        cfg.update(ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id)
        alg = astra.algorithm.create(cfg)
        astra.algorithm.run(alg, n_iter)
        out[:, j, :] = astra.data2d.get(rec_id)
        astra.algorithm.delete(alg)
        astra.data2d.delete([sino_id, rec_id])
    astra.projector.delete(projector)
    return out


def astra_matrix_difference(geometry: TiltGeometry) -> float:
    """Largest |tem_core strip weight - ASTRA strip weight| of one slice."""
    import astra

    from tem_core.reconstruct._strip import strip_matrix

    nz, _, nx = geometry.volume_shape
    angles = np.asarray(geometry.angles_rad)
    vol_geom = astra.create_vol_geom(nz, nx)
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, -angles)
    projector = astra.create_projector("strip", proj_geom, vol_geom)
    theirs = astra.matrix.get(astra.projector.matrix(projector)).tocsr()
    astra.projector.delete(projector)
    ours = strip_matrix(angles, nz=nz, nx=nx, n_det=nx)
    return float(abs(theirs - ours).max())


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small volume")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--write-reference", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args()
    import astra

    shape = (24, 8, 48) if args.quick else (64, 128, 128)  # (nz, ny, nx)
    angles = np.radians(np.arange(-60.0, 60.0 + 1e-9, 2.0))
    geometry = TiltGeometry(
        angles_rad=tuple(angles),
        detector_shape=shape[1:],
        pixel_size_a=1.0,
        thickness_a=float(shape[0]),
    )
    truth = phantom(shape)
    op = TomographyOperator(geometry)
    clean = op(torch.from_numpy(truth))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    sinogram = (clean + 0.05 * clean.std() * noise).contiguous()
    sino_np = sinogram.numpy()
    n_iter = args.iterations

    rows = []
    matrix_diff = astra_matrix_difference(geometry)
    theirs, w_a, c_a = timed(lambda: astra_sirt_2d(sino_np, angles, shape[0], shape[2], n_iter))
    ours_t, w_o, c_o = timed(lambda: sirt(sinogram, geometry, n_iterations=n_iter, progress=False))
    ours = ours_t.numpy()
    rows.append(
        dict(
            backend="CPU",
            shape=list(shape),
            n_tilts=len(angles),
            iterations=n_iter,
            astra_wall_s=w_a,
            astra_cpu_s=c_a,
            ours_wall_s=w_o,
            ours_cpu_s=c_o,
            cpu_ratio=c_o / c_a,
            wall_ratio=w_o / w_a,
            rel_l2=rel_l2(ours, theirs),
            rel_l2_astra_truth=rel_l2(theirs, truth),
            rel_l2_ours_truth=rel_l2(ours, truth),
        )
    )
    if astra.use_cuda() and torch.cuda.is_available():
        vol_geom = astra.create_vol_geom(shape[2], shape[1], shape[0])  # cols, rows, slices
        proj_geom = astra.create_proj_geom("parallel3d", 1.0, 1.0, shape[1], shape[2], -angles)
        # ASTRA 3-D: projections (det_row, angle, det_col); volume (slice=z, row=y, col=x)
        sino3 = np.ascontiguousarray(sino_np.transpose(1, 0, 2))

        def run3d():
            sid = astra.data3d.create("-sino", proj_geom, sino3)
            rid = astra.data3d.create("-vol", vol_geom, 0.0)
            cfg = astra.astra_dict("SIRT3D_CUDA")
            cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid)
            alg = astra.algorithm.create(cfg)
            astra.algorithm.run(alg, n_iter)
            out = astra.data3d.get(rid)
            astra.algorithm.delete(alg)
            astra.data3d.delete([sid, rid])
            return out

        theirs3, w_a3, c_a3 = timed(run3d)
        gpu_sino = sinogram.cuda()
        sirt(gpu_sino, geometry, n_iterations=2, progress=False)  # warm-up
        torch.cuda.synchronize()

        def ours_gpu():
            out = sirt(gpu_sino, geometry, n_iterations=n_iter, progress=False)
            torch.cuda.synchronize()
            return out.cpu().numpy()

        ours3, w_o3, c_o3 = timed(ours_gpu)
        rows.append(
            dict(
                backend="CUDA",
                shape=list(shape),
                n_tilts=len(angles),
                iterations=n_iter,
                astra_wall_s=w_a3,
                astra_cpu_s=c_a3,
                ours_wall_s=w_o3,
                ours_cpu_s=c_o3,
                cpu_ratio=c_o3 / c_a3,
                wall_ratio=w_o3 / w_a3,
                rel_l2=rel_l2(ours3, theirs3),
                rel_l2_astra_truth=rel_l2(theirs3, truth),
                rel_l2_ours_truth=rel_l2(ours3, truth),
                rel_l2_ours_cuda_vs_cpu=rel_l2(ours3, ours),
            )
        )

    load = os.getloadavg()
    print(
        f"SIRT, {n_iter} iterations, parallel beam ±60° in 2° steps ({len(angles)} tilts); "
        f"torch threads {torch.get_num_threads()}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"strip matrix: max |tem_core - ASTRA| weight = {matrix_diff:.2e}")
    header = (
        f"{'backend':>7} {'volume (nz,ny,nx)':>18} {'ASTRA wall/CPU [s]':>19} "
        f"{'ours wall/CPU [s]':>18} {'CPU ratio':>9} {'rel L2 vs ASTRA':>15}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['backend']:>7} {str(tuple(r['shape'])):>18} "
            f"{r['astra_wall_s']:8.2f} / {r['astra_cpu_s']:8.2f} "
            f"{r['ours_wall_s']:7.2f} / {r['ours_cpu_s']:8.2f} "
            f"{r['cpu_ratio']:9.3f} {r['rel_l2']:15.2e}"
        )
    for r in rows:
        print(
            f"{r['backend']}: rel L2 to the phantom: ASTRA {r['rel_l2_astra_truth']:.4f}, "
            f"tem_core {r['rel_l2_ours_truth']:.4f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = dict(
            command="benchmarks/reconstruct.py" + (" --quick" if args.quick else ""),
            astra_version=astra.__version__,
            torch_threads=torch.get_num_threads(),
            load_average=list(load),
            machine=platform.processor() or platform.machine(),
            matrix_max_abs_difference=matrix_diff,
            rows=rows,
        )
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.write_reference:
        small = (20, 3, 32)
        g = TiltGeometry(
            angles_rad=tuple(np.radians(np.arange(-60.0, 60.1, 3.0))),
            detector_shape=small[1:],
            pixel_size_a=1.0,
            thickness_a=float(small[0]),
        )
        clean = TomographyOperator(g)(torch.from_numpy(phantom(small, seed=3)))
        noisy = clean + 0.05 * clean.std() * torch.randn(
            clean.shape, generator=torch.Generator().manual_seed(2)
        )
        sino = noisy.numpy().astype(np.float32)
        reference = astra_sirt_2d(sino, np.asarray(g.angles_rad), small[0], small[2], 100)
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            REFERENCE,
            sinogram=sino,
            angles_rad=np.asarray(g.angles_rad),
            thickness_voxels=small[0],
            astra_sirt_100=reference,
            astra_version=astra.__version__,
        )
        print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
