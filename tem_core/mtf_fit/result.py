"""Result of an MTF fit, and error metrics against a known MTF."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tem_core.detector import apply_mtf, mtf_parametric, radial_frequency_cycles_per_px
from tem_core.mtf_fit.likelihood import SPLINE_KNOTS, spline_transfer
from tem_core.mtf_fit.poisson import PoissonScale
from tem_core.mtf_fit.synthetic import MTFSpec, mtf_from_spec, simulate_flat_background
from tem_core.validation import (
    require_finite,
    require_positive,
    require_positive_int,
)

if TYPE_CHECKING:
    from tem_core.mtf_fit.bootstrap import BootstrapReplicas

#: Parameters of :func:`tem_core.detector.mtf_parametric`, in order.
PARAM_NAMES = ("a", "b", "c", "alpha", "beta", "p", "q")

#: Frequencies of the error metric, as fractions of Nyquist (0.25, 0.5, 1.0 Nyquist).
NYQUIST_FRACTIONS = (0.25, 0.5, 1.0)

#: Fisher standard errors are flagged unreliable (:attr:`MTFFit.fisher_errors_reliable`)
#: when a weight, width or shape exponent has a standard error above this fraction of its
#: value: the likelihood is then far from quadratic over the error's range. Measured with
#: ``benchmarks/mtf_standard_errors.py``: where repeated fits spread as the errors say,
#: the largest fraction was 0.17 (0.3/0.6/10/200 px², 64 crops of 64²); for TEM-simulator's
#: camera, whose errors are 1.6-2.8x too small, 0.44-5.5 (8 and 32 crops of 128²).
FISHER_MAX_RELATIVE_ERROR = 0.3


def transfer_curve(params: dict[str, Any], frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
    """Parametric (``a, b, c, alpha, beta, p, q``) or spline (``g0, g1, ...``) curve."""
    if "g0" in params:
        g = torch.stack([torch.as_tensor(params[f"g{i}"]) for i in range(len(SPLINE_KNOTS))])
        return spline_transfer(frequency_cycles_per_px, g.to(frequency_cycles_per_px.dtype))
    return mtf_parametric(frequency_cycles_per_px, **params)


class MTFNotIdentifiableError(ValueError):
    """The noise power spectrum does not show the MTF (e.g. a counting camera)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ModelChoice:
    """How :func:`fit_mtf_whittle` chose between nested noise-spectrum models.

    Attributes
    ----------
    chosen
        ``"white"`` (flat NPS, 1 parameter), ``"lorentzian"`` (p = q = 1, 5 parameters),
        ``"shaped"`` (p, q fitted, 7 parameters) or ``"spline"`` (monotone, 13 parameters).
    nll
        Total Whittle negative log-likelihood of each model fitted (divided by the
        taper's variance inflation) [nats].
    n_params
        Free parameters of each model.
    aic
        Akaike information criterion ``2·NLL + 2k`` of each model (the smallest wins).
    lr_statistics
        ``2 ΔNLL`` of each larger nested model against the next smaller one
        (``"lorentzian"`` against ``"white"``, ``"shaped"`` against ``"lorentzian"``).
    p_values
        χ² tail probabilities of those statistics (``df`` = difference in parameters;
        approximate where the smaller model lies on the boundary).
    reason
        One sentence: which model and why.
    """

    chosen: str
    nll: dict[str, float]
    n_params: dict[str, int]
    aic: dict[str, float]
    lr_statistics: dict[str, float]
    p_values: dict[str, float]
    reason: str


