"""How the forward simulation scales: with the grid size and with the number of atoms.

One process, one run, so that the rows compare alike on a shared machine (report ``uptime``
with the numbers). Each case simulates the expected micrograph (slice potentials with
ice, multislice, CTF, detector) of apoferritins (6Z6U, 32,618 atoms each) in 300 Å of ice
at 1 Å pixels, 20 Å slices, float32, after a warm-up that compiles the Taichi kernels; the
best of ``--repeat`` runs is kept.

* grid: one apoferritin on 256², 512², 1024² (and 2048² without ``--quick``) pixels;
* atoms: 1, 4, 16 (and 36) apoferritins on a 1024² grid (512² with ``--quick``).

Prints a table and, with ``--json PATH``, writes the rows with the conditions (date, CPU
threads, load average, torch version) for the book's performance chapter.

    .venv/bin/python benchmarks/scaling.py [--quick] [--device cpu|cuda] [--json PATH]
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
    parser.add_argument("--json", type=Path, help="write the rows and conditions here")
    args = parser.parse_args()

    import torch

    from tem_core.detector import Detector
    from tem_core.optics import Microscope
    from tem_core.potential import PotentialSettings
    from tem_core.simulate import Imaging, micrograph
    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import read_structure

    device = torch.device(args.device)
    apoferritin = read_structure(DATA / "6z6u.pdb.gz", keep_waters=False, dtype=torch.float32)
    microscope = Microscope(energy_ev=300e3, cs_a=2.7e7)
    detector = Detector()
    imaging = Imaging(defocus_a=15_000.0, dose_e_per_a2=40.0)

    def case(n_px: int, n_particles: int):
        specimen = build_specimen(
            apoferritin.to(device=device),
            n_particles,
            extent_a=(float(n_px),) * 2,
            ice=IceSlab(thickness_a=300.0),
            generator=torch.Generator().manual_seed(0),
            min_gap_a=2.0,
        )
        settings = PotentialSettings(
            shape=(n_px, n_px), sampling_a=1.0, slice_thickness_a=20.0, energy_ev=300e3
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

    grids = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048]
    counts = [1, 4, 16] if args.quick else [1, 4, 16, 36]
    atoms_grid = 512 if args.quick else 1024
    _, warm = case(256, 1)
    warm()
    rows = []
    for n_px in grids:
        n_atoms, run = case(n_px, 1)
        rows.append(
            {
                "series": "grid",
                "n_px": n_px,
                "particles": 1,
                "atoms": n_atoms,
                "seconds": _time(run, args.repeat),
            }
        )
    for n in counts:
        n_atoms, run = case(atoms_grid, n)
        rows.append(
            {
                "series": "atoms",
                "n_px": atoms_grid,
                "particles": n,
                "atoms": n_atoms,
                "seconds": _time(run, args.repeat),
            }
        )
    print(f"{'series':>6} {'grid':>6} {'particles':>9} {'atoms':>9} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['series']:>6} {r['n_px']:>5}² {r['particles']:9d} {r['atoms']:9,d} "
            f"{r['seconds']:8.2f}"
        )
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
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
