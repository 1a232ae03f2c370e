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
from tem_core.denoise.scene import TMV_DETECTOR, TMV_PARTICLES, tmv_intensities
from tem_core.denoise.scene import particle_windows as scene_windows
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
    "poisson_wiener",
    "poisson_network",
    "poisson_network_tta",
    "poisson_network_plain",
    "topaz",
)
#: the method the targets are checked for (ours)
OURS = "poisson_wiener"
#: half-side of the square scoring windows centred on each particle [px]: 48² px (24 nm)
#: around each 18-nm segment holds 99.8 % of the truth's contrast energy
WINDOW_HALF_PX = 24
#: the strip's origin in the 400² field (rows, columns) [px]
_ORIGIN = (STRIP[0].start, STRIP[1].start)


def scene(particles=None) -> torch.Tensor:
    kw = {} if particles is None else {"particles": particles}
    image = tmv_intensities(DATA / "2om3.pdb.gz", tilts_deg=(0.0,), **kw)[0].double()
    return image[STRIP]


def particle_windows(particles=TMV_PARTICLES, shape=(128, 320)) -> torch.Tensor:
    """The scoring windows in the strip (:func:`tem_core.denoise.scene.particle_windows`)."""
    return scene_windows(
        shape, origin_px=_ORIGIN, particles=particles, half_width_px=WINDOW_HALF_PX
    )


def window_crops(image, mask) -> list:
    """The rectangular crops of ``image`` covered by the windows of ``mask`` (one each)."""
    crops, seen = [], torch.zeros_like(mask)
    for r, c in mask.nonzero().tolist():
        if seen[r, c]:
            continue
        r1 = r
        while r1 < mask.shape[0] and mask[r1, c]:
            r1 += 1
        c1 = c
        while c1 < mask.shape[1] and mask[r, c1]:
            c1 += 1
        seen[r:r1, c:c1] = True
        crops.append(image[r:r1, c:c1])
    return crops


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


MASK = particle_windows()


def metrics(estimate, truth, mask=None) -> dict:
    """Release protocol (min-max, whole strip), counts (whole strip) and, the primary
    score, counts in the particle windows (``psnr_particles``, ``ssim_particles``)."""
    mask = MASK if mask is None else mask
    e, t = normalise_minmax(estimate), normalise_minmax(truth)
    span = float(truth.max() - truth.min())
    tw = truth[mask]
    span_w = float(tw.max() - tw.min())
    crops = zip(window_crops(estimate, mask), window_crops(truth, mask), strict=True)
    return {
        "psnr_particles": float(psnr(estimate[mask][None], tw[None], data_range=span_w)),
        "ssim_particles": float(np.mean([float(ssim(a, b, data_range=span_w)) for a, b in crops])),
        "psnr": float(psnr(e, t, data_range=1.0)),
        "ssim": float(ssim(e, t, data_range=1.0)),
        "mse": float(mse(e, t)),
        "ffl": float(focal_frequency_loss(e, t)),
        "psnr_counts": float(psnr(estimate, truth, data_range=span)),
        "frc": frc_mean(estimate, truth),
    }


TUNING_MASK = particle_windows(TUNING_PARTICLES)


def tune_sigma(tuning, dose, n, seed) -> float:
    """σ of the Gaussian filter maximising the particle-window PSNR on the tuning image."""
    noisy, truth = projections(tuning, dose, n, seed)
    mean = noisy.mean(0)
    tw = truth[TUNING_MASK]
    span = float(tw.max() - tw.min())
    scores = {
        s: float(
            psnr(gaussian_filter(mean, sigma_px=s)[TUNING_MASK][None], tw[None], data_range=span)
        )
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


def cache_file(cache: str | Path, name: str, dose: int, n: int, iterations: int) -> Path:
    return Path(cache) / f"{name}_{dose}_{n}_{iterations}.pt"


def surrogate_output(noisy, name, iterations, seed, *, cache=None, scene_key=None, dose=0, n=0):
    """The surrogate method's output and its run time; read from / written to ``cache``
    (one file per method, dose, n and iteration count, tagged with the scene) when given."""
    path = cache_file(cache, name, dose, n, iterations) if cache else None
    if path is not None and path.exists():
        stored = torch.load(path)
        # the float32 scene's sum moves by ~1e-6 (relative) with the thread count and
        # refactors of the forward model; a change of the model itself moves it far more
        if abs(stored["scene_key"] - scene_key) > 1e-5 * abs(scene_key):
            raise ValueError(f"{path} was made with another scene (forward model changed)")
        return stored["denoised"].double(), stored["seconds"]
    res, dt, _ = run_surrogate(noisy, name, iterations, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"denoised": res.denoised, "seconds": dt, "scene_key": scene_key}, path)
    return res.denoised.double(), dt


