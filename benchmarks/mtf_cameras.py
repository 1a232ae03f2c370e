"""MTF estimation on every shipped camera table: the default workflow, and a knife edge.

For each tabulated camera MTF (:func:`tem_core.detector.available_cameras`): flat
micrographs of 1024² pixels are simulated in TEM-simulator's integrating model (Poisson
electrons, then the tabulated MTF, then the gain), at 40 e/px (40 e/Å² on 1 Å pixels)
and 50 counts/e (101 counts/e for the K2, as in the real K2 file in ``data/``), and cut
into 16 crops of 256². Fitted with the default workflow
(:func:`tem_core.mtf_fit.fit_mtf_whittle` with its defaults: automatic model choice),
with the gain known (``gain_counts_per_e``: the NPS scale is then fixed), and with the
explicit spline model. Reported: the relative MTF error at 0.25, 0.375, 0.45 cycles/px
and of the inferred gain (mean and worst over the repeats), the chosen model.

Signal-based check: a slanted knife edge (4°, 1024², 2000 e/px on the bright side, a
calibration exposure) imaged by a counting camera (MTF on the signal, white noise),
measured with :func:`tem_core.mtf_fit.fit_mtf_edge`.

    .venv/bin/python benchmarks/mtf_cameras.py [--quick] [--repeats R] [--json out.json]
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


def background_fits(camera: str, *, n_crops: int, crop: int, big: int, repeats: int) -> list:
    rows = []
    for method in ("default", "known gain", "spline"):
        errors, gains, chosen, seconds = [], [], [], []
        for rep in range(repeats):
            g = torch.Generator().manual_seed(100 * rep + 7)
            crops = synthetic_background_crops(
                camera,
                n_crops=n_crops,
                crop_size_px=crop,
                mean_electrons_per_px=DOSE_E_PER_PX,
                generator=g,
                micrograph_size_px=big,
                gain_counts_per_e=gain_of(camera),
            )
            kwargs = {}
            if method == "known gain":
                kwargs["gain_counts_per_e"] = gain_of(camera)
            if method == "spline":
                kwargs["model"] = "spline"
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                fit = fit_mtf_whittle(crops, **kwargs)
            seconds.append(time.perf_counter() - start)
            errors.append((fit.mtf(CHECK) / mtf_from_spec(camera, CHECK) - 1.0).tolist())
            gains.append(fit.gain_counts_per_e(float(crops.mean())) / gain_of(camera) - 1.0)
            chosen.append(fit.model.chosen)
        worst = [max(abs(e[i]) for e in errors) for i in range(3)]
        mean = [sum(e[i] for e in errors) / repeats for i in range(3)]
        rows.append(
            dict(
                camera=camera,
                method=method,
                repeats=repeats,
                mean_error=mean,
                worst_abs_error=worst,
                gain_error_mean=sum(gains) / repeats,
                gain_error_worst=max(gains, key=abs),
                chosen=sorted(set(chosen)),
                seconds=sum(seconds) / repeats,
            )
        )
    return rows


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
    args = parser.parse_args()
    cameras = ("falcon3ec_300kv", "k2_300kv") if args.quick else available_cameras()
    size = (
        dict(n_crops=4, crop=128, big=256) if args.quick else dict(n_crops=16, crop=256, big=1024)
    )
    repeats = 1 if args.quick else args.repeats
    print(
        f"# load: {os.getloadavg()[0]:.1f}; {size['n_crops']} crops of {size['crop']}², "
        f"{DOSE_E_PER_PX} e/px, {repeats} repeats; errors at 0.25 / 0.375 / 0.45 cycles/px"
    )
    print(
        f"{'camera':17s} {'method':11s} {'mean error':>22s} {'worst |error|':>20s} "
        f"{'gain err':>9s} {'model':>10s}"
    )
    rows = []
    for camera in cameras:
        for row in background_fits(camera, repeats=repeats, **size):
            rows.append(row)
            mean = " ".join(f"{v:+6.1%}" for v in row["mean_error"])
            worst = " ".join(f"{v:5.1%}" for v in row["worst_abs_error"])
            print(
                f"{camera:17s} {row['method']:11s} {mean:>22s} {worst:>20s} "
                f"{row['gain_error_worst']:+8.1%} {','.join(row['chosen']):>10s}",
                flush=True,
            )
    print("\n# knife edge: 4°, 1024², 2000 e/px bright side, counting camera")
    for camera in cameras:
        row = edge_fit(camera, size=512 if args.quick else 1024, dose=2000.0)
        rows.append(row)
        print(
            f"{camera:17s} knife edge  " + " ".join(f"{v:+6.1%}" for v in row["error"]), flush=True
        )
    name = "mtf_cameras_quick.json" if args.quick else "mtf_cameras.json"
    target = args.json or (OUT / name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(rows, indent=1))
    print(f"# wrote {target}")


if __name__ == "__main__":
    main()
