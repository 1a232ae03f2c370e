"""Denoising benchmark: the diff-tem paper's TMV scene, doses × projections, methods side by side.

Scene (:mod:`tem_core.denoise.scene`): three TMV segments in 50 nm ice, 200 kV, 5 µm
underfocus, 0.5 nm pixels, the 0° tilt; detector gain 10, MTF (0.7, 0.2, 0.1, 10, 40),
Poisson noise before the MTF. The evaluation field is a 128 × 320 px strip holding all
three segments (the 400² field is mostly empty ice; the strip keeps the published method's
50-sample optimisation affordable on 2 CPU cores); its detector frame is the strip.

For each dose per projection [e/nm²] and number of projections ``n``: ``n`` noisy
projections (:func:`tem_core.detector.detect`); the truth is the noise-free detector image
(with MTF and gain). Methods: one noisy projection, the mean of the ``n``, a Gaussian filter
of the mean (σ tuned per setting on a separate image: the same scene with the segments moved
and turned), the published diff-tem method (:func:`tem_core.denoise.denoise_surrogate`),
its unbiased and pathwise variants, the detector-model method
(:func:`tem_core.denoise.denoise_poisson`: exact counts, Anscombe, TV with a SURE-chosen
weight; ``poisson_nlm``: the same with the non-local-means prior, tuned once with
``--tune`` on the separate image), and the pretrained Topaz-Denoise U-Net applied to the
mean (run in the comparison venv, see ``_topaz_denoise.py``; skipped with a note when
absent).

Metrics, on images min-max normalised per image as the release does (``data_range = 1``):
PSNR, SSIM, MSE, focal frequency loss (α = 1); also PSNR in counts (data range = the
truth's range, no renormalisation; the surrogate methods' outputs, whose offset and scale
are arbitrary, are first mapped onto the mean of the projections by least squares) and
the mean Fourier ring correlation with the truth up to 0.25 cycles/px.

    .venv/bin/python benchmarks/denoise.py [--quick] [--full] [--real] [--tune]
        [--out benchmarks/denoise_results.json] [--topaz-python .venv-compare/bin/python]

Default: all 40 cheap settings; the surrogate family at a subset of settings (``--full``:
everywhere). ``--quick``: a corner of the grid, 40 surrogate iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tem_core.denoise import (
    NLMSettings,
    PoissonSettings,
    SurrogateSettings,
    denoise_poisson,
    denoise_surrogate,
    gaussian_filter,
)
from tem_core.denoise.metrics import (
    focal_frequency_loss,
    fourier_ring_correlation,
    mse,
    normalise_minmax,
    psnr,
    ssim,
)
from tem_core.denoise.scene import TMV_DETECTOR, tmv_intensities
from tem_core.detector import detect
from tem_core.units import E_PER_NM2_TO_E_PER_A2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PIXEL_A = 5.0
STRIP = (slice(146, 274), slice(40, 360))
DOSES = (100, 200, 300, 500, 700, 1000, 1500, 2000)  # per projection [e/nm²]
N_PROJ = (2, 5, 10, 25, 50)
SURROGATE_SUBSET = {
    "published": [(d, n) for d in (100, 300, 700, 2000) for n in (2, 10)],
    "unbiased": [(d, 2) for d in (100, 700, 2000)],
    "pathwise": [(d, 2) for d in (100, 700, 2000)],
}
#: the separate (tuning) image: the same segments moved and turned
TUNING_PARTICLES = (
    (-45.0, -15.0, 0.0, 30.0, 90.0, 0.0),
    (10.0, 20.0, 0.0, 0.0, 0.0, 0.0),
    (55.0, -10.0, 0.0, 0.0, 90.0, 45.0),
)
SIGMAS_PX = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
METHODS = (
    "constant",
    "single",
    "mean",
    "gaussian",
    "published",
    "unbiased",
    "pathwise",
    "poisson",
    "poisson_nlm",
    "topaz",
)


def scene(particles=None) -> torch.Tensor:
    kw = {} if particles is None else {"particles": particles}
    image = tmv_intensities(DATA / "2om3.pdb.gz", tilts_deg=(0.0,), **kw)[0].double()
    return image[STRIP]


def projections(intensity, dose_nm2, n, seed):
    g = torch.Generator().manual_seed(seed)
    dose = dose_nm2 * E_PER_NM2_TO_E_PER_A2
    stack = intensity.expand(n, -1, -1)
    noisy = detect(
        stack, detector=TMV_DETECTOR, dose_e_per_a2=dose, sampling_a=PIXEL_A, generator=g
    )
    truth = detect(intensity, detector=TMV_DETECTOR, dose_e_per_a2=dose, sampling_a=PIXEL_A)
    return noisy, truth


def frc_mean(estimate, truth) -> float:
    """Mean FRC with the truth over rings up to 0.25 cycles/px (where the signal is)."""
    f, c = fourier_ring_correlation(estimate, truth, n_rings=32)
    return float(c[f < 0.25].mean())


def metrics(estimate, truth) -> dict:
    e, t = normalise_minmax(estimate), normalise_minmax(truth)
    span = float(truth.max() - truth.min())
    return {
        "psnr": float(psnr(e, t, data_range=1.0)),
        "ssim": float(ssim(e, t, data_range=1.0)),
        "mse": float(mse(e, t)),
        "ffl": float(focal_frequency_loss(e, t)),
        "psnr_counts": float(psnr(estimate, truth, data_range=span)),
        "frc": frc_mean(estimate, truth),
    }


def tune_sigma(tuning, dose, n, seed) -> float:
    noisy, truth = projections(tuning, dose, n, seed)
    mean = noisy.mean(0)
    t = normalise_minmax(truth)
    scores = {
        s: float(psnr(normalise_minmax(gaussian_filter(mean, sigma_px=s)), t, data_range=1.0))
        for s in SIGMAS_PX
    }
    return max(scores, key=scores.get)


def calibrate(output, noisy):
    """Affine map (least squares) of a surrogate output onto the mean of the projections.

    The surrogate methods fit min-max normalised images, so their output's offset and scale
    are arbitrary; this uses the data alone (no truth) to express it in counts.
    """
    x, y = output.reshape(-1), noisy.mean(0).reshape(-1)
    a = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return a * (output - x.mean()) + y.mean()


def run_surrogate(noisy, estimator, iterations, seed, truth=None, every=10):
    curve = []

    def record(it, out):
        if truth is not None and (it + 1) % every == 0:
            m = metrics(calibrate(out.double(), noisy), truth)
            curve.append((it + 1, m["psnr_counts"], m["psnr"]))

    t0 = time.perf_counter()
    result = denoise_surrogate(
        noisy.float(),
        detector=TMV_DETECTOR,
        generator=torch.Generator().manual_seed(seed),
        settings=SurrogateSettings(n_iterations=iterations, estimator=estimator),
        callback=record if truth is not None else None,
    )
    return result, time.perf_counter() - t0, curve


def run_topaz(images: dict, python: str | None) -> dict:
    """Topaz U-Net on each image (in the comparison venv); {} with a note when unavailable."""
    if not python or not Path(python).exists():
        print(f"Topaz: no comparison venv python at {python!r}: skipped")
        return {}
    keys = list(images)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, images=np.stack([images[k].float().numpy() for k in keys]))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(
            [python, str(Path(__file__).with_name("_topaz_denoise.py")), str(src), str(dst)],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            print("Topaz failed: skipped\n" + proc.stderr[-2000:])
            return {}
        out = np.load(dst)["denoised"]
    return {k: torch.from_numpy(out[i]).double() for i, k in enumerate(keys)}


def synthetic(args) -> dict:
    doses = (100, 200) if args.quick else DOSES
    ns = (2, 5) if args.quick else N_PROJ
    iterations = 40 if args.quick else args.iterations
    t0 = time.perf_counter()
    truth_i, tuning_i = scene(), scene(TUNING_PARTICLES)
    print(f"scene: 2 × {tuple(truth_i.shape)} px simulated in {time.perf_counter() - t0:.1f} s")
    rows, means, gallery = [], {}, {}
    for dose in doses:
        for n in ns:
            seed = 1000 * dose + n
            noisy, truth = projections(truth_i, dose, n, seed)
            sigma = tune_sigma(tuning_i, dose, n, seed + 7)
            est = {"single": noisy[0], "mean": noisy.mean(0)}
            est["gaussian"] = gaussian_filter(est["mean"], sigma_px=sigma)
            tp = time.perf_counter()
            est["poisson"] = denoise_poisson(noisy.float(), detector=TMV_DETECTOR).denoised.double()
            t_poisson = time.perf_counter() - tp
            est["poisson_nlm"] = denoise_poisson(
                noisy.float(), detector=TMV_DETECTOR, settings=PoissonSettings(regulariser="nlm")
            ).denoised.double()
            times = {"poisson": t_poisson}
            for name, subset in SURROGATE_SUBSET.items():
                if args.full or args.quick or (dose, n) in subset:
                    if args.quick and name != "published" and (dose, n) != (doses[0], ns[0]):
                        continue
                    res, dt, _ = run_surrogate(noisy, name, iterations, seed + 1)
                    est[name] = calibrate(res.denoised.double(), noisy)
                    times[name] = dt
            means[(dose, n)] = est["mean"]
            for name, image in est.items():
                rows.append(
                    {
                        "dose_e_per_nm2": dose,
                        "n": n,
                        "method": name,
                        "sigma_px": sigma if name == "gaussian" else None,
                        "seconds": times.get(name),
                        **metrics(image, truth),
                    }
                )
            if n == ns[0] and dose in (doses[0], doses[-1]):
                gallery[dose] = {"truth": truth, **est}
            done = {
                r["method"]: r["psnr"] for r in rows if (r["dose_e_per_nm2"], r["n"]) == (dose, n)
            }
            print(
                f"dose {dose:>5} e/nm², n {n:>2}: "
                + " ".join(f"{k} {v:.2f}" for k, v in done.items()),
                flush=True,
            )
    topaz = run_topaz({f"{d}_{n}": m for (d, n), m in means.items()}, args.topaz_python)
    for dose, n in means:
        if f"{dose}_{n}" in topaz:
            _, truth = projections(truth_i, dose, n, 1000 * dose + n)
            image = topaz[f"{dose}_{n}"]
            rows.append(
                {
                    "dose_e_per_nm2": dose,
                    "n": n,
                    "method": "topaz",
                    "sigma_px": None,
                    "seconds": None,
                    **metrics(image, truth),
                }
            )
            if dose in gallery and n == ns[0]:
                gallery[dose]["topaz"] = image
    return {"rows": rows, "gallery": gallery, "iterations": iterations}


def convergence(args) -> dict:
    """PSNR against iterations for the three estimators at the release's setting (700, n=2)."""
    iterations = 60 if args.quick else 300
    truth_i = scene()
    noisy, truth = projections(truth_i, 700, 2, 7002)
    curves = {}
    for name in ("published", "unbiased", "pathwise"):
        res, dt, curve = run_surrogate(noisy, name, iterations, 7003, truth=truth, every=10)
        curves[name] = {
            "iteration": [c[0] for c in curve],
            "psnr": [c[1] for c in curve],
            "objective": res.objective.tolist(),
            "seconds": dt,
        }
        best = max(curve, key=lambda c: c[1])
        print(
            f"convergence {name}: best PSNR {best[1]:.2f} dB at {best[0]} iterations, "
            f"{dt / iterations * 1e3:.0f} ms/iteration"
        )
    return curves


