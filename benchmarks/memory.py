"""Memory preflight: estimated vs measured peak memory per stage, dtype and requires_grad.

Each case runs in a fresh Python process: a warm-up on a 64 x 64 grid (imports, Taichi,
tables), then the case; the measured peak is the rise of the resident set (VmHWM after the
case minus VmRSS before it, reset through /proc/self/clear_refs) on the CPU, and
``torch.cuda.max_memory_allocated`` on CUDA. The estimate is what the stage's preflight
(:mod:`tem_core.memory`) compares with the available memory. Target: measured / estimate in
[1/1.5, 1.5] for every case.

    .venv/bin/python benchmarks/memory.py [--quick] [--sizes 512,1024,2048] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ctf", "mtf", "slice_potential", "micrograph")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _case(stage: str, n: int, dtype_name: str, grad: bool, device: str) -> dict:
    import torch

    from tem_core import memory
    from tem_core.detector import Detector
    from tem_core.optics import Microscope, ctf
    from tem_core.potential import PotentialSettings, slice_edges_a, slice_potential
    from tem_core.simulate import Imaging, micrograph
    from tem_core.specimen import IceSlab, build_specimen
    from tem_core.structure import read_structure

    warnings.simplefilter("ignore")
    dtype = getattr(torch, dtype_name)
    dev = torch.device(device)
    model = read_structure(ROOT / "data" / "1crn.pdb.gz").centered().to(device=dev, dtype=dtype)
    scope = Microscope(energy_ev=300e3)

    def run(size: int):
        if stage == "ctf":
            return ctf((size, size), sampling_a=1.0, microscope=scope, defocus_a=1e4,
                       device=dev, dtype=torch.complex128 if dtype == torch.float64
                       else torch.complex64)  # fmt: skip
        if stage == "mtf":
            return Detector().mtf((size, size), device=dev, dtype=dtype)
        specimen = build_specimen(
            model, 1, extent_a=(float(size), float(size)), ice=IceSlab(thickness_a=100.0),
            generator=torch.Generator(device=dev).manual_seed(1),
        )  # fmt: skip
        atoms = specimen.atoms
        if grad:
            positions = atoms.positions_a.detach().clone().requires_grad_(True)
            specimen = dataclasses.replace(specimen, atoms=atoms._replace_positions(positions))
            atoms = specimen.atoms
        if stage == "slice_potential":
            with torch.set_grad_enabled(grad):
                out = slice_potential(
                    atoms.atomic_numbers, atoms.positions_a, atoms.b_factors_a2,
                    atoms.occupancies, z0_a=0.0, z1_a=100.0, shape=(size, size),
                    sampling_a=1.0, backend="torch",
                )  # fmt: skip
                if grad:
                    out.sum().backward()
            return out
        settings = PotentialSettings(shape=(size, size), sampling_a=1.0, slice_thickness_a=20.0)
        with torch.set_grad_enabled(grad):
            result = micrograph(
                specimen, potential=settings, microscope=scope, detector=Detector(),
                imaging=Imaging(defocus_a=1e4, dose_e_per_a2=40.0),
            )  # fmt: skip
            if grad:
                result.expected.sum().backward()
        return result, len(slice_edges_a(specimen, settings)) - 1

    run(64)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status("VmRSS")
    out = run(n)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = _status("VmHWM") - base
    shape = (n, n)
    if stage == "ctf":
        estimate = memory.ctf_bytes(shape, dtype)
    elif stage == "mtf":
        estimate = memory.mtf_bytes(shape, dtype)
    elif stage == "slice_potential":
        estimate = memory.slice_potential_bytes(shape, dtype, len(model), 12)
    else:
        estimate = memory.micrograph_bytes(shape, dtype, n_slices=out[1], requires_grad=grad)
    return dict(stage=stage, n=n, dtype=dtype_name, grad=grad, peak=peak, estimate=estimate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 and 512 only")
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        stage, n, dtype, grad = args.case.split(":")
        print(json.dumps(_case(stage, int(n), dtype, grad == "1", args.device)))
        return
    sizes = [256, 512] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(f"load (uptime): {os.getloadavg()}; device {args.device}")
    header = f"{'stage':16s} {'n':>5s} {'dtype':8s} {'grad':5s} {'estimate MB':>12s} "
    print(header + f"{'measured MB':>12s} {'meas/est':>9s}")
    worst = []
    for stage in args.stages.split(","):
        grads = (False, True) if stage in ("slice_potential", "micrograph") else (False,)
        for n in sizes:
            for dtype in ("float32", "float64"):
                for grad in grads:
                    case = f"{stage}:{n}:{dtype}:{int(grad)}"
                    done = subprocess.run(
                        [sys.executable, __file__, "--case", case, "--device", args.device],
                        capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                    )  # fmt: skip
                    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
                    if done.returncode or not lines:
                        print(f"{case}: failed\n{done.stderr[-2000:]}")
                        continue
                    r = json.loads(lines[-1])
                    ratio = r["peak"] / r["estimate"]
                    worst.append(ratio)
                    print(
                        f"{stage:16s} {n:5d} {dtype:8s} {str(grad):5s} "
                        f"{r['estimate'] / 1e6:12.1f} {r['peak'] / 1e6:12.1f} {ratio:9.2f}",
                        flush=True,
                    )
    if worst:
        inside = sum(1 / 1.5 <= w <= 1.5 for w in worst)
        print(f"measured/estimate from {min(worst):.2f} to {max(worst):.2f}; "
              f"{inside} of {len(worst)} cases within 1.5x")  # fmt: skip


if __name__ == "__main__":
    main()
