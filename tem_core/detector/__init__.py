"""Detector: dose, DQE, gain, modulation transfer function (MTF) and shot noise.

The detector turns the image intensity ``I`` (``|ψ|²`` normalised so that vacuum is 1)
into counts. The model is TEM-simulator's (Rullgård et al. 2011, ``src/detector.c``):

1. expected electrons per pixel ``N = I · dose · s²`` (:func:`expected_electrons`),
   with the dose [e/Å²] and the pixel size ``s`` [Å];
2. quantisation with detective quantum efficiency ``DQE`` ∈ (0, 1]: a random number of
   electrons ``e`` with mean ``N`` and variance ``N / DQE`` (see :class:`Detector` for the
   two noise models offered);
3. the MTF blur (a real, radially symmetric filter with ``MTF(0) = 1``) and the gain
   [counts/e]: ``counts = gain · F⁻¹[MTF · F[e]]``.

Hence, on a flat field, the counts have mean ``gain · N`` and variance
``gain² · N / DQE · mean(MTF²)``, and their noise power spectrum is ∝ ``MTF²(ω)``
(TEM-simulator applies the MTF after the noise; ``mtf_after_noise=False`` blurs the
expected electrons before the noise instead, giving a white noise spectrum).

Frequencies are in cycles per pixel (Nyquist 0.5). Everything here is a pure torch
function that follows its input's device and dtype; dose, gain, DQE and MTF parameters
may be tensors, and :func:`expected_image` is differentiable with respect to all of them
(and to the intensity). Randomness only through an explicit ``torch.Generator`` living on
the same device as the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tem_core._fft import fft2, ifft2
from tem_core.detector.tables import (
    _interp_table,
    _read_table,
    available_cameras,
    available_dqe_tables,
    load_dqe_table,
    load_mtf_table,
)
from tem_core.grids import radial_frequency_cycles_per_px
from tem_core.validation import (
    require_finite,
    require_generator,
    require_nonnegative,
    require_positive,
)

__all__ = [
    "Detector",
    "NOISE_MODELS",
    "apply_mtf",
    "available_cameras",
    "available_dqe_tables",
    "detect",
    "expected_and_detected",
    "expected_electrons",
    "expected_image",
    "load_dqe_table",
    "load_mtf_table",
    "mtf_parametric",
    "mtf_tabulated",
    "poisson_log_prob",
    "radial_frequency_cycles_per_px",
    "sample_counts",
    "sample_electrons",
]

#: Noise models for the DQE: see :class:`Detector`.
NOISE_MODELS = ("poisson_wald", "scaled_poisson")

Scalar = float | torch.Tensor


# --- parameters ----------------------------------------------------------------------------


def _as_tensor(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor on ``like``'s device and (real) dtype, keeping autograd history."""
    dtype = like.real.dtype if like.is_complex() else like.dtype
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    if isinstance(value, torch.Tensor):
        return value.to(device=like.device, dtype=dtype)
    return torch.as_tensor(float(value), device=like.device, dtype=dtype)


def _batch_shaped(value: torch.Tensor) -> torch.Tensor:
    """Reshape a per-image value ``(B...)`` to ``(B..., 1, 1)`` to broadcast over images."""
    return value.reshape(value.shape + (1, 1)) if value.ndim > 0 else value


def _check_mtf_params(a: Any, b: Any, c: Any, alpha: Any, beta: Any, p: Any, q: Any) -> None:
    for name, value in (("a", a), ("b", b), ("c", c)):
        require_nonnegative(name, value)
    total = sum(torch.as_tensor(v).detach().double().cpu() for v in (a, b, c))
    if not bool(torch.all(total > 0)):
        raise ValueError(f"a + b + c must be > 0 (the MTF is normalised by it), got {_show(total)}")
    require_nonnegative("alpha", alpha, "px²")
    require_nonnegative("beta", beta, "px²")
    require_positive("p", p)
    require_positive("q", q)


def _check_dqe(dqe: Any) -> None:
    require_finite("dqe", dqe)
    values = torch.as_tensor(dqe).detach().double().reshape(-1).cpu()
    bad = values[(values <= 0) | (values > 1)]
    if bad.numel():
        raise ValueError(f"dqe must lie in (0, 1], got {bad[0].item()}")


def _show(value: torch.Tensor) -> str:
    return str(value.item()) if value.numel() == 1 else f"tensor of shape {tuple(value.shape)}"


# --- MTF -----------------------------------------------------------------------------------


