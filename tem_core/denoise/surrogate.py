"""The published diff-tem denoiser: fit Poisson rates through the shot noise.

Nguyen et al. (diff-tem, the seed paper, Eq. 3; code ``nanovis/diff-tem-release``,
``run_denoising_experiments.py``, MIT) recover a noise-free detector image from ``n`` noisy
projections of one view without ever differentiating a Poisson sample: the unknown is one
per-pixel image ``Ĩ`` per tilt, the *pre-MTF expected electrons*, and each optimiser step

1. draws ``S = 50`` samples ``k_s ~ Poisson(|Ĩ|)`` and blurs them, ``I_s = gain · MTF(k_s)``
   (:func:`tem_core.detector.apply_mtf`);
2. min-max normalises predictions ``I_s`` and references (the ``n`` measured projections,
   tiled up to ``S``) per image, the extremes detached (:func:`metrics.normalise_minmax`);
3. forms the per-pixel squared error ``se = (ref − pred)²``, a per-image baseline
   ``b = mean(se)`` (detached), and the surrogate loss
   ``mean_{tilts, samples, pixels} (se − b) · log P(k | |Ĩ|)``;
4. takes an Adam step (lr 1.0, betas (0.8, 0.992)).

The output is ``gain · MTF(|Ĩ|)``. The release draws ``Ĩ`` as a complex ``rand × 30`` and
uses ``|Re Ĩ|`` as the rate; the imaginary part never reaches the loss, so here ``Ĩ`` is a
real tensor uniform in ``[0, 30)`` with rate ``|Ĩ|`` (the same optimisation). The
iteration count is not published: :data:`DEFAULT_ITERATIONS` was read off the convergence
curve of ``benchmarks/denoise.py``.

**Bias.** Multiplying the squared error of pixel ``j`` by the log-probability of pixel ``j``
alone ignores that ``se_j`` also depends on the counts of the neighbouring pixels (through
the MTF) and of all pixels (through the normalisation extremes), and the baseline ``b`` is
computed from the same sample: the gradient is not that of any expected loss, i.e. a
biased estimator. It is kept as published (``estimator="published"``). Two alternatives:

* ``"unbiased"``: the whole-image loss ``f_s = mean(se)`` of each sample times the summed
  log-probability, with the leave-one-out baseline of
  :func:`tem_core.estimators.score_function_surrogate`: an unbiased estimator of
  ``∇ E[f]``, but with the variance of a 10⁵-pixel score function;
* ``"pathwise"``: a Gaussian relaxation ``k̃ = λ + √λ ε``
  (:func:`tem_core.estimators.pathwise_poisson_sample`) differentiated directly
  (unbiased for the squared error up to the detached normalisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tem_core.denoise._validate import (
    check_detector,
    check_generator,
    check_image_stack,
    check_positive_counts,
    transfer_function,
)
from tem_core.denoise.metrics import normalise_minmax
from tem_core.detector import Detector, apply_mtf, poisson_log_prob
from tem_core.estimators import pathwise_poisson_sample, score_function_surrogate
from tem_core.validation import require_positive, require_positive_int

__all__ = [
    "DEFAULT_ITERATIONS",
    "ESTIMATORS",
    "SurrogateResult",
    "SurrogateSettings",
    "denoise_surrogate",
]

#: Gradient estimators offered by :func:`denoise_surrogate`.
ESTIMATORS = ("published", "unbiased", "pathwise")
#: Iterations used by default (read off the convergence curve, see the module docstring).
DEFAULT_ITERATIONS = 150


@dataclass(frozen=True, kw_only=True)
class SurrogateSettings:
    """Settings of the published denoiser (defaults: the release's values).

    Parameters
    ----------
    n_iterations
        Adam steps.
    n_samples
        Poisson samples per step (the references are tiled up to this number).
    learning_rate, betas
        Adam's step size [counts] and moment decay rates.
    init_max_counts
        ``Ĩ`` starts uniform in ``[0, init_max_counts)`` [electrons/pixel].
    estimator
        One of :data:`ESTIMATORS`.
    """

    n_iterations: int = DEFAULT_ITERATIONS
    n_samples: int = 50
    learning_rate: float = 1.0
    betas: tuple[float, float] = (0.8, 0.992)
    init_max_counts: float = 30.0
    estimator: str = "published"

    def __post_init__(self) -> None:
        require_positive_int("n_iterations", self.n_iterations)
        require_positive_int("n_samples", self.n_samples)
        require_positive("learning_rate", self.learning_rate, "counts")
        require_positive("init_max_counts", self.init_max_counts, "counts")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.estimator == "unbiased" and self.n_samples < 2:
            raise ValueError(
                f"n_samples must be >= 2 for the leave-one-out baseline, got {self.n_samples}"
            )


@dataclass(frozen=True, eq=False)
class SurrogateResult:
    """``denoised``: ``gain · MTF(|Ĩ|)`` [counts], ``(..., ny, nx)``; ``rate``: ``|Ĩ|``
    [electrons/pixel]; ``objective``: mean squared error between the normalised references
    and predictions at each step, ``(n_iterations,)``."""

    denoised: torch.Tensor
    rate: torch.Tensor
    objective: torch.Tensor


def _tile(refs: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``(T, n, ny, nx)`` references repeated along ``n`` up to ``n_samples`` (the release
    repeats ``n_samples // n`` times; here the last repeat is cut when ``n`` does not divide)."""
    reps = -(-n_samples // refs.shape[1])
    return refs.repeat(1, reps, 1, 1)[:, :n_samples]


def _step_loss(
    rate: torch.Tensor,
    ref: torch.Tensor,
    *,
    gain: torch.Tensor,
    mtf: torch.Tensor | None,
    settings: SurrogateSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Surrogate loss and the mean squared error of one step; ``rate`` is ``(T, ny, nx)``."""
    n_t, n_s = ref.shape[:2]
    lam = rate.abs()
    shape = (n_t, n_s) + tuple(rate.shape[-2:])

    def blur(k: torch.Tensor) -> torch.Tensor:
        return gain * (apply_mtf(k, mtf) if mtf is not None else k)

    if settings.estimator == "pathwise":
        k = pathwise_poisson_sample(lam[:, None].expand(shape), generator=generator)
        se = (ref - normalise_minmax(blur(k))) ** 2
        return se.mean(), se.detach().mean()
    k = torch.poisson(lam.detach()[:, None].expand(shape).contiguous(), generator=generator)
    se = (ref - normalise_minmax(blur(k))) ** 2
    if settings.estimator == "published":
        baseline = se.mean(dim=(-2, -1), keepdim=True)
        loss = ((se - baseline) * poisson_log_prob(k, lam[:, None])).mean()
        return loss, se.mean()
    per_sample = se.mean(dim=(-2, -1))  # (T, S): whole-image loss of each sample
    loss = sum(
        score_function_surrogate(per_sample[t], k[t], lam[t], baseline="mean") for t in range(n_t)
    )
    return loss / n_t, se.mean()


def denoise_surrogate(
    projections: torch.Tensor,
    *,
    detector: Detector,
    generator: torch.Generator,
    settings: SurrogateSettings | None = None,
    mtf: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> SurrogateResult:
    """Denoise with the published surrogate-loss method (or its unbiased / pathwise forms).

    Parameters
    ----------
    projections
        ``(n, ny, nx)`` noisy projections of one view or ``(T, n, ny, nx)`` for ``T`` tilts
        (detector counts, e.g. :func:`tem_core.detector.detect`) [counts]. ``n = 1`` works
        (the single reference is tiled), as in the release. For real tilt series (the
        paper's Algorithm 2) pass the aligned neighbours
        (:func:`tem_core.denoise.neighbour_references`).
    detector
        Gain and MTF of the camera (noise before MTF, as in the simulator).
    generator
        Source of the Poisson samples and of the initial ``Ĩ`` (on the projections' device).
    settings
        :class:`SurrogateSettings` (default: the published values).
    mtf
        ``(ny, nx)`` MTF in FFT order overriding the detector's (optional).
    callback
        Called as ``callback(iteration, denoised)`` after every step (convergence curves).

    Returns
    -------
    SurrogateResult
        ``denoised`` has shape ``(ny, nx)`` or ``(T, ny, nx)``.
    """
    settings = SurrogateSettings() if settings is None else settings
    if not isinstance(settings, SurrogateSettings):
        raise TypeError(f"settings must be SurrogateSettings, got {type(settings).__name__}")
    projections = check_image_stack("projections", projections)
    check_positive_counts("projections", projections)
    if projections.ndim > 4:
        raise ValueError(
            f"projections must have shape (n, ny, nx) or (T, n, ny, nx), "
            f"got {tuple(projections.shape)}"
        )
    detector = check_detector(detector)
    generator = check_generator(generator, projections)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(iteration, image), got {type(callback)}")
    single = projections.ndim == 3
    refs = (projections[None] if single else projections).detach()
    shape = tuple(refs.shape[-2:])
    mtf_t = transfer_function(detector, shape, refs, mtf, invert=False)
    gain = torch.as_tensor(detector.gain_counts_per_e, device=refs.device, dtype=refs.dtype)
    ref = normalise_minmax(_tile(refs, settings.n_samples))

    init = torch.rand(
        (refs.shape[0],) + shape, generator=generator, device=refs.device, dtype=refs.dtype
    )
    rate = (init * settings.init_max_counts).requires_grad_(True)
    optimiser = torch.optim.Adam([rate], lr=settings.learning_rate, betas=settings.betas)
    objective = torch.empty(settings.n_iterations, dtype=refs.dtype, device=refs.device)

    def output() -> torch.Tensor:
        lam = rate.detach().abs()
        return gain * (apply_mtf(lam, mtf_t) if mtf_t is not None else lam)

    for it in range(settings.n_iterations):
        optimiser.zero_grad(set_to_none=True)
        loss, value = _step_loss(
            rate, ref, gain=gain, mtf=mtf_t, settings=settings, generator=generator
        )
        loss.backward()
        optimiser.step()
        objective[it] = value
        if callback is not None:
            out = output()
            callback(it, out[0] if single else out)
    denoised, lam = output(), rate.detach().abs()
    if single:
        denoised, lam = denoised[0], lam[0]
    return SurrogateResult(denoised, lam, objective)
