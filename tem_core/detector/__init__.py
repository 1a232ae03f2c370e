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

from tem_core import memory
from tem_core._autodiff import autograd_follows
from tem_core._grid_cache import GridCache, plain_key
from tem_core.detector.mtf import (
    _mtf_of_omega2,
    apply_mtf,
    apply_radial_mtf,
    mtf_parametric,
    mtf_tabulated,
)
from tem_core.detector.noise import (
    NOISE_MODELS,
    expected_electrons,
    poisson_log_prob,
    sample_counts,
    sample_electrons,
)
from tem_core.detector.params import (
    Scalar,
    _as_tensor,
    _batch_shaped,
    _check_dqe,
    _check_mtf_params,
)
from tem_core.detector.tables import (
    _read_table,
    available_cameras,
    available_dqe_tables,
    load_dqe_table,
    load_mtf_table,
)
from tem_core.grids import radial_frequency_cycles_per_px
from tem_core.interop import accepts_arrays
from tem_core.validation import require_bool, require_grid_shape, require_positive

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
        require_bool("mtf_enabled", self.mtf_enabled)
        require_bool("mtf_after_noise", self.mtf_after_noise)
        if self.noise_model not in NOISE_MODELS:
            raise ValueError(f"noise_model must be one of {NOISE_MODELS}, got {self.noise_model!r}")

    @classmethod
    def for_camera(cls, camera: str, *, dqe_table: str | None = None, **settings: Any) -> Detector:
        """A detector with a real camera's published MTF and DQE(0).

        Parameters
        ----------
        camera
            Tabulated MTF (:func:`available_cameras`, e.g. ``"k2_300kv"``).
        dqe_table
            DQE curve (:func:`available_dqe_tables`) whose zero-frequency value becomes
            ``dqe``; default: the table named like ``camera`` (``k2_300kv``, ``falcon2_300kv``,
            ``de20_300kv``). The simulator's DQE is frequency independent; with
            ``mtf_after_noise=True`` the model's DQE(ω) is ``DQE(0) · MTF(ω)²``.
        **settings
            Other :class:`Detector` fields (``gain_counts_per_e``, ``noise_model``, ...).
        """
        name = camera if dqe_table is None else dqe_table
        if name not in available_dqe_tables():
            raise ValueError(
                f"no DQE table {name!r} (camera={camera!r}); pass dqe_table= one of "
                f"{', '.join(available_dqe_tables())}"
            )
        _, dqe = load_dqe_table(name)
        # the curves start at 0 or 0.001 cycles/px: the first value is DQE(0)
        return cls(mtf_camera=camera, dqe=float(dqe[0]), **settings)

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
        ny, nx = shape = require_grid_shape(shape)
        where = torch.device("cpu" if device is None else device)
        tabulated = self.mtf_camera is not None
        params = (self.a, self.b, self.c, self.alpha, self.beta, self.p, self.q)
        graph = not tabulated and autograd_follows(*params)
        memory.require_memory(
            f"a {ny} x {nx} {dtype} MTF",
            memory.mtf_bytes(shape, dtype, tabulated=tabulated, requires_grad=graph),
            where,
        )  # fmt: skip
        omega = radial_frequency_cycles_per_px(shape, device=device, dtype=dtype)
        if tabulated:
            return mtf_tabulated(omega, camera=self.mtf_camera)
        # ω², in place: its own grid is the first of the MTF's (parameters checked on init)
        return _mtf_of_omega2(omega.square_(), params)


#: MTFs of detectors whose parameters are plain numbers, by grid (a tilt series' every tilt)
MTF_CACHE = GridCache()


def _image_mtf(detector: Detector, image: torch.Tensor) -> torch.Tensor | None:
    """``detector.mtf`` on ``image``'s grid, shared from :data:`MTF_CACHE` (read only)."""
    if not isinstance(detector, Detector):
        raise TypeError(f"detector must be a Detector, got {type(detector).__name__}")
    if not detector.mtf_enabled:
        return None
    shape = tuple(image.shape[-2:])
    params = (detector.a, detector.b, detector.c, detector.alpha, detector.beta, detector.p,
              detector.q)  # fmt: skip
    key = plain_key("mtf", shape, image.device, image.dtype, params, detector.mtf_camera)
    return MTF_CACHE.get(
        key,
        shape[0] * shape[1],
        lambda: detector.mtf(shape, device=image.device, dtype=image.dtype),
    )


@accepts_arrays
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


@accepts_arrays
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
    blurred = None if mtf is None else apply_radial_mtf(electrons, mtf)  # shared with the noise
    expected = _expected_counts(electrons if blurred is None else blurred, None, detector)
    counts = None
    if generator is not None:
        counts = _sampled_counts(electrons, mtf, detector, generator, blurred=blurred)
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
        electrons = apply_radial_mtf(electrons, mtf)
    return _batch_shaped(_as_tensor(detector.gain_counts_per_e, electrons)) * electrons


def _sampled_counts(
    electrons: torch.Tensor,
    mtf: torch.Tensor | None,
    detector: Detector,
    generator: torch.Generator,
    blurred: torch.Tensor | None = None,
) -> torch.Tensor:
    if mtf is not None and not detector.mtf_after_noise:
        if blurred is None or mtf.requires_grad:  # noise never follows the MTF's parameters
            blurred = apply_radial_mtf(electrons, mtf.detach())
        electrons = blurred.clamp_min(0.0)
    detected = sample_electrons(
        electrons, dqe=detector.dqe, generator=generator, noise_model=detector.noise_model
    )
    if mtf is not None and detector.mtf_after_noise:
        detected = apply_radial_mtf(detected, mtf)
    return _batch_shaped(_as_tensor(detector.gain_counts_per_e, detected)) * detected
