"""What the real K2 field contains: particle size and number density, measured.

A scale-normalised Laplacian-of-Gaussian blob detector (dark blobs; image binned 4× to
3.4 Å px; scales σ = 5-21 binned px, blob diameter 2√2 σ: 48-203 Å; each scale's
response divided by its standard deviation on a phase-randomised copy of the same image,
which has the same power spectrum and no objects; detections above the 99.99 % quantile
of that null's maximum over scales; greedy non-maximum suppression within each blob's
radius) is run on the real micrograph and on simulated fields of known content, made
exactly as ``realism.py`` makes them (structured ice, the real fit's CTF, K2, the real's
dose and gain): apoferritin 6Z6U and the SARS-CoV-2 spike trimer 6VXX, 25 per 2048²
field each (seed 200, not a benchmark seed). The simulations calibrate the detector
(how many blobs, of which size, a known number of particles gives). The content of the
benchmark is the model whose blobs of ≥ 70 Å match the real's best (relative difference
of their count plus that of their median diameter), at the density that scales its
detected count to the real's.

    .venv/bin/python benchmarks/realism_content.py

writes ``benchmarks/results/realism_content.json`` and ``benchmarks/out/realism_content.png``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realism as R  # noqa: E402

from tem_core.io import read_mrc  # noqa: E402
from tem_core.optics import Microscope  # noqa: E402

MODELS = (("6z6u.pdb.gz", 25.0), ("6vxx.pdb.gz", 25.0))
BIN = 4
SIGMAS = np.arange(5.0, 22.0, 1.0)  # binned px
QUANTILE = 0.9999
LARGE_A = 70.0


def blobs(image: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Diameters [Å] and normalised responses of the dark blobs of ``image`` (module doc)."""
    n = image.shape[0] // BIN * BIN
    b = -image[:n, :n].reshape(n // BIN, BIN, n // BIN, BIN).mean(axis=(1, 3))
    b = (b - b.mean()) / b.std()
    f = np.fft.fft2(b)
    phases = np.exp(2j * np.pi * np.random.default_rng(seed).random(f.shape))
    null = np.fft.ifft2(np.abs(f) * phases).real
    stack = -np.stack([ndi.gaussian_laplace(b, s) for s in SIGMAS])
    nstack = -np.stack([ndi.gaussian_laplace(null, s) for s in SIGMAS])
    sd = nstack.reshape(len(SIGMAS), -1).std(1)[:, None, None]
    stack, nstack = stack / sd, nstack / sd
    threshold = np.quantile(nstack.max(0), QUANTILE)
    best, scale = stack.max(0), stack.argmax(0)
    cand = np.argwhere(best > threshold)
    order = np.argsort(-best[tuple(cand.T)])
    m = b.shape[0]
    yy, xx = np.ogrid[:m, :m]
    taken = np.zeros_like(best, dtype=bool)
    diam, resp = [], []
    for idx in order:
        y, x = cand[idx]
        if taken[y, x]:
            continue
        r = np.sqrt(2) * SIGMAS[scale[y, x]]
        taken |= (yy - y) ** 2 + (xx - x) ** 2 <= r**2
        diam.append(2 * r * BIN * R.SAMPLING_A)
        resp.append(best[y, x])
    return np.array(diam), np.array(resp)


def summary(diam: np.ndarray, resp: np.ndarray, area_px: int) -> dict:
    big = diam >= LARGE_A
    scale = (2048 * 2048) / area_px
    return dict(large_per_2048=float(big.sum() * scale),
                small_per_2048=float((~big).sum() * scale),
                large_diameter_median_a=float(np.median(diam[big])) if big.any() else 0.0,
                large_diameter_iqr_a=[float(v) for v in np.percentile(diam[big], [25, 75])]
                if big.any() else [0.0, 0.0],
                large_response_median=float(np.median(resp[big])) if big.any() else 0.0,
                histogram_edges_a=[48, 70, 85, 100, 115, 130, 150, 210],
                histogram=np.histogram(diam, [48, 70, 85, 100, 115, 130, 150, 210])[0].tolist())


def main() -> None:
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    scope = Microscope(energy_ev=R.ENERGY_EV)
    real, _ = read_mrc(R.ROOT / "data" / "fei-extended_crop2048.mrc")
    real = np.asarray(real, dtype=np.float64)
    fit = R.fit_like_real(real, scope)  # fmt: skip
    k, p = R.radial(R.micrograph_power_spectrum(torch.from_numpy(real), tile_px=R.TILE_PX))
    gain = float(p[(k >= 0.40) & (k <= 0.50)].mean() / real.mean())
    images = {"real K2": real}
    for model, per in MODELS:
        a = SimpleNamespace(n_px=2048, ice=200.0, seed=200, tilt_deg=0.0, model=model,
                            particles=per)
        images[f"{model.split('.')[0]} × {per:g}"] = R.simulate_field(
            a, fit, gain, structured=True, energy_filter=True)[0]  # fmt: skip
    rows = {}
    head = (f"{'field':<16} {'≥70 Å blobs':>11} {'<70 Å':>6} {'median Ø [Å]':>12} "
            f"{'IQR [Å]':>9} {'contrast':>8}  Ø histogram 48/70/85/100/115/130/150-210 Å")
    print(f"LoG dark-blob detector, null quantile {QUANTILE} (per 2048² field):\n{head}")
    for label, img in images.items():
        d, r = blobs(img)
        s = summary(d, r, img.shape[0] * img.shape[1])
        rows[label] = s
        print(f"{label:<16} {s['large_per_2048']:>11.0f} {s['small_per_2048']:>6.0f} "
              f"{s['large_diameter_median_a']:>12.0f} "
              f"{s['large_diameter_iqr_a'][0]:>4.0f}-{s['large_diameter_iqr_a'][1]:<4.0f} "
              f"{s['large_response_median']:>8.2f}  {s['histogram']}")
    real_s = rows["real K2"]
    score = {}
    for label in list(rows)[1:]:
        s = rows[label]
        score[label] = (abs(s["large_per_2048"] / real_s["large_per_2048"] - 1)
                        + abs(s["large_diameter_median_a"] / real_s["large_diameter_median_a"] - 1))
    best = min(score, key=score.get)
    model, per = MODELS[list(rows)[1:].index(best)]
    density = per * real_s["large_per_2048"] / rows[best]["large_per_2048"]
    print("mismatch (relative count + relative median Ø of ≥ 70 Å blobs): "
          + ", ".join(f"{lab} {v:.2f}" for lab, v in score.items()))
    print(f"chosen content: {model} at {density:.1f} per 2048² field "
          f"({per:g} × real/simulated ≥ 70 Å blob count)")
    record = dict(command="benchmarks/realism_content.py", load_average=[load0, os.getloadavg()],
                  fields=rows, mismatch=score, chosen_model=model,
                  chosen_per_2048=round(density, 1))  # fmt: skip
    path = R.ROOT / "benchmarks" / "results" / "realism_content.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"results: {path}")
    _figure(images)


def _figure(images: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R.OUT.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4),
                             layout="constrained")  # fmt: skip
    for ax, (label, img) in zip(axes, images.items(), strict=True):
        view = ndi.gaussian_filter(img, 8)[::4, ::4]
        lo, hi = np.percentile(view, [0.5, 99.5])
        ax.imshow(view, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    path = R.OUT / "realism_content.png"
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
