"""tem_core versus TEM-simulator on TEM-simulator's own TMV tilt-series example.

Scene (TEM-simulator manual, TMV example): three TMV segments, each the 49-subunit helical
assembly of PDB 2OM3 (first model, BIOMT operators), lying in a 50 nm ice layer (the example's
sample is 50 nm thick at the centre of a 1 µm hole, 100 nm at its edge; the 200 nm field sees
the centre); 61 tilts from −60° in 2° steps about the x axis; 200 kV, Cs = Cc = 2 mm, 1.3 eV
energy spread, 50 µm aperture at 3 mm focal length (8.3 mrad), 0.1 mrad illumination, 5 µm
underfocus; 400 × 400 detector at 5 Å per pixel (15 µm pixels at 30000×), 6000 e/nm² in all,
DQE 0.4, gain 10, TEM-simulator's default MTF (0.7, 0.2, 0.1, 10, 40), noise before MTF.

With ``--temsim PATH`` (an executable the user built; nothing of TEM-simulator is shipped or
built here) the script writes TEM-simulator's input files into a work directory, runs it
(timed), runs tem_core's :func:`tem_core.simulate.tilt_series` on the same scene in the
projection approximation (what TEM-simulator computes) and with full multislice, after a
one-tilt warm-up that compiles the Taichi kernels, and compares wall times (``--repeat``
interleaved runs, median) and the series: per-tilt mean, contrast std/mean, and the radially
averaged power spectrum (normalised to 1 between 0.05 and 0.15 cycles/px). Each method runs
with the exact atoms and with particle maps (``particle_representation="map"``, the
particle's potential computed once and projected per tilt by the Fourier slice theorem, an
approximation: its error against the atoms is printed for 7 noise-free tilts). CPU time is
reported next to wall time (on a loaded machine the wall-time ratio follows the load). Without
``--temsim`` it runs tem_core alone and says so. Particle orientations follow TEM-simulator's
z-x-z Euler angles as far as its manual documents them; the comparison is statistical, not
pixel by pixel. TEM-simulator 1.3 builds from its source with ``make`` in ``src/`` (needs
FFTW 3, e.g. ``apt-get install libfftw3-dev``); it runs on one core, tem_core on all.

``--stages`` adds one more untimed-by-the-table run per method and representation with CPU
timers around the stages (map build, map projection, slice split, streaming set-up, optics,
detector, heap releases, multislice): where the time of a tilt goes.

    .venv/bin/python benchmarks/vs_temsim.py [--temsim /path/to/TEM-simulator] [--quick]
        [--repeat 3] [--methods projection,multislice] [--representations atoms,map]
        [--map-voxel 2.5] [--no-errors] [--stages] [--workdir /tmp/tmv] [--slice 100]
        [--json benchmarks/results/vs_temsim.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tem_core.detector import Detector
from tem_core.io import read_mrc
from tem_core.mtf_fit import radial_profile
from tem_core.optics import Microscope
from tem_core.potential import PotentialSettings
from tem_core.simulate import TiltScheme, tilt_series
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import assembly_operators, expand_assembly, read_structure
from tem_core.units import DEG_TO_RAD, KV_TO_EV, MM_TO_A, MRAD_TO_RAD, NM_TO_A, UM_TO_A

DATA = Path(__file__).resolve().parents[1] / "data"

# --- the TMV example's settings, in TEM-simulator's field units --------------------------
N_PX = 400
PIXEL_A = 5.0
ENERGY_KV = 200.0
CS_MM = CC_MM = 2.0
ENERGY_SPREAD_EV = 1.3
APERTURE_UM, FOCAL_LENGTH_MM = 50.0, 3.0
COND_AP_MRAD = 0.1
DEFOCUS_UM = 5.0
TOTAL_DOSE_E_PER_NM2 = 6000.0
DQE, GAIN = 0.4, 10.0
MTF = dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0)
ICE_CENTER_NM, ICE_EDGE_NM, HOLE_NM = 50.0, 100.0, 1000.0
#: three segments in the ice mid-plane: x, y, z [nm], Euler phi, theta, psi [deg] (z-x-z);
#: theta = 90° lays the helix axis (z of the PDB frame) in the specimen plane
PARTICLES = (
    (-50.0, -45.0, 0.0, 0.0, 90.0, 0.0),
    (10.0, 20.0, 0.0, 60.0, 90.0, 0.0),
    (45.0, -60.0, 0.0, 120.0, 90.0, 30.0),
)


def tilt_angles_deg(quick: bool) -> list[float]:
    return [-60.0 + 20.0 * i for i in range(7)] if quick else [-60.0 + 2.0 * i for i in range(61)]


def euler_zxz(phi_deg: float, theta_deg: float, psi_deg: float) -> torch.Tensor:
    """R = Rz(φ) Rx(θ) Rz(ψ) (float64)."""

    def rz(a):
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def rx(a):
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)

    return rz(phi_deg * DEG_TO_RAD) @ rx(theta_deg * DEG_TO_RAD) @ rz(psi_deg * DEG_TO_RAD)


# --- TEM-simulator's input -----------------------------------------------------------------
def write_temsim_inputs(workdir: Path, angles_deg: list[float], seed: int) -> Path:
    """Input file, first-model PDB, transform and coordinate files; returns the input path."""
    workdir.mkdir(parents=True, exist_ok=True)
    with gzip.open(DATA / "2om3.pdb.gz", "rt") as fh:
        lines = []
        for line in fh:
            if line.startswith("ENDMDL"):
                break
            if line.startswith(("ATOM", "HETATM", "CRYST1")):
                lines.append(line)
    (workdir / "2OM3.pdb").write_text("".join(lines) + "END\n")
    ops = assembly_operators(DATA / "2om3.pdb.gz").numpy()  # (K, 3, 4), t in Å
    rows = [f"{3 * len(ops)} 4"] + [" ".join(f"{v:.8f}" for v in row) for op in ops for row in op]
    (workdir / "2OM3_transf.txt").write_text("# 2OM3 BIOMT operators [R | t(Å)]\n"
                                             + "\n".join(rows) + "\n")
    coords = [f"{len(PARTICLES)} 6"] + [" ".join(f"{v:g}" for v in p) for p in PARTICLES]
    (workdir / "TMV_coord.txt").write_text("# x y z [nm] phi theta psi [deg]\n"
                                           + "\n".join(coords) + "\n")
    step = angles_deg[1] - angles_deg[0] if len(angles_deg) > 1 else 0.0
    text = f"""=== simulation ===
