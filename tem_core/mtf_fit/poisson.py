"""The NPS scale from the skewness of whitened Poisson noise.

Why the noise spectrum alone cannot pin the gain: ``NPS(ω) = s · T²(ω)`` with ``T(0) = 1``
is known only at the crops' frequency bins (``ω ≥ 1/M``); ``s`` is ``NPS`` extrapolated
to ``ω = 0``. Any second-order statistic keeps the degeneracy ``T → c·T``,
``s → s/c²`` (``gain → gain/c²``, electrons ``N → N·c²``) once ``T`` may change below the
lowest bins, and the camera tables do change there: the Falcon 2 MTF falls 3% by
0.0125 cycles/px, the K2 300 kV one 1.5% below 0.002. With 16 crops of 256² a model
free enough to follow them determines ``s`` only to 6-10% (Cramér-Rao), and models
stiff enough to do better extrapolate 4-15% low on these tables.

The third cumulant breaks the degeneracy. In TEM-simulator's detector model (Poisson
electrons, a fixed gain per electron, then the MTF blur) the crops are
``x = gain · (psf ⊛ k)`` with ``k ~ Poisson(N)``. Filtering them with the inverse of the
fitted noise transfer (``1/sqrt(NPS)``, whose shape is well determined everywhere but
at the lowest bins) gives ``(k − N)/sqrt(N)`` up to a scale, whose skewness is
``1/sqrt(N)`` whatever the gain and the MTF. So ``N = 1/skew²``, ``gain = mean / N`` and
``s = gain · mean``, with relative standard error about ``2·sqrt(6/n)/skew`` over ``n``
whitened pixels (3% for 16 crops of 256² at 40 e/px; it grows as ``sqrt(N)``).

The assumption is Poisson shot noise with a fixed gain per electron. Real integrating
cameras have a random charge per electron (raising the skewness), and summed,
motion-corrected counting frames are not Poisson counts either: on the real K2
micrograph in ``data/`` the skewness implies 140 counts/e where the dose says 101.
:func:`fit_mtf_whittle` therefore uses it only when it agrees with the spectrum's own
scale within their errors, and warns otherwise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from tem_core._fft import fft2, ifft2
from tem_core.detector import radial_frequency_cycles_per_px
from tem_core.mtf_fit.crops import detrend_crops
from tem_core.mtf_fit.likelihood import WhittleProblem, fisher_covariance

#: Fraction of the whitening filter's energy allowed outside the discarded border.
KERNEL_ENERGY_OUTSIDE = 1e-3

#: The skewness is used only when it is this many standard errors above 0.
MIN_SKEWNESS_Z = 5.0

#: The skewness is used only when the excess kurtosis is within this many standard errors
#: of the Poisson value skewness².
MAX_KURTOSIS_Z = 4.0

#: The skewness scale is combined with the spectrum's only within this many combined
#: standard errors of it.
POISSON_AGREEMENT_Z = 3.0

#: Smallest edge of the whitened crops' interior [pixel].
MIN_INTERIOR_PX = 16


@dataclass(frozen=True, kw_only=True)
class PoissonScale:
    """Electrons per pixel and gain from the skewness of the whitened noise.

    Attributes
    ----------
    skewness
        Skewness of the whitened crops' interior pixels (``1/sqrt(N)`` for Poisson).
    skewness_se
        Its standard error (delta method over the pixels; ``sqrt(6/n)`` for Gaussian
        noise).
    electrons_per_px
        ``N = 1/skewness²`` [e/pixel].
    gain_counts_per_e
        ``mean / N`` [counts/e].
    scale
        The implied NPS scale ``s = gain · mean`` [counts² per bin].
    relative_se
        Relative standard error of ``gain`` and ``s`` (``2 · skewness_se / skewness``).
    n_pixels
        Whitened pixels used (interior of every crop).
    border_px
        Pixels discarded at each crop edge (wrap-around of the whitening filter).
    excess_kurtosis, kurtosis_se
        Excess kurtosis of the whitened pixels (``1/N`` for Poisson) and ``sqrt(24/n)``.
    """

    skewness: float
    skewness_se: float
    electrons_per_px: float
    gain_counts_per_e: float
    scale: float
    relative_se: float
    n_pixels: int
    border_px: int
    excess_kurtosis: float
    kurtosis_se: float

    @property
    def problem(self) -> str:
        """Why the skewness cannot measure the scale ("" when it can).

        Poisson noise has excess kurtosis ``1/N = skewness²``; heavier tails (specimen
        structure, hot pixels, a random charge per electron) break the relation and the
        skewness then says nothing about ``N``. Noise whose skewness is not
        :data:`MIN_SKEWNESS_Z` standard errors above 0 (Gaussian noise, a very high
        dose) carries no such information.
        """
        if not self.skewness > MIN_SKEWNESS_Z * self.skewness_se:
            return (
                f"the whitened noise is not skewed (skewness {self.skewness:.4f} ± "
                f"{self.skewness_se:.4f}): no Poisson information"
            )
        spread = math.hypot(self.kurtosis_se, 2.0 * self.skewness * self.skewness_se)
        z = abs(self.excess_kurtosis - self.skewness**2) / spread
        if z > MAX_KURTOSIS_Z:
            return (
                f"the whitened noise is not Poisson-like: excess kurtosis "
                f"{self.excess_kurtosis:.4f}, where Poisson noise has skewness² = "
                f"{self.skewness**2:.4f} ({z:.0f} standard errors apart)"
            )
        return ""

    def describe(self) -> str:
        return (
            f"skewness of the whitened noise {self.skewness:.4f} ± {self.skewness_se:.4f}: "
            f"N = {self.electrons_per_px:.1f} e/px, gain {self.gain_counts_per_e:.4g} "
            f"counts/e ± {self.relative_se:.1%}"
        )


def whitening_border(filter_fft: torch.Tensor) -> int:
    """Smallest border ``r`` [px] with < :data:`KERNEL_ENERGY_OUTSIDE` of the filter's
    kernel energy at lags beyond ``r`` (Chebyshev distance), for an ``(M, N)`` filter."""
    kernel = ifft2(filter_fft).real
    m, n = kernel.shape
    ly = torch.fft.fftfreq(m, d=1.0 / m, dtype=torch.float64).abs()
    lx = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64).abs()
    lag = torch.maximum(ly[:, None], lx[None, :]).long()
    energy = torch.zeros(int(lag.max()) + 1, dtype=torch.float64)
    energy.index_add_(0, lag.flatten(), (kernel**2).flatten())
    outside = energy.sum() - torch.cumsum(energy, 0)
    ok = torch.nonzero(outside <= KERNEL_ENERGY_OUTSIDE * energy.sum())
    return int(ok[0]) if ok.numel() else int(lag.max())


def ring_smoothed(periodogram: torch.Tensor) -> torch.Tensor:
    """``(M, N)`` periodogram (FFT order) averaged over rings one frequency bin wide."""
    m, n = periodogram.shape
    radius = radial_frequency_cycles_per_px((m, n), dtype=torch.float64)
    ring = torch.round(radius * max(m, n)).long().flatten()
    sums = torch.zeros(int(ring.max()) + 1, dtype=torch.float64)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, ring, periodogram.double().flatten())
    counts.index_add_(0, ring, torch.ones_like(radius).flatten())
    return (sums / counts.clamp_min(1))[ring].reshape(m, n)


def poisson_scale(
    crops: torch.Tensor,
    spectrum: torch.Tensor,
    *,
    detrend: str = "mean",
) -> PoissonScale | None:
    """NPS scale from the skewness of the crops whitened by their noise spectrum.

    Parameters
    ----------
    crops
        ``(B, M, N)`` background crops [counts] (raw: their mean is used).
    spectrum
        ``(M, N)`` NPS in FFT order, e.g. :func:`ring_smoothed` of the averaged
        periodogram; only its shape matters. Measured rather than a fitted model: any
        error of the whitening lowers the skewness (``Σc³ ≤ (Σc²)^{3/2}``), and the
        models are not fitted beyond Nyquist (the grid's corners, 21% of the bins),
        where a shaped-model whitening put the gain 6-19% low.
    detrend
        ``"mean"`` or ``"plane"``, removed before whitening.

    Returns
    -------
    PoissonScale or None
        ``None`` when the skewness is not positive or the crops are too small for the
        filter; check :attr:`PoissonScale.problem` before using it.
    """
    x = crops.double().cpu()
    mean = float(x.mean())
    if not mean > 0:
        return None
    b, m, n = x.shape
    power = spectrum.detach().double().cpu().clone()
    power[0, 0] = power.mean()  # ω = 0: the mean was removed, its "power" is meaningless
    if not bool(torch.isfinite(power).all() and (power > 0).all()):
        return None
    filt = power.mean().sqrt() / power.sqrt()
    filt[0, 0] = 0.0
    border = whitening_border(filt)
    if min(m, n) - 2 * border < MIN_INTERIOR_PX:
        return None
    y = ifft2(fft2(detrend_crops(x, detrend=detrend)) * filt).real
    y = y[:, border : m - border, border : n - border]
    y = y - y.mean()
    m2 = float((y**2).mean())
    m3 = float((y**3).mean())
    skew = m3 / m2**1.5
    n_px = y.numel()
    # delta method (sandwich) for independent pixels (6/n for Gaussian noise); 40 simulated
    # Falcon 2 repeats (16 × 256², 40 e/px): gain s.d. 3.6 ± 0.4%, this predicts 3.2%
    influence = (y**3 - m3 - 3.0 * m2 * y) / m2**1.5 - 1.5 * skew * (y**2 - m2) / m2
    se = math.sqrt(float((influence**2).mean()) / n_px)
    kurtosis = float((y**4).mean()) / m2**2 - 3.0
    if not skew > 0:
        return None
    electrons = 1.0 / skew**2
    gain = mean / electrons
    return PoissonScale(
        skewness=skew,
        skewness_se=se,
        electrons_per_px=electrons,
        gain_counts_per_e=gain,
        scale=gain * mean,
        relative_se=2.0 * se / skew,
        n_pixels=n_px,
        border_px=border,
        excess_kurtosis=kurtosis,
        kurtosis_se=math.sqrt(24.0 / n_px),
    )


def agreeing_poisson_scale(
    x: torch.Tensor,
    periodogram: torch.Tensor,
    problems: dict[str, WhittleProblem],
    state: dict[str, tuple[torch.Tensor, list[float]]],
    shape_model: str,
    allowed: list[str],
    inflation: float,
    detrend: str,
) -> tuple[PoissonScale | None, str]:
    """The skewness measurement of ``s`` when it agrees with the spectrum's, and a note.

    Compared with the scale of the spline (else of ``shape_model``), whose standard
    error is honest about the low-frequency freedom; more than
    :data:`POISSON_AGREEMENT_Z` combined standard errors apart: a warning and ``None``.
    """
    measured = poisson_scale(x, ring_smoothed(periodogram), detrend=detrend)
    if measured is None:
        return None, "; no Poisson skewness measurable (Gaussian-like noise)"
    if measured.problem:
        return None, f"; Poisson skewness not used: {measured.problem}"
    spread = []
    for name in ("spline", shape_model):  # the spline's error is the honest one
        if name not in allowed:
            continue
        p = {k: v.detach() for k, v in problems[name].natural(state[name][0]).items()}
        cov, names = fisher_covariance(problems[name], p, inflation)
        if cov is not None and "s" in names:
            i = names.index("s")
            spread = [float(p["s"]), math.sqrt(float(cov[i, i])) / float(p["s"]), name]
            break
    if spread:
        s_ref, se_ref, ref = spread
        z = abs(math.log(measured.scale / s_ref)) / math.hypot(se_ref, measured.relative_se)
        if z > POISSON_AGREEMENT_Z:
            warnings.warn(
                f"the noise is not Poisson with a fixed gain per electron: the "
                f"{measured.describe()}, but the spectrum's scale (model {ref!r}) implies "
                f"{s_ref / float(x.double().mean()):.4g} counts/e ± {se_ref:.1%} "
                f"({z:.1f} standard errors apart); the skewness is not used (a random "
                "charge per electron, summed or interpolated frames, specimen structure)",
                UserWarning,
                stacklevel=3,
            )
            return None, f"; Poisson skewness not used ({z:.1f} s.e. from the spectrum's scale)"
    return measured, f"; NPS scale combined with the Poisson {measured.describe()}"