def topaz_row(dose: int, n: int, image, truth) -> dict:
    """One table row of the pretrained Topaz U-Net's output (no tuned width, not timed)."""
    row = {"dose_e_per_nm2": dose, "n": n, "method": "topaz", "sigma_px": None, "seconds": None}
    return {**row, **metrics(image, truth)}


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
            tp = time.perf_counter()
            est["poisson_wiener"] = denoise_poisson(
                noisy.float(),
                detector=TMV_DETECTOR,
                settings=PoissonSettings(regulariser="wiener"),
            ).denoised.double()
            times = {"poisson": t_poisson, "poisson_wiener": time.perf_counter() - tp}
            tp = time.perf_counter()
            est["poisson_network"] = denoise_poisson(
                noisy.float(),
                detector=TMV_DETECTOR,
                settings=PoissonSettings(regulariser="network", weights_path=args.weights),
            ).denoised.double()
            times["poisson_network"] = time.perf_counter() - tp
            if args.plain_network:  # without test-time augmentation (network_symmetries=1)
                tp = time.perf_counter()
                est["poisson_network_plain"] = denoise_poisson(
                    noisy.float(),
                    detector=TMV_DETECTOR,
                    settings=PoissonSettings(
                        regulariser="network", weights_path=args.weights, network_symmetries=1
                    ),
                ).denoised.double()
                times["poisson_network_plain"] = time.perf_counter() - tp
            est["constant"] = torch.full_like(truth, float(noisy.mean()))
            for name, subset in SURROGATE_SUBSET.items():
                wanted = args.full or name in args.full_methods or (dose, n) in subset
                if args.cached_only and not (
                    args.cache and cache_file(args.cache, name, dose, n, iterations).exists()
                ):
                    wanted = False  # not run in the time available: left out of the table
                if wanted or args.quick:
                    if args.quick and name != "published" and (dose, n) != (doses[0], ns[0]):
                        continue
                    out, dt = surrogate_output(
                        noisy,
                        name,
                        iterations,
                        seed + 1,
                        cache=args.cache,
                        scene_key=float(truth_i.sum()),
                        dose=dose,
                        n=n,
                    )
                    est[name] = calibrate(out, noisy)
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
                r["method"]: r["psnr_particles"]
                for r in rows
                if (r["dose_e_per_nm2"], r["n"]) == (dose, n)
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
            rows.append(topaz_row(dose, n, image, truth))
            if dose in gallery and n == ns[0]:
                gallery[dose]["topaz"] = image
    return {"rows": rows, "gallery": gallery, "iterations": iterations}


