"""Simulated versus real micrograph: a K2 counting-mode exposure at its recorded settings.

Real data: ``data/fei-extended_crop2048.mrc`` (Gatan K2 Summit, counting mode behind an energy
filter, Titan Krios, 300 kV, 0.8538 Å/px, 47.6 e/Å², about 101 counts per electron, defocus
about 0.91 µm underfocus; see data/PROVENANCE.md).

Simulation at the same settings: apoferritins (6Z6U) at random poses in an ice slab,
multislice with ice and absorption, CTF (Cs 2.7 mm, 0.7 eV spread), K2 300 kV tabulated MTF,
Poisson noise, gain 101 counts/e, in two detector orders:

* ``noise→MTF``: TEM-simulator's order (``mtf_after_noise=True``): noise power ∝ MTF².
* ``MTF→noise``: ``mtf_after_noise=False``: the expected image is blurred, then sampled, so
  the noise is white, as on a counting camera.

Compared: mean counts, variance/mean (whole image and the median over 64² tiles, which removes
most of the structure), and the radially averaged power spectrum (averaged periodogram of
256² tiles, Hann window, plane detrend), each normalised to 1 between 0.20 and 0.30
cycles/px; Thon ring minima of the real spectrum against the CTF zeros at the nominal
defocus, and the defocus that best matches the real rings (1-D scan).
Figure: ``benchmarks/out/real_vs_sim.png``.

    .venv/bin/python benchmarks/real_micrograph.py [--n-px 1024] [--particles 4] [--ice 400]
        [--defocus-um 0.91]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from tem_core.detector import Detector, detect
from tem_core.io import read_mrc
from tem_core.mtf_fit import averaged_periodogram, radial_profile
from tem_core.optics import Microscope, ctf_1d, ctf_zeros_per_a
from tem_core.potential import PotentialSettings
from tem_core.simulate import Imaging, exit_wave, image_plane_intensity
from tem_core.specimen import IceSlab, build_specimen
from tem_core.structure import read_structure
from tem_core.units import KV_TO_EV, UM_TO_A

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
OUT = ROOT / "benchmarks" / "out"

SAMPLING_A = 0.8538
DOSE_E_PER_A2 = 47.6
GAIN_COUNTS_PER_E = 101.0
DEFOCUS_A = 0.91 * UM_TO_A
ENERGY_EV = 300.0 * KV_TO_EV
NORM_BAND = (0.20, 0.30)  # cycles/px, where spectra are normalised


def tiles(image: np.ndarray, size: int) -> np.ndarray:
    ny, nx = image.shape
    t = image[: ny // size * size, : nx // size * size]
    return t.reshape(ny // size, size, nx // size, size).swapaxes(1, 2).reshape(-1, size, size)


def stats(image: np.ndarray) -> dict[str, float]:
    img = image.astype(np.float64)
    t = tiles(img, 64)
    return dict(
        mean=float(img.mean()),
        var_over_mean=float(img.var() / img.mean()),
        tile_var_over_mean=float(np.median(t.var(axis=(1, 2)) / t.mean(axis=(1, 2)))),
    )


def power_profile(image: np.ndarray, tile: int = 256, n_bins: int = 128):
    """Radial average of the tile-averaged periodogram, normalised in NORM_BAND."""
    spec = averaged_periodogram(torch.from_numpy(tiles(image.astype(np.float64), tile)),
                                taper="hann", detrend="plane")
    f, p = radial_profile(spec, n_bins=n_bins)
    f, p = f.numpy(), p.numpy()
    band = (f >= NORM_BAND[0]) & (f <= NORM_BAND[1])
    return f, p / p[band].mean(), p


def detrended(f: np.ndarray, p: np.ndarray, width: int = 9) -> np.ndarray:
    """log power minus its running mean: the Thon-ring oscillation."""
    logp = np.log(p)
    kernel = np.ones(width) / width
    pad = np.pad(logp, width // 2, mode="edge")
    return logp - np.convolve(pad, kernel, mode="valid")


def ring_minima(f: np.ndarray, p: np.ndarray, f_lo: float, f_hi: float) -> np.ndarray:
    d = detrended(f, p)
    idx = [i for i in range(1, len(f) - 1)
           if d[i] < d[i - 1] and d[i] < d[i + 1] and f_lo <= f[i] <= f_hi and d[i] < 0]
    return f[idx]


def best_defocus(f_px, p, microscope, f_lo=0.05, f_hi=0.30) -> float:
    """Defocus [Å] whose CTF² oscillation best correlates with the real ring pattern."""
    sel = (f_px >= f_lo) & (f_px <= f_hi)
    d = detrended(f_px, p)[sel]
    k = torch.from_numpy(f_px[sel] / SAMPLING_A)
    best, score = None, -np.inf
    for df in np.arange(0.5, 1.5, 0.002) * UM_TO_A:
        model = ctf_1d(k, microscope=microscope, defocus_a=float(df)).numpy() ** 2
        model = model - model.mean()
        c = float(np.dot(model, d - d.mean()) / (np.linalg.norm(model) * np.linalg.norm(d) + 1e-30))
        if c > score:
            best, score = float(df), c
    return best


def simulate(args, microscope: Microscope):
    n = args.n_px
    extent = n * SAMPLING_A
    model = read_structure(DATA / "6z6u.pdb.gz", dtype=torch.float32)
    specimen = build_specimen(model, args.particles, extent_a=(extent, extent),
                              ice=IceSlab(thickness_a=args.ice),
                              generator=torch.Generator().manual_seed(args.seed))
    settings = PotentialSettings(shape=(n, n), sampling_a=SAMPLING_A, slice_thickness_a=20.0,
                                 energy_ev=ENERGY_EV)
    t0 = time.perf_counter()
    with torch.no_grad():
        wave = exit_wave(specimen, settings, energy_ev=ENERGY_EV)
        intensity = image_plane_intensity(wave, sampling_a=SAMPLING_A, microscope=microscope,
                                          defocus_a=DEFOCUS_A)
        images = {}
        for label, after in (("noise→MTF", True), ("MTF→noise", False)):
            detector = Detector(dqe=1.0, gain_counts_per_e=GAIN_COUNTS_PER_E,
                                mtf_camera="k2_300kv", mtf_after_noise=after,
                                noise_model="scaled_poisson")
            g = torch.Generator().manual_seed(args.seed + 1)
            images[label] = detect(intensity, detector=detector, dose_e_per_a2=DOSE_E_PER_A2,
                                   sampling_a=SAMPLING_A, generator=g).double().numpy()
    Imaging(defocus_a=DEFOCUS_A, dose_e_per_a2=DOSE_E_PER_A2)  # the same settings, validated
    return images, time.perf_counter() - t0, len(specimen.atoms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-px", type=int, default=1024, help="grid (square) [px]")
    parser.add_argument("--defocus-um", type=float, default=0.91, help="underfocus [µm]")
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--ice", type=float, default=400.0, help="ice thickness [Å]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.n_px == 2048 and args.threads > 1:
        # pytorch/pytorch#169670: MKL's multithreaded complex64 ifft2 of exactly 2048 × 2048
        # normalises twice (result 1/N² too small); one thread is correct.
        print("2048² grid: running single-threaded to avoid pytorch#169670 (MKL ifft2 bug)")
        torch.set_num_threads(1)
    global DEFOCUS_A
    DEFOCUS_A = args.defocus_um * UM_TO_A

    real, voxel = read_mrc(DATA / "fei-extended_crop2048.mrc")
    real = np.asarray(real, dtype=np.float64)
    if abs(voxel - SAMPLING_A) > 1e-3:
        raise ValueError(f"real micrograph pixel size {voxel} Å differs from {SAMPLING_A} Å")
    microscope = Microscope(energy_ev=ENERGY_EV)
    sims, t_sim, n_atoms = simulate(args, microscope)
    print(f"simulated {args.particles} × 6Z6U ({n_atoms:,} atoms) in {args.ice:.0f} Å ice, "
          f"{args.n_px}² px at {SAMPLING_A} Å, {DOSE_E_PER_A2} e/Å², gain {GAIN_COUNTS_PER_E}, "
          f"defocus {DEFOCUS_A / UM_TO_A} µm, K2 300 kV MTF: {t_sim:.1f} s (both detector orders)")

    images = {"real K2": real, **sims}
    profiles = {k: power_profile(v) for k, v in images.items()}
    header = (f"{'image':<11} {'mean [counts]':>13} {'var/mean':>9} {'tile var/mean':>13} "
              f"{'P(0.05)':>8} {'P(0.125)':>9} {'P(0.40)':>8} {'P(0.49)':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    for label, img in images.items():
        s = stats(img)
        f, pn, _ = profiles[label]
        at = [float(np.interp(x, f, pn)) for x in (0.05, 0.125, 0.40, 0.49)]
        print(f"{label:<11} {s['mean']:>13.1f} {s['var_over_mean']:>9.1f} "
              f"{s['tile_var_over_mean']:>13.1f} " + " ".join(f"{v:>8.3f}" for v in at))
    print(f"(P: radially averaged power, normalised to 1 over {NORM_BAND} cycles/px; "
          "a white counting camera is flat at high frequency, MTF² falls to ~0.15 at Nyquist)")

    zeros = ctf_zeros_per_a(12, defocus_a=DEFOCUS_A, cs_a=microscope.cs_a, energy_ev=ENERGY_EV)
    zeros_px = zeros.numpy() * SAMPLING_A
    f_real, _, p_real = profiles["real K2"]
    fitted = best_defocus(f_real, p_real, microscope)
    zeros_fit = ctf_zeros_per_a(8, defocus_a=fitted, cs_a=microscope.cs_a,
                                energy_ev=ENERGY_EV).numpy() * SAMPLING_A
    print(f"\nCTF zeros at {DEFOCUS_A / UM_TO_A:.2f} µm [cycles/px]: "
          + " ".join(f"{z:.3f}" for z in zeros_px[:6]))
    print(f"best-matching defocus of the real rings: {fitted / UM_TO_A:.3f} µm; its zeros: "
          + " ".join(f"{z:.3f}" for z in zeros_fit[:6]))
    for label in images:
        f, _, p = profiles[label]
        minima = ring_minima(f, p, 0.04, 0.30)
        df = best_defocus(f, p, microscope)
        print(f"{label:<10} power minima [cycles/px]: " + " ".join(f"{m:.3f}" for m in minima[:6])
              + f"   best-matching defocus {df / UM_TO_A:.3f} µm")

    _figure(images, profiles, zeros_px, fitted, microscope)


def _figure(images, profiles, zeros_px, fitted, microscope) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(16, 10), layout="constrained")
    n_img = len(images)
    crop = min(1024, *(min(img.shape) // 4 * 4 for img in images.values()))
    for i, (label, img) in enumerate(images.items()):
        ax = fig.add_subplot(2, n_img, i + 1)
        view = img[:crop, :crop]
        lo, hi = np.percentile(view, [0.5, 99.5])
        # 4× binned for display: single pixels at 35 e/px are mostly shot noise
        binned = view.reshape(crop // 4, 4, crop // 4, 4).mean(axis=(1, 3))
        lo, hi = np.percentile(binned, [0.5, 99.5])
        im = ax.imshow(binned, cmap="gray", vmin=lo, vmax=hi,
                       extent=(0, crop * SAMPLING_A / 10, crop * SAMPLING_A / 10, 0))
        ax.set_title(f"{label} (4×4 binned)")
        ax.set_xlabel("x [nm]")
        if i == 0:
            ax.set_ylabel("y [nm]")
        fig.colorbar(im, ax=ax, shrink=0.8, label="counts / px")
    ax = fig.add_subplot(2, 2, 3)
    for label, (f, pn, _) in profiles.items():
        ax.semilogy(f, pn, label=label, lw=1.2)
    ax.axvspan(*NORM_BAND, color="0.9", zorder=0)
    ax.set_xlabel("spatial frequency [cycles/px]")
    ax.set_ylabel("radial power (norm. 0.20-0.30)")
    ax.set_title("radially averaged power spectra")
    ax.legend()
    ax = fig.add_subplot(2, 2, 4)
    for label, (f, _, p) in profiles.items():
        ax.plot(f, detrended(f, p), label=label, lw=1.0)
    for z in zeros_px:
        if z < 0.3:
            ax.axvline(z, color="k", ls=":", lw=0.8)
    zeros_fit = ctf_zeros_per_a(12, defocus_a=fitted, cs_a=microscope.cs_a, energy_ev=ENERGY_EV)
    for z in zeros_fit.numpy() * SAMPLING_A:
        if z < 0.3:
            ax.axvline(z, color="tab:blue", ls="--", lw=0.6)
    ax.set_xlim(0.02, 0.3)
    ax.set_xlabel("spatial frequency [cycles/px]")
    ax.set_ylabel("log power − running mean")
    ax.set_title(f"Thon rings; dotted: CTF zeros at {DEFOCUS_A / UM_TO_A:.2f} µm "
                 f"(real best match {fitted / UM_TO_A:.3f} µm, dashed)")
    ax.legend(fontsize=8)
    path = OUT / "real_vs_sim.png"
    fig.savefig(path, dpi=90)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