def _lorentzian(omega2: torch.Tensor, width: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """TEM-simulator's generalised Lorentzian 2^p·y^(−p)/(2 + (2^p − 2)·y^(−p)), y = 1 + width·ω².

    Equals ``1/y`` for ``p = 1`` and 1 at ω = 0 for every ``p``.
    """
    z = torch.exp(-power * torch.log1p(width * omega2))  # y^(-p)
    two_p = torch.exp2(power)
    return two_p * z / (2.0 + (two_p - 2.0) * z)


def mtf_parametric(
    frequency_cycles_per_px: torch.Tensor,
    *,
    a: Scalar,
    b: Scalar,
    c: Scalar,
    alpha: Scalar,
    beta: Scalar,
    p: Scalar = 1.0,
    q: Scalar = 1.0,
) -> torch.Tensor:
    """TEM-simulator's parametric MTF.

    ``MTF(ω) = (a·L_p(αω²) + b·L_q(βω²) + c) / (a + b + c)`` with the generalised Lorentzian
    ``L_p = 2^p·y^(−p) / (2 + (2^p − 2)·y^(−p))``, ``y = 1 + αω²``; ``p = q = 1`` gives the
    plain form ``a/(1 + αω²) + b/(1 + βω²) + c``. ``MTF(0) = 1``; for ``a, b, c, α, β ≥ 0``
    and ``p, q > 0`` it decreases monotonically towards ``c/(a + b + c)``.
    Defaults of TEM-simulator's examples, ``a, b, c, α, β = 0.7, 0.2, 0.1, 10, 40``, give
    0.8285 / 0.5879 / 0.3182 at ω = 0.125 / 0.25 / 0.5.

    Parameters
    ----------
    frequency_cycles_per_px
        Spatial frequency ω (any shape; radial frequency for images) [cycles/pixel].
    a, b, c
        Weights of the two Lorentzians and of the constant term (≥ 0, ``a + b + c > 0``).
    alpha, beta
        Widths of the Lorentzians (≥ 0) [pixel²].
    p, q
        Shape exponents of the two Lorentzians (> 0).

    Every parameter is a float or a tensor (broadcast against the frequencies; differentiable).
    """
    _check_mtf_params(a, b, c, alpha, beta, p, q)
    omega2 = frequency_cycles_per_px**2
    a_, b_, c_ = (_as_tensor(v, omega2) for v in (a, b, c))
    alpha_, beta_, p_, q_ = (_as_tensor(v, omega2) for v in (alpha, beta, p, q))
    mtf = a_ * _lorentzian(omega2, alpha_, p_) + b_ * _lorentzian(omega2, beta_, q_) + c_
    return mtf / (a_ + b_ + c_)


def mtf_tabulated(frequency_cycles_per_px: torch.Tensor, *, camera: str) -> torch.Tensor:
    """Published MTF of ``camera`` at the given frequencies, by linear interpolation.

    ``MTF(0) = 1``. The MTF is even, so ``|ω|`` is used. Beyond the last tabulated
    frequency (0.5 cycles/pixel, or 0.492 for the Falcon tables) the last value is
    continued: the corners of a 2-D grid (radial frequency up to 0.707) get the Nyquist value.

    Parameters
    ----------
    frequency_cycles_per_px
        Frequencies (any shape, floating) [cycles/pixel]; the result follows its device
        and dtype.
    camera
        One of :func:`available_cameras`.
    """
    freq, mtf = load_mtf_table(camera)
    if not isinstance(frequency_cycles_per_px, torch.Tensor):
        raise TypeError("frequency_cycles_per_px must be a torch.Tensor")
    x = frequency_cycles_per_px
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    return _interp_table(x.abs(), freq, mtf)


def apply_mtf(image: torch.Tensor, mtf: torch.Tensor) -> torch.Tensor:
    """Filter ``image`` with a real transfer function: ``real(ifft2(fft2(image) · mtf))``.

    Parameters
    ----------
    image
        ``(..., ny, nx)`` real image (batch dimensions allowed).
    mtf
        ``(ny, nx)`` (or broadcastable) transfer function in FFT order, e.g. from
        :func:`mtf_parametric` applied to :func:`radial_frequency_cycles_per_px`.
    """
    if image.ndim < 2:
        raise ValueError(
            f"image must have at least 2 dimensions (..., ny, nx), got {tuple(image.shape)}"
        )
    if tuple(mtf.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(
            f"mtf shape {tuple(mtf.shape)} does not match the image's last two dimensions "
            f"{tuple(image.shape[-2:])}"
        )
    return ifft2(fft2(image) * mtf).real


# --- dose and noise --------------------------------------------------------------------------


def expected_electrons(
    intensity: torch.Tensor, *, dose_e_per_a2: Scalar, sampling_a: Scalar
) -> torch.Tensor:
    """Expected electrons per pixel ``N = intensity · dose · sampling²``.

    Parameters
    ----------
    intensity
        ``(..., ny, nx)`` image intensity, 1 for vacuum [dimensionless].
    dose_e_per_a2
        Electron dose per area (≥ 0) [e/Å²]; a float, a scalar tensor, or a tensor of the
        batch shape ``intensity.shape[:-2]`` (one dose per image, e.g. per tilt).
    sampling_a
        Pixel size (> 0) [Å].
    """
    require_nonnegative("dose_e_per_a2", dose_e_per_a2, "e/Å²")
    require_positive("sampling_a", sampling_a, "Å")
    dose = _batch_shaped(_as_tensor(dose_e_per_a2, intensity))
    sampling = _as_tensor(sampling_a, intensity)
    return intensity * dose * sampling**2


def sample_counts(expected: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Poisson samples with mean ``expected`` (not differentiable; the input is detached).

    Parameters
    ----------
    expected
        Expected counts (≥ 0, floating).
    generator
        Random generator on ``expected``'s device.
    """
    require_generator(generator, expected, "expected")
    expected = expected.detach()
    if expected.numel() and not bool(torch.all(expected >= 0)):
        raise ValueError(
            f"expected counts must be >= 0 and finite, got minimum {expected.min().item()}"
        )
    return torch.poisson(expected, generator=generator)


def _sample_wald(mean: torch.Tensor, k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Inverse-Gaussian samples with the given mean and variance ``k · mean`` (Michael et al. 1976).

    Written in a cancellation-free form; ``mean = 0`` gives 0, ``k = 0`` gives ``mean``.
    """
    y = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype) ** 2
    u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    k = torch.broadcast_to(k, mean.shape)
    positive = (mean > 0) & (k > 0)
    k_safe = torch.where(positive, k, torch.ones_like(k))
    root = torch.sqrt(y * y + 4.0 * mean * y / k_safe)
    x = mean - 2.0 * mean * y / (y + root).clamp_min(torch.finfo(mean.dtype).tiny)
    x_safe = torch.where(x > 0, x, torch.ones_like(x))
    pick_small = u * (mean + x) <= mean
    sample = torch.where(pick_small, x, mean * mean / x_safe)
    sample = torch.where(x > 0, sample, mean)  # x underflows only when y = 0: then x = mean
    return torch.where(positive, sample, mean)


def sample_electrons(
    expected: torch.Tensor,
    *,
    dqe: Scalar,
    generator: torch.Generator,
    noise_model: str = "poisson_wald",
) -> torch.Tensor:
    """Detected electrons per pixel: mean ``expected``, variance ``expected / dqe``.

    ``noise_model="poisson_wald"`` (TEM-simulator's ``detector_apply_quantization``):
    ``c ~ Poisson(N)``, then an inverse-Gaussian (Wald) sample with mean ``c`` and variance
    ``(1/DQE − 1)·c``: continuous values for DQE < 1, exact Poisson for DQE = 1.
    ``noise_model="scaled_poisson"``: ``Poisson(DQE·N) / DQE`` (values on a grid of
    ``1/DQE``; its likelihood is Poisson, see :func:`poisson_log_prob`). Not differentiable.

    Parameters
    ----------
    expected
        Expected electrons per pixel ``N`` (≥ 0).
    dqe
        Detective quantum efficiency in (0, 1] (scalar, or one per image of the batch).
    generator
        Random generator on ``expected``'s device.
    noise_model
        One of :data:`NOISE_MODELS`.
    """
    _check_dqe(dqe)
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"noise_model must be one of {NOISE_MODELS}, got {noise_model!r}")
    expected = expected.detach()
    dqe_t = _batch_shaped(_as_tensor(dqe, expected).detach())
    if noise_model == "scaled_poisson":
        return sample_counts(expected * dqe_t, generator=generator) / dqe_t
    counts = sample_counts(expected, generator=generator)
    if bool(torch.all(dqe_t == 1)):
        return counts
    return _sample_wald(counts, 1.0 / dqe_t - 1.0, generator)


def poisson_log_prob(counts: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Elementwise Poisson log-probability ``k log λ − λ − log k!`` (differentiable wrt λ).

    For the score-function estimator ``∇θ E[f(k)] = E[(f(k) − b) ∇θ log p(k; λ(θ))]``
    (``∂/∂λ log p = k/λ − 1``). ``λ = 0`` gives 0 for ``k = 0`` and ``−inf`` for ``k > 0``.

    Parameters
    ----------
    counts
        Observed counts ``k`` (non-negative integers, any floating or integer dtype).
    expected
        Poisson means ``λ`` (≥ 0), broadcastable with ``counts``.
    """
    k = counts.to(expected.dtype) if expected.dtype.is_floating_point else counts.double()
    lam = expected
    lam_safe = torch.where(lam > 0, lam, torch.ones_like(lam))
    k_log_lam = torch.where(k > 0, k * torch.log(lam_safe), torch.zeros_like(lam_safe))
    k_log_lam = torch.where((lam <= 0) & (k > 0), torch.full_like(k_log_lam, -torch.inf), k_log_lam)
    return k_log_lam - lam - torch.lgamma(k + 1.0)


# --- the detector --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, eq=False)
class Detector:
    """Camera settings (TEM-simulator's detector model; see the module docstring).

    Attributes
    ----------
    dqe
        Detective quantum efficiency in (0, 1], frequency independent: the detected electrons
        have variance ``N / dqe``. Not used by :func:`expected_image`.
    gain_counts_per_e
        Counts per detected electron (> 0) [counts/e].
    a, b, c, alpha, beta, p, q
        Parameters of :func:`mtf_parametric` (TEM-simulator's defaults 0.7, 0.2, 0.1, 10, 40,
        1, 1); α, β in [pixel²].
    mtf_camera
        Name of a tabulated camera MTF (:func:`available_cameras`) used instead of the
        parametric one; ``None``: parametric.
    mtf_enabled
        ``False``: no blur (MTF = 1).
    mtf_after_noise
        ``True`` (TEM-simulator): noise, then MTF, so the noise power spectrum is ∝ MTF².
        ``False``: the expected electrons are blurred, then sampled (white noise).
    noise_model
        ``"poisson_wald"`` (TEM-simulator) or ``"scaled_poisson"``; see :func:`sample_electrons`.

    Scalars may be floats or tensors (e.g. ``requires_grad`` tensors to fit them).
    """

    dqe: Scalar = 1.0
    gain_counts_per_e: Scalar = 1.0
    a: Scalar = 0.7
    b: Scalar = 0.2
    c: Scalar = 0.1
    alpha: Scalar = 10.0
    beta: Scalar = 40.0
    p: Scalar = 1.0
    q: Scalar = 1.0
    mtf_camera: str | None = None
    mtf_enabled: bool = True
    mtf_after_noise: bool = True
    noise_model: str = "poisson_wald"

    def __post_init__(self) -> None:
        _check_dqe(self.dqe)
        require_positive("gain_counts_per_e", self.gain_counts_per_e, "counts/e")
        _check_mtf_params(self.a, self.b, self.c, self.alpha, self.beta, self.p, self.q)
        if self.mtf_camera is not None:
            _read_table("mtf_", self.mtf_camera)  # raises with the list of cameras
        for name in ("mtf_enabled", "mtf_after_noise"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.noise_model not in NOISE_MODELS:
            raise ValueError(f"noise_model must be one of {NOISE_MODELS}, got {self.noise_model!r}")

    def mtf(
        self,
        shape: tuple[int, int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor | None:
        """The ``(ny, nx)`` MTF in FFT order, or ``None`` when ``mtf_enabled`` is False."""
        if not self.mtf_enabled:
            return None
        omega = radial_frequency_cycles_per_px(shape, device=device, dtype=dtype)
        if self.mtf_camera is not None:
            return mtf_tabulated(omega, camera=self.mtf_camera)
        return mtf_parametric(
            omega,
            a=self.a,
            b=self.b,
            c=self.c,
            alpha=self.alpha,
            beta=self.beta,
            p=self.p,
            q=self.q,
        )


def _image_mtf(detector: Detector, image: torch.Tensor) -> torch.Tensor | None:
    if not isinstance(detector, Detector):
        raise TypeError(f"detector must be a Detector, got {type(detector).__name__}")
    return detector.mtf(tuple(image.shape[-2:]), device=image.device, dtype=image.dtype)


def expected_image(
    intensity: torch.Tensor, *, detector: Detector, dose_e_per_a2: Scalar, sampling_a: Scalar
) -> torch.Tensor:
    """Noise-free mean counts ``gain · F⁻¹[MTF · F[intensity · dose · s²]]`` (differentiable).

    Parameters
    ----------
    intensity
        ``(..., ny, nx)`` real image intensity, vacuum = 1 [dimensionless].
    detector
        Camera settings.
    dose_e_per_a2
        Dose [e/Å²] (scalar or one per image).
    sampling_a
        Pixel size [Å].

    Returns
    -------
    Tensor
        Expected counts per pixel [counts], same shape, device and dtype as ``intensity``.
        Differentiable wrt the intensity, dose, gain and MTF parameters.
    """
    electrons, mtf = _electrons_and_mtf(intensity, detector, dose_e_per_a2, sampling_a)
    return _expected_counts(electrons, mtf, detector)


def detect(
    intensity: torch.Tensor,
    *,
    detector: Detector,
    dose_e_per_a2: Scalar,
    sampling_a: Scalar,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Detected counts: shot noise with DQE, MTF blur and gain.

    With ``generator=None`` this is :func:`expected_image`. Otherwise the electrons are
    sampled with :func:`sample_electrons` (mean ``N``, variance ``N/DQE``), then blurred
    by the MTF (``mtf_after_noise=True``, as TEM-simulator) and multiplied by the gain; with
    ``mtf_after_noise=False`` the expected electrons are blurred first (and clamped at 0).
    The result is differentiable wrt the gain and, when the MTF follows the noise, wrt the MTF
    parameters (not wrt the intensity, dose or DQE: use :func:`poisson_log_prob` for that).

    Parameters
    ----------
    intensity
        ``(..., ny, nx)`` real image intensity, vacuum = 1.
    detector
        Camera settings.
    dose_e_per_a2
        Dose [e/Å²] (scalar or one per image).
    sampling_a
        Pixel size [Å].
    generator
        Random generator on the intensity's device, or ``None`` for the expected image.

    Returns
    -------
    Tensor
        Counts [counts], same shape as ``intensity``.
    """
    if generator is None:
        return expected_image(
            intensity, detector=detector, dose_e_per_a2=dose_e_per_a2, sampling_a=sampling_a
        )
    electrons, mtf = _electrons_and_mtf(intensity, detector, dose_e_per_a2, sampling_a)
    return _sampled_counts(electrons, mtf, detector, generator)


def expected_and_detected(
    intensity: torch.Tensor,
    *,
    detector: Detector,
    dose_e_per_a2: Scalar,
    sampling_a: Scalar,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`expected_image` and :func:`detect` of one intensity, sharing electrons and MTF.

    Returns
    -------
    (expected, counts)
        The expected counts and, when ``generator`` is given, a noisy sample (else ``None``);
        the same values as the two functions called separately with this generator.
    """
    electrons, mtf = _electrons_and_mtf(intensity, detector, dose_e_per_a2, sampling_a)
    expected = _expected_counts(electrons, mtf, detector)
    counts = None
    if generator is not None:
        counts = _sampled_counts(electrons, mtf, detector, generator)
    return expected, counts


def _electrons_and_mtf(
    intensity: torch.Tensor, detector: Detector, dose_e_per_a2: Scalar, sampling_a: Scalar
) -> tuple[torch.Tensor, torch.Tensor | None]:
    electrons = expected_electrons(intensity, dose_e_per_a2=dose_e_per_a2, sampling_a=sampling_a)
    return electrons, _image_mtf(detector, electrons)


def _expected_counts(
    electrons: torch.Tensor, mtf: torch.Tensor | None, detector: Detector
) -> torch.Tensor:
    if mtf is not None:
        electrons = apply_mtf(electrons, mtf)
    return _batch_shaped(_as_tensor(detector.gain_counts_per_e, electrons)) * electrons


def _sampled_counts(
    electrons: torch.Tensor,
    mtf: torch.Tensor | None,
    detector: Detector,
    generator: torch.Generator,
) -> torch.Tensor:
    if mtf is not None and not detector.mtf_after_noise:
        electrons = apply_mtf(electrons, mtf.detach()).clamp_min(0.0)
    detected = sample_electrons(
        electrons, dqe=detector.dqe, generator=generator, noise_model=detector.noise_model
    )
    if mtf is not None and detector.mtf_after_noise:
        detected = apply_mtf(detected, mtf)
    return _batch_shaped(_as_tensor(detector.gain_counts_per_e, detected)) * detected
