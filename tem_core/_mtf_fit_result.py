"""Result of an MTF fit (private helper of :mod:`tem_core.mtf_fit`, which re-exports it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tem_core.detector import (
    apply_mtf,
    mtf_parametric,
    radial_frequency_cycles_per_px,
    sample_counts,
)
from tem_core.validation import require_finite, require_positive, require_positive_int

#: Parameters of :func:`tem_core.detector.mtf_parametric`, in order.
PARAM_NAMES = ("a", "b", "c", "alpha", "beta", "p", "q")

#: Frequencies of the error metric, as fractions of Nyquist (0.25, 0.5, 1.0 Nyquist).
NYQUIST_FRACTIONS = (0.25, 0.5, 1.0)


def simulate_flat_background(
    shape: tuple[int, ...],
    *,
    mean_electrons_per_px: float | torch.Tensor,
    mtf: torch.Tensor | None,
    generator: torch.Generator,
    gain_counts_per_e: float | torch.Tensor = 1.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Flat-field detector images in TEM-simulator's model: Poisson, then MTF blur, then gain.

    ``gain · F⁻¹[MTF · F[k]]`` with ``k ~ Poisson(N)`` per pixel. Differentiable wrt the
    MTF (and the gain), not wrt ``N``.

    Parameters
    ----------
    shape
        ``(..., M, N)`` output shape [pixel].
    mean_electrons_per_px
        Expected electrons per pixel ``N`` (> 0) [e/pixel].
    mtf
        ``(M, N)`` MTF in FFT order, or ``None`` for no blur.
    generator
        Random generator (its device is used).
    gain_counts_per_e
        Counts per electron [counts/e].
    dtype
        Floating dtype of the result.
    """
    require_positive("mean_electrons_per_px", mean_electrons_per_px, "e/px")
    device = generator.device
    expected = torch.full(shape, float(mean_electrons_per_px), dtype=dtype, device=device)
    counts = sample_counts(expected, generator=generator)
    if mtf is not None:
        counts = apply_mtf(counts, mtf)
    return gain_counts_per_e * counts


