"""How the forward simulation scales: with the grid size and with the number of atoms.

One process, one run, so that the rows compare alike on a shared machine (report ``uptime``
with the numbers). Each case simulates the expected micrograph (slice potentials with
ice, multislice, CTF, detector) of apoferritins (6Z6U, 32,618 atoms each) in 300 Å of ice
at 1 Å pixels, 20 Å slices, float32, after a warm-up that compiles the Taichi kernels; the
best of ``--repeat`` runs is kept.

* grid: one apoferritin on 512², 1024², 2048², 4096² pixels (256² to 1024² with ``--quick``);
* atoms: 1, 4, 16, 36 apoferritins on a 1024² grid (1, 2, 4, 8 on 512² with ``--quick``: 16
  do not fit a 512 Å field);
* virions: 1, 2, 4 Zika virions (5IRE, 661,440 atoms each) in 60 nm of ice on 1024² pixels
  of 2 Å (1 and 2 on 512² pixels of 4 Å with ``--quick``).

Each series ends with a fitted exponent: the least-squares slope of log(time) against
log(pixels) or log(atoms), i.e. ``time ∝ size^p``. Prints a table and, with ``--json PATH``,
writes the rows and exponents with the conditions (date, CPU threads, load average, torch
version) for the book's performance chapter.

    .venv/bin/python benchmarks/scaling.py [--quick] [--series grid,atoms,virions]
        [--device cpu|cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids and fewer atoms")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--series", default="grid,atoms,virions", help="which series to run")
    parser.add_argument("--json", type=Path, help="write the rows and conditions here")
    args = parser.parse_args()

    import numpy as np
    import torch

    from tem_core.detector import Detector
    from tem_core.optics import Microscope
    from tem_core.potential import PotentialSettings
    from tem_core.simulate import Imaging, micrograph
    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import assembly_operators, expand_assembly, read_structure

    device = torch.device(args.device)
    apoferritin = read_structure(DATA / "6z6u.pdb.gz", keep_waters=False, dtype=torch.float32)
    microscope = Microscope(energy_ev=300e3, cs_a=2.7e7)
    detector = Detector()
    imaging = Imaging(defocus_a=15_000.0, dose_e_per_a2=40.0)

    def case(n_px: int, n_particles: int, model=None, sampling_a=1.0, thickness_a=300.0):
        model = apoferritin if model is None else model
        extent = n_px * sampling_a
        specimen = build_specimen(
            model.to(device=device),
            n_particles,
            extent_a=(extent, extent),
            ice=IceSlab(thickness_a=thickness_a),
            generator=torch.Generator().manual_seed(0),
            min_gap_a=2.0,
        )
        settings = PotentialSettings(
            shape=(n_px, n_px), sampling_a=sampling_a, slice_thickness_a=20.0, energy_ev=300e3
        )

        def run():
            with torch.no_grad():
                micrograph(
                    specimen,
                    potential=settings,
                    microscope=microscope,
                    detector=detector,
                    imaging=imaging,
                )
            if device.type == "cuda":
                torch.cuda.synchronize()

        return len(specimen.atoms), run

    series = {name.strip() for name in args.series.split(",")}
    grids = [256, 512, 1024] if args.quick else [512, 1024, 2048, 4096]
    counts = [1, 2, 4, 8] if args.quick else [1, 4, 16, 36]
    atoms_grid = 512 if args.quick else 1024
    _, warm = case(256, 1)
    warm()
    rows = []

    def add(name, n_px, particles, n_atoms, run):
        seconds = _time(run, args.repeat)
        rows.append(
            dict(series=name, n_px=n_px, particles=particles, atoms=n_atoms, seconds=seconds)
        )
        print(f"{name:>7} {n_px:>5}² {particles:9d} {n_atoms:10,d} {seconds:8.2f}", flush=True)

    print(f"{'series':>7} {'grid':>6} {'particles':>9} {'atoms':>10} {'seconds':>8}")
    if "grid" in series:
        for n_px in grids:
            n_atoms, run = case(n_px, 1)
            add("grid", n_px, 1, n_atoms, run)
    if "atoms" in series:
        for n in counts:
            n_atoms, run = case(atoms_grid, n)
            add("atoms", atoms_grid, n, n_atoms, run)
    if "virions" in series:
        path = DATA / "5ire.pdb.gz"
        zika = expand_assembly(read_structure(path, dtype=torch.float64), assembly_operators(path))
        zika = zika.to(dtype=torch.float32)
        n_px, sampling = (512, 4.0) if args.quick else (1024, 2.0)
        for n in [1, 2] if args.quick else [1, 2, 4]:
            n_atoms, run = case(n_px, n, zika, sampling, 600.0)
            add("virions", n_px, n, n_atoms, run)
    exponents = {}
    for name, size in (("grid", lambda r: r["n_px"] ** 2), ("atoms", lambda r: r["atoms"]),
                       ("virions", lambda r: r["atoms"])):  # fmt: skip
        picked = [r for r in rows if r["series"] == name]
        if len(picked) >= 2:
            x = np.log([size(r) for r in picked])
            y = np.log([r["seconds"] for r in picked])
            exponents[name] = float(np.polyfit(x, y, 1)[0])
    for name, p in exponents.items():
        per = "pixels" if name == "grid" else "atoms"
        print(f"{name}: time ∝ {per}^{p:.2f} (least-squares slope of log time vs log {per})")
    load = os.getloadavg()
    print(
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
        f"{torch.get_num_threads()} torch threads; {platform.processor() or 'cpu'}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "benchmark": "benchmarks/scaling.py" + (" --quick" if args.quick else ""),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_average_1_5_15": [round(x, 2) for x in load],
            "rows": rows,
            "exponents": exponents,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
