"""Reproducibility: the same seed gives the same bits, run after run and thread count to
thread count.

Each run is a fresh Python process with ``torch.set_num_threads(T)`` (Taichi keeps its own
pool); it prints the SHA-256 of every output: a micrograph (512², four crambin copies in a
200 Å slab with a 300 Å hole, structured amorphous ice, noise, float32 and
float64, multislice and projection), the gradient of its expected image with respect to the
atom positions, and a five-tilt series (256², structured ice, damage, noise). The table
says, per output, whether two runs with the same thread count agree bit for bit, and whether
1 and 2 threads do (and the largest relative difference when they do not).

    .venv/bin/python benchmarks/reproducibility.py [--threads 1,2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _outputs(out_dir: Path) -> dict[str, str]:
    """Every output of one run: its hash, and the array saved under ``out_dir``."""
    import numpy as np
    import torch

    from tem_core.detector import Detector
    from tem_core.optics import Microscope
    from tem_core.potential import IceStructure, PotentialSettings
    from tem_core.simulate import Imaging, TiltScheme, micrograph, tilt_series
    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import read_structure

    warnings.simplefilter("ignore")
    hashes = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        array = tensor.detach().cpu().contiguous().numpy()
        hashes[name] = hashlib.sha256(array.tobytes()).hexdigest()[:16]
        np.save(out_dir / f"{name}.npy", array)

    scope = Microscope(energy_ev=300e3)
    detector = Detector()
    for dtype in (torch.float32, torch.float64):
        tag = str(dtype).removeprefix("torch.")
        model = read_structure(ROOT / "data" / "1crn.pdb.gz").centered().to(dtype=dtype)
        ice = IceSlab(thickness_a=200.0, hole_diameter_a=300.0)
        specimen = build_specimen(
            model, 4, extent_a=(512.0, 512.0), ice=ice,
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        settings = PotentialSettings(
            shape=(512, 512), sampling_a=1.0, slice_thickness_a=20.0,
            ice_structure=IceStructure(seed=5),
        )  # fmt: skip
        for method in ("multislice", "projection"):
            result = micrograph(
                specimen, potential=settings, microscope=scope, detector=detector,
                imaging=Imaging(defocus_a=1.5e4, dose_e_per_a2=40.0, method=method),
                generator=torch.Generator().manual_seed(7),
            )  # fmt: skip
            keep(f"micrograph_{method}_{tag}_counts", result.counts)
            keep(f"micrograph_{method}_{tag}_expected", result.expected)
        positions = specimen.atoms.positions_a.detach().clone().requires_grad_(True)
        moved = dataclasses.replace(specimen, atoms=specimen.atoms._replace_positions(positions))
        result = micrograph(
            moved, potential=settings, microscope=scope, detector=detector,
            imaging=Imaging(defocus_a=1.5e4, dose_e_per_a2=40.0),
        )  # fmt: skip
        (result.expected**2).sum().backward()
        keep(f"gradient_positions_{tag}", positions.grad)
    model = read_structure(ROOT / "data" / "1crn.pdb.gz").centered()
    specimen = build_specimen(
        model, 2, extent_a=(256.0, 256.0), ice=IceSlab(thickness_a=150.0),
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    scheme = TiltScheme(
        angles_rad=(0.0, -0.35, 0.35, -0.7, 0.7), dose_e_per_a2=(10.0,) * 5,
        defocus_a=(2e4,) * 5,
    )  # fmt: skip
    series = tilt_series(
        specimen, scheme=scheme, microscope=scope, detector=detector,
        potential=PotentialSettings(
            shape=(256, 256), sampling_a=1.0, slice_thickness_a=20.0,
            ice_structure=IceStructure(seed=5),
        ),
        generator=torch.Generator().manual_seed(11), progress=False,
    )  # fmt: skip
    keep("tilt_series_float32", series.stack)
    return hashes


def _run(threads: int, out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, __file__, "--one", str(threads), "--out", str(out_dir)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"run with {threads} threads failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _max_rel(a: Path, b: Path) -> float:
    import numpy as np

    x, y = np.load(a).astype(np.float64), np.load(b).astype(np.float64)
    return float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-300))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", default="/tmp/tem_core_reproducibility")
    parser.add_argument("--json", help="write the table to this file")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        import torch

        torch.set_num_threads(args.one)
        print(json.dumps(_outputs(Path(args.out))), flush=True)
        return
    import torch

    work = Path(args.work)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"load (1, 5, 15 min): {os.getloadavg()}; torch {torch.__version__}")
    runs = {}
    for repeat in range(args.repeats):  # interleaved: 1, 2, 1, 2 threads
        for t in threads:
            runs[t, repeat] = _run(t, work / f"t{t}_r{repeat}")
    names = list(runs[threads[0], 0])
    rows = []
    head = " ".join(f"{f'{t} thr same':>10s}" for t in threads)
    print(f"{'output':38s} {head} {'1 vs 2 thr':>12s}")
    for name in names:
        same = {t: len({runs[t, r][name] for r in range(args.repeats)}) == 1 for t in threads}
        across = len({runs[t, 0][name] for t in threads}) == 1
        diff = 0.0
        if not across:
            diff = _max_rel(work / f"t{threads[0]}_r0" / f"{name}.npy",
                            work / f"t{threads[-1]}_r0" / f"{name}.npy")  # fmt: skip
        rows.append(dict(output=name, same_threads=same, across_threads=across, max_rel=diff))
        cells = " ".join(f"{'bitwise' if same[t] else 'DIFFER':>10s}" for t in threads)
        print(f"{name:38s} {cells} {'bitwise' if across else f'{diff:.1e}':>12s}", flush=True)
    print(f"load after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
