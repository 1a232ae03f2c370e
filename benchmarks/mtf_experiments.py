"""MTF estimation from synthetic background crops: Whittle likelihood vs the published FFL fit.

Synthetic data, TEM-simulator's detector model: flat ice-only micrographs of 1024² pixels
with 25 expected electrons per pixel (TEM-simulator's example: 100 e/nm² on 0.5 nm pixels,
gain 1, DQE 1), Poisson noise, then the MTF blur (periodic on the micrograph); 256² crops
are cut from them (so crops are not periodic, as real crops are). Two true MTFs:

* ``tem-simulator``: a, b, c, α, β = 0.7, 0.2, 0.1, 10, 40 (MTF 0.828 / 0.588 / 0.318 at
  0.25 / 0.5 / 1.0 Nyquist); Whittle fits with p = q = 1;
* ``shaped``: a, b, c, α, β, p, q = 0.6, 0.35, 0.05, 4, 60, 1.5, 0.8 (0.807 / 0.609 / 0.345);
  Whittle fits p and q as well.

Methods: ``whittle`` (:func:`tem_core.mtf_fit.fit_mtf_whittle`, deterministic
multi-start grid, debiased, NPS scale fitted and combined with the Poisson skewness of
the whitened noise, the model fixed to the truth's family; the automatic model choice
and the camera tables: ``benchmarks/mtf_cameras.py``); ``whittle-noskew`` (the scale
from the spectrum alone, ``poisson_skewness=False``); ``whittle+gain`` (the known gain
1 count/e, so the scale ``s = gain · mean`` is fixed);
the published FFL fit (:func:`tem_core.mtf_fit.fit_mtf_ffl`: min-max normalised, MSE + FFL,
Adam β = (0.8, 0.992), lr 0.1, random start) with FFL α ∈ {0, 0.5, 1, 2} and MSE alone; and
``ffl-release`` (the released notebook: FFL α = 1 alone on counts with the gain fitted, Adam
default betas, start = truth × U(0, 1)). FFL fits run 50 Adam steps (the released notebook
ran 20), 2 repeats below 20 crops and 1 above (10 steps, 1 repeat with --quick).

Reported per method and number of crops: the relative RMS error of the MTF at 0.25, 0.5,
1.0 Nyquist (mean, median and max over repeats: 40 repeats for one crop, 16 for five, 8
above), for Whittle also the predicted (Fisher information) relative
standard error, and the paper's check: mean / max |difference| between a noise-free
projected potential (20 crambin copies, 1 Å/px, 256²) blurred by the true and by the
estimated MTF, as fractions of the image's range.

    .venv/bin/python benchmarks/mtf_experiments.py [--quick] [--json out.json] [--methods ...]
        [--crops 1,5,16] [--max-repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import torch

from tem_core.detector import (
    apply_mtf,
    radial_frequency_cycles_per_px,
)
from tem_core.mtf_fit import (
    NYQUIST_FRACTIONS,
    blurred_image_difference,
    fit_mtf_ffl,
    fit_mtf_whittle,
    mtf_relative_rms_error,
    synthetic_background_crops,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TRUTHS = {
    "tem-simulator": dict(a=0.7, b=0.2, c=0.1, alpha=10.0, beta=40.0, p=1.0, q=1.0),
    "shaped": dict(a=0.6, b=0.35, c=0.05, alpha=4.0, beta=60.0, p=1.5, q=0.8),
}
MEAN_ELECTRONS = 25.0
CROP, BIG = 256, 1024


def synthetic_crops(truth: dict, n_crops: int, generator: torch.Generator) -> torch.Tensor:
    return synthetic_background_crops(
        truth,
        n_crops=n_crops,
        crop_size_px=CROP,
        mean_electrons_per_px=MEAN_ELECTRONS,
        generator=generator,
        micrograph_size_px=BIG,
    )


def projection_image() -> tuple[torch.Tensor, str]:
    """Projected potential of 20 randomly placed crambin copies (fallback: smooth noise)."""
    try:
        from tem_core.potential import slice_potential
        from tem_core.specimen import random_rotations
        from tem_core.structure import read_structure

        model = read_structure(DATA / "1crn.pdb.gz").centered()
        g = torch.Generator().manual_seed(11)
        rotations = random_rotations(20, generator=g)
        shifts = (
            torch.rand(20, 3, generator=g, dtype=torch.float64)
            * torch.tensor([CROP - 40.0, CROP - 40.0, 10.0])
            + 20.0
        )
        pos = torch.cat(
            [model.positions_a @ r.T + t for r, t in zip(rotations, shifts, strict=True)]
        )
        rep = lambda v: v.repeat(20)  # noqa: E731
        image = slice_potential(
            rep(model.atomic_numbers),
            pos,
            rep(model.b_factors_a2),
            rep(model.occupancies),
            z0_a=-1e3,
            z1_a=1e3,
            shape=(CROP, CROP),
            sampling_a=1.0,
            backend="torch",
        )
        return image.real.double(), "projected potential, 20 x 1CRN, 1 A/px"
    except Exception as exc:  # the potential stage may be missing while the package grows
        g = torch.Generator().manual_seed(11)
        noise = torch.randn(CROP, CROP, generator=g, dtype=torch.float64)
        smooth = apply_mtf(
            noise,
            torch.exp(
                -((radial_frequency_cycles_per_px((CROP, CROP), dtype=torch.float64) / 0.1) ** 2)
            ),
        )
        return smooth, f"smooth random image (potential unavailable: {type(exc).__name__})"


def run(
    quick: bool,
    methods: set[str] | None = None,
    crops: list[int] | None = None,
    max_repeats: int | None = None,
) -> list[dict]:
    crop_numbers = [1, 5] if quick else [1, 5, 10, 16, 20, 50]
    ffl_crop_numbers = [1, 5] if quick else [1, 5, 10, 20, 50]
    if crops:
        crop_numbers = ffl_crop_numbers = crops
    cap = max_repeats or 10**6

    # single-crop errors have a heavy tail: many repeats where fits are cheap
    def whittle_repeats(n: int) -> int:
        return min(cap, 2 if quick else {1: 40, 5: 16}.get(n, 8))

    ffl_repeats = min(cap, 1 if quick else 2)
    n_steps = 10 if quick else 50
    ffl_variants = {
        "ffl a=0": dict(alpha=0.0),
        "ffl a=0.5": dict(alpha=0.5),
        "ffl a=1": dict(alpha=1.0),
        "ffl a=2": dict(alpha=2.0),
        "mse alone": dict(ffl_weight=0.0),
        "ffl-release": dict(alpha=1.0, mse_weight=0.0, normalise=False, betas=(0.9, 0.999)),
    }
    image, image_kind = projection_image()
    print(f"# evaluation image: {image_kind}")
    rows = []
    for name, truth in TRUTHS.items():
        shaped = truth["p"] != 1.0 or truth["q"] != 1.0
        whittles = ("whittle", "whittle-noskew", "whittle+gain")
        jobs = [(w, n, whittle_repeats(n)) for w in whittles for n in crop_numbers]
        jobs += [
            (v, n, ffl_repeats if n < 20 else 1) for v in ffl_variants for n in ffl_crop_numbers
        ]
        jobs = [job for job in jobs if methods is None or job[0] in methods]
        for method, n_crops, repeats in jobs:
            errors, predicted, mean_d, max_d, seconds = [], [], [], [], []
            for rep in range(repeats):
                g = torch.Generator().manual_seed(1000 * rep + n_crops)
                crops = synthetic_crops(truth, n_crops, g)
                start = time.perf_counter()
                if method.startswith("whittle"):
                    gain = 1.0 if method == "whittle+gain" else None
                    with warnings.catch_warnings():  # single crops warn: measured here
                        warnings.simplefilter("ignore", UserWarning)
                        fit = fit_mtf_whittle(
                            crops,
                            model="shaped" if shaped else "lorentzian",
                            gain_counts_per_e=gain,
                            check_particles=False,
                            poisson_skewness=method != "whittle-noskew",
                        )
                    omega = 0.5 * torch.tensor(NYQUIST_FRACTIONS, dtype=torch.float64)
                    se = fit.mtf_standard_error(omega)
                    if se is not None:
                        predicted.append(float((se / fit.mtf(omega)).pow(2).mean().sqrt()))
                else:
                    kwargs = dict(ffl_variants[method])
                    if method == "ffl-release":  # released notebook: truth × U(0, 1)
                        u = torch.rand(7, generator=g, dtype=torch.float64).clamp_min(1e-3)
                        kwargs["init"] = {
                            k: truth[k] * float(v)
                            for k, v in zip(
                                ("a", "b", "c", "alpha", "beta", "p", "q"), u, strict=True
                            )
                        }
                        kwargs["fit_shape"] = True
                    fit = fit_mtf_ffl(
                        crops,
                        generator=g,
                        n_steps=n_steps,
                        mean_electrons_per_px=MEAN_ELECTRONS,
                        check_particles=False,
                        **kwargs,
                    )
                seconds.append(time.perf_counter() - start)
                errors.append(mtf_relative_rms_error(fit, truth))
                d_mean, d_max = blurred_image_difference(image, fit, truth)
                mean_d.append(d_mean)
                max_d.append(d_max)
            row = dict(
                truth=name,
                method=method,
                n_crops=n_crops,
                repeats=repeats,
                rms_error_mean=sum(errors) / repeats,
                rms_error_median=sorted(errors)[repeats // 2],
                rms_error_max=max(errors),
                predicted_se=(sum(predicted) / len(predicted)) if predicted else None,
                image_diff_mean=sum(mean_d) / repeats,
                image_diff_max=max(max_d),
                seconds_per_fit=sum(seconds) / repeats,
                example=dict(fit.params),
            )
            rows.append(row)
            se_txt = f"{row['predicted_se']:.3f}" if row["predicted_se"] is not None else "  -  "
            print(
                f"| {name:13s} | {method:11s} | {n_crops:3d} | {repeats} | "
                f"{row['rms_error_mean']:.3f} | {row['rms_error_median']:.3f} | "
                f"{row['rms_error_max']:.3f} | {se_txt} | "
                f"{row['image_diff_mean']:.4f} | {row['image_diff_max']:.4f} | "
                f"{row['seconds_per_fit']:.1f} |",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (about a minute)")
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    parser.add_argument("--methods", help="comma-separated subset, e.g. whittle,whittle+gain")
    parser.add_argument("--crops", help="comma-separated numbers of crops, e.g. 1,5,16")
    parser.add_argument("--max-repeats", type=int, help="cap on the repeats per row")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine
    print(f"# load: {os.getloadavg()[0]:.1f}")
    print(
        "| truth | method | crops | repeats | rel. RMS err (mean) | (median) | (max) | "
        "Fisher SE | image diff mean | image diff max | s/fit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    rows = run(
        args.quick,
        set(args.methods.split(",")) if args.methods else None,
        [int(n) for n in args.crops.split(",")] if args.crops else None,
        args.max_repeats,
    )
    print(
        f"# total {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} threads, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
