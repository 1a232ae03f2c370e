"""Detector MTF from the signal: the slanted knife-edge method.

A straight, sharp edge in the beam (a knife edge or beam stop shadow; a thick support-film
edge imaged in focus) is recorded slightly tilted against the pixel rows. Every pixel
samples the edge spread function (ESF) at its own distance from the edge, so binning the
pixels by distance gives an oversampled ESF; its derivative, the line spread function
(LSF), Fourier-transforms to the MTF (ISO 12233; McMullan et al. 2014, Ultramicroscopy
147:156, measured the camera MTFs shipped in ``tem_core/data`` this way). It works where
the noise spectrum cannot show the MTF: counting cameras have white noise, but their
signal is blurred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tem_core.mtf_fit.crops import as_crops, require_noise
from tem_core.mtf_fit.synthetic import MTFSpec, mtf_from_spec
from tem_core.validation import require_in_range, require_positive, require_positive_int

_FINE_PER_PX = 32  # samples per pixel of the simulated ESF
_FINE_HALF_PX = 256  # half length of the simulated ESF grid [pixel]

#: Smallest edge contrast, in standard deviations of its noise, accepted as an edge.
EDGE_MIN_SNR = 5.0


def _extended_mtf(mtf: MTFSpec, frequency: torch.Tensor) -> torch.Tensor:
    """The MTF up to Nyquist, then ``MTF(0.5) · |sinc ω| / sinc 0.5`` (pixel aperture) to 1."""
    inside = mtf_from_spec(mtf, frequency.clamp(max=0.5))
    sinc = torch.special.sinc(frequency) / torch.special.sinc(
        torch.tensor(0.5, dtype=torch.float64)
    )
    beyond = torch.where(frequency < 1.0, inside * sinc.abs(), torch.zeros_like(inside))
    return torch.where(frequency <= 0.5, inside, beyond)


def edge_spread_function(mtf: MTFSpec) -> tuple[np.ndarray, np.ndarray]:
    """ESF of a unit step blurred by a radial MTF [distance in pixels, value 0 → 1].

    The LSF is the 1-D inverse Fourier transform of the MTF (a central section of the 2-D
    transfer function), computed on a grid of 1/32 px; beyond Nyquist the MTF continues as
    the pixel aperture's sinc up to 1 cycle/px (tabulated MTFs stop at Nyquist).
    """
    n = 2 * _FINE_HALF_PX * _FINE_PER_PX
    freq = torch.fft.fftfreq(n, d=1.0 / _FINE_PER_PX, dtype=torch.float64).abs()
    lsf = torch.fft.ifft(_extended_mtf(mtf, freq)).real * _FINE_PER_PX  # unit area
    lsf = torch.fft.fftshift(lsf).numpy()
    x = (np.arange(n) - n // 2) / _FINE_PER_PX
    esf = np.cumsum(lsf) / _FINE_PER_PX
    esf = esf - esf[n // 2] + 0.5  # symmetric LSF: ESF(0) = 1/2
    return x, esf


def knife_edge_image(
    shape: tuple[int, int],
    *,
    mtf: MTFSpec,
    angle_deg: float,
    mean_electrons_per_px: float,
    generator: torch.Generator,
    dark_fraction: float = 0.0,
    gain_counts_per_e: float = 1.0,
    offset_px: float = 0.0,
) -> torch.Tensor:
    """A counting camera's image of a straight edge: the MTF blurs the signal, noise is white.

    The bright side (``cos θ · (x − x_c) − sin θ · (y − y_c) > offset_px``) receives
    ``mean_electrons_per_px``, the dark side ``dark_fraction`` of it; the step is blurred
    by ``mtf`` (:func:`edge_spread_function`), then every pixel draws Poisson counts,
    times the gain. In TEM-simulator's integrating model the mean image is the same.

    Parameters
    ----------
    shape
        ``(M, N)`` [pixel].
    mtf
        The true MTF: parameters, a camera name or a callable (see
        :func:`tem_core.mtf_fit.synthetic_background_crops`).
    angle_deg
        Tilt of the edge from the pixel columns [degree] (2-10° is usual).
    mean_electrons_per_px
        Electrons per pixel on the bright side [e/pixel].
    generator
        Random generator (CPU).
    dark_fraction
        Transmission of the dark side (0: knife edge; a support film transmits most).
    gain_counts_per_e
        Counts per electron [counts/e].
    offset_px
        Distance of the edge from the image centre [pixel].
    """
    require_positive_int("shape", shape[0])
    require_positive_int("shape", shape[1])
    require_positive("mean_electrons_per_px", mean_electrons_per_px, "e/px")
    require_in_range("dark_fraction", dark_fraction, 0.0, 1.0)
    theta = math.radians(angle_deg)
    m, n = shape
    yy, xx = np.meshgrid(np.arange(m) - (m - 1) / 2, np.arange(n) - (n - 1) / 2, indexing="ij")
    distance = math.cos(theta) * xx - math.sin(theta) * yy - offset_px
    x, esf = edge_spread_function(mtf)
    signal = dark_fraction + (1.0 - dark_fraction) * np.interp(distance, x, esf)
    expected = torch.from_numpy(signal * mean_electrons_per_px).clamp_min(0.0)  # ringing
    counts = torch.poisson(expected, generator=generator)
    return gain_counts_per_e * counts


@dataclass(frozen=True, kw_only=True, eq=False)
class EdgeMTF:
    """Result of :func:`fit_mtf_edge`.

    Attributes
    ----------
    frequency_cycles_per_px
        Frequencies of the estimate, 0 to ``max_frequency`` [cycles/pixel].
    values
        The MTF there (``MTF(0) = 1``).
    standard_error
        Jackknife standard error over blocks of rows.
    angle_deg
        Fitted tilt of the edge from the pixel columns (or rows) [degree].
    esf_distance_px, esf
        The binned edge spread function [pixel], [counts].
    contrast_counts
        Bright minus dark level [counts].
    """

    frequency_cycles_per_px: torch.Tensor
    values: torch.Tensor
    standard_error: torch.Tensor
    angle_deg: float
    esf_distance_px: torch.Tensor
    esf: torch.Tensor
    contrast_counts: float

    def mtf(self, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
        """The MTF at the given frequencies, by linear interpolation [dimensionless]."""
        f = frequency_cycles_per_px.detach().double().abs().cpu().numpy()
        out = np.interp(f, self.frequency_cycles_per_px.numpy(), self.values.numpy())
        return torch.from_numpy(out).to(frequency_cycles_per_px.dtype)


def _edge_line(image: np.ndarray) -> tuple[float, float]:
    """Fit ``x = x0 + slope · y`` to the edge positions of blocks of rows.

    Rows are averaged in blocks (noise), the block profile smoothed (Gaussian, σ = 2 px)
    and differentiated; the edge is the centroid of the derivative within ±6 px of its
    peak. A straight line is fitted to the block positions, outliers (beyond 3 robust
    standard deviations) removed, and the line refitted.
    """
    m, n = image.shape
    block = max(4, m // 32)
    sign = 1.0 if image[:, -n // 8 :].mean() >= image[:, : n // 8].mean() else -1.0
    x = np.arange(-8, 9)
    kernel = np.exp(-0.5 * (x / 2.0) ** 2)
    kernel /= kernel.sum()
    cols = np.arange(n - 1) + 0.5
    rows, centres = [], []
    for start in range(0, m - block + 1, block):
        profile = image[start : start + block].mean(axis=0)
        smooth = np.convolve(np.pad(profile, 8, mode="edge"), kernel, mode="same")[8:-8]
        d = sign * np.diff(smooth)
        d[:8] = d[-8:] = 0.0  # padding edges
        peak = int(np.argmax(d))
        window = (np.abs(cols - cols[peak]) <= 6.0) & (d > 0)
        centres.append(np.sum(d[window] * cols[window]) / max(np.sum(d[window]), 1e-300))
        rows.append(start + (block - 1) / 2)
    rows_a, centres_a = np.array(rows), np.array(centres)
    slope, x0 = np.polyfit(rows_a, centres_a, 1)
    residual = centres_a - (x0 + slope * rows_a)
    mad = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    keep = np.abs(residual) <= max(3.0 * mad, 1e-9)
    if keep.sum() >= 3:
        slope, x0 = np.polyfit(rows_a[keep], centres_a[keep], 1)
    return float(x0), float(slope)


def _mtf_from_rows(
    image: np.ndarray, rows: np.ndarray, x0: float, slope: float, bin_px: float, half_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Oversampled ESF of the given rows, and the MTF from it."""
    n = image.shape[1]
    cos = 1.0 / math.sqrt(1.0 + slope**2)
    yy, xx = np.meshgrid(rows, np.arange(n), indexing="ij")
    distance = ((xx - (x0 + slope * yy)) * cos).ravel()
    values = image[rows].ravel()
    n_bins = int(round(2 * half_px / bin_px))
    edges = -half_px + bin_px * np.arange(n_bins + 1)
    index = np.floor((distance + half_px) / bin_px).astype(np.int64)
    keep = (index >= 0) & (index < n_bins)
    sums = np.bincount(index[keep], weights=values[keep], minlength=n_bins)
    counts = np.bincount(index[keep], minlength=n_bins)
    if np.any(counts == 0):
        filled = counts > 0
        centres = 0.5 * (edges[1:] + edges[:-1])
        esf = np.interp(centres, centres[filled], sums[filled] / counts[filled])
    else:
        esf = sums / counts
    centres = 0.5 * (edges[1:] + edges[:-1])
    lsf = np.gradient(esf, bin_px)
    lsf = lsf * np.hanning(n_bins)  # ISO 12233: window the LSF against noise in its tails
    spectrum = np.abs(np.fft.rfft(lsf))
    freq = np.fft.rfftfreq(n_bins, d=bin_px)
    # central difference and bin averaging filter the ESF: divide their transfer out
    correction = np.sinc(2.0 * freq * bin_px) * np.sinc(freq * bin_px)
    mtf = spectrum / spectrum[0] / np.where(np.abs(correction) > 0.2, correction, 1.0)
    return freq, mtf, centres, esf


