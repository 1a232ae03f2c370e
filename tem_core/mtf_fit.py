"""Detector MTF from background crops: the published FFL fit and a Whittle likelihood fit.

Both estimators fit the parameters of TEM-simulator's MTF
(:func:`tem_core.detector.mtf_parametric`) to regions of micrographs that hold only a flat
background (vacuum or featureless ice). In TEM-simulator's detector model a flat
background is Poisson noise blurred by the MTF (:func:`tem_core.detector.detect`,
``mtf_after_noise=True``), so its noise power spectrum (NPS) is ``s · MTF²(ω)``.

* :func:`fit_mtf_ffl` reproduces the published method (DiffTEM, Nguyen et al.; code
  ``nanovis/diff-tem-release``): simulate flat Poisson images with the current MTF, compare
  them with the crops by MSE + focal frequency loss (:func:`focal_frequency_loss`), and step
  the MTF parameters with Adam. The simulated and observed noise realisations are
  independent, so the loss compares two random fields pixel by pixel; the gradient does
  not point towards the true MTF (``E|ΔF|² = σ²(|MTF_θ|² + |MTF|²)`` is smallest for
  ``MTF_θ → 0``; with the min-max normaliser detached, as published, the gradient still
  shrinks the MTF). In ``benchmarks/mtf_experiments.py`` it ends with MTF errors of
  90-100% for every loss variant. It is kept as a baseline and reported honestly.
* :func:`fit_mtf_whittle` fits ``s · MTF²(ω)`` to the crops' averaged periodogram by the
  Whittle likelihood ``Σ_ω [log S(ω) + P(ω)/S(ω)]``, a consistent estimator that uses every
  frequency bin, with standard errors from the Hessian.

Counting cameras (K2, Falcon in counting mode) do not follow this model: each electron is
counted once in one pixel, so their background NPS is nearly white while their signal MTF
(the published curves, :func:`tem_core.detector.load_mtf_table`) falls with frequency.
An NPS-based fit then measures the noise transfer, not the signal MTF.

Frequencies are in cycles per pixel (Nyquist 0.5). Background crops are selected with
:func:`find_background_crops` and checked by :func:`detect_particles_in_crops`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tem_core._fft import fft2, ifft2
from tem_core._mtf_fit_crops import (
    BackgroundCrops,
    as_crops,
    detect_particles_in_crops,
    detrend_crops,
    find_background_crops,
    taper_variance_factor,
    taper_window,
)
from tem_core._mtf_fit_ffl import fit_mtf_ffl, focal_frequency_loss, normalise_min_max
from tem_core._mtf_fit_result import (
    NYQUIST_FRACTIONS,
    PARAM_NAMES,
    MTFFit,
    blurred_image_difference,
    mtf_relative_rms_error,
    simulate_flat_background,
    synthetic_background_crops,
)
from tem_core.detector import mtf_parametric, radial_frequency_cycles_per_px
from tem_core.validation import require_nonnegative, require_positive

__all__ = [
    "BackgroundCrops",
    "MTFFit",
    "PARAM_NAMES",
    "averaged_periodogram",
    "blurred_image_difference",
    "detect_particles_in_crops",
    "find_background_crops",
    "fit_mtf_ffl",
    "fit_mtf_whittle",
    "focal_frequency_loss",
    "mtf_relative_rms_error",
    "normalise_min_max",
    "radial_profile",
    "simulate_flat_background",
    "synthetic_background_crops",
    "NYQUIST_FRACTIONS",
]


# --- periodograms ----------------------------------------------------------------------------


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


# --- Whittle likelihood ---------------------------------------------------------------------


def _sigmoid_range(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map ℝ → (low, high) on a log scale."""
    return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.sigmoid(u))


def _inverse_sigmoid_range(value: float, low: float, high: float) -> float:
    t = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    t = min(max(t, 1e-6), 1.0 - 1e-6)
    return math.log(t / (1.0 - t))


