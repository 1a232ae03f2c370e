"""SIRT of a simulated TMV tilt series denoised by every method, against the known truth.

The paper's Fig. 10 reconstructs the noisy, the Topaz-denoised and its own denoised series.
This script does the same on the reconstruction chapter's scene (TEM-simulator's TMV
example: 200 kV, 5 µm underfocus, 60 e/Å² over a ±60° dose-symmetric series), with the
specimen's potential on the reconstruction grid as the truth:

* ``raw``: the noisy series;
* ``poisson``: :func:`tem_core.denoise.denoise_poisson` tilt by tilt (chapter 6's method);
* ``surrogate``: the published surrogate-loss method (:func:`tem_core.denoise.denoise_surrogate`,
  published settings, one projection per tilt tiled as the release does);
* ``surrogate-alg2``: the same with the paper's Algorithm 2 references, the tilt and its
  aligned neighbours (:func:`tem_core.denoise.neighbour_references`, ``step=2`` so the even and
  the odd halves stay independent for the FSC);
* ``topaz``: the pretrained Topaz-Denoise U-Net (``_topaz_denoise.py`` in the comparison
  venv; the row is skipped with a note when that venv is absent);
* ``noise-free``: the series without shot noise (the ceiling).

For each: correlation with the truth (all frequencies and low-passed to 4 nm), PSNR after
the affine fit, and the even/odd FSC 0.5 resolution of SIRT. Usage::

    .venv/bin/python benchmarks/reconstruct_denoised.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from tem_core import units
from tem_core.denoise import (
    SurrogateSettings,
    denoise_poisson,
    denoise_surrogate,
    neighbour_references,
)
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import PotentialSettings
from tem_core.reconstruct import (
    correlation,
    fourier_lowpass,
    fourier_shell_correlation,
    geometry_from_tilt_series,
    image_contrast,
    potential_on_grid,
    psnr_db,
    resolution_at,
    sirt,
    split_even_odd,
)
from tem_core.simulate import tilt_scheme, tilt_series
from tem_core.specimen import assembly_in_ice
from tem_core.structure import rotation_about_axis

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the chapter's quick scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="surrogate iterations")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--compare-python",
        type=Path,
        default=ROOT / ".venv-compare" / "bin" / "python",
        help="Python of the comparison venv with topaz-em",
    )
    args = parser.parse_args()

    # the reconstruction chapter's scene (full or quick), in field units at this edge
    voltage_kv, cs_mm, defocus_um, total_dose_e_per_nm2 = 200.0, 2.0, 5.0, 6000.0
    tilt_max_deg, tilt_step_deg, pixel_nm, field_px = 60.0, 2.0, 0.5, 80
    tmv_subunits, ice_nm, slice_nm, sirt_iterations, lowpass_nm = 49, 30.0, 2.0, 30, 4.0
    if args.quick:
        tilt_step_deg, pixel_nm, field_px, ice_nm, slice_nm = 12.0, 1.0, 40, 24.0, 12.0
        tmv_subunits, sirt_iterations = 16, 10
    deg = units.DEG_TO_RAD
    sampling_a, ice_a = pixel_nm * units.NM_TO_A, ice_nm * units.NM_TO_A
    scheme = tilt_scheme(
        "dose-symmetric",
        min_angle_rad=-tilt_max_deg * deg,
        max_angle_rad=tilt_max_deg * deg,
        step_rad=tilt_step_deg * deg,
        total_dose_e_per_a2=total_dose_e_per_nm2 / units.NM_TO_A**2,
        defocus_a=defocus_um * units.UM_TO_A,
        tilt_axis_angle_rad=0.5 * math.pi,
    )
    extent_a = field_px * sampling_a
    axis_y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    specimen = assembly_in_ice(
        ROOT / "data" / "2om3.pdb.gz",
        extent_a=(extent_a, extent_a),
        ice_thickness_a=ice_a,
        rotations=rotation_about_axis(axis_y, 0.5 * math.pi)[None],
        n_subunits=tmv_subunits,
    )
    energy_ev = voltage_kv * units.KV_TO_EV
    detector = Detector()
    common = dict(
        scheme=scheme,
        potential=PotentialSettings(
            shape=(field_px, field_px),
            sampling_a=sampling_a,
            slice_thickness_a=slice_nm * units.NM_TO_A,
            energy_ev=energy_ev,
        ),
        microscope=Microscope(energy_ev=energy_ev, cs_a=cs_mm * units.MM_TO_A),
        detector=detector,
        progress=False,
    )
    noisy = tilt_series(specimen, generator=torch.Generator().manual_seed(args.seed + 1), **common)
    clean = tilt_series(specimen, generator=None, **common)
    stack = noisy.stack
    n = stack.shape[0]

    series: dict[str, torch.Tensor] = {"raw": stack}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    series["poisson"] = denoise_poisson(stack[:, None], detector=detector).denoised
    seconds["poisson"] = time.perf_counter() - t0
    settings = SurrogateSettings(
        **({} if args.iterations is None else {"n_iterations": args.iterations})
    )
    gen = torch.Generator().manual_seed(args.seed + 2)
    t0 = time.perf_counter()
    series["surrogate"] = denoise_surrogate(
        stack[:, None], detector=detector, generator=gen, settings=settings
    ).denoised
    seconds["surrogate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    series["surrogate-alg2"] = torch.stack(
        [
            denoise_surrogate(
                neighbour_references(stack, i, rotation=False, step=2),
                detector=detector,
                generator=gen,
                settings=settings,
            ).denoised
            for i in range(n)
        ]
    )
    seconds["surrogate-alg2"] = time.perf_counter() - t0
    from denoise import run_topaz  # noqa: PLC0415 (benchmarks/ on sys.path)

    t0 = time.perf_counter()
    top = run_topaz({i: stack[i] for i in range(n)}, str(args.compare_python))
    if top:
        series["topaz"] = torch.stack([top[i] for i in range(n)]).to(stack.dtype)
        seconds["topaz"] = time.perf_counter() - t0
    series["noise-free"] = clean.stack

    geometry = geometry_from_tilt_series(noisy, thickness_a=ice_a, tilt_axis_angle_rad=math.pi / 2)
    truth = potential_on_grid(specimen, geometry, energy_ev=energy_ev).float()
    x0, x1 = geometry.fully_sampled_x()
    crop = (slice(None), slice(None), slice(x0, x1))
    res_a = lowpass_nm * units.NM_TO_A
    truth_lp = fourier_lowpass(truth[crop], resolution_a=res_a, voxel_size_a=sampling_a)
    rows = []
    for label, images in series.items():
        b = image_contrast(images, invert=True)
        vol = sirt(b, geometry, n_iterations=sirt_iterations, progress=False)[crop]
        lp = fourier_lowpass(vol, resolution_a=res_a, voxel_size_a=sampling_a)
        halves = [
            sirt(s, g, n_iterations=sirt_iterations, progress=False)[crop]
            for s, g in split_even_odd(b, geometry)
        ]
        freq, fsc = fourier_shell_correlation(*halves, voxel_size_a=sampling_a)
        rows.append(
            dict(
                series=label,
                correlation=correlation(vol, truth[crop]),
                correlation_lowpass=correlation(lp, truth_lp),
                psnr_lowpass_db=psnr_db(lp, truth_lp),
                fsc05_nm=resolution_at(freq, fsc, 0.5) / 10,
                denoise_s=seconds.get(label, 0.0),
            )
        )
    load = os.getloadavg()
    print(
        f"TMV series: {n} tilts of {field_px}² at {pixel_nm} nm, {len(specimen.atoms):,} atoms; "
        f"SIRT {sirt_iterations} iterations; surrogate {settings.n_iterations} iterations; "
        f"load {load[0]:.1f}"
    )
    print(
        f"{'series':>15} {'corr.':>6} {'corr. ≤4 nm':>12} {'PSNR ≤4 nm [dB]':>16} "
        f"{'FSC 0.5 [nm]':>13} {'denoise [s]':>12}"
    )
    for r in rows:
        fsc05 = f"{r['fsc05_nm']:13.2f}" if math.isfinite(r["fsc05_nm"]) else f"{'1st shell':>13}"
        print(
            f"{r['series']:>15} {r['correlation']:6.3f} {r['correlation_lowpass']:12.3f} "
            f"{r['psnr_lowpass_db']:16.2f} {fsc05} {r['denoise_s']:12.1f}"
        )
    print("FSC 0.5: even/odd halves of SIRT; '1st shell': below 0.5 from the first shell on.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                dict(
                    command="benchmarks/reconstruct_denoised.py"
                    + (" --quick" if args.quick else ""),
                    load_average=list(load),
                    surrogate_iterations=settings.n_iterations,
                    rows=rows,
                ),
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