def fit_mtf_edge(
    image: Any,
    *,
    bin_px: float = 0.25,
    half_width_px: float | None = None,
    max_frequency_cycles_per_px: float = 0.5,
    n_blocks: int = 8,
) -> EdgeMTF:
    """MTF from an image of a straight, sharp edge (slanted-edge method, ISO 12233).

    The edge is located per row (centroid of the derivative, two refined passes) and a
    straight line fitted; edges closer to horizontal are handled by transposing. Pixels
    are binned by their distance from the line in ``bin_px`` bins (oversampled ESF), the
    ESF differentiated (central differences), the LSF Hann-windowed and Fourier
    transformed; the transfer of the binning and of the difference is divided out and
    ``MTF(0) = 1``. Standard errors: jackknife over ``n_blocks`` blocks of rows.

    The edge must be tilted by about 2-20° from the pixel rows or columns (so the pixels
    sample the ESF at many sub-pixel offsets), straight, and sharp compared with a pixel;
    the two sides flat. In a defocused phase-contrast image the edge shows Fresnel
    fringes: the result is then the MTF times the contrast transfer, not the MTF alone.
    The normalisation ``MTF(0) = 1`` covers the LSF's extent (``half_width_px``): blur
    on longer scales (the K2's slow 2% drop below 0.005 cycles/px) is not seen.

    Parameters
    ----------
    image
        ``(M, N)`` image holding one edge [counts].
    bin_px
        Bin width of the oversampled ESF [pixel].
    half_width_px
        Half width of the ESF window around the edge [pixel]; default a quarter of the
        image's extent across the edge, at most 64.
    max_frequency_cycles_per_px
        Highest frequency returned [cycles/pixel].
    n_blocks
        Row blocks for the jackknife standard error (≥ 2).

    Returns
    -------
    EdgeMTF
    """
    x = as_crops(image, name="image")
    if x.shape[0] != 1:
        raise ValueError(f"image must have shape (M, N), got {tuple(x.shape)}")
    require_noise(x, name="image")
    require_in_range("bin_px", bin_px, 0.05, 0.5)
    require_positive("max_frequency_cycles_per_px", max_frequency_cycles_per_px, "cycles/px")
    require_positive_int("n_blocks", n_blocks)
    if n_blocks < 2:
        raise ValueError(f"n_blocks must be >= 2, got {n_blocks}")
    img = x[0].double().cpu().numpy()
    gy, gx = np.gradient(img)
    transposed = bool(np.abs(np.sum(gy)) > np.abs(np.sum(gx)))
    if transposed:
        img = img.T
    m, n = img.shape
    x0, slope = _edge_line(img)
    angle = math.degrees(math.atan(slope))
    shift = abs(slope) * (m - 1)
    if shift < 2.0:
        raise ValueError(
            f"the edge is tilted by {angle:.2f}° only: across {m} rows it moves {shift:.1f} px, "
            "too few sub-pixel offsets to oversample the ESF (tilt it by 2-20° or use more rows)"
        )
    if abs(angle) > 25.0:
        raise ValueError(
            f"the edge is tilted by {angle:.1f}° from the pixel columns; the method needs 2-20°"
        )
    half = min(64.0, n / 4) if half_width_px is None else float(half_width_px)
    require_positive("half_width_px", half, "px")
    freq, mtf, centres, esf = _mtf_from_rows(img, np.arange(m), x0, slope, bin_px, half)
    jack = np.array(
        [
            _mtf_from_rows(img, np.setdiff1d(np.arange(m), block), x0, slope, bin_px, half)[1]
            for block in np.array_split(np.arange(m), n_blocks)
        ]
    )
    se = np.sqrt((n_blocks - 1) / n_blocks * ((jack - jack.mean(axis=0)) ** 2).sum(axis=0))
    keep = freq <= max_frequency_cycles_per_px + 1e-12
    dark, bright = np.median(esf[: len(esf) // 8]), np.median(esf[-len(esf) // 8 :])
    # noise of that contrast: pixel noise from row differences (robust, the edge barely
    # moves between rows), averaged over the pixels of each plateau (an eighth of the window)
    sigma_px = 1.4826 * float(np.median(np.abs(np.diff(img, axis=0)))) / math.sqrt(2.0)
    sigma_contrast = 1.25 * sigma_px * math.sqrt(2.0 / max(1.0, m * 2.0 * half / 8.0))
    if abs(bright - dark) < EDGE_MIN_SNR * sigma_contrast:
        raise ValueError(
            f"image holds no edge: the edge-spread contrast is {abs(bright - dark):.3g} counts, "
            f"within {EDGE_MIN_SNR:g} x its noise ({sigma_contrast:.3g} counts, pixel noise "
            f"{sigma_px:.3g} counts); the method needs a straight, sharp edge tilted by 2-20°"
        )
    return EdgeMTF(
        frequency_cycles_per_px=torch.from_numpy(freq[keep].copy()),
        values=torch.from_numpy(mtf[keep].copy()),
        standard_error=torch.from_numpy(se[keep].copy()),
        angle_deg=angle,
        esf_distance_px=torch.from_numpy(centres),
        esf=torch.from_numpy(esf),
        contrast_counts=float(abs(bright - dark)),
    )