def synthetic_background_crops(
    mtf_params: dict[str, float],
    *,
    n_crops: int,
    crop_size_px: int,
    mean_electrons_per_px: float,
    generator: torch.Generator,
    micrograph_size_px: int | None = None,
) -> torch.Tensor:
    """Background crops cut from flat micrographs with a known parametric MTF.

    Flat square micrographs of ``micrograph_size_px`` (default twice the crop) are
    simulated with :func:`simulate_flat_background` (Poisson, then the MTF of
    ``mtf_params``, gain 1) and cut into non-overlapping crops, so the crops are not
    periodic, as crops of a real micrograph are not.

    Parameters
    ----------
    mtf_params
        Parameters of :func:`tem_core.detector.mtf_parametric` (``a, b, c, alpha, beta``
        and optionally ``p, q``).
    n_crops
        Number of crops returned.
    crop_size_px
        Edge of each square crop [pixel].
    mean_electrons_per_px
        Expected electrons per pixel [e/pixel].
    generator
        Random generator (its device is used).
    micrograph_size_px
        Edge of the simulated micrographs [pixel], a multiple of ``crop_size_px``.

    Returns
    -------
    Tensor
        ``(n_crops, crop_size_px, crop_size_px)`` float64 [counts].
    """
    require_positive_int("n_crops", n_crops)
    require_positive_int("crop_size_px", crop_size_px)
    big = 2 * crop_size_px if micrograph_size_px is None else micrograph_size_px
    require_positive_int("micrograph_size_px", big)
    if big % crop_size_px:
        raise ValueError(
            f"micrograph_size_px must be a multiple of crop_size_px = {crop_size_px} px, "
            f"got {big} px"
        )
    k = big // crop_size_px
    n_images = -(-n_crops // (k * k))
    omega = radial_frequency_cycles_per_px((big, big), device=generator.device, dtype=torch.float64)
    images = simulate_flat_background(
        (n_images, big, big),
        mean_electrons_per_px=mean_electrons_per_px,
        mtf=mtf_parametric(omega, **mtf_params),
        generator=generator,
    )
    crops = images.reshape(n_images, k, crop_size_px, k, crop_size_px).permute(0, 1, 3, 2, 4)
    return crops.reshape(-1, crop_size_px, crop_size_px)[:n_crops].contiguous()


@dataclass(frozen=True, kw_only=True, eq=False)
class MTFFit:
    """A fitted parametric MTF (TEM-simulator's form, see :func:`tem_core.detector.mtf_parametric`).

    Attributes
    ----------
    method
        ``"whittle"`` or ``"ffl"``.
    params
        ``a, b, c, alpha, beta, p, q`` (α, β in [pixel²]); ``a + b + c = 1`` for Whittle fits.
    scale
        Whittle fits: the NPS scale ``s`` with ``NPS(ω) = s · MTF²(ω)`` [counts² per bin];
        for Poisson noise ``s = gain² · N = gain · mean`` (see :meth:`gain_counts_per_e`).
        FFL fits: the fitted gain when the loss was not normalised, else ``None``.
    loss_history
        Loss per step (FFL) or per L-BFGS evaluation of the best restart (Whittle).
    final_loss
        Final loss (Whittle: mean NLL per frequency bin).
    covariance
        Covariance of ``covariance_names`` (Whittle), or ``None``.
    covariance_names
        Names of the covariance rows: ``a, b, alpha, beta, [p, q], s``.
    """

    method: str
    params: dict[str, float]
    scale: float | None = None
    loss_history: tuple[float, ...] = ()
    final_loss: float | None = None
    covariance: torch.Tensor | None = None
    covariance_names: tuple[str, ...] = ()

    def mtf(self, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
        """MTF at the given frequencies [cycles/pixel] (any shape; follows their dtype)."""
        return mtf_parametric(frequency_cycles_per_px, **self.params)

    def mtf_image(
        self,
        shape: tuple[int, int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> torch.Tensor:
        """``(M, N)`` MTF in FFT order, for :func:`tem_core.detector.apply_mtf`."""
        return self.mtf(radial_frequency_cycles_per_px(shape, device=device, dtype=dtype))

    def noise_power(self, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
        """Model NPS ``s · MTF²(ω)`` [counts² per bin] (Whittle fits only)."""
        if self.scale is None or self.method != "whittle":
            raise ValueError("noise_power needs a Whittle fit (the scale s is unknown)")
        return self.scale * self.mtf(frequency_cycles_per_px) ** 2

    def gain_counts_per_e(self, mean_counts: float) -> float:
        """Gain implied by the NPS scale for pure Poisson noise: ``s / mean`` [counts/e]."""
        require_positive("mean_counts", mean_counts, "counts")
        if self.scale is None or self.method != "whittle":
            raise ValueError("gain_counts_per_e needs a Whittle fit")
        return self.scale / mean_counts

    @property
    def standard_errors(self) -> dict[str, float] | None:
        """Standard errors of the covariance parameters, or ``None``."""
        if self.covariance is None:
            return None
        diag = torch.diagonal(self.covariance).clamp_min(0).sqrt()
        return {k: float(v) for k, v in zip(self.covariance_names, diag, strict=True)}

    def mtf_standard_error(self, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor | None:
        """Delta-method standard error of the MTF at the given frequencies, or ``None``."""
        if self.covariance is None:
            return None
        omega = frequency_cycles_per_px.detach().double().reshape(-1)
        names = [k for k in self.covariance_names if k != "s"]
        phi0 = torch.tensor([self.params[k] for k in names], dtype=torch.float64)

        def curve(phi: torch.Tensor) -> torch.Tensor:
            values = {
                **{k: torch.tensor(v, dtype=phi.dtype) for k, v in self.params.items()},
                **dict(zip(names, phi, strict=True)),
            }
            values["c"] = 1.0 - values["a"] - values["b"]
            return mtf_parametric(omega, **values)

        jac = torch.autograd.functional.jacobian(curve, phi0)  # (K, P)
        cov = self.covariance[: len(names), : len(names)]
        var = torch.einsum("kp,pq,kq->k", jac, cov, jac).clamp_min(0)
        return var.sqrt().reshape(frequency_cycles_per_px.shape)

    def simulate_background(
        self,
        shape: tuple[int, ...],
        *,
        mean_counts: float,
        generator: torch.Generator,
        gain_counts_per_e: float | None = None,
    ) -> torch.Tensor:
        """Flat background with this MTF: ``gain · blur(Poisson(mean / gain))`` [counts].

        Parameters
        ----------
        shape
            ``(..., M, N)`` [pixel].
        mean_counts
            Mean of the image [counts].
        generator
            Random generator.
        gain_counts_per_e
            Counts per electron; default the Whittle gain ``s / mean_counts`` (1 for FFL fits).
        """
        require_positive("mean_counts", mean_counts, "counts")
        if len(shape) < 2:
            raise ValueError(f"shape must be (..., M, N), got {shape!r}")
        for size in shape:
            require_positive_int("shape", size)
        if gain_counts_per_e is None:
            gain_counts_per_e = (
                self.gain_counts_per_e(mean_counts) if self.method == "whittle" else 1.0
            )
        require_positive("gain_counts_per_e", gain_counts_per_e, "counts/e")
        mtf = self.mtf_image(tuple(shape[-2:]), device=generator.device)
        return simulate_flat_background(
            tuple(shape),
            mean_electrons_per_px=mean_counts / gain_counts_per_e,
            mtf=mtf,
            generator=generator,
            gain_counts_per_e=gain_counts_per_e,
        )


# --- evaluation ------------------------------------------------------------------------------


def mtf_relative_rms_error(
    fit: MTFFit,
    truth: Any,
    *,
    nyquist_fractions: Sequence[float] = NYQUIST_FRACTIONS,
) -> float:
    """Relative RMS error ``sqrt(mean((MTF_fit/MTF_true − 1)²))`` at fractions of Nyquist.

    Parameters
    ----------
    fit
        A fitted MTF.
    truth
        A dict of :func:`tem_core.detector.mtf_parametric` parameters, or a callable
        ``truth(frequency_cycles_per_px) -> Tensor``.
    nyquist_fractions
        Where to compare (default 0.25, 0.5, 1.0 Nyquist = 0.125, 0.25, 0.5 cycles/px).
    """
    require_finite("nyquist_fractions", list(nyquist_fractions))
    omega = 0.5 * torch.tensor(list(nyquist_fractions), dtype=torch.float64)
    true = truth(omega) if callable(truth) else mtf_parametric(omega, **truth)
    est = fit.mtf(omega)
    return float(torch.sqrt(torch.mean((est / true - 1.0) ** 2)))


def blurred_image_difference(image: torch.Tensor, fit: MTFFit, truth: Any) -> tuple[float, float]:
    """Mean and max ``|blur_fit(x) − blur_true(x)|`` of a noise-free image (the paper's check).

    Both blurred images are scaled by the min-max range of the truly blurred one, so the
    differences are fractions of its dynamic range.

    Parameters
    ----------
    image
        ``(M, N)`` noise-free image, e.g. a projected potential [any unit].
    fit
        Estimated MTF.
    truth
        Parameters of :func:`tem_core.detector.mtf_parametric` or a callable of frequency.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 2:
        raise ValueError("image must be a 2-D tensor (M, N)")
    x = image.double()
    omega = radial_frequency_cycles_per_px(tuple(x.shape), dtype=torch.float64)
    true_mtf = truth(omega) if callable(truth) else mtf_parametric(omega, **truth)
    reference = apply_mtf(x, true_mtf)
    estimate = apply_mtf(x, fit.mtf(omega))
    span = float(reference.max() - reference.min())
    diff = (estimate - reference).abs() / (span if span > 0 else 1.0)
    return float(diff.mean()), float(diff.max())
