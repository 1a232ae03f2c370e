"""Electrons per pixel from the count lattice of whitened Poisson noise.

In TEM-simulator's detector model (Poisson electrons ``k ~ Poisson(N)`` per pixel, a
fixed gain per electron, then the MTF blur) the crops whitened by their noise spectrum
(:func:`tem_core.mtf_fit.poisson.whitened_pixels`) are

    ``w = a·k + b + ε``,

an unknown spacing ``a`` (the gain times the whitening filter's scale), an offset ``b``
and a residual ``ε`` of the imperfect whitening (the measured, not the true, noise
spectrum; the crops' borders), nearly Gaussian with variance ``τ²`` because it sums
many pixels' electrons. Their distribution is a Poisson–Gaussian mixture, as in a
camera's photon-transfer calibration. Measured on the eight camera tables (16 crops of
256², 40 e/px): ``τ/a`` = 0.07-0.13, so the values cluster on the integer lattice of the
electron counts. The lattice's spacing and phase then give every pixel's count; ``N``
follows from their mean (and, for the integer offset, from Poisson's mean = variance)
to ``sqrt(N/n)`` (0.03% for 16 × 256²), against 3.6% from the skewness alone.

The lattice is also the model check: with a random charge per electron (every
integrating camera: Landau-like deposits) or interpolated, gain-normalised frames
there is no lattice, and the skewness's ``N = 1/skew²`` is then wrong by a factor
``(E q³)² / (E q²)³`` of the charge ``q`` (×1.27 for a gamma charge with CV 0.3) that no
second- or fourth-order check reliably sees. :func:`fit_count_lattice` returns ``None``
unless the lattice is there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Histogram bins per lattice spacing (bin-integrated likelihood: exact for the histogram).
BINS_PER_SPACING = 24

#: Lattice spacings tried around the cumulant estimate ``κ₃/κ₂``: ``[1/1.3, 1.3]`` × it.
SCAN_RANGE = 1.3

#: The lattice is detected when ``n·|mean exp(2πi w/a)|²`` exceeds ``log(trials)`` by this
#: (for no lattice it is Exp(1)-distributed: a false alarm has probability ``e^{-20}``).
DETECTION_MARGIN = 20.0

#: The lattice is used only when the fitted residual is below this fraction of its spacing
#: (above it the integer assignment fails: the counts' information is in the shape only).
MAX_TAU_OVER_SPACING = 0.35

#: No lattice is looked for above this many electrons per pixel (by the cumulants): the
#: whitening residual grows as ``sqrt(N)`` (0.1 of the spacing at 40 e/px on the camera
#: tables), so the lattice is washed out long before.
MAX_ELECTRONS_PER_PX = 2000.0

#: Below this log-likelihood margin between the chosen integer offset and its neighbours
#: (``N ± 1``; about ``n/(4N²)``: 130-160 at 40 e/px, 25 at 100 e/px for 16 × 256²) the
#: offset is taken as known only from Poisson's variance = mean, to ``N·sqrt(2/n)``.
MIN_INTEGER_MARGIN = 10.0

#: Bins less probable than this are left out of the Fisher information (their share of it
#: is of this order; their CDF differences are rounded).
MIN_BIN_PROBABILITY = 1e-10

#: Poisson terms kept either side of the mean [standard deviations].
POISSON_SPAN_SD = 9.0


@dataclass(frozen=True, kw_only=True)
class CountLattice:
    """Maximum-likelihood Poisson–Gaussian fit of whitened noise ``w = a·k + b + ε``.

    Attributes
    ----------
    electrons_per_px
        ``N``, the Poisson mean [e/pixel].
    electrons_se
        Its Cramér-Rao standard error (inverse Fisher information of the histogram
        likelihood in ``(a, b, N, τ)``), combined with ``N·sqrt(2/n)`` when the integer
        offset is uncertain (:data:`MIN_INTEGER_MARGIN`) [e/pixel].
    spacing
        ``a``, counts of the whitened image per electron.
    offset
        ``b``.
    tau_over_spacing
        ``τ/a``, the whitening residual in electrons.
    contrast
        ``|mean exp(2πi w/a)|``; ``exp(-2π²τ²/a²)`` for the model.
    detection
        ``n · contrast²`` (Exp(1) without a lattice).
    integer_margin
        Increase of the negative log-likelihood when ``N`` is moved by ±1 electron with
        ``b`` (the smaller of the two): how surely the integer offset is known.
    goodness_z
        ``(G − dof)/sqrt(2 dof)`` of the G-test of the histogram against the fit.
    n_pixels
        Whitened pixels used.
    """

    electrons_per_px: float
    electrons_se: float
    spacing: float
    offset: float
    tau_over_spacing: float
    contrast: float
    detection: float
    integer_margin: float
    goodness_z: float
    n_pixels: int

    def describe(self) -> str:
        return (
            f"count lattice of the whitened noise (spacing {self.spacing:.4g}, residual "
            f"{self.tau_over_spacing:.2f} of it): N = {self.electrons_per_px:.3f} ± "
            f"{self.electrons_se:.3f} e/px"
        )


def poisson_gaussian_log_density(
    w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n: torch.Tensor, tau: torch.Tensor
) -> torch.Tensor:
    """``log Σ_k Poisson(k; n) · Normal(w; a·k + b, τ²)`` by a direct sum (reference).

    Parameters
    ----------
    w
        Values (any shape).
    a, b, n, tau
        Spacing, offset, Poisson mean [e/pixel], residual s.d. (0-d tensors).
    """
    k = _count_range(float(n), w.dtype, w.device)
    log_p = k * torch.log(n) - n - torch.lgamma(k + 1.0)
    z = (w[..., None] - a * k - b) / tau
    log_phi = -0.5 * z**2 - torch.log(tau) - 0.5 * math.log(2.0 * math.pi)
    return torch.logsumexp(log_p + log_phi, dim=-1)


def _count_range(n: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    lo = max(0, math.floor(n - POISSON_SPAN_SD * math.sqrt(n) - 10))
    hi = math.ceil(n + POISSON_SPAN_SD * math.sqrt(n) + 10)
    return torch.arange(lo, hi + 1, dtype=dtype, device=device)


def histogram_nll(
    theta: torch.Tensor, edges: torch.Tensor, counts: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """Multinomial negative log-likelihood of a histogram under the Poisson–Gaussian model.

    ``theta = (log a, b, log N, log τ)``; bin probabilities are exact integrals of the
    mixture over each bin (no binning error), normalised over the histogram's range.
    """
    prob = bin_probabilities(theta, edges, k).clamp_min(1e-300)
    return -(counts * torch.log(prob / prob.sum())).sum()


def probabilities_and_jacobian(
    theta: torch.Tensor, edges: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`bin_probabilities` and their analytic ``(bins, 4)`` derivatives."""
    theta = theta.detach()
    a, b, n, tau = theta[0].exp(), theta[1], theta[2].exp(), theta[3].exp()
    weights = torch.softmax(k * torch.log(n) - n - torch.lgamma(k + 1.0), 0)
    z = (edges[:, None] - a * k[None, :] - b) / tau
    cdf_k = torch.special.ndtr(z)
    pdf_k = torch.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    cdf = torch.stack(
        [
            cdf_k @ weights,
            (pdf_k * (-a * k[None, :] / tau)) @ weights,
            (pdf_k @ weights) * (-1.0 / tau),
            cdf_k @ (weights * (k - (weights * k).sum())),
            -(pdf_k * z) @ weights,
        ],
        1,
    )
    diff = cdf[1:] - cdf[:-1]
    return diff[:, 0], diff[:, 1:]