def tune(args) -> None:
    """Tune the NLM prior once, on the separate image, over a small grid (the TV prior
    needs no tuning: SURE picks its weight)."""
    tuning_i = scene(TUNING_PARTICLES)
    settings = [
        NLMSettings(strength=s, second_pass_strength=s2, search_radius_px=r)
        for r in (5,)
        for s in (0.35, 0.45, 0.6)
        for s2 in (0.0, 0.15, 0.25, 0.35)
    ]
    grid = [(d, n) for d in (100, 500, 2000) for n in (2, 10, 50)]
    data = [projections(tuning_i, d, n, 99 + d + n) for d, n in grid]
    print(f"{'strength':>8} {'2nd':>5} {'radius':>6}  mean PSNR gain over the mean [dB]")
    for s in settings:
        gains = []
        for noisy, truth in data:
            den = denoise_poisson(
                noisy.float(),
                detector=TMV_DETECTOR,
                settings=PoissonSettings(regulariser="nlm", nlm=s),
            ).denoised
            gains.append(
                metrics(den.double(), truth)["psnr"] - metrics(noisy.mean(0), truth)["psnr"]
            )
        print(
            f"{s.strength:>8} {s.second_pass_strength:>5} {s.search_radius_px:>6}  "
            f"{np.mean(gains):6.2f} (min {np.min(gains):.2f})"
        )


