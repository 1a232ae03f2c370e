"""Electrons per pixel (hence the gain) from whitened noise: count lattice vs skewness.

For every shipped camera table: 16 crops of 256² cut from 1024² micrographs in
TEM-simulator's model (Poisson electrons, a fixed gain per electron, then the table's
MTF) at 40 e/px and 50 counts/e, whitened by their measured noise spectrum as the
default fit does (:func:`tem_core.mtf_fit.poisson.poisson_scale`). Reported per table
over ``--repeats`` seeds (the same electrons for every table):

* the whitening residual ``τ/a`` (in electrons) and the Cramér-Rao relative error of
  ``N`` at the fitted parameters (:func:`tem_core.mtf_fit.lattice.fisher_information`);
* the gain error of the count lattice (Poisson–Gaussian maximum likelihood) and of the
  skewness alone (``N = 1/skew²``): mean, s.d., worst;
* seconds per estimate (whitening + both estimators, 1 thread).

Then the Cramér-Rao error of ``N`` against ``τ/a`` (how the information degrades when the
lattice washes out), and the guard rails: a random charge per electron (gamma, spread
2-50%), Gaussian read noise after the blur, 10 and 100 e/px, other pixel sizes.

    .venv/bin/python benchmarks/mtf_count_lattice.py [--repeats 20] [--cameras a,b]
        [--json benchmarks/results/mtf_count_lattice.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from tem_core.detector import apply_mtf, available_cameras, radial_frequency_cycles_per_px
from tem_core.mtf_fit import averaged_periodogram, mtf_from_spec
from tem_core.mtf_fit.lattice import fisher_information
from tem_core.mtf_fit.poisson import poisson_scale, ring_smoothed

OUT = Path(__file__).resolve().parent / "results" / "mtf_count_lattice.json"
GAIN = 50.0


def crops_for(camera, seed, *, dose=40.0, charge_cv=0.0, read_noise_e=0.0, stretch=1.0):
    g = torch.Generator().manual_seed(100 * seed + 7)
    omega = radial_frequency_cycles_per_px((1024, 1024), dtype=torch.float64)
    k = torch.poisson(torch.full((1, 1024, 1024), dose, dtype=torch.float64), generator=g)
    if charge_cv > 0:  # a sum of k gamma charges (mean 1, spread cv) is gamma(k / cv²)
        shape = 1.0 / charge_cv**2
        k = torch._standard_gamma(k * shape + (k == 0), generator=g) / shape * (k > 0)
    image = GAIN * apply_mtf(k, mtf_from_spec(camera, omega / stretch))
    if read_noise_e > 0:
        image = image + GAIN * read_noise_e * torch.randn(
            image.shape, generator=g, dtype=torch.float64
        )
    return image.reshape(4, 256, 4, 256).permute(0, 2, 1, 3).reshape(16, 256, 256)


def estimate(crops) -> dict:
    start = time.perf_counter()
    spectrum = ring_smoothed(averaged_periodogram(crops, taper=None))
    measured = poisson_scale(crops, spectrum)
    seconds = time.perf_counter() - start
    mean = float(crops.mean())
    row = dict(
        seconds=seconds,
        skewness_gain_error=mean / measured.skewness_electrons_per_px / GAIN - 1.0,
        problem=measured.problem,
        excess_kurtosis=measured.excess_kurtosis,
        skewness_squared=measured.skewness**2,
    )
    lat = measured.lattice
    if lat is not None:
        theta = torch.tensor(
            [
                math.log(lat.spacing),
                lat.offset,
                math.log(lat.electrons_per_px),
                math.log(lat.tau_over_spacing * lat.spacing),
            ],
            dtype=torch.float64,
        )
        cov = torch.linalg.inv(fisher_information(theta, lat.n_pixels))
        row.update(
            lattice_gain_error=measured.gain_counts_per_e / GAIN - 1.0,
            tau_over_spacing=lat.tau_over_spacing,
            cramer_rao_relative=math.sqrt(float(cov[2, 2])),
            integer_margin=lat.integer_margin,
            goodness_z=lat.goodness_z,
            relative_se=measured.relative_se,
        )
    return row


def summary(values: list[float]) -> dict:
    return dict(
        mean=statistics.fmean(values),
        sd=statistics.pstdev(values),
        worst=max(values, key=abs),
    )


def run_case(label: str, repeats: int, **kwargs) -> dict:
    rows = [estimate(crops_for(seed=seed, **kwargs)) for seed in range(repeats)]
    lattice = [r["lattice_gain_error"] for r in rows if "lattice_gain_error" in r]
    out = dict(
        case=label,
        **{k: v for k, v in kwargs.items()},
        repeats=repeats,
        lattice_found=len(lattice),
        refused=sorted({r["problem"][:60] for r in rows if r["problem"]}),
        skewness=summary([r["skewness_gain_error"] for r in rows]),
        seconds=statistics.fmean(r["seconds"] for r in rows),
    )
    if lattice:
        found = [r for r in rows if "lattice_gain_error" in r]
        out.update(
            lattice=summary(lattice),
            tau_over_spacing=statistics.fmean(r["tau_over_spacing"] for r in found),
            cramer_rao_relative=statistics.fmean(r["cramer_rao_relative"] for r in found),
            integer_margin_min=min(r["integer_margin"] for r in found),
            goodness_z=statistics.fmean(r["goodness_z"] for r in found),
        )
    lat = out.get("lattice")
    lat_text = (
        f"{lat['mean']:+9.4%} {lat['sd']:8.4%} {lat['worst']:+9.4%} "
        f"{out['tau_over_spacing']:5.3f} {out['cramer_rao_relative']:8.4%}"
        if lat
        else f"{'no lattice':>49s}"
    )
    sk = out["skewness"]
    print(
        f"{label:34s} {out['lattice_found']:2d}/{repeats:<2d} {lat_text} "
        f"{sk['mean']:+7.2%} {sk['sd']:6.2%} {sk['worst']:+7.2%} {out['seconds']:5.1f}",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--variant-repeats", type=int, default=5)
    parser.add_argument("--cameras", help="comma-separated subset of the tables")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cameras = args.cameras.split(",") if args.cameras else available_cameras()
    print(f"# load {os.getloadavg()[0]:.1f}; 16 crops of 256², gain 50 counts/e; gain errors")
    print(
        f"{'case':34s} {'found':5s} {'lattice: mean':>13s} {'sd':>8s} {'worst':>9s} "
        f"{'τ/a':>5s} {'CR(N)':>8s} {'skew mean':>9s} {'sd':>6s} {'worst':>7s} {'s':>5s}"
    )
    cases = []
    for camera in cameras:
        cases.append(run_case(f"{camera} 40 e/px", args.repeats, camera=camera))
    print("\n# Cramér-Rao relative error of N (n = 900 000 values, N = 40) against τ/a")
    bound = []
    for tau_a in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0):
        theta = torch.tensor([0.0, -40.0, math.log(40.0), math.log(tau_a)], dtype=torch.float64)
        cr = math.sqrt(float(torch.linalg.inv(fisher_information(theta, 900_000))[2, 2]))
        bound.append(dict(tau_over_spacing=tau_a, cramer_rao_relative=cr))
        print(f"τ/a = {tau_a:4.2f}: {cr:.4%} (counted electrons: {math.sqrt(40 / 9e5) / 40:.4%})")
    print("\n# held out and guard rails (Falcon 2 unless named)")
    r = args.variant_repeats
    variants = [
        ("falcon2 10 e/px", dict(camera="falcon2_300kv", dose=10.0)),
        ("falcon2 100 e/px", dict(camera="falcon2_300kv", dose=100.0)),
        ("k2_300 100 e/px", dict(camera="k2_300kv", dose=100.0)),
        ("falcon2 pixel ×2 (ω/2)", dict(camera="falcon2_300kv", stretch=2.0)),
        ("de20 pixel ×0.8 (ω/0.8)", dict(camera="de20_300kv", stretch=0.8)),
        ("k2_300 pixel ×1.25", dict(camera="k2_300kv", stretch=1.25)),
        ("charge spread 2%", dict(camera="falcon2_300kv", charge_cv=0.02)),
        ("charge spread 5%", dict(camera="falcon2_300kv", charge_cv=0.05)),
        ("charge spread 10%", dict(camera="falcon2_300kv", charge_cv=0.1)),
        ("charge spread 30%", dict(camera="falcon2_300kv", charge_cv=0.3)),
        ("charge spread 50%", dict(camera="falcon2_300kv", charge_cv=0.5)),
        ("falcon4ec_300 charge spread 30%", dict(camera="falcon4ec_300kv", charge_cv=0.3)),
        ("read noise 0.02 e", dict(camera="falcon2_300kv", read_noise_e=0.02)),
        ("read noise 0.1 e", dict(camera="falcon2_300kv", read_noise_e=0.1)),
        ("falcon4ec_300 read noise 0.1 e", dict(camera="falcon4ec_300kv", read_noise_e=0.1)),
    ]
    for label, kwargs in variants:
        cases.append(run_case(label, r, **kwargs))
    print(f"# load at the end {os.getloadavg()[0]:.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(cases=cases, cramer_rao=bound), indent=1))
    print(f"# wrote {args.json}")


if __name__ == "__main__":
    main()