def surrogates_only(args) -> None:
    """Run (and cache) the surrogate methods on the grid, nothing else (resumable)."""
    truth_i = scene()
    key = float(truth_i.sum())
    # n = 2 and 10 (the release's settings) at every dose first, so a partial run is useful
    order = sorted(
        ((d, n) for d in DOSES for n in N_PROJ),
        key=lambda k: ((2, 10, 50, 5, 25).index(k[1]), k[0]),
    )
    for dose, n in order:
        for name, subset in SURROGATE_SUBSET.items():
            if not (args.full or name in args.full_methods or (dose, n) in subset):
                continue
            if cache_file(args.cache, name, dose, n, args.iterations).exists():
                continue
            seed = 1000 * dose + n
            noisy, _ = projections(truth_i, dose, n, seed)
            _, dt = surrogate_output(
                noisy,
                name,
                args.iterations,
                seed + 1,
                cache=args.cache,
                scene_key=key,
                dose=dose,
                n=n,
            )
            print(
                f"{name} dose {dose} n {n}: {dt:.0f} s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


def convergence(args) -> dict:
    """PSNR against iterations for the three estimators at the release's setting (700, n=2);
    read from / written to ``--cache`` (``convergence_<iterations>.json``) when given."""
    iterations = 60 if args.quick else 300
    truth_i = scene()
    path = Path(args.cache) / f"convergence_{iterations}.json" if args.cache else None
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if abs(stored["scene_key"] - float(truth_i.sum())) <= 1e-5 * abs(stored["scene_key"]):
            curves = stored["curves"]
            for c in curves.values():  # caches of the first version: "psnr" was in counts
                if "psnr_counts" not in c:
                    c["psnr_counts"] = c.pop("psnr")
            return curves
    noisy, truth = projections(truth_i, 700, 2, 7002)
    curves = {}
    for name in ("published", "unbiased", "pathwise"):
        res, dt, curve = run_surrogate(noisy, name, iterations, 7003, truth=truth, every=10)
        curves[name] = {
            "iteration": [c[0] for c in curve],
            "psnr_counts": [c[1] for c in curve],
            "psnr": [c[2] for c in curve],
            "objective": res.objective.tolist(),
            "seconds": dt,
        }
        best = max(curve, key=lambda c: c[1])
        print(
            f"convergence {name}: best PSNR {best[1]:.2f} dB at {best[0]} iterations, "
            f"{dt / iterations * 1e3:.0f} ms/iteration"
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"scene_key": float(truth_i.sum()), "curves": curves}))
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


#: candidates of ``--tune-network``: (name, PoissonSettings keywords)
NETWORK_CANDIDATES = (
    *((f"network_sym{k}", {"network_symmetries": k, "network_blend": False}) for k in (1, 2, 8)),
    ("network_sym2_blend", {"network_symmetries": 2, "network_blend": True}),
    ("wiener", {"regulariser": "wiener"}),
)


def _weights_candidate(spec: str) -> dict:
    """PoissonSettings keywords of one ``--compare-weights`` entry: ``PATH``, ``PATH+PATH``
    (an ensemble), optionally ``@K`` (``network_symmetries``)."""
    spec, _, k = spec.partition("@")
    paths = tuple(spec.split("+"))
    kw = {"weights_path": paths[0] if len(paths) == 1 else paths}
    return kw | ({"network_symmetries": int(k)} if k else {})


def tune_network(args) -> dict:
    """Particle-window PSNR of the network prior's settings on the separate tuning image
    (the segments moved and turned; noise seeds unlike the benchmark's) at every dose × n;
    the default of ``PoissonSettings.network_symmetries`` is chosen from this, never from
    the benchmark's scene. Also Topaz on the same data when the comparison venv is there."""
    tuning_i = scene(TUNING_PARTICLES)
    doses = (100, 500) if args.quick else DOSES
    ns = (2, 10) if args.quick else N_PROJ
    tw_rows, means = [], {}
    candidates = NETWORK_CANDIDATES
    if args.compare_weights:  # weights files side by side, each with the default settings
        candidates = (
            *(
                (f"network_{name}", _weights_candidate(spec))
                for name, spec in (item.split("=", 1) for item in args.compare_weights.split(","))
            ),
            ("wiener", {"regulariser": "wiener"}),
        )
    for dose in doses:
        for n in ns:
            noisy, truth = projections(tuning_i, dose, n, 1000 * dose + n + 13)
            means[(dose, n)] = (noisy.mean(0), truth)
            scores = {}
            for name, kw in candidates:
                settings = PoissonSettings(
                    **{"regulariser": "network", "weights_path": args.weights, **kw}
                )
                den = denoise_poisson(noisy.float(), detector=TMV_DETECTOR, settings=settings)
                scores[name] = metrics(den.denoised.double(), truth, TUNING_MASK)["psnr_particles"]
            scores["mean"] = metrics(noisy.mean(0), truth, TUNING_MASK)["psnr_particles"]
            tw_rows.append({"dose_e_per_nm2": dose, "n": n, **scores})
            print(
                f"tuning dose {dose:>5} n {n:>2}: "
                + " ".join(f"{k} {v:.2f}" for k, v in scores.items()),
                flush=True,
            )
    topaz = run_topaz({f"{d}_{n}": m for (d, n), (m, _) in means.items()}, args.topaz_python)
    for row in tw_rows:
        key = f"{row['dose_e_per_nm2']}_{row['n']}"
        if key in topaz:
            truth = means[(row["dose_e_per_nm2"], row["n"])][1]
            row["topaz"] = metrics(topaz[key], truth, TUNING_MASK)["psnr_particles"]
    names = [k for k in tw_rows[0] if k not in ("dose_e_per_nm2", "n")]
    summary = {
        name: {
            "mean": float(np.mean([r[name] for r in tw_rows if name in r])),
            "per_dose": {
                d: float(np.mean([r[name] for r in tw_rows if r["dose_e_per_nm2"] == d]))
                for d in doses
                if all(name in r for r in tw_rows)
            },
        }
        for name in names
    }
    for name, s in summary.items():
        per = " ".join(f"{v:.2f}" for v in s["per_dose"].values())
        print(f"{name:>14}: mean {s['mean']:.3f} dB; per dose {per}")
    return {"rows": tw_rows, "summary": summary, "load": os.getloadavg()[0]}