def timing() -> dict:
    """Seconds of denoise_poisson for five 512² projections (CPU, float32)."""
    g = torch.Generator().manual_seed(0)
    intensity = 1.0 + 0.02 * torch.randn(512, 512, generator=g, dtype=torch.float32)
    noisy = detect(
        intensity.expand(5, -1, -1),
        detector=TMV_DETECTOR,
        dose_e_per_a2=5.0,
        sampling_a=PIXEL_A,
        generator=g,
    )
    denoise_poisson(noisy, detector=TMV_DETECTOR)  # warm-up
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        denoise_poisson(noisy, detector=TMV_DETECTOR)
        runs.append(time.perf_counter() - t0)
    load = os.getloadavg()[0]
    print(
        f"denoise_poisson, 5 × 512² projections: median {np.median(runs):.2f} s "
        f"({torch.get_num_threads()} threads, load average {load:.1f})"
    )
    return {"seconds_512": float(np.median(runs)), "load": load, "threads": torch.get_num_threads()}


def _table(rows, keys, present, metric: str, title: str) -> None:
    print(f"\n{title}")
    print(f"{'dose':>5} {'n':>3} " + " ".join(f"{m:>9}" for m in present))
    for k in keys:
        by = {r["method"]: r for r in rows if (r["dose_e_per_nm2"], r["n"]) == k}
        print(
            f"{k[0]:>5} {k[1]:>3} "
            + " ".join(f"{by[m][metric]:>9.3f}" if m in by else f"{'-':>9}" for m in present)
        )


