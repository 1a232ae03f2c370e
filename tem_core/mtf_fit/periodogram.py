"""Periodograms of background crops and their radial averages."""

from __future__ import annotations

from typing import Any

import torch

from tem_core._fft import fft2
from tem_core.detector import radial_frequency_cycles_per_px
from tem_core.mtf_fit.crops import as_crops, detrend_crops, taper_window
from tem_core.validation import refuse_half_precision


def averaged_periodogram(
    crops: Any, *, taper: str | None = "hann", detrend: str = "mean"
) -> torch.Tensor:
    """Average periodogram of background crops, an estimate of the noise power spectrum.

    ``P(ω) = |F[w · (x − trend)](ω)|² / Σ w²`` averaged over crops, with the window ``w``
    (Hann or none) and the trend (each crop's mean, or a least-squares plane). For a
    stationary background ``E[P(ω)] ≈ S(ω)``, the power per frequency bin [counts²]; the
    ω = 0 bin carries no information (the mean was removed).

    Parameters
    ----------
    crops
        ``(B, M, N)`` or ``(M, N)`` background crops [counts].
    taper
        ``"hann"`` (reduces leakage from the non-periodic crop edges) or ``None``.
    detrend
        ``"mean"`` or ``"plane"`` (for ice gradients in real micrographs).

    Returns
    -------
    Tensor
        ``(M, N)`` in FFT order, float64 [counts²].
    """
    x = as_crops(crops).double()
    window = taper_window(tuple(x.shape[-2:]), taper=taper, dtype=x.dtype).to(x.device)
    x = detrend_crops(x, detrend=detrend)
    spectrum = fft2(x * window).abs() ** 2 / (window**2).sum()
    return spectrum.mean(dim=0)


def radial_profile(
    spectrum: torch.Tensor, *, n_bins: int = 64, max_frequency_cycles_per_px: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average a 2-D spectrum (FFT order) over rings of radial frequency.

    Parameters
    ----------
    spectrum
        ``(M, N)`` real values in FFT order (e.g. :func:`averaged_periodogram`).
    n_bins
        Number of rings between 0 and ``max_frequency_cycles_per_px``.
    max_frequency_cycles_per_px
        Outer edge of the last ring [cycles/pixel].

    Returns
    -------
    (frequency_cycles_per_px, values)
        Ring centres [cycles/pixel] and mean values; rings without bins (or holding only
        ω = 0) are dropped.
    """
    if not isinstance(spectrum, torch.Tensor) or spectrum.ndim < 2:
        raise TypeError(f"spectrum must be a (M, N) tensor, got {spectrum!r:.80}")
    refuse_half_precision("spectrum", spectrum)
    radius = radial_frequency_cycles_per_px(
        tuple(spectrum.shape[-2:]), device=spectrum.device, dtype=torch.float64
    )
    edges = torch.linspace(0.0, max_frequency_cycles_per_px, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(radius.flatten(), edges.to(radius.device), right=False) - 1
    keep = (radius.flatten() > 0) & (index >= 0) & (index < n_bins)
    values = spectrum.flatten().double()[keep]
    index = index[keep]
    zeros = torch.zeros(n_bins, dtype=torch.float64, device=values.device)
    sums = zeros.clone().index_add_(0, index, values)
    counts = zeros.clone().index_add_(0, index, torch.ones_like(values))
    centres = 0.5 * (edges[1:] + edges[:-1]).to(values.device)
    filled = counts > 0
    return centres[filled], sums[filled] / counts[filled]
