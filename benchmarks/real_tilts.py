"""Denoising a real tilt series with its neighbouring tilts (used by ``denoise.py --real``).

Data: the NIST STEM-HAADF tilt series (``HAADF.mrc``, int16, add 32768; −76°..76° in 2°
steps, tilt axis along y, 3.36 nm/px) from the project's shared data, or the 9-tilt crop
the copy ``data/HAADF.mrc.gz`` shipped with the repository. For tilts near 0°, each tilt
``i`` is denoised from itself and its same-parity neighbours ``i ± 2`` (aligned by
:func:`tem_core.denoise.neighbour_references`, rotation and shift), so that even and odd
tilts keep independent noise; then the FRC between the denoised even tilt ``i`` and the
denoised odd tilt ``i + 1`` (registered onto it) is compared with the FRC of the raw pair.
Methods: Algorithm 2 of the diff-tem paper (the published surrogate method with the aligned
references; no MTF, gain 1), Algorithm 2 with the pretrained Topaz U-Net's output of each
aligned reference added to the references (the paper's option; only when the comparison
venv is given), and, on the mean of the aligned references with the noise level estimated
from the data (Immerkær 1996), the NLM method and the local Wiener filter
(:func:`tem_core.denoise.local_wiener`) for Gaussian noise: the HAADF detector's gain and
MTF are unknown, so the Poisson/MTF model of ``denoise_poisson`` does not apply.

    .venv/bin/python benchmarks/real_tilts.py [--quick]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tem_core.denoise import (
    SurrogateSettings,
    denoise_surrogate,
    estimate_noise_std,
    local_wiener,
    neighbour_references,
    nlm_denoise,
    register,
    warp,
)
from tem_core.denoise.learned import load_denoiser, network_denoise
from tem_core.denoise.metrics import fourier_ring_correlation
from tem_core.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (
    ROOT / "data" / "HAADF.mrc.gz",
    ROOT.parent / "shared" / "data" / "tilt_series" / "HAADF.mrc",
    Path("/work/shared/data/tilt_series/HAADF.mrc"),
)
#: a 128² window on the needle's tip in the full 256² frames (rows, columns)
WINDOW = (slice(72, 200), slice(96, 224))


def load_haadf() -> tuple[torch.Tensor, np.ndarray]:
    """The stack (float64, vacuum ≈ 880) and its tilt angles [deg], from the first file found."""
    import mrcfile

    for path in CANDIDATES:
        if path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with mrcfile.open(path, permissive=True) as mrc:
                    data = np.asarray(mrc.data, dtype=np.float64)
            angles = np.loadtxt(path.parent / "HAADF.rawtlt")
            data = data[:, WINDOW[0], WINDOW[1]] + 32768.0  # int16 storage of counts
            return torch.from_numpy(data), angles
    raise FileNotFoundError(f"no HAADF tilt series found in {[str(p) for p in CANDIDATES]}")


def denoise_nlm_neighbours(refs: torch.Tensor) -> torch.Tensor:
    """NLM (Gaussian noise, level from the data) of the mean of the aligned references."""
    sigma = estimate_noise_std(refs).mean() / refs.shape[0] ** 0.5
    return nlm_denoise(refs.mean(0), sigma=float(sigma))


def denoise_wiener_neighbours(refs: torch.Tensor) -> torch.Tensor:
    """Local Wiener filter (Gaussian noise, level from the data) of the mean of the refs."""
    sigma = estimate_noise_std(refs).mean() / refs.shape[0] ** 0.5
    return local_wiener(refs.mean(0), noise_var=float(sigma) ** 2)


def denoise_network_neighbours(refs: torch.Tensor) -> torch.Tensor:
    """The simulator-trained network (``denoise_poisson``'s ``"network"`` prior) on the mean
    of the aligned references, the data mapped onto its Poisson input: with the noise level
    ``σ`` estimated from the data and the mean level ``μ``, the mean image is scaled to
    ``(μ/σ)²`` equivalent counts, which have the same relative noise (the detector's gain
    and MTF are unknown, and its pixels are 3.36 nm, not the 5 Å it was trained on)."""
    sigma = float(estimate_noise_std(refs).mean()) / refs.shape[0] ** 0.5
    mean = refs.mean(0)
    level = float(mean.mean())
    counts = (level / sigma) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # outside its pixel size: known
        out = network_denoise(mean / level * counts, model=_network())
    return out / counts * level


#: network weights (None: those shipped with the package); denoise.py --weights sets it
WEIGHTS: str | None = None


@lru_cache(maxsize=1)
def _network():
    return load_denoiser(WEIGHTS, dtype=torch.float64)


def denoise_algorithm2(refs: torch.Tensor, iterations: int, seed: int) -> torch.Tensor:
    res = denoise_surrogate(
        refs.float(),
        detector=Detector(mtf_enabled=False),
        generator=torch.Generator().manual_seed(seed),
        settings=SurrogateSettings(n_iterations=iterations),
    )
    return res.denoised.double()


METHODS = {
    "mean": lambda refs, it, j: refs.mean(0),
    "algorithm2": lambda refs, it, j: denoise_algorithm2(refs, it, seed=j),
    "nlm": lambda refs, it, j: denoise_nlm_neighbours(refs),
    "wiener": lambda refs, it, j: denoise_wiener_neighbours(refs),
    "network": lambda refs, it, j: denoise_network_neighbours(refs),
}


def real_tilt_series(
    quick: bool = False,
    iterations: int | None = None,
    topaz: Callable | None = None,
    only: Sequence[str] | None = None,
) -> dict:
    """``topaz``: maps a dict of images to a dict of their Topaz outputs ({} if unavailable);
    ``only``: compute just these methods of :data:`METHODS` (and the raw pair)."""
    methods = {k: f for k, f in METHODS.items() if only is None or k in only}
    stack, angles = load_haadf()
    iterations = iterations or (30 if quick else SurrogateSettings().n_iterations)
    centre = int(np.argmin(np.abs(angles)))
    evens = [i for i in range(centre - 4, centre + 4) if i % 2 == centre % 2]
    evens = [i for i in evens if i - 2 >= 0 and i + 3 < len(stack)][: (1 if quick else 4)]
    t0 = time.perf_counter()
    refs_of = {j: neighbour_references(stack, j, step=2) for i in evens for j in (i, i + 1)}
    pretrained = {}
    if topaz is not None and only is None:
        images = {f"{j}_{k}": r for j, refs in refs_of.items() for k, r in enumerate(refs)}
        outs = topaz(images)
        if outs:
            pretrained = {
                j: torch.stack([outs[f"{j}_{k}"] for k in range(len(refs))])
                for j, refs in refs_of.items()
            }
    curves = {"raw": [], **{k: [] for k in methods}}
    if pretrained:
        curves["algorithm2_topaz"] = []
    gallery = {}
    for i in evens:
        out = {}
        for j in (i, i + 1):
            refs = refs_of[j]
            out[j] = {"raw": stack[j], **{k: f(refs, iterations, j) for k, f in methods.items()}}
            if pretrained:
                both = torch.cat([refs, pretrained[j].to(refs.dtype)])
                out[j]["algorithm2_topaz"] = denoise_algorithm2(both, iterations, seed=j)
        angle, shift = register(stack[i + 1], stack[i])
        for name in curves:
            moved = warp(out[i + 1][name], angle_rad=angle, shift_px=shift)
            f, c = fourier_ring_correlation(out[i][name], moved, n_rings=32)
            curves[name].append(c)
        if not gallery:
            gallery = {k: v.numpy() for k, v in out[i].items()}
            gallery["angle_deg"] = float(angles[i])
    freq = f.numpy()
    result = {
        "frequency": freq.tolist(),
        "tilts": [int(i) for i in evens],
        "angles_deg": [float(angles[i]) for i in evens],
        "iterations": iterations,
        "seconds": time.perf_counter() - t0,
    }
    print(
        f"\nreal HAADF tilt series: FRC between denoised even and odd tilts "
        f"(pairs at {', '.join(f'{angles[i]:.0f}°' for i in evens)})"
    )
    print(f"{'method':<16} " + " ".join(f"{x:>6.2f}" for x in freq[::4]) + "  [cycles/px]")
    for name, cs in curves.items():
        mean = torch.stack(cs).mean(0).numpy()
        result[name] = mean.tolist()
        print(f"{name:<16} " + " ".join(f"{x:>6.3f}" for x in mean[::4]))
    result["_gallery_arrays"] = gallery
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    real_tilt_series(quick=args.quick)