def targets(rows, metric: str = "psnr") -> dict:
    """How often the Poisson/NLM method meets each target, under ``metric``."""
    keys = sorted({(r["dose_e_per_nm2"], r["n"]) for r in rows})
    checks = {"beats mean": [], "beats topaz by 1 dB": [], "beats published": []}
    for k in keys:
        by = {r["method"]: r[metric] for r in rows if (r["dose_e_per_nm2"], r["n"]) == k}
        checks["beats mean"].append(by["poisson"] > by["mean"])
        if "topaz" in by:
            checks["beats topaz by 1 dB"].append(by["poisson"] >= by["topaz"] + 1.0)
        if "published" in by:
            checks["beats published"].append(by["poisson"] > by["published"])
    return {k: [sum(v), len(v)] for k, v in checks.items()}


def summarise(result: dict) -> None:
    rows = result["rows"]
    keys = sorted({(r["dose_e_per_nm2"], r["n"]) for r in rows})
    present = [m for m in METHODS if any(r["method"] == m for r in rows)]
    _table(rows, keys, present, "psnr", "PSNR [dB], images min-max normalised (release protocol)")
    _table(rows, keys, present, "psnr_counts", "PSNR [dB] in counts (data range = truth's)")
    _table(rows, keys, present, "ssim", "SSIM, min-max normalised")
    _table(rows, keys, present, "ffl", "focal frequency loss (α = 1), min-max normalised")
    _table(rows, keys, present, "frc", "mean FRC with the truth up to 0.25 cycles/px")
    for metric in ("psnr", "psnr_counts"):
        print(
            f"targets ({metric}): "
            + "; ".join(f"{k} {v[0]}/{v[1]}" for k, v in targets(rows, metric).items())
        )


