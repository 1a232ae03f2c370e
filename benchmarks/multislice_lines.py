"""Multislice alone on the TMV tilt series' slices: line steps versus steps on the grid.

The scene is ``vs_temsim.py``'s (TEM-simulator's TMV example: 61 tilts about x, 400² at 5 Å,
200 kV, 50 nm ice, three TMV segments, 100 Å slices). Each tilt's slices are computed once
(not timed); then :func:`tem_core.propagate.multislice` runs on them (a) as shipped: the
slices of plain ice, constant along x in the slab tilted about x, step the wave as its
transform along x (``tem_core/propagate/lines.py``), and (b) as before that: their
transmission function computed on one line, the wave stepped through them with 2-D
transforms on the whole grid (``grid`` column). Rounds alternate
(a) and (b); the table gives the minimum CPU time per tilt over the rounds, on one torch
thread (what a 400² tilt runs on inside ``tilt_series``), the slices by kind (plain ice
before the first slice with particles, between them, after the last; slices with
particles) and the largest difference of the exit waves (float32, ``|ψ| ≈ 1``).

    .venv/bin/python benchmarks/multislice_lines.py [--representation map|atoms]
        [--rounds 3] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from vs_temsim import build_scene, tilt_angles_deg, with_representation  # benchmarks/ on sys.path

import tem_core.propagate as propagate
from tem_core.potential import AtomCoefficients, ParticleMaps, iter_slice_potentials
from tem_core.specimen import tilt_specimen
from tem_core.units import DEG_TO_RAD


class _GridSteps:
    """The line slices as before the line steps: transmission computed on one line, the wave
    stepped through it on the whole grid (a stand-in for ``lines.LineWave``)."""

    def __init__(self, shape) -> None:
        self.shape, self.psi, self.axis, self._for, self._scaled = (
            tuple(shape),
            None,
            -1,
            None,
            None,
        )

    @property
    def active(self) -> bool:
        return self.psi is not None

    def plane(self, axis, *, dtype, device) -> None:
        self.psi, self.axis = torch.ones(self.shape, dtype=dtype, device=device), axis

    def of(self, wave, axis, propagator) -> None:
        self.psi, self.axis = wave, axis

    def step(self, transmission, propagator) -> None:
        if self._for is not propagator:  # the inverse transform's 1/n in the propagator
            self._for, self._scaled = propagator, propagator * (1.0 / propagator.numel())
        spectrum = torch.fft.fft2(self.psi * transmission, norm="backward").mul_(self._scaled)
        self.psi = torch.fft.ifft2(spectrum, norm="forward")

    def wave(self):
        psi, self.psi = self.psi, None
        return psi


def _before(slices, **kw):
    """Every step on the whole grid (the line slices' transmission still on one line)."""
    original = propagate.LineWave
    propagate.LineWave = _GridSteps
    try:
        return propagate.multislice(slices, **kw)
    finally:
        propagate.LineWave = original


def _kinds(slices) -> dict[str, int]:
    atoms = [propagate.constant_axis(v) is None for v in slices]
    if not any(atoms):
        return {"before": len(slices), "between": 0, "after": 0, "with particles": 0}
    first = atoms.index(True)
    last = len(atoms) - 1 - atoms[::-1].index(True)
    return {
        "before": first,
        "between": atoms[first:last].count(False),
        "after": len(atoms) - 1 - last,
        "with particles": sum(atoms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--representation", default="map", choices=["map", "atoms"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="7 tilts (−60° to 60° in 20°)")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    angles = tilt_angles_deg(args.quick)
    scene = with_representation(
        build_scene(angles, slice_a=100.0, seed=0, device="cpu"), args.representation, None
    )
    specimen = scene["specimen"]
    potential = scene["potential"].at_energy(scene["microscope"].energy_ev)
    kw = dict(
        sampling_a=potential.sampling_a,
        slice_thickness_a=potential.slice_thickness_a,
        energy_ev=potential.energy_ev,
    )
    load_before = os.getloadavg()[0]
    with torch.no_grad():
        if args.representation == "map":
            coefficients = ParticleMaps(specimen, potential)
            imaged = coefficients.light
        else:
            coefficients, imaged = AtomCoefficients(specimen, potential), specimen
        tilts = [
            list(
                iter_slice_potentials(
                    tilt_specimen(imaged, tilt_angle_rad=a * DEG_TO_RAD, tilt_axis_angle_rad=0.0),
                    potential,
                    coefficients=coefficients,
                )
            )
            for a in angles
        ]
        runs = {"lines": propagate.multislice, "grid": _before}
        best = {name: [float("inf")] * len(tilts) for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                for i, slices in enumerate(tilts):
                    c0 = time.process_time()
                    run(slices, **kw)
                    best[name][i] = min(best[name][i], time.process_time() - c0)
        diff = [
            float((propagate.multislice(s, **kw) - _before(s, **kw)).abs().max()) for s in tilts
        ]
    kinds: dict[str, int] = {}
    for slices in tilts:
        for key, count in _kinds(slices).items():
            kinds[key] = kinds.get(key, 0) + count
    n = len(angles)
    print(
        f"{n} tilts, particle representation {args.representation!r}, {args.rounds} rounds, "
        f"1 torch thread, load {load_before:.2f} before / {os.getloadavg()[0]:.2f} after"
    )
    print("slices of plain ice before / between / after the particles, with particles: "
          + " / ".join(str(v) for v in kinds.values()))  # fmt: skip
    print(f"{'tilt [°]':>8} {'slices':>6} {'grid [ms]':>9} {'lines [ms]':>10} {'max |Δψ|':>9}")
    for i in range(0, n, max(1, n // 7)):
        print(
            f"{angles[i]:>8.0f} {len(tilts[i]):>6} {1e3 * best['grid'][i]:>9.1f} "
            f"{1e3 * best['lines'][i]:>10.1f} {diff[i]:>9.1e}"
        )
    total = {name: sum(v) for name, v in best.items()}
    print(
        f"{'all':>8} {sum(map(len, tilts)):>6} {total['grid']:>8.2f}s {total['lines']:>9.2f}s "
        f"{max(diff):>9.1e}   ({1e3 * total['grid'] / n:.1f} -> "
        f"{1e3 * total['lines'] / n:.1f} ms CPU per tilt)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                dict(
                    benchmark="benchmarks/multislice_lines.py",
                    representation=args.representation,
                    rounds=args.rounds,
                    angles_deg=angles,
                    slices_by_kind=kinds,
                    cpu_s_per_tilt=best,
                    total_cpu_s=total,
                    max_abs_diff=diff,
                    load_before_after=[load_before, os.getloadavg()[0]],
                ),
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
