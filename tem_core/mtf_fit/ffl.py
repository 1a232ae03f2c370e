"""The published MTF fit: simulated flat backgrounds vs crops by MSE + focal frequency loss.

Method of DiffTEM (Nguyen et al.; code ``nanovis/diff-tem-release``, notebook
``learn_detector_parameters.ipynb`` and ``run_denoising_experiments.py``), rewritten here:
predictions are flat Poisson images blurred by the MTF with the current parameters, the
labels are background crops of the micrographs, both are min-max normalised to [0, 1]
(the release's ``normalize``: per image, min and max detached), the loss is MSE + focal
frequency loss, and Adam (β = 0.8, 0.992, lr = 0.1) steps the parameters, which start at
random values. Differences from the released notebook, kept as options: it used the
focal frequency loss alone (``mse_weight=0``), no normalisation (``normalise=False``, the
gain then being fitted too), Adam's default betas (0.9, 0.999), and started from the true
values times U(0, 1) (pass ``init``); it kept ``p, q`` and the gain positive with ``abs``
and left ``a, b, c, α, β`` unconstrained. Here every parameter is ``exp`` of a free
variable (positive and smooth).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tem_core._fft import fft2
from tem_core.detector import mtf_parametric, radial_frequency_cycles_per_px
from tem_core.mtf_fit.crops import as_crops, detect_particles_in_crops, require_noise
from tem_core.mtf_fit.result import PARAM_NAMES, MTFFit
from tem_core.mtf_fit.synthetic import simulate_flat_background
from tem_core.validation import (
    refuse_half_precision,
    require_nonnegative,
    require_positive,
    require_positive_int,
    require_same_device,
)


def focal_frequency_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 1.0,
    log_weight: bool = False,
    batch_max: bool = False,
) -> torch.Tensor:
    """Focal frequency loss (Jiang et al. 2021, ICCV; reference package ``focal_frequency_loss``).

    ``F = FFT2(x, norm="ortho")`` of both images, ``d = |F_pred − F_target|²``; the weight
    ``w = d^(α/2)`` (optionally ``log(w + 1)``) is divided by its maximum per image (or over
    the whole batch), NaN set to 0, clamped to [0, 1] and detached; the loss is
    ``mean(w · d)``. With ``α = 0`` every weight is 1 and, by Parseval, the loss equals the
    pixel MSE. Matches ``FocalFrequencyLoss(alpha, log_matrix, batch_matrix)`` with
    ``patch_factor=1, ave_spectrum=False`` on ``(N, C, H, W)`` inputs.

    Parameters
    ----------
    pred, target
        Real images ``(..., H, W)`` of the same shape.
    alpha
        Focusing exponent (≥ 0).
    log_weight
        Use ``log(w + 1)`` before normalising.
    batch_max
        Normalise the weights by the maximum over all images instead of per image.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("pred and target must be torch.Tensor")
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(
            f"pred and target must have the same shape (..., H, W), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    refuse_half_precision("pred", pred)
    refuse_half_precision("target", target)
    require_same_device("target", target, "pred", pred)
    require_nonnegative("alpha", alpha)
    diff = fft2(pred, norm="ortho") - fft2(target, norm="ortho")
    distance = diff.real**2 + diff.imag**2
    with torch.no_grad():
        weight = torch.sqrt(distance) ** alpha
        if log_weight:
            weight = torch.log(weight + 1.0)
        if batch_max:
            weight = weight / weight.max()
        else:
            weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
        weight = torch.nan_to_num(weight, nan=0.0).clamp(0.0, 1.0)
    return torch.mean(weight * distance)


def normalise_min_max(images: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each image ``(..., H, W)`` to [0, 1]; min and max are detached.

    As the released DiffTEM code's ``normalize``: gradients flow through the pixel values,
    not through the extremes.
    """
    lo = images.detach().amin(dim=(-2, -1), keepdim=True)
    hi = images.detach().amax(dim=(-2, -1), keepdim=True)
    return (images - lo) / (hi - lo).clamp_min(torch.finfo(images.dtype).tiny)


def _initial_values(init: dict[str, float] | None, generator: torch.Generator) -> dict[str, float]:
    """Random start: a, b, c ~ U(0.05, 1); α, β log-uniform in [1, 100] px²; p = q = 1."""
    g = generator

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, device=g.device))

    values = {k: uniform(0.05, 1.0) for k in ("a", "b", "c")}
    values.update({k: math.exp(uniform(0.0, math.log(100.0))) for k in ("alpha", "beta")})
    values.update(p=1.0, q=1.0)
    for key, value in (init or {}).items():
        if key not in PARAM_NAMES:
            raise ValueError(f"init has unknown parameter {key!r}; expected some of {PARAM_NAMES}")
        require_positive(f"init[{key!r}]", value)
        values[key] = float(value)
    return values


def fit_mtf_ffl(
    crops: Any,
    *,
    generator: torch.Generator,
    n_steps: int = 200,
    mean_electrons_per_px: float | None = None,
    gain_counts_per_e: float = 1.0,
    alpha: float = 1.0,
    ffl_weight: float = 1.0,
    mse_weight: float = 1.0,
    normalise: bool = True,
    lr: float = 0.1,
    betas: tuple[float, float] = (0.8, 0.992),
    fit_shape: bool = False,
    init: dict[str, float] | None = None,
    dtype: torch.dtype = torch.float32,
    check_particles: bool = True,
) -> MTFFit:
    """Fit the MTF as published: simulated flat backgrounds vs crops, MSE + focal frequency loss.

    At every Adam step, ``B`` flat images with ``N`` expected electrons per pixel are
    sampled (Poisson, with ``generator``), blurred by the MTF with the current parameters
    (:func:`tem_core.detector.mtf_parametric`, :func:`tem_core.detector.apply_mtf`; the
    gradient flows through the blur) and compared with the ``B`` crops:
    ``loss = mse_weight · MSE + ffl_weight · FFL_α`` on min-max normalised images.
    ``alpha = 0`` makes the FFL a plain spectral L2 (equal to the MSE); ``ffl_weight = 0``
    gives MSE alone. All parameters are ``exp`` of free variables.

    The noise in predictions and labels is independent, so the loss cannot match noise
    realisations; its expectation depends on θ only through the spectra, weakly and with
    a bias (see the module docstring of :mod:`tem_core.mtf_fit`).

    Parameters
    ----------
    crops
        ``(B, M, N)`` or ``(M, N)`` background crops (labels) [counts].
    generator
        Random generator for the initial parameters and the Poisson samples (CPU or the
        device to compute on).
    n_steps
        Adam steps.
    mean_electrons_per_px
        Expected electrons per pixel of the flat ice-only image (dose × pixel area)
        [e/pixel]; default: the crops' mean divided by ``gain_counts_per_e``.
    gain_counts_per_e
        Counts per electron of the crops [counts/e] (only sets the default ``N`` and, with
        ``normalise=False``, the initial gain).
    alpha, ffl_weight, mse_weight
        FFL focusing exponent and the weights of the two loss terms (not both 0).
    normalise
        Min-max normalise predictions and labels (default). ``False``: compare counts and
        fit the gain as well.
    lr, betas
        Adam settings (the published 0.1 and (0.8, 0.992)).
    fit_shape
        Also fit ``p, q`` (default: fixed at 1, or at their ``init`` values).
    init
        Starting values for some of ``a, b, c, alpha, beta, p, q`` (positive); the rest are
        random (a, b, c ~ U(0.05, 1), α, β log-uniform in [1, 100] px²).
    dtype
        Floating dtype of the computation.
    check_particles
        Warn when crops appear to contain particles (:func:`detect_particles_in_crops`).

    Returns
    -------
    MTFFit
        ``method="ffl"``; ``a, b, c`` divided by their sum; ``scale`` = fitted gain when
        ``normalise=False``.
    """
    x = as_crops(crops)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    require_positive_int("n_steps", n_steps)
    require_nonnegative("alpha", alpha)
    require_nonnegative("ffl_weight", ffl_weight)
    require_nonnegative("mse_weight", mse_weight)
    if ffl_weight == 0 and mse_weight == 0:
        raise ValueError("ffl_weight and mse_weight are both 0: the loss would be 0")
    require_positive("lr", lr)
    require_positive("gain_counts_per_e", gain_counts_per_e, "counts/e")
    if len(betas) != 2 or not all(0.0 <= float(v) < 1.0 for v in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    require_noise(x)
    if check_particles:
        detect_particles_in_crops(x, warn=True)
    device = generator.device
    labels = x.to(device=device, dtype=dtype)
    if mean_electrons_per_px is None:
        mean_electrons_per_px = float(labels.mean()) / float(gain_counts_per_e)
    require_positive("mean_electrons_per_px", mean_electrons_per_px, "e/px")
    if normalise:
        labels = normalise_min_max(labels)

    start = _initial_values(init, generator)
    trainable = [k for k in PARAM_NAMES if fit_shape or k not in ("p", "q")]
    logs = {
        k: torch.tensor(
            math.log(start[k]), dtype=dtype, device=device, requires_grad=k in trainable
        )
        for k in PARAM_NAMES
    }
    log_gain = torch.tensor(
        math.log(gain_counts_per_e), dtype=dtype, device=device, requires_grad=not normalise
    )
    variables = [logs[k] for k in trainable] + ([] if normalise else [log_gain])
    optimiser = torch.optim.Adam(variables, lr=lr, betas=tuple(float(v) for v in betas))
    omega = radial_frequency_cycles_per_px(tuple(x.shape[-2:]), device=device, dtype=dtype)
    history: list[float] = []
    for _ in range(n_steps):
        optimiser.zero_grad()
        mtf = mtf_parametric(omega, **{k: torch.exp(v) for k, v in logs.items()})
        pred = simulate_flat_background(
            tuple(labels.shape),
            mean_electrons_per_px=mean_electrons_per_px,
            mtf=mtf,
            generator=generator,
            gain_counts_per_e=torch.exp(log_gain),
            dtype=dtype,
        )
        if normalise:
            pred = normalise_min_max(pred)
        loss = torch.zeros((), dtype=dtype, device=device)
        if mse_weight:
            loss = loss + mse_weight * torch.mean((pred - labels) ** 2)
        if ffl_weight:
            loss = loss + ffl_weight * focal_frequency_loss(pred, labels, alpha=alpha)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    values = {k: float(torch.exp(v.detach())) for k, v in logs.items()}
    total = values["a"] + values["b"] + values["c"]
    for k in ("a", "b", "c"):
        values[k] /= total
    return MTFFit(
        method="ffl",
        params=values,
        scale=None if normalise else float(torch.exp(log_gain.detach())),
        loss_history=tuple(history),
        final_loss=history[-1],
    )