def timing() -> dict:
    """Seconds of denoise_poisson (TV, Wiener and network priors; the network with its
    default test-time augmentation and without, ``network_plain``) for five 512² projections
    (CPU, float32); per projection: a fifth of it."""
    g = torch.Generator().manual_seed(0)
    intensity = 1.0 + 0.02 * torch.randn(512, 512, generator=g, dtype=torch.float32)
    noisy = detect(
        intensity.expand(5, -1, -1),
        detector=TMV_DETECTOR,
        dose_e_per_a2=5.0,
        sampling_a=PIXEL_A,
        generator=g,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the target is for 2 CPU cores, whatever --threads says
    out = {"threads": torch.get_num_threads()}
    for prior in ("tv", "wiener", "network", "network_plain"):
        if prior == "network_plain":
            settings = PoissonSettings(regulariser="network", network_symmetries=1)
        else:
            settings = PoissonSettings(regulariser=prior)
        denoise_poisson(noisy, detector=TMV_DETECTOR, settings=settings)  # warm-up
        wall, cpu = [], []
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            denoise_poisson(noisy, detector=TMV_DETECTOR, settings=settings)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        load = os.getloadavg()[0]
        print(
            f"denoise_poisson ({prior}), 5 × 512² projections → one image: median "
            f"{np.median(wall):.2f} s wall, {np.median(cpu):.2f} s CPU "
            f"({out['threads']} threads, load average {load:.1f})"
        )
        key = "" if prior == "tv" else f"_{prior}"
        out[f"seconds_512{key}"] = float(np.median(wall))
        out[f"cpu_seconds_512{key}"] = float(np.median(cpu))
        out[f"load{key}"] = load
        if prior == "network":
            out["network_symmetries"] = settings.network_symmetries
    torch.set_num_threads(previous)
    return out


def _table(rows, keys, present, metric: str, title: str) -> None:
    print(f"\n{title}")
    print(f"{'dose':>5} {'n':>3} " + " ".join(f"{m:>9}" for m in present))
    for k in keys:
        by = {r["method"]: r for r in rows if (r["dose_e_per_nm2"], r["n"]) == k}
        print(
            f"{k[0]:>5} {k[1]:>3} "
            + " ".join(f"{by[m][metric]:>9.3f}" if m in by else f"{'-':>9}" for m in present)
        )


def targets(rows, metric: str = "psnr_particles", ours: str = OURS) -> dict:
    """How often ``ours`` meets each target under ``metric`` (settings met / settings), and
    the Topaz margin averaged over n at each dose ("at every dose")."""
    keys = sorted({(r["dose_e_per_nm2"], r["n"]) for r in rows})
    checks = {
        "beats mean": [],
        "beats topaz by 1 dB": [],
        "beats published": [],
        "beats constant": [],
    }
    margin: dict[int, list] = {}
    for k in keys:
        by = {r["method"]: r[metric] for r in rows if (r["dose_e_per_nm2"], r["n"]) == k}
        if ours not in by:
            continue
        checks["beats mean"].append(by[ours] > by["mean"])
        if "topaz" in by:
            checks["beats topaz by 1 dB"].append(by[ours] >= by["topaz"] + 1.0)
            margin.setdefault(k[0], []).append(by[ours] - by["topaz"])
        if "published" in by:
            checks["beats published"].append(by[ours] > by["published"])
        if "constant" in by:
            checks["beats constant"].append(by[ours] > by["constant"])
    out = {k: [sum(v), len(v)] for k, v in checks.items()}
    out["topaz margin per dose [dB]"] = {d: round(float(np.mean(v)), 2) for d, v in margin.items()}
    return out


def summarise(result: dict) -> None:
    rows = result["rows"]
    keys = sorted({(r["dose_e_per_nm2"], r["n"]) for r in rows})
    present = [m for m in METHODS if any(r["method"] == m for r in rows)]
    _table(rows, keys, present, "psnr_particles", "PSNR [dB] in counts in the particle windows")
    _table(rows, keys, present, "ssim_particles", "SSIM in counts in the particle windows")
    _table(rows, keys, present, "psnr", "PSNR [dB], images min-max normalised (release protocol)")
    _table(rows, keys, present, "psnr_counts", "PSNR [dB] in counts (data range = truth's)")
    _table(rows, keys, present, "ssim", "SSIM, min-max normalised")
    _table(rows, keys, present, "ffl", "focal frequency loss (α = 1), min-max normalised")
    _table(rows, keys, present, "frc", "mean FRC with the truth up to 0.25 cycles/px")
    for ours in (
        "poisson_network",
        "poisson_network_tta",
        "poisson_network_plain",
        "poisson_wiener",
        "poisson",
        "poisson_nlm",
    ):
        if not any(r["method"] == ours for r in rows):
            continue
        for metric in ("psnr_particles", "psnr_counts", "psnr"):
            t = targets(rows, metric, ours)
            margin = t.pop("topaz margin per dose [dB]")
            print(
                f"targets {ours} ({metric}): "
                + "; ".join(f"{k} {v[0]}/{v[1]}" for k, v in t.items())
                + f"; Topaz margin per dose {margin}"
            )


#: largest change of the stored mean-of-projections rows that ``--recompute`` accepts [dB]
MEAN_TOLERANCE_DB = 2e-3


def recompute(
    path: Path,
    method: str,
    intensity: str | None = None,
    cache: str | None = None,
    weights: str | None = None,
    symmetries: int | None = None,
    topaz_python: str | None = None,
    blend: bool | None = None,
    label: str | None = None,
) -> None:
    """Recompute one deterministic method's rows of a stored table (same scene, seeds and
    settings as the run that wrote it) and rewrite the file; ``constant`` adds the trivial
    baseline (a uniform image at the data's mean). For a surrogate method the rows are
    those of the runs in ``cache`` (``--surrogates-only``), the others left out; ``topaz``
    runs the comparison venv on the means. Refuses when the stored rows of the mean of the
    projections are not reproduced (another scene or noise: the table would mix two).
    ``symmetries`` and ``blend`` set the network prior's test-time augmentation and SURE
    blend (default: their defaults); ``label`` stores the rows under another name."""
    stored = json.loads(path.read_text())
    # the stored run's own scene (a torch file of the strip's intensity) when the forward
    # model has changed since; else the scene simulated now
    truth_i = torch.load(intensity).double() if intensity else scene()
    prior = {"poisson_nlm": "nlm", "poisson_wiener": "wiener", "poisson_network": "network"}
    kw = {} if symmetries is None else {"network_symmetries": symmetries}
    kw.update({} if blend is None else {"network_blend": blend})
    settings = PoissonSettings(regulariser=prior.get(method, "tv"), weights_path=weights, **kw)
    label = method if label is None else label
    rows = [r for r in stored["rows"] if r["method"] != label]
    iterations = stored["iterations"]
    stored_mean = {
        (r["dose_e_per_nm2"], r["n"]): r["psnr_particles"] for r in rows if r["method"] == "mean"
    }
    topaz_in, truths, moved = {}, {}, []
    for dose, n in sorted({(r["dose_e_per_nm2"], r["n"]) for r in stored["rows"]}):
        noisy, truth = projections(truth_i, dose, n, 1000 * dose + n)
        check = metrics(noisy.mean(0), truth)["psnr_particles"]
        moved.append(abs(check - stored_mean[(dose, n)]))
        # the float32 scene moves by ~1e-6 (relative) with refactors of the forward model:
        # ~1e-4 dB here; a change of the scene or of the noise moves it by far more
        if moved[-1] > MEAN_TOLERANCE_DB:
            raise ValueError(
                f"{path}: the mean of projections at {dose} e/nm², n = {n} scores {check:.6f} "
                f"dB now, {stored_mean[(dose, n)]:.6f} dB stored: another scene or noise"
            )
        t0 = time.perf_counter()
        if method == "topaz":
            topaz_in[f"{dose}_{n}"], truths[f"{dose}_{n}"] = noisy.mean(0), truth
            continue
        if method == "constant":  # the trivial baseline: one grey level, the data's mean
            image = torch.full_like(truth, float(noisy.mean()))
        elif method in SURROGATE_SUBSET:
            if not (cache and cache_file(cache, method, dose, n, iterations).exists()):
                continue
            out, seconds = surrogate_output(
                noisy,
                method,
                iterations,
                1000 * dose + n + 1,
                cache=cache,
                scene_key=float(truth_i.sum()),
                dose=dose,
                n=n,
            )
            image = calibrate(out, noisy)
            t0 = time.perf_counter() - seconds
        else:
            den = denoise_poisson(noisy.float(), detector=TMV_DETECTOR, settings=settings)
            image = den.denoised.double()
        rows.append(
            {
                "dose_e_per_nm2": dose,
                "n": n,
                "method": label,
                "sigma_px": None,
                "seconds": time.perf_counter() - t0,
                **metrics(image, truth),
            }
        )
    if method == "topaz":
        out = run_topaz(topaz_in, topaz_python)
        if not out:
            raise RuntimeError("Topaz did not run: the table is left as it was")
        for key, image in out.items():
            dose, n = (int(v) for v in key.split("_"))
            rows.append(topaz_row(dose, n, image, truths[key]))
    stored["rows"] = rows
    stored["recomputed"] = stored.get("recomputed", []) + [
        f"{label}: {method}" + ("" if method != "poisson_network" else f" ({settings})")
    ]
    print(f"the mean of projections reproduced within {max(moved):.2g} dB at every setting")
    stored["surrogate_coverage"] = {
        m: sorted([r["dose_e_per_nm2"], r["n"]] for r in rows if r["method"] == m)
        for m in SURROGATE_SUBSET
    }
    summarise({"rows": rows})
    path.write_text(json.dumps(stored, indent=1))
    print(f"rewrote {path}")


def real_cached(args) -> dict:
    """The real tilt series' results (``real_tilts.py``), read from / written to
    ``--cache`` when given (they do not depend on the simulated scene)."""
    import real_tilts  # noqa: PLC0415 (benchmarks/ on sys.path)
    from real_tilts import real_tilt_series  # noqa: PLC0415

    real_tilts.WEIGHTS = args.weights

    path = Path(args.cache) / f"real_{'quick' if args.quick else 'full'}.pt" if args.cache else None
    if path is not None and path.exists():
        real = torch.load(path, weights_only=False)
        if "network" not in real or args.redo_network:  # add (or redo) the network's curve
            extra = real_tilt_series(quick=args.quick, only=("network",))
            real["network"] = extra["network"]
            real["_gallery_arrays"]["network"] = extra["_gallery_arrays"]["network"]
            torch.save(real, path)
        return real
    real = real_tilt_series(
        quick=args.quick, topaz=lambda images: run_topaz(images, args.topaz_python)
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(real, path)
    return real


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
        choices=(
            "poisson",
            "poisson_nlm",
            "poisson_wiener",
            "poisson_network",
            "constant",
            "published",
            "unbiased",
            "pathwise",
            "topaz",
        ),
        help="recompute this method's rows of the table in --out and stop",
    )
    parser.add_argument(
        "--full-methods",
        default="",
        help="comma-separated surrogate methods to run on the full grid (e.g. published)",
    )
    parser.add_argument("--cache", help="folder caching the surrogate outputs (resumable)")
    parser.add_argument(
        "--real-only", action="store_true", help="fill --cache with the real series, stop"
    )
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="use only the surrogate runs already in --cache (skip the others)",
    )
    parser.add_argument(
        "--surrogates-only", action="store_true", help="fill --cache with surrogate runs, stop"
    )
    parser.add_argument(
        "--convergence-only", action="store_true", help="fill --cache with the curves, stop"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's); the scene's float32 sums depend on it, so "
        "use the same value as the run that filled --cache",
    )
    parser.add_argument(
        "--redo-network",
        action="store_true",
        help="recompute the network's curve of the cached real series (new weights)",
    )
    parser.add_argument(
        "--timing-only", action="store_true", help="time the priors (stored in --out), stop"
    )
    parser.add_argument(
        "--no-blend",
        action="store_true",
        help="with --recompute poisson_network: PoissonSettings(network_blend=False)",
    )
    parser.add_argument("--label", help="with --recompute: store the rows under this name")
    parser.add_argument(
        "--plain-network",
        action="store_true",
        help="also the network prior without test-time augmentation (poisson_network_plain)",
    )
    parser.add_argument(
        "--no-convergence",
        action="store_true",
        help="skip the surrogate methods' convergence curves (300 iterations each)",
    )
    parser.add_argument(
        "--tune-network",
        action="store_true",
        help="score the network prior's settings on the tuning image (JSON in --out), stop",
    )
    parser.add_argument(
        "--weights",
        help="network weights (default: those shipped in tem_core/data); PATH+PATH: an ensemble",
    )
    parser.add_argument(
        "--compare-weights",
        help="with --tune-network: NAME=PATH,... weights files scored side by side with the "
        "default PoissonSettings (instead of the settings candidates); PATH+PATH: an "
        "ensemble; a suffix @K: network_symmetries K",
    )
    parser.add_argument(
        "--symmetries",
        type=int,
        help="with --recompute poisson_network: PoissonSettings.network_symmetries "
        "(default: its default)",
    )
    parser.add_argument("--topaz-python", default=str(ROOT / ".venv-compare" / "bin" / "python"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    args.full_methods = tuple(m for m in args.full_methods.split(",") if m)
    if args.weights and "+" in args.weights:  # an ensemble of networks
        args.weights = tuple(args.weights.split("+"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.surrogates_only:
        surrogates_only(args)
        return
    if args.convergence_only:
        convergence(args)
        return
    if args.real_only:
        real = real_cached(args)
        if args.out and Path(args.out).exists():  # refresh the stored table's real part
            real.pop("_gallery_arrays", None)
            stored = json.loads(Path(args.out).read_text())
            stored["real"] = real
            Path(args.out).write_text(json.dumps(stored, indent=1))
            print(f"rewrote the real series of {args.out}")
        return
    if args.tune:
        tune(args)
        return
    if args.tune_network:
        result = tune_network(args)
        result["command"] = " ".join(sys.argv)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
            print(f"wrote {args.out}")
        return
    if args.timing_only:
        speed = timing()
        if args.out:
            out = Path(args.out)  # a stored table keeps its rows; a new file holds the timing
            stored = json.loads(out.read_text()) if out.is_file() else {}
            stored["timing"] = speed
            Path(args.out).write_text(json.dumps(stored, indent=1))
            print(f"rewrote the timing of {args.out}")
        return
    if args.recompute:
        recompute(
            Path(args.out),
            args.recompute,
            args.intensity,
            args.cache,
            args.weights,
            args.symmetries,
            args.topaz_python,
            False if args.no_blend else None,
            args.label,
        )
        return
    t0 = time.perf_counter()
    result = synthetic(args)
    summarise(result)
    curves = None if args.no_convergence else convergence(args)
    speed = timing()
    real, real_gallery = None, {}
    if args.real:
        real = real_cached(args)
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
            "window_half_px": WINDOW_HALF_PX,
            "surrogate_coverage": {
                m: sorted([r["dose_e_per_nm2"], r["n"]] for r in result["rows"] if r["method"] == m)
                for m in ("published", "unbiased", "pathwise")
            },
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