def recompute(path: Path, method: str, intensity: str | None = None) -> None:
    """Recompute one deterministic method's rows of a stored table (same scene, seeds and
    settings as the run that wrote it) and rewrite the file; ``constant`` adds the trivial
    baseline (a uniform image at the data's mean)."""
    stored = json.loads(path.read_text())
    # the stored run's own scene (a torch file of the strip's intensity) when the forward
    # model has changed since; else the scene simulated now
    truth_i = torch.load(intensity).double() if intensity else scene()
    settings = PoissonSettings(regulariser="nlm") if method == "poisson_nlm" else None
    rows = [r for r in stored["rows"] if r["method"] != method]
    for dose, n in sorted({(r["dose_e_per_nm2"], r["n"]) for r in stored["rows"]}):
        noisy, truth = projections(truth_i, dose, n, 1000 * dose + n)
        t0 = time.perf_counter()
        if method == "constant":  # the trivial baseline: one grey level, the data's mean
            image = torch.full_like(truth, float(noisy.mean()))
        else:
            den = denoise_poisson(noisy.float(), detector=TMV_DETECTOR, settings=settings)
            image = den.denoised.double()
        rows.append(
            {
                "dose_e_per_nm2": dose,
                "n": n,
                "method": method,
                "sigma_px": None,
                "seconds": time.perf_counter() - t0,
                **metrics(image, truth),
            }
        )
    stored["rows"] = rows
    stored["recomputed"] = stored.get("recomputed", []) + [method]
    summarise({"rows": rows})
    path.write_text(json.dumps(stored, indent=1))
    print(f"rewrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a corner of the grid")
    parser.add_argument("--full", action="store_true", help="surrogate methods everywhere")
    parser.add_argument("--real", action="store_true", help="also the real HAADF tilt series")
    parser.add_argument("--tune", action="store_true", help="tune NLMSettings and stop")
    parser.add_argument("--iterations", type=int, default=SurrogateSettings().n_iterations)
    parser.add_argument("--out", help="JSON file for the table (and .npz for the galleries)")
    parser.add_argument("--intensity", help="with --recompute: the stored run's strip (.pt)")
    parser.add_argument(
        "--recompute",
        choices=("poisson", "poisson_nlm", "constant"),
        help="recompute this method's rows of the table in --out and stop",
    )
    parser.add_argument("--topaz-python", default=str(ROOT / ".venv-compare" / "bin" / "python"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    if args.tune:
        tune(args)
        return
    if args.recompute:
        recompute(Path(args.out), args.recompute, args.intensity)
        return
    t0 = time.perf_counter()
    result = synthetic(args)
    summarise(result)
    curves = convergence(args)
    speed = timing()
    real, real_gallery = None, {}
    if args.real:
        from real_tilts import real_tilt_series  # noqa: PLC0415 (benchmarks/ on sys.path)

        real = real_tilt_series(quick=args.quick)
        real_gallery = real.pop("_gallery_arrays")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    if args.out:
        out = Path(args.out)
        meta = {
            "iterations": result["iterations"],
            "strip": [128, 320],
            "pixel_a": PIXEL_A,
            "command": " ".join(sys.argv),
            "timing": speed,
            "convergence": curves,
            "real": real,
            "rows": result["rows"],
        }
        out.write_text(json.dumps(meta, indent=1))
        gal = {
            f"{d}_{m}": normalise_minmax(img.float()).mul(255).round().to(torch.uint8).numpy()
            for d, imgs in result["gallery"].items()
            for m, img in imgs.items()
        }
        gal.update(
            {
                f"real_{k}": np.asarray(v, dtype=np.float32)
                for k, v in real_gallery.items()
                if k != "angle_deg"
            }
        )
        np.savez_compressed(out.with_suffix(".npz"), **gal)
        print(f"wrote {out} and {out.with_suffix('.npz')}")


if __name__ == "__main__":
    main()