@dataclass(frozen=True, kw_only=True, eq=False)
class MTFFit:
    """A fitted parametric MTF (TEM-simulator's form, see :func:`tem_core.detector.mtf_parametric`).

    Attributes
    ----------
    method
        ``"whittle"`` or ``"ffl"``.
    params
        ``a, b, c, alpha, beta, p, q`` (α, β in [pixel²]; ``a + b + c = 1`` for Whittle
        fits), or for the spline model ``g0, g1, ...``: ``−log MTF`` at
        :data:`tem_core.mtf_fit.likelihood.SPLINE_KNOTS`.
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
    model
        Whittle fits: the :class:`ModelChoice` (which model and why), else ``None``.
    identifiable
        ``False`` when the background's noise spectrum cannot show the MTF (white within
        its error, or flatter than any pixelated detector's MTF: a counting camera).
        :meth:`mtf` then raises :class:`MTFNotIdentifiableError`; :meth:`noise_transfer`
        still gives the fitted noise transfer.
    diagnosis
        Why the MTF is not identifiable (empty when it is).
    white_noise_level
        For fits flagged not identifiable: the median over rings 0.1-0.5 cycles/px of
        the NPS [counts² per bin], the level of a counting camera's white noise, robust
        to specimen power and ice rings (see :meth:`gain_counts_per_e`).
    at_bound
        Whittle fits: parameters that ended on a bound (a weight at 0, a width or shape
        exponent at its limit). The standard errors assume an interior optimum and
        understate the uncertainty of such a fit: refits of similar data can land on
        either side of the boundary (TEM-simulator's detector from 8 crops of 128²
        often ends with ``c = 0``).
    poisson
        The NPS scale measured from the skewness of the whitened noise, when the fit
        combined it with the spectrum (:mod:`tem_core.mtf_fit.poisson`), else ``None``.
    refit_settings
        Whittle fits: the crops' shape and mean [counts] and the settings of the fit (the
        chosen model), for :meth:`bootstrap_standard_errors`.
    """

    method: str
    params: dict[str, float]
    scale: float | None = None
    loss_history: tuple[float, ...] = ()
    final_loss: float | None = None
    covariance: torch.Tensor | None = None
    covariance_names: tuple[str, ...] = ()
    model: ModelChoice | None = None
    identifiable: bool = True
    diagnosis: str = ""
    white_noise_level: float | None = None
    at_bound: tuple[str, ...] = ()
    poisson: PoissonScale | None = None
    refit_settings: dict[str, Any] | None = None

    def mtf(self, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
        """MTF at the given frequencies [cycles/pixel] (any shape; follows their dtype).

        Raises :class:`MTFNotIdentifiableError` when the fit found the noise spectrum
        unable to show the MTF (see :attr:`diagnosis`, and :meth:`noise_transfer`).
        """
        if not self.identifiable:
            raise MTFNotIdentifiableError(
                f"MTF not identifiable from noise: {self.diagnosis} "
                "Use noise_transfer() for the noise spectrum, or a signal-based estimate "
                "(tem_core.mtf_fit.fit_mtf_edge)."
            )
        return transfer_curve(self.params, frequency_cycles_per_px)

    def noise_transfer(self, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
        """Fitted noise transfer ``sqrt(NPS(ω) / NPS(0))`` [dimensionless] (Whittle fits).

        Equal to the MTF in TEM-simulator's integrating model; about 1 for a counting
        camera, whatever its signal MTF.
        """
        if self.method != "whittle":
            raise ValueError("noise_transfer needs a Whittle fit")
        return transfer_curve(self.params, frequency_cycles_per_px)

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
        """Model NPS ``s · T²(ω)`` (``T``: :meth:`noise_transfer`) [counts² per bin]."""
        if self.scale is None or self.method != "whittle":
            raise ValueError("noise_power needs a Whittle fit (the scale s is unknown)")
        return self.scale * self.noise_transfer(frequency_cycles_per_px) ** 2

    def gain_counts_per_e(self, mean_counts: float) -> float:
        """Gain implied by the noise for pure Poisson noise [counts/e].

        ``s / mean`` with the NPS scale ``s``; for a fit flagged not identifiable (a
        counting camera, white noise at ``gain · mean``) the robust white-noise level
        :attr:`white_noise_level` is used instead of the model's ``s``, which specimen
        power and ice rings pull up.
        """
        require_positive("mean_counts", mean_counts, "counts")
        if self.scale is None or self.method != "whittle":
            raise ValueError("gain_counts_per_e needs a Whittle fit")
        if not self.identifiable and self.white_noise_level is not None:
            return self.white_noise_level / mean_counts
        return self.scale / mean_counts

    @property
    def standard_errors(self) -> dict[str, float] | None:
        """Standard errors of :attr:`covariance_names` (square roots of the covariance's
        diagonal), or ``None``.

        For Whittle fits the covariance is the inverse Fisher information of the Whittle
        likelihood (times the taper's variance inflation), so the errors shrink as
        ``1/sqrt(crops × pixels)``. They describe an interior optimum: for parameters in
        :attr:`at_bound` they understate the uncertainty. The widths α, β of the two
        Lorentzians are weakly determined by a noise spectrum (TEM-simulator's detector
        at 8 crops of 128²: about 90 px² for β = 40 px²); there the estimates are far from
        Gaussian and repeated fits spread 1.6-2.8 times wider than these errors (with the
        gain from the count lattice, 40 repeats: 1.2-5 times the median error), while the
        errors of ``s`` and of the MTF (:meth:`mtf_standard_error`) match the spread (1.05,
        1.01; ``benchmarks/mtf_standard_errors.py``). Where the data determine the
        parameters the errors match the spread of repeated fits (the K2 300 kV table with
        the spline model: 0.91-1.00; ``tests/test_mtf_standard_errors.py``).
        Such fits are flagged (:attr:`fisher_errors_reliable`, :attr:`fisher_errors_note`);
        :meth:`bootstrap_standard_errors` does not assume a quadratic likelihood.
        """
        if self.covariance is None:
            return None
        diag = torch.diagonal(self.covariance).clamp_min(0).sqrt()
        return {k: float(v) for k, v in zip(self.covariance_names, diag, strict=True)}

    @property
    def fisher_errors_note(self) -> str:
        """Why :attr:`standard_errors` (inverse Fisher information) are unreliable for this
        fit, or ``""`` when nothing says so (see :attr:`fisher_errors_reliable`)."""
        if self.covariance is None:
            return "no covariance (the information matrix is singular)"
        reasons = []
        if self.at_bound:
            reasons.append(f"{', '.join(self.at_bound)} on a bound")
        errors = self.standard_errors or {}
        loose = [
            f"{k} ± {errors[k]:.3g} for {self.params[k]:.3g}"
            for k in ("a", "b", "alpha", "beta", "p", "q")
            if k in errors and errors[k] > FISHER_MAX_RELATIVE_ERROR * abs(self.params[k])
        ]
        if loose:
            reasons.append(
                f"{', '.join(loose)} (more than {FISHER_MAX_RELATIVE_ERROR:.0%} of the value: "
                "the parameters trade off and the likelihood is not quadratic over that range)"
            )
        if not reasons:
            return ""
        return (
            "; ".join(reasons) + ": repeated fits spread wider than these errors (1.6-2.8x "
            "for TEM-simulator's camera); use bootstrap_standard_errors() or mtf_standard_error"
        )

    @property
    def fisher_errors_reliable(self) -> bool | None:
        """Whether the Fisher :attr:`standard_errors` can be trusted: ``False`` when a
        parameter is on a bound or a weight, width or shape exponent has an error above
        :data:`FISHER_MAX_RELATIVE_ERROR` of its value (:attr:`fisher_errors_note` says
        which), ``None`` without a covariance or for non-parametric (spline, FFL) fits."""
        if self.covariance is None or "g0" in self.params or self.method != "whittle":
            return None
        return not self.fisher_errors_note

    @property
    def scale_path(self) -> str:
        """Where a Whittle fit's NPS scale ``s`` came from: ``"count lattice"`` (combined
        with the Poisson count lattice, :attr:`poisson`), ``"fixed gain"`` (``s`` fixed by
        a given ``gain_counts_per_e``) or ``"spectrum"`` (the noise spectrum alone:
        ``poisson_skewness=False``, or the lattice absent or refused)."""
        if self.method != "whittle":
            raise ValueError("scale_path needs a Whittle fit")
        if self.poisson is not None:
            return "count lattice"
        settings = self.refit_settings or {}
        if settings.get("gain_counts_per_e") is not None:
            return "fixed gain"
        return "spectrum"

    def bootstrap_replicas(self, n: int = 50, *, generator: torch.Generator) -> BootstrapReplicas:
        """Parametric bootstrap: ``n`` refits of crop sets simulated from the fitted model,
        each on the same decision path as this fit; see :meth:`bootstrap_standard_errors`.

        Each replica is a set of crops of the original shape and mean, cut from flat
        micrographs twice the crop size (:meth:`simulate_background` with
        ``cut_from_micrographs=True``: Poisson electrons, the fitted gain, the fitted noise
        transfer; not periodic, like crops of a real micrograph and as the fit's leakage
        correction assumes), refitted with this fit's settings and model.

        The bootstrap is conditional on how this fit obtained its scale
        (:attr:`scale_path`):

        * ``"count lattice"``: a replica whose refit does not take the lattice too (no
          lattice found, or refused by the agreement checks of
          :func:`tem_core.mtf_fit.poisson.agreeing_poisson_scale`) is discarded and
          another one drawn, so every replica's ``s`` comes from the lattice, as this
          fit's did (the errors of a lattice fit, not of a mixture of lattice and spectrum
          fits). Raises ``RuntimeError`` when more than ``n`` replicas are discarded: the
          fit's path is then not a stable property of its model.
        * ``"spectrum"``: the replicas are refitted with ``poisson_skewness=False``. The
          simulated crops are Poisson with a fixed gain and show a lattice that the
          original crops did not (or whose scale was refused), so a plain refit would take
          another path; without it the refit is the original's estimator.
        * ``"fixed gain"``: the same settings (the scale is fixed at the given gain).

        The refits use the chosen model (the bootstrap is conditional on the model choice
        too); for a fit whose model was chosen automatically their lattice check compares
        the lattice's scale with the chosen model's rather than the spline's.

        Parameters
        ----------
        n
            Replicas kept (>= 2).
        generator
            Random generator for the simulated crops (its device is used to simulate;
            the refits run on the CPU).
        """
        from tem_core.mtf_fit.bootstrap import bootstrap_replicas

        return bootstrap_replicas(self, n, generator=generator)

    def bootstrap_standard_errors(
        self, n: int = 50, *, generator: torch.Generator
    ) -> dict[str, float]:
        """Standard errors by a parametric bootstrap: the standard deviation (``n − 1``)
        of each of :attr:`covariance_names`, and of ``"MTF(0.25)"`` (the noise transfer at
        0.25 cycles/px), over ``n`` refits of crops simulated from the fitted model
        (:meth:`bootstrap_replicas`: crops cut from simulated micrographs, each refit on
        the same decision path for the scale as this fit).

        Unlike :attr:`standard_errors` it does not assume a quadratic likelihood, so it
        holds where the Fisher errors are flagged (:attr:`fisher_errors_reliable`). Costs
        ``n`` fits (more when replicas leave the fit's path and are redrawn). Whittle fits
        only. Calibration against the spread of repeated fits of lattice fits
        (``benchmarks/mtf_standard_errors.py``, 40 repeats × 10 refits; calibrated ratios
        std / s.e. in [0.64, 1.42]): the K2 300 kV table (spline model, 16 crops of 128²)
        0.84-0.90, TEM-simulator's camera (Lorentzian, 8 crops of 128², weights and widths
        poorly determined) 1.03-1.19 for every parameter, where the Fisher errors are off
        by 1.2-5 times.

        Parameters
        ----------
        n
            Replicas (>= 2).
        generator
            Random generator for the simulated crops.
        """
        return self.bootstrap_replicas(n, generator=generator).standard_errors

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
            if "g0" not in values:
                values["c"] = 1.0 - values["a"] - values["b"]
            return transfer_curve(values, omega)

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
        cut_from_micrographs: bool = False,
    ) -> torch.Tensor:
        """Flat background with this noise spectrum: ``gain · T(Poisson(mean / gain))``.

        ``T`` is the fitted noise transfer (Whittle; the MTF for FFL fits) [counts].
        By default every ``(M, N)`` image is blurred periodically; crops of a real
        micrograph are not periodic (``cut_from_micrographs``).

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
        cut_from_micrographs
            Cut the ``(M, N)`` images, four at a time, from micrographs of ``(2M, 2N)``
            (as :func:`tem_core.mtf_fit.synthetic_background_crops` does), so they are not
            periodic: the leakage of their periodograms is that of real crops, which
            :func:`tem_core.mtf_fit.fit_mtf_whittle` corrects for. Periodic images have
            none, and a fit of them puts the spectrum's scale high (mean 1.8 standard
            errors for 256 crops of 64²), which is what made the lattice's scale look
            inconsistent with it in 3 of 40 bootstrap refits.
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
        shape = tuple(shape)
        m, n = shape[-2:]
        size = (2 * m, 2 * n) if cut_from_micrographs else (m, n)
        omega = radial_frequency_cycles_per_px(size, device=generator.device, dtype=torch.float64)
        mtf = self.noise_transfer(omega) if self.method == "whittle" else self.mtf(omega)
        lead = shape[:-2]
        count = math.prod(lead)
        images = simulate_flat_background(
            (-(-count // 4), *size) if cut_from_micrographs else shape,
            mean_electrons_per_px=mean_counts / gain_counts_per_e,
            mtf=mtf,
            generator=generator,
            gain_counts_per_e=gain_counts_per_e,
        )
        if not cut_from_micrographs:
            return images
        crops = images.reshape(-1, 2, m, 2, n).permute(0, 1, 3, 2, 4).reshape(-1, m, n)
        return crops[:count].reshape(shape).contiguous()


# --- evaluation ------------------------------------------------------------------------------


def mtf_relative_rms_error(
    fit: MTFFit,
    truth: MTFSpec,
    *,
    nyquist_fractions: Sequence[float] = NYQUIST_FRACTIONS,
) -> float:
    """Relative RMS error ``sqrt(mean((MTF_fit/MTF_true − 1)²))`` at fractions of Nyquist.

    Parameters
    ----------
    fit
        A fitted MTF.
    truth
        A dict of :func:`tem_core.detector.mtf_parametric` parameters, a tabulated camera
        name, or a callable ``truth(frequency_cycles_per_px) -> Tensor``.
    nyquist_fractions
        Where to compare (default 0.25, 0.5, 1.0 Nyquist = 0.125, 0.25, 0.5 cycles/px).
    """
    require_finite("nyquist_fractions", list(nyquist_fractions))
    omega = 0.5 * torch.tensor(list(nyquist_fractions), dtype=torch.float64)
    true = mtf_from_spec(truth, omega)
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
    true_mtf = mtf_from_spec(truth, omega)
    reference = apply_mtf(x, true_mtf)
    estimate = apply_mtf(x, fit.mtf(omega))
    span = float(reference.max() - reference.min())
    diff = (estimate - reference).abs() / (span if span > 0 else 1.0)
    return float(diff.mean()), float(diff.max())
