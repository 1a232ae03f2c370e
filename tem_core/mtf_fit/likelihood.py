"""Whittle likelihood of a background's noise spectrum under three nested models.

``S(ω) = s · T²(|ω|)`` with the noise transfer ``T`` from
:func:`tem_core.detector.mtf_parametric` (``a + b + c = 1``):

* ``"white"``: ``T = 1`` (parameter ``s``);
* ``"lorentzian"``: ``p = q = 1`` (``a, b, α, β, s``);
* ``"shaped"``: ``p, q`` fitted as well (``a, b, α, β, p, q, s``);
* ``"spline"``: ``T = exp(−g(ω))`` with ``g`` quadratic up to the first knot, then
  piecewise linear between fixed knots (:data:`SPLINE_KNOTS`), ``g(0) = 0`` and
  non-decreasing (a monotone MTF, smooth at ``ω = 0``), for curves the
  parametric family cannot follow (``g`` at the knots, and ``s``).

Each model is optimised by L-BFGS in unconstrained coordinates from a deterministic grid
of starting points (the best few of the grid by likelihood, with ``s`` profiled out), so
the result does not depend on a random seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from tem_core._fft import fft2, ifft2
from tem_core.detector import mtf_parametric, radial_frequency_cycles_per_px

#: Knots of the spline model's ``g(ω) = −log T(ω)`` [cycles/px] (``g(0) = 0``; flat beyond).
SPLINE_KNOTS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)

#: Noise-spectrum models, smallest first, and their numbers of free parameters.
MODELS = {"white": 1, "lorentzian": 5, "shaped": 7, "spline": len(SPLINE_KNOTS) + 1}


def spline_transfer(omega: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``exp(−g(|ω|))``: ``g = g₀ (ω/ω₀)²`` up to the first knot ``ω₀``, then linear between
    ``(SPLINE_KNOTS, g)``, flat beyond.

    The quadratic start makes the MTF even and smooth at ``ω = 0``, as the transform of
    any point spread function with a finite second moment is (``1 − 2π²σ²ω²``); a linear
    start (a cusp) extrapolates the NPS scale from the first bins along a straight line
    and put it 7.7% high on the noise-free Falcon 2 spectrum (quadratic: 1.7% low).
    """
    knots = torch.tensor((0.0, *SPLINE_KNOTS), dtype=omega.dtype, device=omega.device)
    values = torch.cat([torch.zeros(1, dtype=g.dtype, device=g.device), g.to(omega.device)])
    x = omega.abs().clamp(max=knots[-1])
    idx = torch.searchsorted(knots, x.contiguous(), right=True).clamp(1, knots.numel() - 1)
    x0, x1 = knots[idx - 1], knots[idx]
    t = (x - x0) / (x1 - x0)
    t = torch.where(idx == 1, t * t, t)  # quadratic first segment: g(0) = g'(0) = 0
    return torch.exp(-(values[idx - 1] + t * (values[idx] - values[idx - 1])))


