"""The NPS scale from the skewness of whitened Poisson noise.

Why the noise spectrum alone cannot pin the gain: ``NPS(ω) = s · T²(ω)`` with ``T(0) = 1``
is known only at the crops' frequency bins (``ω ≥ 1/M``); ``s`` is ``NPS`` extrapolated
to ``ω = 0``. Any second-order statistic keeps the degeneracy ``T → c·T``,
``s → s/c²`` (``gain → gain/c²``, electrons ``N → N·c²``) once ``T`` may change below the
lowest bins, and the camera tables do change there: the Falcon 2 MTF falls 3% by
0.0125 cycles/px, the K2 300 kV one 1.5% below 0.002. With 16 crops of 256² a model
free enough to follow them determines ``s`` only to 6-10% (Cramér-Rao), and models
stiff enough to do better extrapolate 4-15% low on these tables.

Poisson statistics break the degeneracy. In TEM-simulator's detector model (Poisson
electrons, a fixed gain per electron, then the MTF blur) the crops are
``x = gain · (psf ⊛ k)`` with ``k ~ Poisson(N)``. Filtering them with the inverse of
their measured noise transfer (``1/sqrt(NPS)``) gives ``a·k + b`` up to a small
whitening residual, whatever the gain and the MTF. Two ways to read ``N`` off it:

* the count lattice (:mod:`tem_core.mtf_fit.lattice`, used when present): the values
  cluster on the integers ``k`` (residual 0.07-0.13 of the spacing on the camera
  tables), a Poisson–Gaussian maximum-likelihood fit gives every pixel's count and
  ``N`` to ``sqrt(N/n)`` (0.02% for 16 crops of 256² at 40 e/px);
* the third cumulant (the cross-check): the skewness is ``1/sqrt(N)``, so
  ``N = 1/skew²``, to about ``2·sqrt(6/n)/skew`` (3.2% there; 3.6% measured over 40
  repeats; it grows as ``sqrt(N)``).

Then ``gain = mean / N`` and ``s = gain · mean``.

The assumption is Poisson shot noise with a fixed gain per electron. Real integrating
cameras deposit a random charge per electron: there is no lattice, and the skewness
then implies a gain too high by ``(E q³)²/(E q²)³`` of the charge ``q`` (+27% for a
gamma-distributed charge with a 30% spread, which neither the kurtosis nor the spectrum
reliably reveals). Summed, motion-corrected counting frames are not Poisson counts
either: on the real K2 micrograph in ``data/`` the excess kurtosis is 27 times the
Poisson value. :func:`fit_mtf_whittle` therefore uses the Poisson scale only with a
count lattice that agrees with the skewness and with the spectrum's own scale; it warns
when the lattice is missing and leaves the scale to the spectrum.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from tem_core._fft import fft2, ifft2
from tem_core.detector import radial_frequency_cycles_per_px
from tem_core.mtf_fit.crops import detrend_crops
from tem_core.mtf_fit.lattice import CountLattice, fit_count_lattice
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

#: The lattice's ``N`` must agree with the skewness's within this many of the skewness's
#: standard errors (a wrong harmonic of the lattice would be a factor of 4 off).
MAX_LATTICE_SKEWNESS_Z = 4.0

#: Smallest edge of the whitened crops' interior [pixel].
MIN_INTERIOR_PX = 16


@dataclass(frozen=True, kw_only=True)
class PoissonScale:
    """Electrons per pixel and gain from the whitened noise: its count lattice or skewness.

    Attributes
    ----------
    skewness
        Skewness of the whitened crops' interior pixels (``1/sqrt(N)`` for Poisson).
    skewness_se
        Its standard error (delta method over the pixels; ``sqrt(6/n)`` for Gaussian
        noise).
    electrons_per_px
        ``N`` [e/pixel]: from the count lattice when there is one (:attr:`lattice`), else
        ``1/skewness²``.
    gain_counts_per_e
        ``mean / N`` [counts/e].
    scale
        The implied NPS scale ``s = gain · mean`` [counts² per bin].
    relative_se
        Relative standard error of ``gain`` and ``s``: the lattice's Cramér-Rao error of
        ``N``, else ``2 · skewness_se / skewness``.
    n_pixels
        Whitened pixels used (interior of every crop).
    border_px
        Pixels discarded at each crop edge (wrap-around of the whitening filter).
    excess_kurtosis, kurtosis_se
        Excess kurtosis of the whitened pixels (``1/N`` for Poisson) and ``sqrt(24/n)``.
    skewness_electrons_per_px
        ``1/skewness²`` [e/pixel] (the cross-check of the lattice's ``N``).
    lattice
        The Poisson–Gaussian fit of the whitened values
        (:func:`tem_core.mtf_fit.lattice.fit_count_lattice`), ``None`` without a lattice.
    lattice_checked
        Whether the lattice was looked for (then its absence is a :attr:`problem`).
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
    skewness_electrons_per_px: float = math.nan
    lattice: CountLattice | None = None
    lattice_checked: bool = False

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
        if not self.lattice_checked:
            return ""
        if self.lattice is None:
            return (
                "no count lattice in the whitened noise (a random charge per electron, "
                "read noise or interpolated frames blur it), so the skewness's "
                f"N = {self.skewness_electrons_per_px:.1f} e/px is not trusted: it holds "
                "only for a fixed charge per electron (a random charge q makes it low by "
                "(E q³)²/(E q²)³, ×1.27 for a 30% spread; read noise makes it high) and "
                "no other moment reliably tells these apart"
            )
        lat = self.lattice
        z = abs(math.log(lat.electrons_per_px / self.skewness_electrons_per_px)) / (
            2.0 * self.skewness_se / self.skewness
        )
        if z > MAX_LATTICE_SKEWNESS_Z:
            return (
                f"the {lat.describe()} disagrees with the skewness's N = "
                f"{self.skewness_electrons_per_px:.1f} e/px ({z:.1f} standard errors)"
            )
        return ""

    def describe(self) -> str:
        if self.lattice is not None:
            return (
                f"{self.lattice.describe()}: gain {self.gain_counts_per_e:.4g} counts/e ± "
                f"{self.relative_se:.2%} (skewness alone: "
                f"N = {self.skewness_electrons_per_px:.1f} e/px)"
            )
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


def whitened_pixels(
    crops: torch.Tensor, spectrum: torch.Tensor, *, detrend: str = "mean"
) -> tuple[torch.Tensor, int, float] | None:
    """Crops whitened by ``spectrum``, their interior only, and the crops' mean.

    Returns ``(y, border, mean)``: ``y`` the ``(B, M - 2r, N - 2r)`` whitened interior
    (its mean removed), ``r`` the border [px] where the filter wraps round
    (:func:`whitening_border`), ``mean`` the raw crops' mean [counts]; ``None`` when the
    mean is not positive, the spectrum not positive and finite, or the interior smaller
    than :data:`MIN_INTERIOR_PX`.
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
    return y - y.mean(), border, mean


def poisson_scale(
    crops: torch.Tensor,
    spectrum: torch.Tensor,
    *,
    detrend: str = "mean",
    count_lattice: bool = True,
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
    count_lattice
        Also fit the Poisson–Gaussian model of the whitened values
        (:func:`tem_core.mtf_fit.lattice.fit_count_lattice`) and take ``N`` from the
        count lattice (0.02-0.03% instead of 3.6% at 40 e/px); without a lattice
        :attr:`PoissonScale.problem` says so.

    Returns
    -------
    PoissonScale or None
        ``None`` when the skewness is not positive or the crops are too small for the
        filter; check :attr:`PoissonScale.problem` before using it.
    """
    whitened = whitened_pixels(crops, spectrum, detrend=detrend)
    if whitened is None:
        return None
    y, border, mean = whitened
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
    relative_se = 2.0 * se / skew
    lattice = fit_count_lattice(y) if count_lattice else None
    n_hat = electrons if lattice is None else lattice.electrons_per_px
    if lattice is not None:
        relative_se = lattice.electrons_se / n_hat
    gain = mean / n_hat
    return PoissonScale(
        skewness=skew,
        skewness_se=se,
        electrons_per_px=n_hat,
        gain_counts_per_e=gain,
        scale=gain * mean,
        relative_se=relative_se,
        skewness_electrons_per_px=electrons,
        lattice=lattice,
        lattice_checked=count_lattice,
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
    """The Poisson measurement of ``s`` (count lattice) when it holds, and a note.

    Refused, with a warning, when the whitened noise shows no count lattice (the
    electrons do not add a fixed charge each, so the skewness would be biased) or its
    ``N`` disagrees with the skewness's (:attr:`PoissonScale.problem`); refused, without
    one, when the noise is not skewed or not Poisson-like (the real K2 frames).
    Compared with the scale of the spline (else of ``shape_model``), whose standard
    error is honest about the low-frequency freedom; more than
    :data:`POISSON_AGREEMENT_Z` combined standard errors apart: a warning and ``None``.
    """
    measured = poisson_scale(x, ring_smoothed(periodogram), detrend=detrend)
    if measured is None:
        return None, "; no Poisson skewness measurable (Gaussian-like noise)"
    if measured.problem:
        if measured.lattice_checked and "lattice" in measured.problem:
            warnings.warn(
                f"the noise is not Poisson with a fixed gain per electron: "
                f"{measured.problem}; the gain and the MTF's normalisation come from the "
                "noise spectrum alone (its extrapolation to zero frequency, ±6% with 16 "
                "crops of 256²); pass gain_counts_per_e= if the gain is known",
                UserWarning,
                stacklevel=3,
            )
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