@dataclass(frozen=True)
class _WhittleProblem:
    """Whittle NLL grouped by distinct radial frequency (exact for a radial model)."""

    omega: torch.Tensor  # (R,) distinct radial frequencies of the bins used [cycles/px]
    power: torch.Tensor  # (R,) weighted mean periodogram over the bins at that radius
    count: torch.Tensor  # (R,) number of independent bins × crops at that radius
    width_bounds: tuple[float, float]
    shape_bounds: tuple[float, float]
    fit_shape: bool
    fixed_scale: float | None = None  # s known from the gain (Poisson: s = gain · mean)

    @staticmethod
    def build(
        power_half: torch.Tensor,
        radius_half: torch.Tensor,
        weight_half: torch.Tensor,
        mask: torch.Tensor,
        n_crops: int,
        **kwargs: Any,
    ) -> _WhittleProblem:
        radii, inverse = torch.unique(radius_half[mask], return_inverse=True)
        w = weight_half[mask] * n_crops
        count = torch.zeros_like(radii).index_add_(0, inverse, w)
        power = torch.zeros_like(radii).index_add_(0, inverse, w * power_half[mask]) / count
        return _WhittleProblem(omega=radii, power=power, count=count, **kwargs)

    def natural(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained vector → (a, b, c with a+b+c = 1, α, β, p, q, s)."""
        zero = torch.zeros(1, dtype=u.dtype)
        weights = torch.softmax(torch.cat([u[0:2], zero]), dim=0)
        lo, hi = self.width_bounds
        out = {
            "a": weights[0],
            "b": weights[1],
            "c": weights[2],
            "alpha": _sigmoid_range(u[2], lo, hi),
            "beta": _sigmoid_range(u[3], lo, hi),
            "s": torch.exp(u[-1])
            if self.fixed_scale is None
            else torch.tensor(self.fixed_scale, dtype=u.dtype),
        }
        if self.fit_shape:
            out["p"] = _sigmoid_range(u[4], *self.shape_bounds)
            out["q"] = _sigmoid_range(u[5], *self.shape_bounds)
        else:
            out["p"] = out["q"] = torch.ones((), dtype=u.dtype)
        return out

    def spectrum(self, params: dict[str, torch.Tensor], omega: torch.Tensor | None = None):
        mtf = mtf_parametric(
            self.omega if omega is None else omega,
            **{k: params[k] for k in ("a", "b", "c", "alpha", "beta", "p", "q")},
        )
        return params["s"] * mtf**2

    def total_nll(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_crops Σ_ω [log S + P/S]`` over independent bins (for the Hessian)."""
        s = self.spectrum(params)
        return (self.count * (torch.log(s) + self.power / s)).sum()

    def mean_nll(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Whittle negative log-likelihood per independent bin (the optimised objective)."""
        return self.total_nll(params) / self.count.sum()


def _lag_weights(n: int, taper: str | None) -> torch.Tensor:
    """Normalised window autocorrelation ``Σ_t w_t w_{t+τ} / Σ w²`` at lags in FFT order (2n)."""
    w = (
        torch.ones(n, dtype=torch.float64)
        if taper is None
        else torch.hann_window(n, periodic=False, dtype=torch.float64)
    )
    rho = torch.fft.ifft(torch.fft.fft(w, n=2 * n).abs() ** 2).real
    return rho / (w**2).sum()


def _leakage_ratio(
    problem: _WhittleProblem,
    params: dict[str, torch.Tensor],
    shape: tuple[int, int],
    taper: str | None,
) -> torch.Tensor:
    """``E[P(ω)] / S(ω)`` on the ``shape`` FFT grid for the model spectrum ``S`` (exact).

    The expected (tapered) periodogram of a finite crop is the spectrum convolved with the
    window's spectral kernel (Fejér kernel without taper): ``E[P] = F[c(τ) · ρ_w(τ)]`` with
    the autocovariance ``c = F⁻¹[S]`` (computed on a 2× finer grid) and the normalised
    window autocorrelation ``ρ_w``. Dividing the periodogram by this ratio removes the
    leakage bias ("debiased Whittle", Sykulski et al. 2019, JRSS B 81:251).
    """
    m, n = shape
    with torch.no_grad():
        fine = radial_frequency_cycles_per_px((2 * m, 2 * n), dtype=torch.float64)
        cov = ifft2(problem.spectrum(params, fine)).real
        lags = _lag_weights(m, taper)[:, None] * _lag_weights(n, taper)[None, :]
        expected = fft2(cov * lags).real[::2, ::2]
        coarse = radial_frequency_cycles_per_px((m, n), dtype=torch.float64)
        return expected / problem.spectrum(params, coarse)


def _random_start(problem: _WhittleProblem, generator: torch.Generator) -> torch.Tensor:
    g = generator
    u_w = torch.randn(2, generator=g, dtype=torch.float64)
    lo, hi = problem.width_bounds
    widths = sorted(
        math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=g)))
        for _ in range(2)
    )
    u = [float(u_w[0]), float(u_w[1])]
    u += [_inverse_sigmoid_range(w, lo, hi) for w in widths]
    if problem.fit_shape:
        u += [
            _inverse_sigmoid_range(
                math.exp(0.5 * float(torch.randn((), generator=g))), *problem.shape_bounds
            )
            for _ in range(2)
        ]
    u_t = torch.tensor(u + [0.0], dtype=torch.float64)
    with torch.no_grad():  # scale: the mean power divided by the mean model power at s = 1
        params = problem.natural(u_t)
        params["s"] = torch.ones((), dtype=torch.float64)
        u_t[-1] = math.log(float(problem.power.mean() / problem.spectrum(params).mean()))
    return u_t


def _lbfgs(problem: _WhittleProblem, u0: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, list]:
    u = u0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    history: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = problem.mean_nll(problem.natural(u))
        loss.backward()
        history.append(float(loss.detach()))
        return loss

    opt.step(closure)
    return u.detach(), history


def _hessian_covariance(
    problem: _WhittleProblem, params: dict[str, torch.Tensor], inflation: float
) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """Covariance of (a, b, α, β, [p, q], s) from the inverse Hessian of the total NLL.

    ``c = 1 − a − b`` is dependent. The tapered-periodogram variance inflation multiplies
    the covariance (see :func:`taper_variance_factor`). ``None`` when the Hessian is not
    positive definite (e.g. a weight at 0 leaves its width undetermined).
    """
    names = ("a", "b", "alpha", "beta") + (("p", "q") if problem.fit_shape else ())
    names += ("s",) if problem.fixed_scale is None else ()
    phi0 = torch.stack([params[k].detach() for k in names])

    def nll(phi: torch.Tensor) -> torch.Tensor:
        values = dict(zip(names, phi, strict=True))
        values["c"] = 1.0 - values["a"] - values["b"]
        if problem.fixed_scale is not None:
            values["s"] = torch.tensor(problem.fixed_scale, dtype=phi.dtype)
        if not problem.fit_shape:
            values["p"] = values["q"] = torch.ones((), dtype=phi.dtype)
        return problem.total_nll(values)

    try:
        hess = torch.autograd.functional.hessian(nll, phi0)
        hess = 0.5 * (hess + hess.T)
        torch.linalg.cholesky(hess)
        cov = torch.linalg.inv(hess) * inflation
    except (RuntimeError, ValueError):  # not positive definite, or a parameter hit 0
        return None, names
    if not bool(torch.isfinite(cov).all()):
        return None, names
    return cov, names


def fit_mtf_whittle(
    crops: Any,
    *,
    generator: torch.Generator,
    n_restarts: int = 6,
    fit_shape: bool = False,
    gain_counts_per_e: float | None = None,
    dqe: float = 1.0,
    width_bounds_px2: tuple[float, float] | None = None,
    shape_bounds: tuple[float, float] = (0.2, 5.0),
    frequency_range_cycles_per_px: tuple[float | None, float | None] = (None, None),
    taper: str | None = None,
    detrend: str = "mean",
    debias_iterations: int = 2,
    max_iter: int = 200,
    check_particles: bool = True,
) -> MTFFit:
    """Fit the MTF to the noise power spectrum of background crops (Whittle likelihood).

    Model: ``S(ω) = s · MTF²(|ω|)``, the NPS of Poisson noise blurred by the MTF
    (TEM-simulator's detector), ``MTF`` from :func:`tem_core.detector.mtf_parametric` with
    ``a + b + c = 1``. The averaged periodogram ``P̄`` of the ``B`` crops
    (:func:`averaged_periodogram`) is fitted by minimising the Whittle negative
    log-likelihood ``B · Σ_ω [log S(ω) + P̄(ω)/S(ω)]`` over the half-plane of frequencies
    (rfft2; the self-conjugate columns weighted 1/2) with ``f_min ≤ |ω| ≤ f_max``; bins
    with equal ``|ω|`` are pooled (exact for a radial model, and faster).

    Leakage: a crop is not periodic, so its periodogram's expectation is ``S`` convolved
    with the window's spectral kernel (Fejér kernel), biased by up to ~2% for the default
    MTF. After the restarts, the periodogram is divided by the exact ratio ``E[P]/S`` at
    the current estimate and the fit is polished, ``debias_iterations`` times (a fixed
    point of the debiased Whittle likelihood of Sykulski et al. 2019). This makes a taper
    unnecessary; ``taper="hann"`` is offered but costs information (the covariance is then
    inflated by :func:`taper_variance_factor`, about 3.8).

    Parameterisation (unconstrained for L-BFGS): ``(a, b, c) = softmax(u_a, u_b, 0)``;
    ``α, β = exp(log lo + (log hi − log lo) · sigmoid(u))`` inside ``width_bounds_px2``;
    ``p, q`` likewise inside ``shape_bounds``; ``s = exp(u_s)``. Bounds on the widths keep
    the ω → 0 normalisation identifiable: ω = 0 is excluded (the mean is removed), so a
    Lorentzian narrower than the first frequency bins would act as a free scale factor. The
    default upper bound ``(min(M, N)/8)²`` keeps each Lorentzian's half width ``1/√β`` at
    8 frequency bins or more; the lower bound 0.1 px² (a term flat to 2.5% at Nyquist) only
    stops the widths from wandering where they are indistinguishable from ``c``.
    The fit restarts ``n_restarts`` times from random starts drawn with ``generator`` and
    keeps the best likelihood; the two Lorentzians are then ordered so that ``α ≤ β``.
    Standard errors: inverse Hessian of the total NLL in ``(a, b, α, β, [p, q], s)``
    (``c = 1 − a − b``), treating periodogram bins as independent.

    Parameters
    ----------
    crops
        ``(B, M, N)`` or ``(M, N)`` background crops [counts].
    generator
        Random generator for the restarts (CPU).
    n_restarts
        Number of L-BFGS runs from random starts.
    fit_shape
        Also fit TEM-simulator's shape exponents ``p, q`` (default: fixed at 1).
    gain_counts_per_e, dqe
        When the gain [counts/e] is known, the NPS scale is fixed at its Poisson value
        ``s = gain · mean / dqe`` (``mean`` of the crops) instead of being fitted. This pins
        the ω → 0 normalisation, the weakest part of the fit for few crops. Only valid for
        TEM-simulator's model (shot noise of variance ``N/dqe``, then the MTF).
    width_bounds_px2
        ``(lo, hi)`` bounds for α and β [pixel²]; default ``(0.1, (min(M, N)/8)²)``.
    shape_bounds
        ``(lo, hi)`` bounds for p and q.
    frequency_range_cycles_per_px
        ``(f_min, f_max)`` radial frequencies used [cycles/pixel]. Default f_min
        ``1.5 / min(M, N)`` (drops ω = 0 and its neighbours, which the mean removal and the
        taper disturb); raise it to skip low-frequency specimen signal (Thon rings) in real
        data. Default f_max: every bin (corners up to √0.5).
    taper, detrend
        Passed to :func:`averaged_periodogram` (default no taper, mean removed; use
        ``detrend="plane"`` for ice gradients).
    debias_iterations
        Leakage corrections after the restarts (0: plain Whittle).
    max_iter
        L-BFGS iterations per restart.
    check_particles
        Run :func:`detect_particles_in_crops` and warn about structured crops.

    Returns
    -------
    MTFFit
        ``method="whittle"``, the parameters, ``scale`` = ``s`` [counts² per bin],
        the loss history of the best restart (mean NLL per bin), its final NLL, and the
        covariance from the inverse Hessian (times the taper's variance inflation) with the
        standard errors.
    """
    x = as_crops(crops)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(n_restarts, bool) or not isinstance(n_restarts, int) or n_restarts < 1:
        raise ValueError(f"n_restarts must be a positive integer, got {n_restarts!r}")
    if check_particles:
        detect_particles_in_crops(x, warn=True)
    b, m, n = x.shape
    lo, hi = width_bounds_px2 if width_bounds_px2 is not None else (0.1, (min(m, n) / 8.0) ** 2)
    require_positive("width_bounds_px2", [lo, hi], "px²")
    require_positive("shape_bounds", list(shape_bounds))
    if not (lo < hi and shape_bounds[0] < shape_bounds[1]):
        raise ValueError(f"bounds must be increasing, got widths {(lo, hi)}, shapes {shape_bounds}")
    f_min, f_max = frequency_range_cycles_per_px
    f_min = 1.5 / min(m, n) if f_min is None else f_min
    f_max = 1.0 if f_max is None else f_max
    require_nonnegative("f_min", f_min, "cycles/px")
    if not f_min < f_max:
        raise ValueError(f"frequency range must satisfy f_min < f_max, got ({f_min}, {f_max})")

    periodogram = averaged_periodogram(x, taper=taper, detrend=detrend).cpu()
    half = slice(0, n // 2 + 1)
    radius = radial_frequency_cycles_per_px((m, n), dtype=torch.float64)[:, half]
    weight = torch.ones_like(radius)  # rfft2 half plane: self-conjugate columns count 1/2
    weight[:, 0] = 0.5
    if n % 2 == 0:
        weight[:, -1] = 0.5
    mask = (radius >= f_min) & (radius <= f_max) & (radius > 0)
    if int(mask.sum()) < 20:
        raise ValueError(f"only {int(mask.sum())} frequency bins in ({f_min}, {f_max}) cycles/px")
    fixed_scale = None
    if gain_counts_per_e is not None:
        require_positive("gain_counts_per_e", gain_counts_per_e, "counts/e")
        require_positive("dqe", dqe)
        fixed_scale = float(gain_counts_per_e) * float(x.double().mean()) / float(dqe)
        if not fixed_scale > 0:
            raise ValueError(f"the crops' mean must be > 0 to fix the scale, got {float(x.mean())}")
    settings = dict(
        width_bounds=(float(lo), float(hi)),
        fixed_scale=fixed_scale,
        shape_bounds=(float(shape_bounds[0]), float(shape_bounds[1])),
        fit_shape=fit_shape,
    )

    def build(ratio: torch.Tensor | None) -> _WhittleProblem:
        power = periodogram if ratio is None else periodogram / ratio
        return _WhittleProblem.build(power[:, half], radius, weight, mask, b, **settings)

    problem = build(None)
    best: tuple[float, torch.Tensor, list[float]] | None = None
    for _ in range(n_restarts):  # short runs from random starts, then polish the best
        u, history = _lbfgs(problem, _random_start(problem, generator), min(max_iter, 40))
        with torch.no_grad():
            value = float(problem.mean_nll(problem.natural(u)))
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, u, history)
    if best is None:
        raise RuntimeError("every Whittle restart diverged (non-finite likelihood)")
    u, history = _lbfgs(problem, best[1], max_iter)
    with torch.no_grad():
        best = (float(problem.mean_nll(problem.natural(u))), u, best[2] + history)
    for _ in range(debias_iterations):  # fixed point: leakage ratio at the current estimate
        ratio = _leakage_ratio(problem, problem.natural(best[1]), (m, n), taper)
        problem = build(ratio)
        u, history = _lbfgs(problem, best[1], max_iter)
        with torch.no_grad():
            best = (float(problem.mean_nll(problem.natural(u))), u, best[2] + history)
    params = {k: v.detach() for k, v in problem.natural(best[1]).items()}
    if params["alpha"] > params["beta"]:  # canonical order α ≤ β
        params["a"], params["b"] = params["b"], params["a"]
        params["alpha"], params["beta"] = params["beta"], params["alpha"]
        params["p"], params["q"] = params["q"], params["p"]
    window = taper_window((m, n), taper=taper, dtype=torch.float64)
    cov, names = _hessian_covariance(problem, params, taper_variance_factor(window))
    return MTFFit(
        method="whittle",
        params={k: float(params[k]) for k in PARAM_NAMES},
        scale=float(params["s"]),
        loss_history=tuple(best[2]),
        final_loss=best[0],
        covariance=cov,
        covariance_names=names,
    )