def _sigmoid_range(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map ℝ → (low, high) on a log scale."""
    return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.sigmoid(u))


def _inverse_sigmoid_range(value: float, low: float, high: float) -> float:
    t = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    t = min(max(t, 1e-6), 1.0 - 1e-6)
    return math.log(t / (1.0 - t))


@dataclass(frozen=True)
class WhittleProblem:
    """Whittle NLL grouped by distinct radial frequency (exact for a radial model)."""

    omega: torch.Tensor  # (R,) distinct radial frequencies of the bins used [cycles/px]
    power: torch.Tensor  # (R,) weighted mean periodogram over the bins at that radius
    count: torch.Tensor  # (R,) number of independent bins × crops at that radius
    width_bounds: tuple[float, float]
    shape_bounds: tuple[float, float]
    model: str = "lorentzian"
    fixed_scale: float | None = None  # s known from the gain (Poisson: s = gain · mean)
    # an independent measurement of s: (log s0, standard error of log s), e.g. the Poisson
    # skewness (:mod:`tem_core.mtf_fit.poisson`); adds a Gaussian term in log s to the NLL
    scale_prior: tuple[float, float] | None = None

    @staticmethod
    def build(
        power_half: torch.Tensor,
        radius_half: torch.Tensor,
        weight_half: torch.Tensor,
        mask: torch.Tensor,
        n_crops: int,
        **kwargs: Any,
    ) -> WhittleProblem:
        radii, inverse = torch.unique(radius_half[mask], return_inverse=True)
        w = weight_half[mask] * n_crops
        count = torch.zeros_like(radii).index_add_(0, inverse, w)
        power = torch.zeros_like(radii).index_add_(0, inverse, w * power_half[mask]) / count
        return WhittleProblem(omega=radii, power=power, count=count, **kwargs)

    def with_model(self, model: str) -> WhittleProblem:
        return replace(self, model=model)

    def with_scale_prior(self, prior: tuple[float, float] | None) -> WhittleProblem:
        return replace(self, scale_prior=prior)

    @property
    def n_shape(self) -> int:
        """Unconstrained coordinates before ``u_s``."""
        return MODELS[self.model] - 1

    def natural(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained vector → (a, b, c with a+b+c = 1, α, β, p, q, s)."""
        one = torch.ones((), dtype=u.dtype)
        lo, hi = self.width_bounds
        if self.model == "spline":
            g = torch.cumsum(torch.nn.functional.softplus(u[:-1]), dim=0)
            s = torch.exp(u[-1]) if self.fixed_scale is None else self.fixed_scale * one
            return {"g": g, "s": s}
        if self.model == "white":
            out = {"a": 0 * one, "b": 0 * one, "c": one, "alpha": lo * one, "beta": hi * one}
        else:
            weights = torch.softmax(torch.cat([u[0:2], torch.zeros(1, dtype=u.dtype)]), dim=0)
            out = {
                "a": weights[0],
                "b": weights[1],
                "c": weights[2],
                "alpha": _sigmoid_range(u[2], lo, hi),
                "beta": _sigmoid_range(u[3], lo, hi),
            }
        if self.model == "shaped":
            out["p"] = _sigmoid_range(u[4], *self.shape_bounds)
            out["q"] = _sigmoid_range(u[5], *self.shape_bounds)
        else:
            out["p"] = out["q"] = one
        out["s"] = torch.exp(u[-1]) if self.fixed_scale is None else self.fixed_scale * one
        return out

    def unconstrained(self, params: dict[str, float]) -> torch.Tensor:
        """Inverse of :meth:`natural` (``s`` from ``params["s"]``)."""
        u: list[float] = []
        if self.model == "spline":
            g = [float(v) for v in params["g"]]
            steps = torch.tensor(g, dtype=torch.float64).diff(prepend=torch.zeros(1))
            steps = steps.clamp_min(1e-6)
            u = (steps + torch.log(-torch.expm1(-steps))).tolist()  # inverse softplus
            return torch.tensor(u + [math.log(params["s"])], dtype=torch.float64)
        if self.model != "white":
            c = max(params["c"], 1e-9)
            u += [math.log(max(params["a"], 1e-9) / c), math.log(max(params["b"], 1e-9) / c)]
            u += [_inverse_sigmoid_range(params[k], *self.width_bounds) for k in ("alpha", "beta")]
        if self.model == "shaped":
            u += [_inverse_sigmoid_range(params[k], *self.shape_bounds) for k in ("p", "q")]
        return torch.tensor(u + [math.log(params["s"])], dtype=torch.float64)

    def transfer(self, params: dict[str, torch.Tensor], omega: torch.Tensor | None = None):
        omega = self.omega if omega is None else omega
        if self.model == "spline":
            return spline_transfer(omega, params["g"])
        keys = ("a", "b", "c", "alpha", "beta", "p", "q")
        return mtf_parametric(omega, **{k: params[k] for k in keys})

    def spectrum(self, params: dict[str, torch.Tensor], omega: torch.Tensor | None = None):
        return params["s"] * self.transfer(params, omega) ** 2

    def total_nll(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_crops Σ_ω [log S + P/S]`` over independent bins (for the Hessian).

        With :attr:`scale_prior` ``(μ, σ)``: plus ``(log s − μ)² / (2σ²)``."""
        s = self.spectrum(params)
        total = (self.count * (torch.log(s) + self.power / s)).sum()
        if self.scale_prior is not None and self.fixed_scale is None:
            centre, sd = self.scale_prior
            total = total + 0.5 * ((torch.log(params["s"]) - centre) / sd) ** 2
        return total

    def mean_nll(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Whittle negative log-likelihood per independent bin (the optimised objective)."""
        return self.total_nll(params) / self.count.sum()

    def profiled_scale(self, params: dict[str, torch.Tensor]) -> float:
        """The ``s`` that minimises the NLL for the shape of ``params``."""
        t2 = self.transfer(params) ** 2
        return float((self.count * self.power / t2).sum() / self.count.sum())


def spline_start(problem: WhittleProblem) -> torch.Tensor:
    """Data-driven start of the spline model: ring means of the periodogram at the knots."""
    knots = torch.tensor((0.0, *SPLINE_KNOTS), dtype=torch.float64)
    lowest = problem.omega <= max(float(problem.omega.min()) * 2.0, knots[1] / 2)
    s = float((problem.count * problem.power)[lowest].sum() / problem.count[lowest].sum())
    s = problem.fixed_scale if problem.fixed_scale is not None else s
    g = []
    for k in SPLINE_KNOTS:
        ring = (problem.omega - k).abs() <= 0.0125
        if not bool(ring.any()):
            ring = (problem.omega - k).abs() == (problem.omega - k).abs().min()
        mean = float((problem.count * problem.power)[ring].sum() / problem.count[ring].sum())
        g.append(max(-0.5 * math.log(max(mean / s, 1e-12)), g[-1] if g else 0.0))
    return problem.unconstrained({"g": torch.tensor(g, dtype=torch.float64), "s": s})


def lag_weights(n: int, taper: str | None) -> torch.Tensor:
    """Normalised window autocorrelation ``Σ_t w_t w_{t+τ} / Σ w²`` at lags in FFT order (2n)."""
    w = (
        torch.ones(n, dtype=torch.float64)
        if taper is None
        else torch.hann_window(n, periodic=False, dtype=torch.float64)
    )
    rho = torch.fft.ifft(torch.fft.fft(w, n=2 * n).abs() ** 2).real
    return rho / (w**2).sum()


def leakage_ratio(
    problem: WhittleProblem,
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
        lags = lag_weights(m, taper)[:, None] * lag_weights(n, taper)[None, :]
        expected = fft2(cov * lags).real[::2, ::2]
        coarse = radial_frequency_cycles_per_px((m, n), dtype=torch.float64)
        return expected / problem.spectrum(params, coarse)


def _grid(problem: WhittleProblem) -> list[dict[str, float]]:
    """Deterministic starting points covering weights, widths and shapes."""
    lo, hi = problem.width_bounds
    span = math.log(hi / lo)
    widths = [lo * math.exp(span * t) for t in (0.15, 0.4, 0.65)]
    pairs = [(w, min(w * f, hi * 0.9)) for w in widths for f in (8.0, 60.0) if w * f < hi]
    weights = [(0.6, 0.3, 0.1), (0.3, 0.6, 0.1), (0.45, 0.45, 0.1), (0.35, 0.35, 0.3)]
    shapes = [(1.0, 1.0)]
    if problem.model == "shaped":
        p_lo, p_hi = problem.shape_bounds
        inside = [(p, q) for p, q in itertools.product((0.5, 1.0, 2.0), repeat=2)]
        shapes = [(p, q) for p, q in inside if p_lo < p < p_hi and p_lo < q < p_hi]
    starts = []
    for (a, b, c), (alpha, beta), (p, q) in itertools.product(weights, pairs, shapes):
        starts.append(dict(a=a, b=b, c=c, alpha=alpha, beta=beta, p=p, q=q, s=1.0))
    return starts


def _with_scale(problem: WhittleProblem, start: dict[str, float]) -> dict[str, float]:
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in start.items()}
    s = problem.fixed_scale if problem.fixed_scale is not None else problem.profiled_scale(params)
    return {**start, "s": s}


def lbfgs(problem: WhittleProblem, u0: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, list]:
    """L-BFGS (strong Wolfe) on the mean NLL from ``u0``; returns ``u`` and the loss history."""
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


def newton(problem: WhittleProblem, u: torch.Tensor, n_iter: int = 15) -> torch.Tensor:
    """Damped Newton (Levenberg-Marquardt) steps on the total NLL from ``u``.

    L-BFGS stalls in the flat valley between the NPS scale and the low-frequency MTF
    (changes of 1e-6 nats per bin); exact second derivatives cross it in a few steps.
    """
    scale = float(problem.count.sum())

    def f(v: torch.Tensor) -> torch.Tensor:
        return problem.mean_nll(problem.natural(v)) * scale

    current = value(problem, u) * scale
    damping = 1e-3
    for _ in range(n_iter):
        v = u.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(v), v)
        hess = torch.autograd.functional.hessian(f, u)
        if not bool(torch.isfinite(hess).all() and torch.isfinite(grad).all()):
            break
        improved = False
        for _ in range(12):
            eye = torch.eye(u.numel(), dtype=u.dtype)
            diag = hess.diagonal().abs().clamp_min(1e-12)
            try:
                step = torch.linalg.solve(hess + damping * torch.diag(diag) + 1e-12 * eye, -grad)
            except RuntimeError:
                damping *= 10
                continue
            trial = u + step
            new = value(problem, trial) * scale
            if new < current:
                improved = current - new > 1e-9
                u, current = trial, new
                damping = max(damping / 10, 1e-9)
                break
            damping *= 10
        if not improved:
            break
    return u


def value(problem: WhittleProblem, u: torch.Tensor) -> float:
    """Mean NLL at ``u`` (``inf`` when not finite)."""
    with torch.no_grad():
        v = float(problem.mean_nll(problem.natural(u)))
    return v if math.isfinite(v) else math.inf


def optimise(
    problem: WhittleProblem,
    *,
    extra_starts: list[torch.Tensor] = (),
    n_best: int = 6,
    max_iter: int = 200,
) -> tuple[torch.Tensor, list[float]]:
    """Best optimum from the deterministic grid (its ``n_best`` best points) and ``extra_starts``.

    Returns the unconstrained optimum and the loss history of the winning run.
    """
    if problem.model == "white":
        s = problem.fixed_scale
        s = float((problem.count * problem.power).sum() / problem.count.sum()) if s is None else s
        u = torch.tensor([math.log(s)], dtype=torch.float64)
        return u, [value(problem, u)]
    ranked: list[torch.Tensor] = []
    if problem.model != "spline":
        candidates = [problem.unconstrained(_with_scale(problem, st)) for st in _grid(problem)]
        ranked = sorted(candidates, key=lambda u: value(problem, u))[:n_best]
    best: tuple[float, torch.Tensor, list[float]] | None = None
    for u0 in ranked + list(extra_starts):  # short runs, then polish the best
        u, history = lbfgs(problem, u0, min(max_iter, 40))
        v = value(problem, u)
        if math.isfinite(v) and (best is None or v < best[0]):
            best = (v, u, history)
    if best is None:
        raise RuntimeError("every Whittle start diverged (non-finite likelihood)")
    u, history = lbfgs(problem, best[1], max_iter)
    if value(problem, u) > best[0]:
        return best[1], best[2]
    return u, best[2] + history


def fisher_covariance(
    problem: WhittleProblem, params: dict[str, torch.Tensor], inflation: float
) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """Covariance of (a, b, α, β, [p, q], s) (or g0…, s) from the Whittle Fisher information.

    Each independent bin of the averaged periodogram is ``S(ω)`` times a Gamma(B, B)
    variate, so the expected Hessian of the total NLL is
    ``I = Σ_ω count(ω) · ∇log S(ω) ∇log S(ω)ᵀ`` (``count``: independent bins × crops at
    that radius), the inverse of the asymptotic covariance. Unlike the observed Hessian it
    does not contain the term ``Σ count (1 − P/S) ∇²log S``, which is noise at an interior
    optimum but not at a bounded one (a weight at 0, a width at its bound): for
    TEM-simulator's detector the observed Hessian gave errors 2.4-3.4 times too small
    (8 crops of 128², c = 0) or was not positive definite (32 crops). ``c = 1 − a − b``
    is dependent. The tapered periodogram's variance inflation multiplies the
    covariance. ``None`` when ``I`` is singular (e.g. a weight at 0 leaves its width
    undetermined).
    """
    names: tuple[str, ...] = ()
    if problem.model == "spline":
        names = tuple(f"g{i}" for i in range(len(SPLINE_KNOTS)))
    elif problem.model != "white":
        names = ("a", "b", "alpha", "beta") + (("p", "q") if problem.model == "shaped" else ())
    names += ("s",) if problem.fixed_scale is None else ()
    if not names:
        return None, names
    flat = {k: v.detach() for k, v in params.items()}
    if "g" in flat:
        flat.update({f"g{i}": v for i, v in enumerate(flat.pop("g"))})
    phi0 = torch.stack([flat[k] for k in names])

    def log_spectrum(phi: torch.Tensor) -> torch.Tensor:
        values = dict(flat)
        values.update(dict(zip(names, phi, strict=True)))
        if problem.model == "spline":
            values["g"] = torch.stack([values.pop(f"g{i}") for i in range(len(SPLINE_KNOTS))])
        elif problem.model != "white":
            values["c"] = 1.0 - values["a"] - values["b"]
        return torch.log(problem.spectrum(values))

    try:
        jac = torch.autograd.functional.jacobian(log_spectrum, phi0)  # (R, P)
        info = jac.T @ (problem.count[:, None] * jac)
        if problem.scale_prior is not None and "s" in names:  # the independent measurement
            i = names.index("s")  # of log s adds 1/(s σ)² to the information about s
            info[i, i] += 1.0 / (float(flat["s"]) * problem.scale_prior[1]) ** 2
        info = 0.5 * (info + info.T)
        chol = torch.linalg.cholesky(info)
        cov = torch.cholesky_inverse(chol) * inflation
    except (RuntimeError, ValueError):  # singular, or a parameter outside its domain
        return None, names
    if not bool(torch.isfinite(cov).all()):
        return None, names
    return cov, names


def random_start(problem: WhittleProblem, generator: torch.Generator) -> torch.Tensor:
    """A random start: weights ~ softmax(N(0, 1)), widths log-uniform, shapes log-normal."""
    g = generator
    lo, hi = problem.width_bounds

    def log_uniform() -> float:
        return math.exp(math.log(lo) + math.log(hi / lo) * float(torch.rand((), generator=g)))

    w = torch.softmax(torch.cat([torch.randn(2, generator=g), torch.zeros(1)]), dim=0)
    alpha, beta = sorted((log_uniform(), log_uniform()))
    start = dict(a=float(w[0]), b=float(w[1]), c=float(w[2]), alpha=alpha, beta=beta)
    start["p"], start["q"] = (math.exp(0.5 * float(torch.randn((), generator=g))) for _ in range(2))
    start["p"] = min(
        max(start["p"], problem.shape_bounds[0] * 1.01), problem.shape_bounds[1] / 1.01
    )
    start["q"] = min(
        max(start["q"], problem.shape_bounds[0] * 1.01), problem.shape_bounds[1] / 1.01
    )
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in start.items()}
    start["s"] = problem.fixed_scale or problem.profiled_scale({**params, "s": params["a"]})
    return problem.unconstrained(start)
