"""MTF estimation on every shipped camera table: the default workflow, and a knife edge.

For each tabulated camera MTF (:func:`tem_core.detector.available_cameras`): flat
micrographs of 1024² pixels are simulated in TEM-simulator's integrating model (Poisson
electrons, then the tabulated MTF, then the gain), at 40 e/px (40 e/Å² on 1 Å pixels)
and 50 counts/e (101 counts/e for the K2, as in the real K2 file in ``data/``), and cut
into 16 crops of 256². Fitted with the default workflow
(:func:`tem_core.mtf_fit.fit_mtf_whittle` with its defaults: automatic model choice, the
NPS scale combined with the Poisson skewness of the whitened noise), without the
skewness (``poisson_skewness=False``: the spectrum alone), and with the gain known
(``gain_counts_per_e``: the NPS scale is then fixed). Reported: the relative MTF error at
0.25, 0.375, 0.45 cycles/px and of the inferred gain (mean and worst over the repeats),
the gain from the skewness alone, the chosen model.

Held-out variants (default workflow): other pixel sizes (a table stretched in frequency,
``T(ω/k)``: ``k = 2`` as for 2× larger pixels, ``k = 0.8`` for smaller ones) and other
doses (10 and 100 e/px).

Signal-based check: a slanted knife edge (4°, 1024², 2000 e/px on the bright side, a
calibration exposure) imaged by a counting camera (MTF on the signal, white noise),
measured with :func:`tem_core.mtf_fit.fit_mtf_edge`.

    .venv/bin/python benchmarks/mtf_cameras.py [--quick] [--repeats R] [--json out.json]
        [--no-edge] [--no-variants] [--cameras a,b | none] [--merge a.json b.json]

``--no-edge`` keeps the knife-edge rows already stored in the JSON (marked
``carried_over``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import torch

from tem_core.detector import available_cameras
from tem_core.mtf_fit import (
    fit_mtf_edge,
    fit_mtf_whittle,
    knife_edge_image,
    mtf_from_spec,
    synthetic_background_crops,
)

CHECK = torch.tensor([0.25, 0.375, 0.45], dtype=torch.float64)
DOSE_E_PER_PX = 40.0
OUT = Path(__file__).resolve().parent / "results"


def gain_of(camera: str) -> float:
    return 101.0 if camera.startswith("k2") else 50.0


class Stretched:
    """A camera table at another pixel size: ``T(ω/k)`` (``k > 1``: larger pixels)."""

    def __init__(self, camera: str, factor: float) -> None:
        self.camera, self.factor = camera, factor
        self.name = f"{camera} ω/{factor:g}"

    def __call__(self, omega: torch.Tensor) -> torch.Tensor:
        return mtf_from_spec(self.camera, omega / self.factor)


METHODS = {
    "default": {},
    "no skewness": {"poisson_skewness": False},
    "known gain": "gain",
}


def background_fits(
    camera,
    *,
    n_crops: int,
    crop: int,
    big: int,
    repeats: int,
    methods=tuple(METHODS),
    dose: float = DOSE_E_PER_PX,
) -> list:
    name = camera.name if isinstance(camera, Stretched) else camera
    gain = gain_of(camera.camera if isinstance(camera, Stretched) else camera)
    rows = []
    for method in methods:
        errors, gains, skew_gains, chosen, seconds = [], [], [], [], []
        lattice_gains = []
        for rep in range(repeats):
            g = torch.Generator().manual_seed(100 * rep + 7)
            crops = synthetic_background_crops(
                camera,
                n_crops=n_crops,
                crop_size_px=crop,
                mean_electrons_per_px=dose,
                generator=g,
                micrograph_size_px=big,
                gain_counts_per_e=gain,
            )
            option = METHODS[method]
            kwargs = {"gain_counts_per_e": gain} if option == "gain" else dict(option)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                fit = fit_mtf_whittle(crops, **kwargs)
            seconds.append(time.perf_counter() - start)
            errors.append((fit.mtf(CHECK) / mtf_from_spec(camera, CHECK) - 1.0).tolist())
            gains.append(fit.gain_counts_per_e(float(crops.mean())) / gain - 1.0)
            if fit.poisson is not None:  # the skewness alone, the cross-check of the lattice
                skew_n = fit.poisson.skewness_electrons_per_px
                skew_gains.append(float(crops.mean()) / skew_n / gain - 1.0)
                lattice_gains.append(fit.poisson.gain_counts_per_e / gain - 1.0)
            chosen.append(fit.model.chosen)
        worst = [max(abs(e[i]) for e in errors) for i in range(3)]
        mean = [sum(e[i] for e in errors) / repeats for i in range(3)]
        rows.append(
            dict(
                camera=name,
                method=method,
                dose_e_per_px=dose,
                repeats=repeats,
                mean_error=mean,
                worst_abs_error=worst,
                gain_error_mean=sum(gains) / repeats,
                gain_error_worst=max(gains, key=abs),
                skewness_gain_errors=skew_gains,
                poisson_gain_errors=lattice_gains,
                gain_error_sd=(sum((v - sum(gains) / repeats) ** 2 for v in gains) / repeats)
                ** 0.5,
                mtf_error_sd=[
                    (sum((e[i] - mean[i]) ** 2 for e in errors) / repeats) ** 0.5 for i in range(3)
                ],
                chosen=sorted(set(chosen)),
                seconds=sum(seconds) / repeats,
            )
        )
    return rows


def print_row(row: dict) -> None:
    mean = " ".join(f"{v:+6.1%}" for v in row["mean_error"])
    worst = " ".join(f"{v:5.1%}" for v in row["worst_abs_error"])
    skew = row["skewness_gain_errors"]
    skew = f"{max(skew, key=abs):+8.1%}" if skew else f"{'-':>8s}"
    print(
        f"{row['camera']:20s} {row['method']:11s} {row['dose_e_per_px']:4.0f} {mean:>22s} "
        f"{worst:>20s} {row['gain_error_worst']:+8.1%} {skew} {','.join(row['chosen']):>14s} "
        f"{row['seconds']:5.1f}",
        flush=True,
    )


def edge_fit(camera: str, *, size: int, dose: float) -> dict:
    g = torch.Generator().manual_seed(11)
    image = knife_edge_image(
        (size, size), mtf=camera, angle_deg=4.0, mean_electrons_per_px=dose, generator=g
    )
    edge = fit_mtf_edge(image)
    error = (edge.mtf(CHECK) / mtf_from_spec(camera, CHECK) - 1.0).tolist()
    return dict(camera=camera, method="knife edge", error=error, angle_deg=edge.angle_deg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 cameras, 4 crops of 128², 1 rep")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-edge", action="store_true", help="skip the knife edges")
    parser.add_argument("--no-variants", action="store_true", help="skip pixel size / dose")
    parser.add_argument("--cameras", help="comma-separated subset of the tables ('none': skip)")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated subset of " + ", ".join(METHODS) + " (others carried over)",
    )
    parser.add_argument("--variant-range", help="'i:j': only these held-out variants")
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="only merge these JSON files into --json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.merge:  # runs split over processes on a shared machine
        merged = [row for path in args.merge for row in json.loads(path.read_text())]
        (args.json or OUT / "mtf_cameras.json").write_text(json.dumps(merged, indent=1))
        return
    cameras = ("falcon3ec_300kv", "k2_300kv") if args.quick else available_cameras()
    if args.cameras:
        cameras = () if args.cameras == "none" else tuple(args.cameras.split(","))
    size = (
        dict(n_crops=4, crop=128, big=256) if args.quick else dict(n_crops=16, crop=256, big=1024)
    )
    repeats = 1 if args.quick else args.repeats
    methods = tuple(args.methods.split(","))
    print(
        f"# load: {os.getloadavg()[0]:.1f}; {size['n_crops']} crops of {size['crop']}², "
        f"{repeats} repeats; errors at 0.25 / 0.375 / 0.45 cycles/px; gain: worst error, "
        "fit and skewness alone"
    )
    print(
        f"{'camera':20s} {'method':11s} {'e/px':>4s} {'mean error':>22s} {'worst |error|':>20s} "
        f"{'gain err':>8s} {'skew':>8s} {'model':>14s} {'s/fit':>5s}"
    )
    rows = []
    for camera in cameras:
        for row in background_fits(camera, repeats=repeats, methods=methods, **size):
            rows.append(row)
            print_row(row)
    if not args.quick and not args.no_variants:
        print("\n# held out: other pixel sizes (T(ω/k)) and doses, default workflow")
        variants = [
            (Stretched("falcon2_300kv", 2.0), DOSE_E_PER_PX),
            (Stretched("k2_300kv", 1.25), DOSE_E_PER_PX),  # ω/2 would exceed sinc(0.5)
            (Stretched("de20_300kv", 0.8), DOSE_E_PER_PX),
            ("falcon2_300kv", 10.0),
            ("falcon2_300kv", 100.0),
            ("k2_300kv", 100.0),
        ]
        lo, _, hi = (args.variant_range or ":").partition(":")
        for camera, dose in variants[int(lo or 0) : int(hi or len(variants))]:
            for row in background_fits(
                camera, repeats=repeats, methods=("default",), dose=dose, **size
            ):
                rows.append(row)
                print_row(row)
    name = "mtf_cameras_quick.json" if args.quick else "mtf_cameras.json"
    target = args.json or (OUT / name)
    if target.exists():  # keep stored rows not re-run (their code unchanged)
        for row in json.loads(target.read_text()):
            edge = row.get("method") == "knife edge"
            other = row.get("method") not in methods and not edge and row["camera"] in cameras
            if (edge and args.no_edge and row["camera"] in cameras) or other:
                rows.append({**row, "carried_over": True})
    if not args.no_edge:
        print("\n# knife edge: 4°, 1024², 2000 e/px bright side, counting camera")
        for camera in cameras:
            row = edge_fit(camera, size=512 if args.quick else 1024, dose=2000.0)
            rows.append(row)
            print(
                f"{camera:20s} knife edge  " + " ".join(f"{v:+6.1%}" for v in row["error"]),
                flush=True,
            )
    print(f"# load at the end: {os.getloadavg()[0]:.1f}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(rows, indent=1))
    print(f"# wrote {target}")


if __name__ == "__main__":
    main()