generate_micrographs = yes
rand_seed = {seed}
log_file = simulator.log
=== sample ===
diameter = {HOLE_NM:g}
thickness_edge = {ICE_EDGE_NM:g}
thickness_center = {ICE_CENTER_NM:g}
=== particle TMV ===
source = pdb
pdb_file_in = 2OM3.pdb
pdb_transf_file_in = 2OM3_transf.txt
voxel_size = 0.1
use_imag_pot = yes
=== particleset ===
particle_type = TMV
particle_coords = file
coord_file_in = TMV_coord.txt
=== geometry ===
gen_tilt_data = yes
tilt_axis = 0
ntilts = {len(angles_deg)}
theta_start = {angles_deg[0]:g}
theta_incr = {step:g}
geom_errors = none
=== electronbeam ===
acc_voltage = {ENERGY_KV:g}
energy_spread = {ENERGY_SPREAD_EV:g}
gen_dose = yes
total_dose = {TOTAL_DOSE_E_PER_NM2:g}
=== optics ===
magnification = 30000
cs = {CS_MM:g}
cc = {CC_MM:g}
aperture = {APERTURE_UM:g}
focal_length = {FOCAL_LENGTH_MM:g}
cond_ap_angle = {COND_AP_MRAD:g}
gen_defocus = yes
defocus_nominal = {DEFOCUS_UM:g}
=== detector ===
det_pix_x = {N_PX}
det_pix_y = {N_PX}
pixel_size = 15
gain = {GAIN:g}
use_quantization = yes
dqe = {DQE:g}
mtf_a = {MTF['a']:g}
mtf_b = {MTF['b']:g}
mtf_c = {MTF['c']:g}
mtf_alpha = {MTF['alpha']:g}
mtf_beta = {MTF['beta']:g}
image_file_out = tiltseries.mrc
"""
    path = workdir / "input_TMV.txt"
    path.write_text(text)
    return path


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_temsim(exe: str, workdir: Path, input_path: Path) -> tuple[np.ndarray, float, float]:
    """TEM-simulator's stack, wall time and CPU time [s]."""
    c0, t0 = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run([exe, input_path.name], cwd=workdir, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    cpu = _children_cpu_s() - c0
    if proc.returncode != 0 or not (workdir / "tiltseries.mrc").exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError("TEM-simulator failed:\n" + "\n".join(tail))
    try:
        stack, _ = read_mrc(workdir / "tiltseries.mrc")
    except Exception:  # TEM-simulator's header may be unusual: read permissively
        import mrcfile

        with mrcfile.open(workdir / "tiltseries.mrc", permissive=True) as m:
            stack = np.array(m.data)
    return np.asarray(stack, dtype=np.float64), elapsed, cpu


# --- tem_core --------------------------------------------------------------------------------
def build_scene(angles_deg: list[float], *, slice_a: float, seed: int, device: str) -> dict:
    """tilt_series arguments for the TMV example (reading the structure is not timed)."""
    model = read_structure(DATA / "2om3.pdb.gz", dtype=torch.float64)
    tmv = expand_assembly(model, assembly_operators(DATA / "2om3.pdb.gz")).to(dtype=torch.float32)
    extent = N_PX * PIXEL_A
    thickness = ICE_CENTER_NM * NM_TO_A
    rotations = torch.stack([euler_zxz(*p[3:]) for p in PARTICLES])
    centers = torch.tensor(
        [[extent / 2 + p[0] * NM_TO_A, extent / 2 + p[1] * NM_TO_A, thickness / 2 + p[2] * NM_TO_A]
         for p in PARTICLES], dtype=torch.float64)
    specimen = build_specimen(tmv, len(PARTICLES), extent_a=(extent, extent),
                              ice=IceSlab(thickness_a=thickness),
                              generator=torch.Generator().manual_seed(seed),
                              poses=(rotations, centers))
    dose = TOTAL_DOSE_E_PER_NM2 / NM_TO_A**2 / len(angles_deg)
    scheme = TiltScheme(angles_rad=tuple(a * DEG_TO_RAD for a in angles_deg),
                        dose_e_per_a2=(dose,) * len(angles_deg),
                        defocus_a=(DEFOCUS_UM * UM_TO_A,) * len(angles_deg), name="TMV example")
    energy = ENERGY_KV * KV_TO_EV
    microscope = Microscope(
        energy_ev=energy, cs_a=CS_MM * MM_TO_A, cc_a=CC_MM * MM_TO_A,
        energy_spread_ev=ENERGY_SPREAD_EV,
        illumination_semiangle_rad=COND_AP_MRAD * MRAD_TO_RAD,
        objective_aperture_rad=(APERTURE_UM * UM_TO_A / 2) / (FOCAL_LENGTH_MM * MM_TO_A),
    )
    detector = Detector(dqe=DQE, gain_counts_per_e=GAIN, **MTF)
    potential = PotentialSettings(shape=(N_PX, N_PX), sampling_a=PIXEL_A,
                                  slice_thickness_a=slice_a, energy_ev=energy)
    dev = torch.device(device)
    if dev.type != "cpu":
        import dataclasses

        specimen = dataclasses.replace(
            specimen, atoms=specimen.atoms.to(device=dev),
            slab_center_a=specimen.slab_center_a.to(dev), slab_normal=specimen.slab_normal.to(dev),
            particle_centers_a=specimen.particle_centers_a.to(dev),
            particle_radii_a=specimen.particle_radii_a.to(dev),
            particle_rotations=specimen.particle_rotations.to(dev))
    return dict(specimen=specimen, scheme=scheme, potential=potential, microscope=microscope,
                detector=detector)


def with_representation(scene: dict, representation: str, map_voxel_a: float | None) -> dict:
    """The scene with ``PotentialSettings.particle_representation`` set."""
    import dataclasses

    if representation == "atoms":
        return scene
    potential = dataclasses.replace(scene["potential"], particle_representation=representation,
                                    map_voxel_a=map_voxel_a)
    return {**scene, "potential": potential}


def run_ours(scene: dict, *, method: str, seed: int | None) -> tuple[np.ndarray, float, float]:
    """Simulate the series (timed) with ``method``: the stack, wall and CPU time [s]
    (``seed=None``: expected counts, no noise). Particle maps, if any, are built in the
    timed call."""
    dev = scene["specimen"].atoms.positions_a.device
    generator = None if seed is None else torch.Generator(device=dev).manual_seed(seed)
    c0, t0 = time.process_time(), time.perf_counter()
    result = tilt_series(**scene, generator=generator, method=method, progress=False,
                         damage=None)  # TEM-simulator models no damage
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return result.stack.double().cpu().numpy(), elapsed, time.process_time() - c0


def _subset(scheme, keep: list[int]):
    import dataclasses

    return dataclasses.replace(scheme, angles_rad=tuple(scheme.angles_rad[i] for i in keep),
                               dose_e_per_a2=tuple(scheme.dose_e_per_a2[i] for i in keep),
                               defocus_a=tuple(scheme.defocus_a[i] for i in keep))


def warm_up(scene: dict, seed: int, map_voxel_a: float | None) -> None:
    """One tilt of each method and representation (Taichi compiles its kernels on first
    use; not timed)."""
    one = {**scene, "scheme": _subset(scene["scheme"], [0])}
    for method in ("projection", "multislice"):
        for rep in ("atoms", "map"):
            run_ours(with_representation(one, rep, map_voxel_a), method=method, seed=seed)


def map_errors(scene: dict, angles: list[float], map_voxel_a: float | None) -> list[dict]:
    """Error of the particle maps against the exact atoms, at up to 7 tilts: relative L2 of
    the projected potential (complex, relative to the exact real part's contrast) and of the
    expected (noise-free) images per method (relative to the exact image's contrast)."""
    import dataclasses
    import math as _math

    from tem_core.potential import ParticleMaps, projected_potential
    from tem_core.specimen import tilt_specimen

    keep = [i for i, a in enumerate(angles) if a in (-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0)]
    mapped = with_representation(scene, "map", map_voxel_a)
    spec = scene["specimen"]
    energy = scene["microscope"].energy_ev
    exact_pot = scene["potential"].at_energy(energy)
    map_pot = mapped["potential"].at_energy(energy)
    rows = []
    with torch.no_grad():
        maps = ParticleMaps(spec, map_pot)
        pot_err = []
        for i in keep:
            tilted = tilt_specimen(spec, tilt_angle_rad=angles[i] * _math.pi / 180.0)
            a = projected_potential(tilted, exact_pot)
            b = projected_potential(tilted, map_pot, coefficients=maps)
            pot_err.append(float((b - a).abs().norm() / (a.real - a.real.mean()).norm()))
        rows.append(dict(what="projected potential", angles=[angles[i] for i in keep],
                         rel_l2=pot_err))
        sub = _subset(scene["scheme"], keep)
        # the particles' signal: the exact image less the image of the ice alone
        ice_only = dataclasses.replace(
            maps.light, particle_centers_a=spec.particle_centers_a[:0],
            particle_radii_a=spec.particle_radii_a[:0],
            particle_rotations=spec.particle_rotations[:0])
        for method in ("projection", "multislice"):
            ex, _, _ = run_ours({**scene, "scheme": sub}, method=method, seed=None)
            ap, _, _ = run_ours({**mapped, "scheme": sub}, method=method, seed=None)
            ice, _, _ = run_ours({**scene, "specimen": ice_only, "scheme": sub}, method=method,
                                 seed=None)
            err = [float(np.linalg.norm(p - e) / np.linalg.norm(e - e.mean()))
                   for p, e in zip(ap, ex, strict=True)]
            rows.append(dict(what=f"image, {method}", angles=[angles[i] for i in keep],
                             rel_l2=err))
            err = [float(np.linalg.norm(p - e) / np.linalg.norm(e - b))
                   for p, e, b in zip(ap, ex, ice, strict=True)]
            rows.append(dict(what="  of particle signal", angles=[angles[i] for i in keep],
                             rel_l2=err))
    return rows


#: (module, attribute, label) of the stages timed by ``--stages`` (nested stages are
#: included in their parents: "multislice" holds the streamed slices, hence the split)
STAGES = (
    ("tem_core.potential.maps", "ParticleMaps.__init__", "map build (once per series)"),
    ("tem_core.potential.maps", "_ParticleType.project", "map: projection (gather, patch FFT)"),
    ("tem_core.potential.maps", "_ParticleType.column_fractions", "map: slice split"),
    ("tem_core.potential.maps", "_PosedMaps.z_extent", "map: z extent"),
    ("tem_core.potential.maps", "_PosedMaps._place", "map: patches into the field"),
    ("tem_core.potential", "_streaming_setup", "potential set-up (solvent geometry, edges)"),
    ("tem_core.potential", "_atoms_through_slices", "atoms: projection (one pass)"),
    ("tem_core.simulate", "multislice", "multislice (streamed slices included)"),
    ("tem_core.simulate", "image_plane_intensity", "optics: CTF and intensity"),
    ("tem_core.simulate", "add_inelastic", "optics: inelastic background"),
    ("tem_core.simulate", "expected_and_detected", "detector (MTF, DQE, noise)"),
    ("tem_core.memory", "release_free_memory", "heap releases (malloc_trim)"),
)


def stage_times(scene: dict, *, method: str, seed: int) -> tuple[float, dict[str, float]]:
    """CPU time [s] of one series and of each of :data:`STAGES` in it (timers wrapped
    around the functions for this run only)."""
    import contextlib
    import importlib
    from unittest import mock

    spent: dict[str, float] = {}

    def timed(function, label):
        def wrapper(*args, **kwargs):
            c0 = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - c0

        return wrapper

    with contextlib.ExitStack() as stack:
        for module_name, path, label in STAGES:
            owner = importlib.import_module(module_name)
            *outer, name = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            stack.enter_context(mock.patch.object(owner, name, timed(getattr(owner, name),
                                                                     label)))
        _, _, total = run_ours(scene, method=method, seed=seed)
    return total, spent


# --- comparison ------------------------------------------------------------------------------
def profile(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(image - image.mean())
    f, p = radial_profile(torch.fft.fft2(x).abs() ** 2, n_bins=50)
    f, p = f.numpy(), p.numpy()
    band = (f >= 0.05) & (f <= 0.15)
    return f, p / p[band].mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temsim", help="path to a TEM-simulator executable (optional)")
    parser.add_argument("--quick", action="store_true", help="7 tilts (−60° to 60° in 20°)")
    parser.add_argument("--workdir", help="where TEM-simulator's files go (default: a temp dir)")
    parser.add_argument("--slice", type=float, default=100.0, help="our slice thickness [Å]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="projection,multislice",
                        help="tem_core methods to time, comma-separated")
    parser.add_argument("--representations", default="atoms,map",
                        help="particle representations to time (PotentialSettings."
                             "particle_representation), comma-separated")
    parser.add_argument("--map-voxel", type=float, default=None,
                        help="map_voxel_a of the particle maps [Å] (default: half the pixel)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved runs of every code; the median is reported")
    parser.add_argument("--no-errors", action="store_true",
                        help="skip the map-vs-atoms error table (7 extra noise-free tilts)")
    parser.add_argument("--stages", action="store_true",
                        help="one more run per method and representation with CPU timers "
                             "around the stages (printed per tilt)")
    parser.add_argument("--json", type=Path, help="write the timings and conditions here")
    args = parser.parse_args()
    angles = tilt_angles_deg(args.quick)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    reps = [r.strip() for r in args.representations.split(",") if r.strip()]
    load_before = os.getloadavg()

    scene = build_scene(angles, slice_a=args.slice, seed=args.seed, device=args.device)
    n_atoms = len(scene["specimen"].atoms)
    warm_up(scene, args.seed, args.map_voxel)
    exe = workdir = inp = None
    if args.temsim:
        exe = shutil.which(args.temsim) or args.temsim
        workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp("_tmv"))
        inp = write_temsim_inputs(workdir, angles, args.seed + 1)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    stacks: dict[str, np.ndarray] = {}
    loads: list[float] = []
    for _ in range(args.repeat):  # interleaved, so that load changes hit every code alike
        loads.append(os.getloadavg()[0])
        if exe is not None:
            stack, t_ts, c_ts = run_temsim(exe, workdir, inp)
            if stack.shape[0] != len(angles):  # TEM-simulator may store (nx, ny, n)
                stack = np.moveaxis(stack, -1, 0) if stack.shape[-1] == len(angles) else stack
            stacks["TEM-simulator"] = stack
            times.setdefault("TEM-simulator", []).append(t_ts)
            cpu.setdefault("TEM-simulator", []).append(c_ts)
        for method in methods:
            for rep in reps:
                key = f"tem_core {method}" + ("" if rep == "atoms" else f" ({rep})")
                stacks[key], t, c = run_ours(with_representation(scene, rep, args.map_voxel),
                                             method=method, seed=args.seed)
                times.setdefault(key, []).append(t)
                cpu.setdefault(key, []).append(c)
    load_after = os.getloadavg()
    median = {k: float(np.median(v)) for k, v in times.items()}
    median_cpu = {k: float(np.median(v)) for k, v in cpu.items()}

    print(f"{len(angles)} tilts, 3 × TMV (2OM3 × 49, {n_atoms:,} atoms), {N_PX}² px at "
          f"{PIXEL_A} Å, {args.slice:.0f} Å slices; {args.repeat} interleaved run(s), median")
    if exe is None:
        print("no --temsim given: ran tem_core only (pass the path of a TEM-simulator build "
              "to compare)")
    else:
        print(f"TEM-simulator files in {workdir}")
    ref, ref_cpu = median.get("TEM-simulator"), median_cpu.get("TEM-simulator")
    print(f"\n{'code':<28} {'wall [s]':>9} {'per tilt [ms]':>13} {'TEM-sim/code':>12} "
          f"{'CPU [s]':>8} {'TEM-sim/code (CPU)':>18}")
    for k, t in median.items():
        c = median_cpu[k]
        ratio = f"{ref / t:>11.2f}×" if ref is not None else f"{'-':>12}"
        ratio_cpu = f"{ref_cpu / c:>17.2f}×" if ref_cpu is not None else f"{'-':>18}"
        print(f"{k:<28} {t:>9.2f} {1e3 * t / len(angles):>13.1f} {ratio} {c:>8.2f} {ratio_cpu}")
    print("all runs, wall [s]: " + "; ".join(f"{k} " + ", ".join(f"{x:.2f}" for x in v)
                                             for k, v in times.items()))
    print(f"load average (uptime, 1 min) before {load_before[0]:.2f}, at each round "
          + ", ".join(f"{x:.2f}" for x in loads) + f", after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs); torch threads {torch.get_num_threads()}; "
          "TEM-simulator runs on one core")
    voxel = args.map_voxel if args.map_voxel is not None else 0.5 * PIXEL_A
    if any(r != "atoms" for r in reps):
        print(f"(map) = PotentialSettings(particle_representation='map', map_voxel_a={voxel}): "
              "each particle type's potential computed once (included in the time)")

    pick = [i for i, a in enumerate(angles) if a in (-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0)]
    print(f"\n{'tilt [°]':>8} " + " ".join(f"{k[:26]:>26} {'std/mean':>8}" for k in stacks))
    for i in pick:
        cells = [f"{st[i].mean():>26.2f} {st[i].std() / st[i].mean():>8.4f}"
                 for st in stacks.values()]
        print(f"{angles[i]:>8.0f} " + " ".join(cells))
    print("\nradially averaged power (0° tilt, normalised over 0.05-0.15 cycles/px):")
    i0 = min(range(len(angles)), key=lambda i: abs(angles[i]))
    freqs = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.49)
    print(f"{'code':<28} " + " ".join(f"{f:>7.2f}" for f in freqs) + "  [cycles/px]")
    for k, stack in stacks.items():
        f, p = profile(stack[i0])
        print(f"{k:<28} " + " ".join(f"{np.interp(x, f, p):>7.3f}" for x in freqs))
    errors = None
    if not args.no_errors and any(r != "atoms" for r in reps):
        errors = map_errors(scene, angles, args.map_voxel)
        print(f"\nerror of the particle maps (map_voxel_a = {voxel} Å) against the exact atoms, "
              "noise-free, relative L2 of the exact contrast (image: also of the particles' "
              "signal, the exact image less the image of the ice alone):")
        print(f"{'':<28} " + " ".join(f"{a:>8.0f}" for a in errors[0]["angles"]) + "  [°]")
        for row in errors:
            print(f"{row['what']:<28} " + " ".join(f"{e:>8.1e}" for e in row["rel_l2"]))
    stages = {}
    if args.stages:
        print(f"\nCPU time per tilt by stage [ms] (one more run each; {torch.get_num_threads()} "
              "torch threads; nested stages are included in their parents):")
        for method in methods:
            for rep in reps:
                key = f"tem_core {method}" + ("" if rep == "atoms" else f" ({rep})")
                total, spent = stage_times(with_representation(scene, rep, args.map_voxel),
                                           method=method, seed=args.seed)
                stages[key] = {"total_cpu_s": total, **spent}
                print(f"{key}: {1e3 * total / len(angles):.1f} ms per tilt in all")
                for label, t in sorted(spent.items(), key=lambda kv: -kv[1]):
                    print(f"  {label:<46} {1e3 * t / len(angles):>7.1f}")
    if args.json:
        record = {
            "benchmark": "benchmarks/vs_temsim.py" + (" --quick" if args.quick else ""),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "setup": f"TEM-simulator's TMV example: {len(angles)} tilts, {N_PX}^2 at "
                     f"{PIXEL_A} Å, {n_atoms} atoms, {args.slice:.0f} Å slices",
            "repeat": args.repeat,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "median_s": median,
            "median_cpu_s": median_cpu,
            "runs_s": times,
            "runs_cpu_s": cpu,
            "load_average_per_round": loads,
            "map_voxel_a": voxel,
            "map_errors": errors,
            "stage_cpu_s": stages or None,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