def _scoring(
    theta: torch.Tensor, edges: torch.Tensor, counts: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Fisher scoring of :func:`histogram_nll`: ``(theta, nll, information)``."""
    total = float(counts.sum())
    value = float(histogram_nll(theta, edges, counts, k))
    for _ in range(50):
        prob, jac = probabilities_and_jacobian(theta, edges, k)
        norm = float(prob.sum())
        grad = -(counts / prob.clamp_min(1e-300)) @ jac + total * jac.sum(0) / norm
        info = _information(prob, jac, total)
        step = -torch.linalg.solve(info, grad)
        decrement = float(-(grad @ step))
        scale = 1.0
        while scale > 1e-4:
            trial = theta + scale * step
            trial_value = float(histogram_nll(trial, edges, counts, k))
            if math.isfinite(trial_value) and trial_value <= value + 1e-9 * abs(value):
                break
            scale *= 0.5
        else:
            break
        theta, value = trial, trial_value
        if decrement < 1e-8:
            break
    prob, jac = probabilities_and_jacobian(theta, edges, k)
    return theta, value, _information(prob, jac, float(counts.sum()))


def _information(prob: torch.Tensor, jac: torch.Tensor, n_values: float) -> torch.Tensor:
    """``n Σ_j ∂P_j ∂P_jᵀ / P_j`` over the bins with ``P_j`` above :data:`MIN_BIN_PROBABILITY`
    (far in the upper tail the bin probabilities are differences of CDF values rounded
    near 1, and ``∂P²/P`` would be rounding noise divided by rounding noise)."""
    keep = prob > MIN_BIN_PROBABILITY
    return n_values * (jac[keep].T / prob[keep]) @ jac[keep]


def fit_count_lattice(w: torch.Tensor) -> CountLattice | None:
    """Poisson–Gaussian maximum-likelihood fit of whitened noise, if it shows a count lattice.

    Steps: the spacing is scanned around ``κ₃/κ₂`` (``= a`` for Poisson counts) for the
    largest ``|mean exp(2πi w/a)|``; no significant peak (:data:`DETECTION_MARGIN`):
    ``None``. The peak's phase gives ``b`` modulo ``a``, and the integer offset is the one
    whose count mean equals the count variance. Then ``(a, b, N, τ)`` are refined by
    maximum likelihood on a histogram of :data:`BINS_PER_SPACING` bins per spacing, the
    neighbouring offsets (``N ± 1``) are refitted and compared, and the Fisher information
    gives the standard error. ``None`` also when ``τ/a`` exceeds
    :data:`MAX_TAU_OVER_SPACING`.

    Parameters
    ----------
    w
        Whitened noise values (any shape; flattened), float64 preferred.
    """
    w = w.detach().double().flatten().cpu()
    n_px = w.numel()
    w = w - w.mean()
    m2 = float((w**2).mean())
    m3 = float((w**3).mean())
    if not (m2 > 0 and m3 > 0) or n_px < 1000:
        return None
    a0 = m3 / m2
    n0 = m2 / a0**2
    if n0 > MAX_ELECTRONS_PER_PX:
        return None
    # histogram fine enough for the scan and the fit
    width = a0 / (SCAN_RANGE * BINS_PER_SPACING)
    lo, hi = float(w.min()) - 3 * width, float(w.max()) + 3 * width
    n_bins = math.ceil((hi - lo) / width)
    if n_bins > 200_000:
        return None
    edges = lo + width * torch.arange(n_bins + 1, dtype=torch.float64)
    counts = torch.histc(w, bins=n_bins, min=lo, max=float(edges[-1]))
    centres = 0.5 * (edges[1:] + edges[:-1])
    # scan: phase coherence over the spread needs a step ≪ a / (number of lattice steps)
    spread = 8.0 * math.sqrt(m2) / a0 + 1.0
    trials = torch.exp(
        torch.linspace(
            -math.log(SCAN_RANGE),
            math.log(SCAN_RANGE),
            max(64, math.ceil(2 * math.log(SCAN_RANGE) * spread / 0.05)),
            dtype=torch.float64,
        )
    )
    spacings = a0 * trials
    coherence = torch.cat(
        [
            (counts * torch.exp(2j * math.pi * centres[None, :] / chunk[:, None])).sum(1)
            for chunk in spacings.split(32)
        ]
    ) / float(counts.sum())
    best = int(coherence.abs().argmax())
    detection = n_px * float(coherence[best].abs()) ** 2
    if detection < math.log(len(trials)) + DETECTION_MARGIN:
        return None
    a = float(spacings[best])
    contrast = float(coherence[best].abs())
    tau = a * math.sqrt(max(-math.log(contrast), 1e-4) / (2 * math.pi**2))
    b0 = a * float(torch.angle(coherence[best])) / (2 * math.pi)
    var_k = max(m2 - tau**2, 1e-12) / a**2
    j = round(var_k + b0 / a)  # mean(k) = -b/a = j - b0/a must equal var(k)
    k = _count_range(max(n0, var_k, j - b0 / a), torch.float64, torch.device("cpu"))

    fits = {}
    for shift in (-1, 0, 1):
        n_start = j + shift - b0 / a
        if n_start <= 0.5:
            continue
        start = torch.tensor(
            [math.log(a), b0 - (j + shift) * a, math.log(n_start), math.log(tau)],
            dtype=torch.float64,
        )
        fits[shift] = _scoring(start, edges, counts, k)
    shift = min(fits, key=lambda s: fits[s][1])
    theta, value, info = fits[shift]
    others = [fits[s][1] - value for s in fits if s != shift]
    margin = min(others) if others else 0.0
    try:
        cov = torch.linalg.inv(info)
    except RuntimeError:
        return None
    n_hat = float(theta[2].exp())
    n_se = n_hat * math.sqrt(max(float(cov[2, 2]), 0.0))
    if margin < MIN_INTEGER_MARGIN:
        n_se = math.hypot(n_se, n_hat * math.sqrt(2.0 / n_px))
    if not (n_se > 0 and math.isfinite(n_se) and math.isfinite(n_hat)):
        return None
    tau_a = float((theta[3] - theta[0]).exp())
    # goodness of fit over bins with an expected count of at least 5
    with torch.no_grad():
        prob = bin_probabilities(theta, edges, k).clamp_min(0)
        expected = prob / prob.sum() * counts.sum()
    keep = expected >= 5.0
    observed = counts[keep]
    g_stat = 2.0 * float((observed * torch.log(observed.clamp_min(1) / expected[keep])).sum())
    g_stat -= 2.0 * float((observed - expected[keep]).sum())
    dof = max(int(keep.sum()) - 5, 1)
    if tau_a > MAX_TAU_OVER_SPACING:
        return None
    return CountLattice(
        electrons_per_px=n_hat,
        electrons_se=n_se,
        spacing=float(theta[0].exp()),
        offset=float(theta[1]),
        tau_over_spacing=tau_a,
        contrast=contrast,
        detection=detection,
        integer_margin=margin,
        goodness_z=(g_stat - dof) / math.sqrt(2.0 * dof),
        n_pixels=n_px,
    )


def bin_probabilities(theta: torch.Tensor, edges: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Probabilities of the bins ``edges`` under ``theta = (log a, b, log N, log τ)``."""
    a, b, n, tau = theta[0].exp(), theta[1], theta[2].exp(), theta[3].exp()
    weights = torch.softmax(k * torch.log(n) - n - torch.lgamma(k + 1.0), 0)
    cdf = torch.special.ndtr((edges[:, None] - a * k[None, :] - b) / tau) @ weights
    return cdf[1:] - cdf[:-1]


def fisher_information(
    theta: torch.Tensor, n_pixels: int, *, points_per_tau: int = 8
) -> torch.Tensor:
    """Expected Fisher information of ``n_pixels`` values in ``(log a, b, log N, log τ)``.

    ``n Σ_j ∂P_j ∂P_jᵀ / P_j`` over bins much finer than ``τ`` (and than ``a``), which
    converges to the continuous density's information; its inverse is the Cramér-Rao
    bound (e.g. of ``log N``: the relative error of the gain achievable from the data).

    Parameters
    ----------
    theta
        ``(4,)`` float64: log spacing, offset, log electrons per pixel [e/pixel], log
        residual s.d.
    n_pixels
        Independent values.
    points_per_tau
        Bins per residual s.d. (and at least 64 per spacing).
    """
    theta = theta.detach().double()
    a, b, n, tau = (float(v) for v in (theta[0].exp(), theta[1], theta[2].exp(), theta[3].exp()))
    k = _count_range(n, torch.float64, torch.device("cpu"))
    width = min(tau / points_per_tau, a / 64)
    lo = b + a * float(k[0]) - 8 * tau
    hi = b + a * float(k[-1]) + 8 * tau
    edges = torch.arange(lo, hi + width, width, dtype=torch.float64)
    prob, jac = probabilities_and_jacobian(theta, edges, k)
    return _information(prob, jac, float(n_pixels))
