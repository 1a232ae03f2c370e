"""Detector MTF from background crops by the Whittle likelihood of their noise spectrum.

In TEM-simulator's detector model (Poisson electrons, then the MTF blur) a flat
background has the noise power spectrum ``s · MTF²(ω)``. :func:`fit_mtf_whittle` fits
it to the crops' averaged periodogram, chooses between nested models by likelihood-ratio
tests (white, p = q = 1, shape exponents fitted) and says when the spectrum cannot show
the MTF at all (a counting camera, whose noise is white while its signal is blurred).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from tem_core.detector import radial_frequency_cycles_per_px
from tem_core.mtf_fit.crops import (
    as_crops,
    detect_particles_in_crops,
    require_noise,
    taper_variance_factor,
    taper_window,
)
from tem_core.mtf_fit.likelihood import (
    MODELS,
    SPLINE_KNOTS,
    WhittleProblem,
    fisher_covariance,
    lbfgs,
    leakage_ratio,
    newton,
    optimise,
    random_start,
    spline_start,
    value,
)
from tem_core.mtf_fit.periodogram import averaged_periodogram
from tem_core.mtf_fit.poisson import agreeing_poisson_scale
from tem_core.mtf_fit.result import ModelChoice, MTFFit
from tem_core.validation import require_nonnegative, require_positive

#: Largest MTF of a pixelated detector at Nyquist: the pixel aperture's sinc(0.5) = 2/π.
PIXEL_APERTURE_NYQUIST = 2.0 / math.pi

#: A weight ``a``, ``b`` or ``c`` below this lies on its boundary 0 (:attr:`MTFFit.at_bound`).
WEIGHT_AT_BOUND = 1e-3

#: Frequencies [cycles/px] at which fits are checked for a useful precision.
CHECK_FREQUENCIES = (0.25, 0.375, 0.45)

#: The automatic choice considers the spline only when its MTF standard error at
#: :data:`CHECK_FREQUENCIES` stays below this (enough data to pin its normalisation).
SPLINE_MAX_RELATIVE_ERROR = 0.06


def _chi2_sf(statistic: float, df: int) -> float:
    """Upper tail probability of the χ² distribution with ``df`` degrees of freedom."""
    if statistic <= 0:
        return 1.0
    k = torch.tensor(0.5 * df, dtype=torch.float64)
    return float(torch.special.gammaincc(k, torch.tensor(0.5 * statistic, dtype=torch.float64)))


def _choose(nll: dict[str, float], n_bins: float, allowed: list[str]) -> ModelChoice:
    """Model with the smallest AIC; likelihood-ratio tests of the nested pairs for the record."""
    aic = {m: 2.0 * nll[m] + 2.0 * MODELS[m] for m in allowed}
    chosen = min(allowed, key=lambda m: aic[m])
    stats: dict[str, float] = {}
    p_values: dict[str, float] = {}
    nested = [m for m in ("white", "lorentzian", "shaped") if m in allowed]
    for small, big in zip(nested, nested[1:], strict=False):
        key = f"{big} vs {small}"
        stats[key] = max(2.0 * (nll[small] - nll[big]), 0.0)
        p_values[key] = _chi2_sf(stats[key], MODELS[big] - MODELS[small])
    ranked = sorted(allowed, key=lambda m: aic[m])
    runner = ranked[1] if len(ranked) > 1 else chosen
    tests = "; ".join(f"{k}: 2ΔNLL = {v:.1f}, p = {p_values[k]:.2g}" for k, v in stats.items())
    reason = (
        f"chose {chosen!r} ({MODELS[chosen]} parameters), the smallest AIC = 2·NLL + 2k "
        f"({n_bins:.0f} bins): {aic[chosen] - aic[runner]:+.1f} against {runner!r}"
        + (f"; likelihood-ratio tests {tests}" if tests else "")
    )
    return ModelChoice(
        chosen=chosen,
        nll=dict(nll),
        n_params={m: MODELS[m] for m in allowed},
        aic=aic,
        lr_statistics=stats,
        p_values=p_values,
        reason=reason,
    )


def _diagnose(fit: MTFFit, choice: ModelChoice, f_max: float) -> str:
    """Why the noise spectrum cannot show the MTF ("" when it can)."""
    if choice.chosen == "white":
        test = next(iter(choice.p_values.items()), ("", 1.0))
        return (
            "the noise power spectrum is white within its statistical error "
            f"(AIC prefers a flat spectrum; likelihood-ratio test {test[0]}: p = {test[1]:.2g}). "
            "A counting camera has white noise whatever its signal MTF (and a camera without "
            "blur would too)."
        )
    nyquist = torch.tensor([min(0.5, f_max)], dtype=torch.float64)
    t = float(fit.noise_transfer(nyquist))
    se = fit.mtf_standard_error(nyquist)
    se_value = 0.0 if se is None else float(se)
    if t - 2.0 * se_value > PIXEL_APERTURE_NYQUIST:
        return (
            f"the noise transfer at {float(nyquist):.2f} cycles/px, T = {t:.3f} ± {se_value:.3f}, "
            f"is above {PIXEL_APERTURE_NYQUIST:.3f} = sinc(0.5), the pixel-aperture MTF that "
            "bounds the signal MTF of any pixelated detector: the noise is not blurred like the "
            "signal, as in a counting camera (K2, Falcon in counting mode)."
        )
    return ""


def _precision_warnings(fit: MTFFit, problem: WhittleProblem, f_max: float) -> list[str]:
    """Messages for a fit that the data do not pin down."""
    messages: list[str] = []
    if problem.model == "white":
        return messages
    if problem.model == "spline":
        return messages + _uncertainty_messages(fit, f_max)
    lo, hi = problem.width_bounds
    for weight, width in (("a", "alpha"), ("b", "beta")):
        w = fit.params[width]
        near = min(abs(math.log(w / lo)), abs(math.log(hi / w))) < 0.01 * math.log(hi / lo)
        if near and fit.params[weight] > 0.02:
            bound = "lower" if abs(math.log(w / lo)) < abs(math.log(hi / w)) else "upper"
            messages.append(
                f"{width} = {w:.3g} px² is at its {bound} bound ({lo:.3g}, {hi:.3g}) px²: the "
                "spectrum does not constrain it (too few or too small crops)"
            )
    return messages + _uncertainty_messages(fit, f_max)


def _at_bound(params: dict[str, float], problem: WhittleProblem) -> tuple[str, ...]:
    """Parameters on a bound: a weight below :data:`WEIGHT_AT_BOUND`, a width or shape
    within 1 % (of the log range) of its bounds."""
    if problem.model not in ("lorentzian", "shaped"):
        return ()
    names = [k for k in ("a", "b", "c") if params[k] < WEIGHT_AT_BOUND]
    ranges = {"alpha": problem.width_bounds, "beta": problem.width_bounds}
    if problem.model == "shaped":
        ranges.update(p=problem.shape_bounds, q=problem.shape_bounds)
    for k, (lo, hi) in ranges.items():
        v = params[k]
        if min(abs(math.log(v / lo)), abs(math.log(hi / v))) < 0.01 * math.log(hi / lo):
            names.append(k)
    return tuple(names)


def _white_noise_level(problem: WhittleProblem) -> float | None:
    """Median of ring means (0.01 cycles/px wide) of the NPS over 0.1-0.5 cycles/px.

    A counting camera's noise is white at ``gain · mean``; the median over rings ignores
    the few rings raised by an ice reflection (0.19-0.24 cycles/px on the real K2) and
    the low-frequency specimen power.
    """
    edges = torch.arange(0.1, 0.5 + 1e-9, 0.01, dtype=torch.float64)
    rings = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (problem.omega >= lo) & (problem.omega < hi)
        if bool(inside.any()):
            weight = problem.count[inside]
            rings.append(float((weight * problem.power[inside]).sum() / weight.sum()))
    return float(torch.tensor(rings).median()) if rings else None


def _relative_error(fit: MTFFit) -> float | None:
    """Largest relative standard error of the MTF at :data:`CHECK_FREQUENCIES`."""
    omega = torch.tensor(CHECK_FREQUENCIES, dtype=torch.float64)
    se = fit.mtf_standard_error(omega)
    return None if se is None else float((se / fit.noise_transfer(omega)).max())


def _uncertainty_messages(fit: MTFFit, f_max: float) -> list[str]:
    messages = []
    omega = torch.tensor([f for f in CHECK_FREQUENCIES if f <= f_max], dtype=torch.float64)
    se = fit.mtf_standard_error(omega) if omega.numel() else None
    if fit.covariance is None:
        messages.append(
            "the likelihood's Fisher information is singular: some parameters are not "
            "determined by the data"
        )
    elif se is not None:
        rel = (se / fit.noise_transfer(omega)).max()
        if float(rel) > 0.1:
            messages.append(
                f"the MTF's relative standard error reaches {float(rel):.0%} at "
                f"{CHECK_FREQUENCIES[: omega.numel()]} cycles/px (more or larger crops help)"
            )
    return messages


def fit_mtf_whittle(
    crops: Any,
    *,
    generator: torch.Generator | None = None,
    n_restarts: int = 0,
    model: str = "auto",
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
    poisson_skewness: bool = True,
) -> MTFFit:
    """Fit the MTF to the noise power spectrum of background crops (Whittle likelihood).

    Model: ``S(ω) = s · T²(|ω|)``, the NPS of Poisson noise blurred by the MTF ``T``
    (TEM-simulator's detector), ``T`` from :func:`tem_core.detector.mtf_parametric` with
    ``a + b + c = 1``. The averaged periodogram ``P̄`` of the ``B`` crops
    (:func:`averaged_periodogram`) is fitted by minimising the Whittle negative
    log-likelihood ``B · Σ_ω [log S(ω) + P̄(ω)/S(ω)]`` over the half-plane of frequencies
    (rfft2; the self-conjugate columns weighted 1/2) with ``f_min ≤ |ω| ≤ f_max``; bins
    with equal ``|ω|`` are pooled (exact for a radial model).

    Model choice (``model="auto"``): the nested models ``"white"`` (``T = 1``),
    ``"lorentzian"`` (``p = q = 1``) and ``"shaped"`` (``p, q`` free) are fitted and the
    smallest Akaike information criterion ``2·NLL + 2k`` wins (NLLs divided by the taper's
    variance inflation): no model is exactly a real camera's curve, and AIC picks the
    best approximation (Burnham & Anderson 2002). Likelihood-ratio tests of the nested
    pairs are reported too. A monotone ``"spline"`` in frequency
    (:mod:`tem_core.mtf_fit.likelihood`) follows curves the parametric family cannot
    (the Falcon 2 and DE-20 tables, ``benchmarks/mtf_cameras.py``); it joins the choice
    only when its MTF standard error at 0.25-0.45 cycles/px is below
    :data:`SPLINE_MAX_RELATIVE_ERROR` (6%): with few or small crops its freedom below
    0.05 cycles/px trades the NPS scale against the lowest, noisiest bins.
    The result's :attr:`MTFFit.model` says which and why.

    Optimisation: every model starts from the best few points (by likelihood, with ``s``
    profiled out) of a deterministic grid over weights, widths and shapes, plus
    ``n_restarts`` random starts drawn with ``generator``; the shaped model also starts
    from the Lorentzian optimum. L-BFGS runs in unconstrained coordinates:
    ``(a, b, c) = softmax(u_a, u_b, 0)``; ``α, β`` (and ``p, q``) mapped log-sigmoidally
    into ``width_bounds_px2`` (``shape_bounds``). Width bounds keep the ω → 0
    normalisation identifiable: ω = 0 is excluded (the mean is removed), so a Lorentzian
    narrower than the first frequency bins would act as a free scale factor.

    Leakage: a crop is not periodic, so its periodogram's expectation is ``S`` convolved
    with the window's spectral kernel. The periodogram is divided by the exact ratio
    ``E[P]/S`` at the current estimate and the fits are polished, ``debias_iterations``
    times (debiased Whittle, Sykulski et al. 2019).

    Scale: the spectrum shows ``s`` only through its lowest bins, so ``s`` and the MTF
    below them are confounded (the camera tables fall 3-10% below 0.025 cycles/px; with
    16 crops of 256² a model free to follow that knows ``s`` to 6-10%, stiffer models
    put it 4-15% low). Poisson statistics are not confounded: with
    ``poisson_skewness`` the crops whitened by their spectrum give ``s`` from the
    count lattice of the whitened values (0.02% at 40 e/px, 16 × 256²),
    cross-checked by their skewness (3.6%), combined with the spectrum as an independent
    measurement (:mod:`tem_core.mtf_fit.poisson`, :attr:`MTFFit.poisson`).

    Identifiability: when the white model is chosen, or the fitted noise transfer at
    Nyquist exceeds ``sinc(0.5) = 2/π`` (the pixel aperture alone bounds the signal MTF
    of a pixelated detector below that), the noise is not blurred like the signal, as in
    a counting camera. A warning names the cause, the result has ``identifiable=False``
    and its :meth:`MTFFit.mtf` raises; :meth:`MTFFit.noise_transfer` and the gain remain.
    Fits that the data do not pin down (a width at its bound, MTF standard errors above
    10%, a singular Fisher information) also warn.

    Parameters
    ----------
    crops
        ``(B, M, N)`` or ``(M, N)`` background crops [counts].
    generator
        Random generator for the optional random restarts (CPU).
    n_restarts
        Random starts added to the deterministic grid (default none).
    model
        ``"auto"`` (choice by the data), ``"white"``, ``"lorentzian"``, ``"shaped"`` or
        ``"spline"``. A fixed model is still compared with the white one for the
        identifiability check.
    gain_counts_per_e, dqe
        When the gain [counts/e] is known, the NPS scale is fixed at its Poisson value
        ``s = gain · mean / dqe`` (``mean`` of the crops) instead of being fitted.
    width_bounds_px2
        ``(lo, hi)`` bounds for α and β [pixel²]; default ``(0.1, (min(M, N)/8)²)``.
    shape_bounds
        ``(lo, hi)`` bounds for p and q.
    frequency_range_cycles_per_px
        ``(f_min, f_max)`` radial frequencies used [cycles/pixel]. Default f_min
        ``1.5 / min(M, N)``; raise it to skip low-frequency specimen signal (Thon rings).
        Default f_max 0.5 (Nyquist; published MTFs stop there).
    taper, detrend
        Passed to :func:`averaged_periodogram` (``detrend="plane"`` for ice gradients).
    debias_iterations
        Leakage corrections (0: plain Whittle).
    max_iter
        L-BFGS iterations of the final polish.
    check_particles
        Run :func:`detect_particles_in_crops` and warn about structured crops.
    poisson_skewness
        Measure the NPS scale a second way, from the crops whitened by their measured
        spectrum (:func:`tem_core.mtf_fit.poisson.poisson_scale`: Poisson noise with a
        fixed gain per electron whitens to a count lattice, fitted by a Poisson–Gaussian
        likelihood, and has skewness ``1/sqrt(N)``), and add it to the likelihood when
        the lattice is there, its ``N`` agrees with the skewness's, and the scale agrees
        with the spectrum's own (that of the spline, whose error is honest) within 3
        combined standard errors. A warning when there is no lattice (a random charge
        per electron, read noise) or they disagree. Ignored when the gain is given.

    Returns
    -------
    MTFFit
        ``method="whittle"``, the chosen model's parameters, ``scale`` = ``s``
        [counts² per bin], the loss history (mean NLL per bin), covariance and standard
        errors (inverse Fisher information), :attr:`MTFFit.model`,
        :attr:`MTFFit.identifiable` and its diagnosis, :attr:`MTFFit.at_bound`.
    """
    x = as_crops(crops)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (the random starts are drawn on the "
            f"CPU), got one on {generator.device}"
        )
    if isinstance(n_restarts, bool) or not isinstance(n_restarts, int) or n_restarts < 0:
        raise ValueError(f"n_restarts must be a non-negative integer, got {n_restarts!r}")
    if n_restarts and generator is None:
        raise ValueError(f"n_restarts = {n_restarts} random starts need a generator")
    if model not in ("auto", *MODELS):
        raise ValueError(f"model must be 'auto' or one of {tuple(MODELS)}, got {model!r}")
    require_noise(x)
    if check_particles:
        detect_particles_in_crops(x, warn=True)
    b, m, n = x.shape
    lo, hi = width_bounds_px2 if width_bounds_px2 is not None else (0.1, (min(m, n) / 8.0) ** 2)
    require_positive("width_bounds_px2", [lo, hi], "px²")
    require_positive("shape_bounds", list(shape_bounds))
    if not (lo < hi and shape_bounds[0] < 1.0 < shape_bounds[1]):
        raise ValueError(
            f"bounds must be increasing and shape_bounds must contain 1, got widths {(lo, hi)}, "
            f"shapes {shape_bounds}"
        )
    f_min, f_max = frequency_range_cycles_per_px
    f_min = 1.5 / min(m, n) if f_min is None else f_min
    f_max = 0.5 if f_max is None else f_max
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
        raise ValueError(
            f"only {int(mask.sum())} frequency bins in ({f_min}, {f_max}) cycles/px for crops of "
            f"{m} x {n} px; at least 20 are needed (use larger crops or a wider range)"
        )
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
    )

    def build(ratio: torch.Tensor | None, name: str) -> WhittleProblem:
        power = periodogram if ratio is None else periodogram / ratio
        return WhittleProblem.build(power[:, half], radius, weight, mask, b, model=name, **settings)

    allowed = list(MODELS) if model == "auto" else ["white", model]
    allowed = list(dict.fromkeys(allowed))
    state: dict[str, tuple[torch.Tensor, list[float]]] = {}
    for name in allowed:
        problem = build(None, name)
        extra = (
            []
            if name == "spline"
            else [random_start(problem, generator) for _ in range(n_restarts)]
        )
        if name == "shaped" and "lorentzian" in state:
            lorentz = build(None, "lorentzian").natural(state["lorentzian"][0])
            extra.append(problem.unconstrained({k: float(v) for k, v in lorentz.items()}))
        if name == "spline":
            extra = [spline_start(problem)]
            for parametric in ("shaped", "lorentzian"):
                if parametric in state:
                    fitted = build(None, parametric).natural(state[parametric][0])
                    knots = torch.tensor(SPLINE_KNOTS, dtype=torch.float64)
                    g = -torch.log(build(None, parametric).transfer(fitted, knots))
                    extra.append(problem.unconstrained({"g": g, "s": float(fitted["s"])}))
                    break
        state[name] = optimise(problem, extra_starts=extra, max_iter=max_iter)
    # leakage from the most flexible parametric model (the spline's ends are less stable)
    largest = next((m for m in ("shaped", "lorentzian") if m in allowed), allowed[-1])
    for _ in range(debias_iterations):  # fixed point: leakage ratio at the current estimate
        params = build(None, largest).natural(state[largest][0])
        ratio = leakage_ratio(build(None, largest), params, (m, n), taper)
        for name in allowed:
            problem = build(ratio, name)
            if name == "white":
                state[name] = optimise(problem)
                continue
            u, history = lbfgs(problem, state[name][0], max_iter)
            if value(problem, u) <= value(problem, state[name][0]):
                state[name] = (u, state[name][1] + history)
        problems = {name: build(ratio, name) for name in allowed}
    if debias_iterations == 0:
        problems = {name: build(None, name) for name in allowed}
    for name in allowed:  # L-BFGS stalls in the flat scale/low-frequency valley: Newton
        if name != "white":
            u = newton(problems[name], state[name][0])
            state[name] = (u, state[name][1] + [value(problems[name], u)])

    window = taper_window((m, n), taper=taper, dtype=torch.float64)
    inflation = taper_variance_factor(window)
    poisson, poisson_note = None, ""
    if poisson_skewness and fixed_scale is None and largest != "white":
        poisson, poisson_note = agreeing_poisson_scale(
            x, periodogram, problems, state, largest, allowed, inflation, detrend
        )
        if poisson is not None:  # one more datum: the same for every model (fair AIC)
            prior = (math.log(poisson.scale), poisson.relative_se / math.sqrt(inflation))
            for name in allowed:
                problem = problems[name] = problems[name].with_scale_prior(prior)
                u, history = lbfgs(problem, state[name][0], max_iter)
                if name != "white":
                    u = newton(problem, u)
                # a new objective: the history restarts with it
                state[name] = (u, history + [value(problem, u)])
    nll = {}
    for name in allowed:
        with torch.no_grad():
            total = problems[name].total_nll(problems[name].natural(state[name][0]))
        nll[name] = float(total) / inflation
    n_bins = float(problems[allowed[0]].count.sum()) / inflation
    candidates, note = list(allowed), ""
    if model == "auto":  # the spline only where the data pin it down
        spline = problems["spline"]
        p_spline = {k: v.detach() for k, v in spline.natural(state["spline"][0]).items()}
        cov_s, names_s = fisher_covariance(spline, p_spline, inflation)
        trial = MTFFit(
            method="whittle",
            params={f"g{i}": float(v) for i, v in enumerate(p_spline["g"])},
            scale=float(p_spline["s"]),
            covariance=cov_s,
            covariance_names=names_s,
        )
        rel = _relative_error(trial)
        if rel is None or rel > SPLINE_MAX_RELATIVE_ERROR:
            candidates.remove("spline")
            shown = "undetermined" if rel is None else f"{rel:.1%}"
            note = f"; the spline was not considered (MTF standard error {shown})"
    choice = _choose({m: nll[m] for m in candidates}, n_bins, candidates)
    note += poisson_note
    if note:
        choice = ModelChoice(**{**choice.__dict__, "reason": choice.reason + note})
    problem = problems[choice.chosen]
    u, history = state[choice.chosen]
    params = {k: v.detach() for k, v in problem.natural(u).items()}
    if "g" in params:
        params.update({f"g{i}": v for i, v in enumerate(params.pop("g"))})
    elif params["alpha"] > params["beta"]:  # canonical order α ≤ β
        params["a"], params["b"] = params["b"], params["a"]
        params["alpha"], params["beta"] = params["beta"], params["alpha"]
        params["p"], params["q"] = params["q"], params["p"]
    cov, names = fisher_covariance(problem, params, inflation)
    fit = MTFFit(
        method="whittle",
        params={k: float(v) for k, v in params.items() if k != "s"},
        scale=float(params["s"]),
        loss_history=tuple(history),
        final_loss=value(problem, u),
        covariance=cov,
        covariance_names=names,
        model=choice,
        at_bound=_at_bound({k: float(v) for k, v in params.items()}, problem),
        poisson=poisson,
        refit_settings=dict(
            shape=tuple(x.shape),
            mean_counts=float(x.mean()),
            model=choice.chosen,
            gain_counts_per_e=gain_counts_per_e,
            dqe=dqe,
            width_bounds_px2=(lo, hi),
            shape_bounds=tuple(shape_bounds),
            frequency_range_cycles_per_px=tuple(frequency_range_cycles_per_px),
            taper=taper,
            detrend=detrend,
            debias_iterations=debias_iterations,
            max_iter=max_iter,
            check_particles=False,
            poisson_skewness=poisson_skewness,
        ),
    )
    diagnosis = _diagnose(fit, choice, f_max)
    if diagnosis:
        warnings.warn(
            f"MTF not identifiable from noise: {diagnosis} The result reports the noise "
            "transfer (fit.noise_transfer) and the gain, not an MTF; use a signal-based "
            "estimate such as fit_mtf_edge for the MTF.",
            UserWarning,
            stacklevel=2,
        )
        level = _white_noise_level(problem)
        return MTFFit(
            **{
                **fit.__dict__,
                "identifiable": False,
                "diagnosis": diagnosis,
                "white_noise_level": level,
            }
        )
    for message in _precision_warnings(fit, problem, f_max):
        warnings.warn(
            f"MTF poorly determined by {b} crop(s) of {m} x {n} px: {message}.",
            UserWarning,
            stacklevel=2,
        )
    return fit
