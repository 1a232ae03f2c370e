"""Wall time and peak memory of one micrograph: tem_core versus abTEM on the same atoms.

Scene: the apoferritin field of the book, 20 copies of 6Z6U (human apoferritin 24-mer,
32,618 atoms each) at random poses in a 500 Å ice slab, 1024 × 1024 grid at 1 Å, 300 kV,
20 Å slices, float32 (``--quick``: 384 × 384, 5 particles; 5 do not fit 256 Å). The scene is
built once by the parent process with :func:`tem_core.specimen.build_specimen` and saved;
every case then runs in its own subprocess, so each peak memory is that code's alone:

* ``tem_core, ice``: :func:`tem_core.simulate.micrograph` (streamed potential with the ice
  slab, excluded solvent and absorption; multislice; CTF at 1 µm underfocus; expected image
  of a counting camera, no noise). The exit wave alone is timed as well.
* ``tem_core, no ice``: the same atoms in vacuum (``include_solvent=False``), which is the
  scene abTEM simulates.
* ``(map)`` (with ``--representations atoms,map``): the same two cases with
  ``PotentialSettings(particle_representation="map", map_voxel_a=--map-voxel)``: the 20
  copies share one map of 6Z6U, computed once (timed apart: ``map build``, as a map is made
  once per particle type and reused by every copy, micrograph and tilt), then projected
  per copy and split between the 20 Å slices. Its error against the atoms is printed: the
  relative L2 of the exit-wave difference over the atoms' exit-wave contrast
  ``‖ψ_atoms − mean‖`` (same process, untimed).
* ``abTEM``: the same atoms as an ``ase.Atoms`` in a periodic cell ``Lx × Ly × 500 Å``,
  ``abtem.Potential(parametrization="peng", projection="infinite" | "finite")`` with the same
  sampling and slice thickness, ``PlaneWave(...).multislice(potential).compute()``. abTEM has
  no ice and ignores B-factors (its independent-atom model has no Debye–Waller factor; ours
  widens each atom by its PDB B, which widens the kernel windows too).

Fairness: both codes are warm at the full size (each case first runs the same code on a tiny
scene, then once untimed on the full scene: Taichi and numba compilation, FFTW planning and
caches are outside the timed run) and use the same number of threads (``--threads``, default
all cores: torch and Taichi for tem_core; FFTW, MKL, numba and the dask scheduler for abTEM).
``--rounds`` rounds run every case once each, interleaved, and the table gives the median over
rounds; the load average (``/proc/loadavg``) before and after is printed with it, each round's
load with its line, and the ratios per round (both codes back to back, same load). CPU time
(``time.process_time`` of the case's process over the timed run: all its threads) is given
next to wall time: on a shared machine it depends less on what else runs. Peak memory:
``ru_maxrss`` of the case's process (and its increase over the RSS just before the timed run);
on CUDA also ``torch.cuda.max_memory_allocated`` (tem_core; abTEM runs on the CPU unless cupy
works).

Run (abTEM in the comparison environment, tem_core in the main one; about 3 minutes on 2
cores)::

    .venv/bin/python benchmarks/forward.py [--quick] [--device cpu|cuda] [--rounds 3]
        [--abtem-python .venv-compare/bin/python] [--abtem-projection infinite,finite]
        [--representations atoms,map] [--map-voxel 0.5]
        [--json benchmarks/results/forward_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._envs import env_python  # noqa: E402

DATA = ROOT / "data"


def _rss_mib() -> float:
    """Current resident set size of this process [MiB] (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------- the scene
def build_scene(*, n_px: int, n_particles: int, sampling_a: float, ice_a: float, seed: int):
    import torch

    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import read_structure

    model = read_structure(DATA / "6z6u.pdb.gz", dtype=torch.float32)
    extent = n_px * sampling_a
    return build_specimen(
        model,
        n_particles,
        extent_a=(extent, extent),
        ice=IceSlab(thickness_a=ice_a),
        generator=torch.Generator().manual_seed(seed),
    )


def _tiny(specimen):
    """A 2-particle crop of ``specimen`` for warm-up (same code paths, seconds)."""
    import torch

    from tem_core.specimen import build_specimen
    from tem_core.structure import read_structure

    model = read_structure(DATA / "1crn.pdb.gz", dtype=torch.float32)
    return build_specimen(
        model, 2, extent_a=(64.0, 64.0), ice=specimen.ice,
        generator=torch.Generator().manual_seed(1),
    )


# --------------------------------------------------------------------------- workers
def worker_ours(cfg: dict) -> dict:
    import torch

    from tem_core.detector import Detector
    from tem_core.optics import Microscope
    from tem_core.potential import ParticleMaps, PotentialSettings
    from tem_core.simulate import Imaging, exit_wave, micrograph
    from tem_core.units import KV_TO_EV, UM_TO_A

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    specimen = torch.load(cfg["scene"], weights_only=False)
    specimen = _to_device(specimen, device)
    energy = cfg["energy_kv"] * KV_TO_EV
    microscope = Microscope(energy_ev=energy)
    detector = Detector(dqe=1.0, gain_counts_per_e=1.0, mtf_camera="k2_300kv")
    imaging = Imaging(defocus_a=1.0 * UM_TO_A, dose_e_per_a2=40.0)

    representation = cfg.get("representation", "atoms")

    def settings(shape, representation=representation):
        return PotentialSettings(
            shape=shape,
            sampling_a=cfg["sampling_a"],
            slice_thickness_a=cfg["slice_a"],
            energy_ev=energy,
            include_solvent=cfg["ice"],
            particle_representation=representation,
            map_voxel_a=cfg.get("map_voxel") if representation == "map" else None,
        )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    tiny = _to_device(_tiny(specimen), device)
    full = settings((cfg["n_px"], cfg["n_px"]))
    maps, extra = None, {}
    with torch.no_grad():
        micrograph(tiny, potential=settings((64, 64)), microscope=microscope,
                   detector=detector, imaging=imaging)
        if representation == "map":
            # the particle type's map, once (timed apart): every copy reuses it
            t0, c0 = time.perf_counter(), time.process_time()
            maps = ParticleMaps(specimen, full)
            sync()
            extra.update(t_map_build_s=time.perf_counter() - t0,
                         cpu_map_build_s=time.process_time() - c0,
                         map_types=len(maps.types), map_voxel_a=maps.voxel_a)
        exit_wave(specimen, full, energy_ev=energy, coefficients=maps)  # warm at the full size
    sync()
    rss0 = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        t0 = time.perf_counter()
        result = micrograph(specimen, potential=full, microscope=microscope,
                            detector=detector, imaging=imaging, coefficients=maps)
        sync()
        t_micrograph = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        wave = exit_wave(specimen, full, energy_ev=energy, coefficients=maps)
        sync()
        t_wave, c_wave = time.perf_counter() - t0, time.process_time() - c0
        if maps is not None:  # error against the exact atoms (untimed)
            exact = exit_wave(specimen, settings(full.shape, "atoms"), energy_ev=energy)
            extra["map_rel_l2_exit_wave"] = float(
                (wave - exact).abs().norm() / (exact - exact.mean()).abs().norm())
    out = dict(
        t_total_s=t_micrograph,
        t_exit_wave_s=t_wave,
        cpu_exit_wave_s=c_wave,
        rss_before_mib=rss0,
        maxrss_mib=_maxrss_mib(),
        exit_wave_mean_abs2=float((wave.abs() ** 2).mean()),
        image_mean=float(result.expected.mean()),
        n_atoms=len(specimen.atoms),
        **extra,
    )
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _to_device(specimen, device):
    import dataclasses

    if specimen.atoms.positions_a.device == device:
        return specimen
    return dataclasses.replace(
        specimen,
        atoms=specimen.atoms.to(device=device),
        slab_center_a=specimen.slab_center_a.to(device),
        slab_normal=specimen.slab_normal.to(device),
        particle_centers_a=specimen.particle_centers_a.to(device),
        particle_radii_a=specimen.particle_radii_a.to(device),
        particle_rotations=specimen.particle_rotations.to(device),
    )


def worker_abtem(cfg: dict) -> dict:
    import abtem
    import ase
    import dask
    import numpy as np
    import torch

    from tem_core.units import KV_TO_EV

    dask.config.set(scheduler="threads", num_workers=cfg["threads"])
    use_gpu = False
    if cfg["device"].startswith("cuda"):
        try:
            import cupy  # noqa: F401

            use_gpu = True
        except ImportError:
            pass
    abtem.config.set({"device": "gpu" if use_gpu else "cpu", "precision": "float32",
                      "diagnostics.progress_bar": False, "fftw.threads": cfg["threads"],
                      "mkl.threads": cfg["threads"]})
    specimen = torch.load(cfg["scene"], weights_only=False)
    energy = cfg["energy_kv"] * KV_TO_EV

    def to_ase(spec, lz):
        lx, ly = spec.extent_a
        return ase.Atoms(
            numbers=spec.atoms.atomic_numbers.numpy(),
            positions=spec.atoms.positions_a.double().numpy(),
            cell=[lx, ly, lz],
            pbc=True,
        )

    def run(atoms, gpts):
        potential = abtem.Potential(
            atoms, gpts=gpts, sampling=None, slice_thickness=cfg["slice_a"],
            parametrization="peng", projection=cfg["projection"],
        )
        wave = abtem.PlaneWave(energy=energy).multislice(potential).compute()
        return potential, np.asarray(wave.array)

    lz = specimen.ice.thickness_a
    run(to_ase(_tiny(specimen), lz), (64, 64))
    atoms = to_ase(specimen, lz)
    run(atoms, (cfg["n_px"], cfg["n_px"]))  # warm at the full size (FFTW plans, caches)
    rss0 = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    potential, wave = run(atoms, (cfg["n_px"], cfg["n_px"]))
    t, c = time.perf_counter() - t0, time.process_time() - c0
    assert abs(potential.sampling[0] - cfg["sampling_a"]) < 1e-9, potential.sampling
    return dict(
        t_total_s=t,
        t_exit_wave_s=t,
        cpu_exit_wave_s=c,
        rss_before_mib=rss0,
        maxrss_mib=_maxrss_mib(),
        exit_wave_mean_abs2=float((np.abs(wave) ** 2).mean()),
        n_atoms=len(atoms),
        n_slices=len(potential),
        gpu=use_gpu,
    )


# --------------------------------------------------------------------------- driver
def _run_case(python: str, cfg: dict) -> dict:
    cmd = [python, __file__, "--worker", json.dumps(cfg)]
    threads = str(cfg["threads"])
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads,
               TI_CPU_MAX_NUM_THREADS=threads, PYTHONPATH=str(ROOT))  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def _median_rows(runs: list[dict]) -> dict:
    """Median over rounds of every timing; the other numbers from the first good round."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    row = dict(ok[0])
    for key in ("t_total_s", "t_exit_wave_s", "cpu_exit_wave_s", "maxrss_mib", "rss_before_mib",
                "t_map_build_s", "cpu_map_build_s"):
        if key in row:
            row[key] = statistics.median(r[key] for r in ok)
    row["rounds_exit_wave_s"] = [r["t_exit_wave_s"] for r in ok]
    row["rounds_cpu_exit_wave_s"] = [r["cpu_exit_wave_s"] for r in ok]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (tem_core; abTEM needs cupy)")
    parser.add_argument("--quick", action="store_true",
                        help="384² grid, 5 particles (5 do not fit a 256 Å field)")
    parser.add_argument("--ours-python", default=env_python(".venv"))
    parser.add_argument("--abtem-python", default=env_python(".venv-compare"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--json", help="write the table's numbers to this JSON file")
    parser.add_argument("--no-ice-only", action="store_true",
                        help="skip the micrograph with ice (only the abTEM-comparable case)")
    parser.add_argument("--abtem-projection", default="infinite,finite",
                        help="comma list of abTEM projections: infinite, finite")
    parser.add_argument("--representations", default="atoms",
                        help="tem_core particle representations, comma list: atoms, map "
                             "(PotentialSettings.particle_representation)")
    parser.add_argument("--map-voxel", type=float, default=None,
                        help="map_voxel_a of the particle maps [Å] (default: half the pixel)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        cfg = json.loads(args.worker)
        result = (worker_abtem if cfg["code"] == "abtem" else worker_ours)(cfg)
        print(json.dumps(result))
        return

    n_px, n_particles = (384, 5) if args.quick else (1024, 20)
    base = dict(n_px=n_px, sampling_a=1.0, slice_a=20.0, energy_kv=300.0, ice_a=500.0,
                device=args.device, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        import torch

        scene = Path(tmp) / "scene.pt"
        specimen = build_scene(n_px=n_px, n_particles=n_particles, sampling_a=1.0,
                               ice_a=base["ice_a"], seed=args.seed)
        torch.save(specimen, scene)
        base["scene"] = str(scene)
        print(
            f"scene: {n_particles} × 6Z6U, {len(specimen.atoms):,} atoms, {n_px}² px at 1 Å, "
            f"{base['ice_a']:.0f} Å ice, {base['slice_a']:.0f} Å slices, 300 kV, "
            f"device {args.device}, {args.threads} threads"
        )
        cases = []
        for rep in (r.strip() for r in args.representations.split(",") if r.strip()):
            tag = "" if rep == "atoms" else f" ({rep})"
            ours = dict(base, code="ours", representation=rep, map_voxel=args.map_voxel)
            if not args.no_ice_only:
                cases.append((f"tem_core, ice{tag}", args.ours_python, dict(ours, ice=True)))
            cases.append((f"tem_core, no ice{tag}", args.ours_python, dict(ours, ice=False)))
        for projection in args.abtem_projection.split(","):
            cases.append((f"abTEM peng {projection}", args.abtem_python,
                          dict(base, code="abtem", projection=projection.strip())))
        load_before = _loadavg()
        runs: dict[str, list] = {label: [] for label, _, _ in cases}
        for r in range(args.rounds):
            for label, python, cfg in cases:
                t0 = time.perf_counter()
                result = _run_case(python, cfg)
                result["process_s"] = time.perf_counter() - t0
                runs[label].append(result)
                took = result.get("t_exit_wave_s", float("nan"))
                cpu = result.get("cpu_exit_wave_s", float("nan"))
                print(f"  round {r + 1}: {label:<28} exit wave {took:.2f} s, CPU {cpu:.2f} s, "
                      f"load {_loadavg().split()[0]} "
                      f"({result['process_s']:.1f} s incl. start-up and warm-up)"
                      + (f" failed: {result['error']}" if "error" in result else ""),
                      flush=True)  # fmt: skip
        rows = {label: _median_rows(rs) for label, rs in runs.items()}
        load_after = _loadavg()

    print(f"\nmedians of {args.rounds} interleaved rounds, {args.threads} threads each; "
          f"load average before {load_before}, after {load_after}")  # fmt: skip
    header = (f"{'code':<28} {'exit wave [s]':>13} {'CPU [s]':>8} {'micrograph [s]':>14} "
              f"{'peak RSS [MiB]':>14} {'Δ RSS [MiB]':>12} {'CUDA peak [MiB]':>15} "
              f"{'<|ψ|²>':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    for label, r in rows.items():
        if "error" in r:
            print(f"{label:<28} failed: {r['error']}")
            continue
        micro = f"{r['t_total_s']:.2f}" if r.get("code") != "abtem" and "image_mean" in r else "-"
        cuda = f"{r['cuda_peak_mib']:.0f}" if "cuda_peak_mib" in r else "-"
        print(f"{label:<28} {r['t_exit_wave_s']:>13.2f} {r['cpu_exit_wave_s']:>8.2f} "
              f"{micro:>14} {r['maxrss_mib']:>14.0f} "
              f"{r['maxrss_mib'] - r['rss_before_mib']:>12.0f} {cuda:>15} "
              f"{r['exit_wave_mean_abs2']:>8.4f}")
    for label, r in rows.items():
        if "t_map_build_s" in r:
            print(f"{label}: map build {r['t_map_build_s']:.2f} s (CPU "
                  f"{r['cpu_map_build_s']:.2f} s; {r['map_types']} map, map_voxel_a "
                  f"{r['map_voxel_a']} Å; not in the exit-wave time), exit wave vs atoms: "
                  f"relative L2 {r['map_rel_l2_exit_wave']:.1e} of the atoms' contrast")
    ratios = {}
    for label in [k for k in rows if k.startswith("tem_core")]:
        r = rows[label]
        for ab_label, ref in rows.items():
            if not ab_label.startswith("abTEM") or "error" in ref or "error" in r:
                continue
            ratio = ref["t_exit_wave_s"] / r["t_exit_wave_s"]
            cpu_ratio = ref["cpu_exit_wave_s"] / r["cpu_exit_wave_s"]
            ratios[f"{ab_label} / {label}"] = ratio
            ratios[f"{ab_label} / {label} (CPU time)"] = cpu_ratio
            # per round: both codes ran back to back, so these see the same load
            per_round = [a / b for a, b in zip(ref["rounds_exit_wave_s"],
                                               r["rounds_exit_wave_s"], strict=False)]
            print(f"ratio {ab_label} / {label}: exit-wave time {ratio:.2f}× (rounds "
                  + ", ".join(f"{x:.2f}" for x in per_round) + f"), CPU time {cpu_ratio:.2f}×, "
                  f"peak RSS {ref['maxrss_mib'] / r['maxrss_mib']:.2f}×")
    if args.json:
        payload = dict(representations=args.representations, map_voxel_a=args.map_voxel,
                       scene=dict(n_px=n_px, n_particles=n_particles, **{
            k: base[k] for k in ("sampling_a", "slice_a", "energy_kv", "ice_a")}),
            device=args.device, threads=args.threads, rounds=args.rounds,
            load_before=load_before, load_after=load_after, rows=rows, ratios=ratios)  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
