"""Objective-lens optics: contrast transfer function, coherence envelopes, aperture, phase plate.

Conventions (stated once; see ``book/design.md``)
-------------------------------------------------
* Aberration phase, with ``defocus_a > 0`` = **underfocus** and two-fold astigmatism::

      χ(k) = π λ k² (½ Cs λ² k² − Δf(φ)),   Δf(φ) = Δf + (a/2) cos(2 (φ − φ_a))

  with ``φ = atan2(k_y, k_x)`` the azimuth of the spatial frequency measured from +x
  (image columns) towards +y (image rows). ``a = astigmatism_a`` and
  ``φ_a = astigmatism_angle_rad``. This is CTFFIND's convention: the defocus along
  ``φ_a`` is ``defocus_u = Δf + a/2``, perpendicular to it ``defocus_v = Δf − a/2``
  (:func:`defocus_from_uv` converts). Note that an image displayed with
  ``origin="upper"`` shows +y downwards, which mirrors the visual sense of ``φ``.
* Coherent transfer: the exit wave's spectrum is multiplied by ``exp(−i χ)``. For a weak
  phase object ``ψ = 1 + i σ V`` the image contrast is ``2 σ V̂ sin χ``, which is
  ``−2 σ V̂ sin(π λ Δf k²)`` at low k: protein is dark in underfocus.
* Phase plate (Zernike / Volta, ideal): every scattered beam (``k ≠ 0``; the single pixel
  ``k = 0`` is exempt, i.e. the cut-on is one Fourier pixel) is multiplied by
  ``exp(+i φ_pp)``, so the transfer becomes ``exp(−i (χ − φ_pp))`` and the contrast
  ``2 σ V̂ sin(χ − φ_pp)``: with ``φ_pp = π/2`` it is ``−2 σ V̂ cos χ`` (sin turns into
  −cos, dark protein at focus). ``φ_pp`` equals CTFFIND's "additional phase shift".
* Temporal coherence (Gaussian focal spread; Kirkland, *Advanced Computing in Electron
  Microscopy*, 2nd ed. 2010, ch. 3)::

      E_t(k) = exp(−½ (π λ Δ)² k⁴),
      Δ = Cc sqrt((κ ΔE_rms / E)² + (κ ΔU/U)² + (2 ΔI/I)²),
      κ = (1 + E/E₀) / (1 + E/(2E₀))      (relativistic factor; Reimer & Kohl, *TEM*, 5th ed.)

  ``Δ`` is the rms focal spread [Å], ``E₀ = m₀c²``. ``energy_spread_ev`` is the **FWHM**
  of the gun's energy distribution (the number quoted for guns: ~0.7 eV Schottky FEG,
  ~0.3 eV cold FEG), converted with ``ΔE_rms = FWHM / (2 sqrt(2 ln 2))``;
  ``high_tension_stability`` (ΔU/U) and ``lens_current_stability`` (ΔI/I) are relative rms.
* Spatial coherence (Gaussian distribution of incidence angles; Frank, Optik 38, 519 (1973);
  Kirkland 2010, ch. 3)::

      E_s(k) = exp(−(α / (2λ))² |∇_k χ|²)
             = exp(−(π α / λ)² (Cs λ³ k³ − Δf λ k)²)     (without astigmatism)

  with ``α = illumination_semiangle_rad`` the **1/e half-width** of the angular
  distribution (``exp(−θ²/α²)``); for a half-width at half maximum divide the exponent
  by ln 2. The gradient includes astigmatism. The mixed temporal-spatial term is neglected.
* Envelopes and aperture multiply the wave (quasi-coherent approximation): exact for the
  linear (scattered × unscattered) terms of a weak-phase image, since ``E(0) = 1``.
* Objective aperture: cut-off ``k_max = α_ap / λ``, with a linear edge one Fourier pixel
  wide (``clip(½ + (k_max − k)/Δk, 0, 1)``, ``Δk = 1 / (max(ny, nx) · s)``).

All continuous parameters (defocus, astigmatism and its angle, Cs, Cc, energy spread,
stabilities, illumination angle, phase plate) accept floats or tensors and are
differentiable; tensors with batch shape ``(B,)`` give ``(B, ny, nx)`` transfer functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tem_core import memory
from tem_core._fft import fft2, ifft2
from tem_core._optics_cache import _ctf_cache_key, cached_ctf
from tem_core._optics_checks import check_aperture, check_thon_ring_sampling
from tem_core._optics_motion import BeamMotion
from tem_core._optics_phase import lean_applies, lean_ctf
from tem_core.grids import frequencies_per_a
from tem_core.interop import accepts_arrays
from tem_core.units import ELECTRON_REST_ENERGY_EV, electron_wavelength_a
from tem_core.validation import (
    beam_energy,
    require_bool,
    require_finite,
    require_grid_shape,
    require_nonnegative,
    require_positive,
    require_positive_int,
    static_positive,
)

__all__ = [
    "BeamMotion",
    "FWHM_TO_RMS",
    "Microscope",
    "aberration_phase",
    "aperture",
    "apply_ctf",
    "check_thon_ring_sampling",
    "chromatic_factor",
    "ctf",
    "ctf_1d",
    "ctf_zeros_per_a",
    "defocus_from_uv",
    "defocus_to_uv",
    "image_intensity",
    "spatial_envelope",
    "temporal_envelope",
]

#: Divide a Gaussian's FWHM by 2 sqrt(2 ln 2) = 2.3548 to get its standard deviation.
FWHM_TO_RMS = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

Scalar = float | torch.Tensor


@dataclass(frozen=True, kw_only=True)
class Microscope:
    """Objective-lens and illumination settings.

    Parameters
    ----------
    energy_ev
        Beam energy [eV], e.g. ``300 * KV_TO_EV``.
    cs_a
        Spherical aberration [Å] (finite; may be negative with a corrector).
    cc_a
        Chromatic aberration [Å], >= 0.
    energy_spread_ev
        FWHM of the electron energy distribution [eV], >= 0.
    high_tension_stability
        Relative rms fluctuation of the accelerating voltage ΔU/U, >= 0.
    lens_current_stability
        Relative rms fluctuation of the objective-lens current ΔI/I, >= 0.
    illumination_semiangle_rad
        1/e half-width of the illumination angular spread [rad], >= 0 (0: coherent).
    objective_aperture_rad
        Objective aperture semi-angle [rad], or ``None`` for no aperture.
    phase_plate_rad
        Phase shift of the scattered beams relative to the unscattered one [rad].
    energy_filter
        ``True``: zero-loss energy filter, the electrons removed by the absorptive potential
        are lost. ``False`` (default, unfiltered camera): they return as a low-resolution
        inelastic background (:mod:`tem_core._optics_inelastic`).
    inelastic_blur_a
        rms width of the inelastic background's blur [Å] (delocalisation and chromatic
        defocus of the energy-loss electrons).
    inelastic_collected_fraction
        Fraction of the inelastically scattered electrons reaching an unfiltered camera.
    """

    energy_ev: float
    cs_a: Scalar = 2.7e7
    cc_a: Scalar = 2.7e7
    energy_spread_ev: Scalar = 0.7
    high_tension_stability: Scalar = 0.0
    lens_current_stability: Scalar = 0.0
    illumination_semiangle_rad: Scalar = 0.0
    objective_aperture_rad: float | None = None
    phase_plate_rad: Scalar = 0.0
    energy_filter: bool = False
    inelastic_blur_a: float = 30.0
    inelastic_collected_fraction: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "energy_ev", beam_energy("energy_ev", self.energy_ev))
        require_finite("cs_a", self.cs_a, "Å")
        require_nonnegative("cc_a", self.cc_a, "Å")
        require_nonnegative("energy_spread_ev", self.energy_spread_ev, "eV")
        require_nonnegative("high_tension_stability", self.high_tension_stability)
        require_nonnegative("lens_current_stability", self.lens_current_stability)
        require_nonnegative("illumination_semiangle_rad", self.illumination_semiangle_rad, "rad")
        if self.objective_aperture_rad is not None:
            require_positive("objective_aperture_rad", self.objective_aperture_rad, "rad")
        require_finite("phase_plate_rad", self.phase_plate_rad, "rad")
        require_bool("energy_filter", self.energy_filter)
        require_nonnegative("inelastic_blur_a", self.inelastic_blur_a, "Å")
        if not 0.0 <= float(self.inelastic_collected_fraction) <= 1.0:
            raise ValueError(
                "inelastic_collected_fraction must lie in [0, 1], got "
                f"{self.inelastic_collected_fraction}"
            )

    @property
    def wavelength_a(self) -> float:
        """Relativistic electron wavelength [Å]."""
        return electron_wavelength_a(self.energy_ev)

    @property
    def focal_spread_a(self) -> Scalar:
        """rms focal spread Δ [Å] (module docstring); a tensor if any input is one."""
        kappa = chromatic_factor(self.energy_ev)
        de = self.energy_spread_ev * FWHM_TO_RMS / self.energy_ev
        terms = (
            (kappa * de) ** 2
            + (kappa * self.high_tension_stability) ** 2
            + (2.0 * self.lens_current_stability) ** 2
        )
        if isinstance(terms, torch.Tensor):
            # sqrt'(0) is infinite; the tiny offset keeps the gradient finite when all spreads are 0
            return self.cc_a * torch.sqrt(terms + torch.finfo(terms.dtype).tiny)
        return self.cc_a * math.sqrt(terms)


def chromatic_factor(energy_ev: float) -> float:
    """Relativistic factor κ = (1 + E/E₀) / (1 + E/(2E₀)) on ΔE/E and ΔU/U (1.2269 at 300 kV)."""
    energy_ev = static_positive("energy_ev", energy_ev, "eV")
    eps = energy_ev / ELECTRON_REST_ENERGY_EV
    return (1.0 + eps) / (1.0 + 0.5 * eps)


def defocus_from_uv(defocus_u_a: Scalar, defocus_v_a: Scalar) -> tuple[Scalar, Scalar]:
    """CTFFIND ``(defocus_u, defocus_v)`` [Å] to ``(defocus_a, astigmatism_a)`` = (mean, u − v)."""
    return 0.5 * (defocus_u_a + defocus_v_a), defocus_u_a - defocus_v_a


def defocus_to_uv(defocus_a: Scalar, astigmatism_a: Scalar) -> tuple[Scalar, Scalar]:
    """``(defocus_a, astigmatism_a)`` [Å] to CTFFIND ``(defocus_u, defocus_v)`` [Å]."""
    return defocus_a + 0.5 * astigmatism_a, defocus_a - 0.5 * astigmatism_a


# --------------------------------------------------------------------------- grids
def _param(x: Scalar, device, dtype) -> torch.Tensor:
    """Float or tensor as a tensor broadcastable against (ny, nx): shape (..., 1, 1)."""
    if isinstance(x, torch.Tensor):
        x = x.to(device=device, dtype=torch.promote_types(x.dtype, dtype))
        return x[..., None, None]
    return torch.as_tensor(float(x), device=device, dtype=dtype)


def _working(params, device, dtype: torch.dtype) -> tuple[torch.device, torch.dtype]:
    """Device and real working dtype from the requested complex dtype and tensor parameters."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    for p in params:
        if isinstance(p, torch.Tensor):
            if device is None:
                device = p.device
            if p.dtype == torch.float64:
                real = torch.float64
    return torch.device("cpu") if device is None else torch.device(device), real


def _check_aberrations(defocus_a, astigmatism_a, astigmatism_angle_rad, cs_a) -> None:
    require_finite("defocus_a", defocus_a, "Å")
    require_finite("astigmatism_a", astigmatism_a, "Å")
    require_finite("astigmatism_angle_rad", astigmatism_angle_rad, "rad")
    require_finite("cs_a", cs_a, "Å")


def aberration_phase(
    kx_per_a: torch.Tensor,
    ky_per_a: torch.Tensor,
    *,
    wavelength_a: float,
    defocus_a: Scalar,
    astigmatism_a: Scalar = 0.0,
    astigmatism_angle_rad: Scalar = 0.0,
    cs_a: Scalar = 2.7e7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aberration phase χ and its gradient (∂χ/∂k_x, ∂χ/∂k_y) [rad, rad·Å].

    ``kx_per_a``, ``ky_per_a`` [1/Å] broadcast against the parameters, which must
    already be shaped for broadcasting (see :func:`ctf`).
    """
    lam = wavelength_a
    k2 = kx_per_a**2 + ky_per_a**2
    c2 = (
        torch.cos(2.0 * astigmatism_angle_rad)
        if isinstance(astigmatism_angle_rad, torch.Tensor)
        else math.cos(2.0 * astigmatism_angle_rad)
    )
    s2 = (
        torch.sin(2.0 * astigmatism_angle_rad)
        if isinstance(astigmatism_angle_rad, torch.Tensor)
        else math.sin(2.0 * astigmatism_angle_rad)
    )
    # k² cos(2(φ − φa)) = (kx² − ky²) cos 2φa + 2 kx ky sin 2φa
    k2_cos = (kx_per_a**2 - ky_per_a**2) * c2 + 2.0 * kx_per_a * ky_per_a * s2
    chi = (
        math.pi
        * lam
        * (0.5 * cs_a * lam**2 * k2**2 - defocus_a * k2 - 0.5 * astigmatism_a * k2_cos)
    )
    radial = 2.0 * cs_a * lam**2 * k2 - 2.0 * defocus_a
    dchi_dkx = math.pi * lam * (radial * kx_per_a - astigmatism_a * (kx_per_a * c2 + ky_per_a * s2))
    dchi_dky = math.pi * lam * (radial * ky_per_a - astigmatism_a * (kx_per_a * s2 - ky_per_a * c2))
    return chi, dchi_dkx, dchi_dky


def temporal_envelope(k_per_a: torch.Tensor, *, microscope: Microscope) -> torch.Tensor:
    """Temporal-coherence envelope ``exp(−½ (π λ Δ)² k⁴)`` (module docstring)."""
    lam = microscope.wavelength_a
    delta = microscope.focal_spread_a
    if isinstance(delta, torch.Tensor):
        delta = (
            delta.to(device=k_per_a.device)[..., None, None]
            if delta.ndim
            else delta.to(k_per_a.device)
        )
    return torch.exp(-0.5 * (math.pi * lam * delta) ** 2 * k_per_a**4)


def spatial_envelope(
    dchi_dkx: torch.Tensor, dchi_dky: torch.Tensor, *, microscope: Microscope
) -> torch.Tensor:
    """Spatial-coherence envelope ``exp(−(α/(2λ))² |∇χ|²)`` from the gradient of χ [rad·Å]."""
    alpha = _param(microscope.illumination_semiangle_rad, dchi_dkx.device, dchi_dkx.dtype)
    scale = (alpha / (2.0 * microscope.wavelength_a)) ** 2
    return torch.exp(-scale * (dchi_dkx**2 + dchi_dky**2))


def aperture(
    k_per_a: torch.Tensor, *, microscope: Microscope, pixel_k_per_a: float | None = None
) -> torch.Tensor:
    """Objective aperture transmission at ``k_per_a`` [1/Å] (1 if the microscope has none).

    With ``pixel_k_per_a`` the edge is a linear ramp one Fourier pixel wide; without it
    the edge is hard (``k <= k_max``).
    """
    if microscope.objective_aperture_rad is None:
        return torch.ones_like(k_per_a)
    k_max = microscope.objective_aperture_rad / microscope.wavelength_a
    if pixel_k_per_a is None:
        return (k_per_a <= k_max).to(k_per_a.dtype)
    return torch.clamp(0.5 + (k_max - k_per_a) / pixel_k_per_a, 0.0, 1.0)


def ctf(
    shape,
    *,
    sampling_a: float,
    microscope: Microscope,
    defocus_a: Scalar,
    astigmatism_a: Scalar = 0.0,
    astigmatism_angle_rad: Scalar = 0.0,
    cs_a: Scalar | None = None,
    device=None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Wave transfer function ``exp(−i χ) · E_t · E_s · aperture · phase plate`` on the FFT grid.

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    sampling_a
        Pixel size [Å].
    microscope
        Lens and illumination settings.
    defocus_a
        Mean defocus Δf [Å], > 0 underfocus (float or tensor, batch shape allowed).
    astigmatism_a
        Two-fold astigmatism ``a = defocus_u − defocus_v`` [Å].
    astigmatism_angle_rad
        Azimuth ``φ_a`` of the defocus_u axis from +x [rad].
    cs_a
        Spherical aberration [Å]; ``None`` uses ``microscope.cs_a``.
    device, dtype
        Output device and complex dtype; float64 tensor parameters promote to complex128.

    Returns
    -------
    Tensor
        Complex ``(..., ny, nx)`` in FFT order (k = 0 at ``[0, 0]``).
    """
    h, shared = _shared_ctf(shape, sampling_a, microscope, defocus_a, astigmatism_a,
                            astigmatism_angle_rad, cs_a, device, dtype)  # fmt: skip
    return h.clone() if shared else h


def _shared_ctf(shape, sampling_a, microscope, defocus_a, astigmatism_a, astigmatism_angle_rad,
                cs_a, device, dtype) -> tuple[torch.Tensor, bool]:  # fmt: skip
    """:func:`ctf` and whether it is the cache's own tensor (a tilt series asks for the same
    CTF at every tilt; the caller must not write into a shared one)."""
    cs_a = microscope.cs_a if cs_a is None else cs_a
    args = (shape, sampling_a, microscope, defocus_a, astigmatism_a, astigmatism_angle_rad, cs_a,
            device, dtype)  # fmt: skip
    return cached_ctf(_ctf_cache_key(*args), lambda: _ctf(*args))


def _ctf(shape, sampling_a, microscope, defocus_a, astigmatism_a, astigmatism_angle_rad, cs_a,
         device, dtype) -> torch.Tensor:  # fmt: skip
    _check_aberrations(defocus_a, astigmatism_a, astigmatism_angle_rad, cs_a)
    params = (
        defocus_a,
        astigmatism_a,
        astigmatism_angle_rad,
        cs_a,
        microscope.cs_a,
        microscope.cc_a,
        microscope.energy_spread_ev,
        microscope.illumination_semiangle_rad,
        microscope.phase_plate_rad,
    )
    if dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
    device, real = _working(params, device, dtype)
    ny, nx = shape = require_grid_shape(shape)
    sampling_a = static_positive("sampling_a", sampling_a, "Å")
    check_aperture(microscope, shape, sampling_a)
    names = ("defocus_a", "astigmatism_a", "astigmatism_angle_rad", "cs_a", "phase_plate_rad")
    values = (defocus_a, astigmatism_a, astigmatism_angle_rad, cs_a, microscope.phase_plate_rad)
    v = {name: _param(x, device, real) for name, x in zip(names, values, strict=True)}
    lean = lean_applies(params, v, microscope.focal_spread_a)  # the same values, fewer grids
    need = memory.ctf_bytes(shape, real, requires_grad=not lean)
    memory.require_memory(f"a {ny} x {nx} {real} CTF", need, device)
    ky, kx = frequencies_per_a(shape, sampling_a, device=device, dtype=real)
    pixel_k = 1.0 / (max(int(shape[0]), int(shape[1])) * sampling_a)
    if lean:
        alpha = _param(microscope.illumination_semiangle_rad, device, real)
        return lean_ctf(kx, ky, microscope=microscope, params=v, alpha=alpha, pixel_k_per_a=pixel_k)
    kx, ky = kx.expand(ny, nx), ky.expand(ny, nx)
    k = torch.sqrt(kx**2 + ky**2)
    chi, gx, gy = aberration_phase(kx, ky, wavelength_a=microscope.wavelength_a,
                                   **{n: v[n] for n in names[:4]})  # fmt: skip
    chi = chi - v["phase_plate_rad"] * (k > 0).to(real)
    amplitude = temporal_envelope(k, microscope=microscope) * spatial_envelope(
        gx, gy, microscope=microscope
    )
    amplitude = amplitude * aperture(k, microscope=microscope, pixel_k_per_a=pixel_k)
    out = torch.polar(amplitude.expand(torch.broadcast_shapes(amplitude.shape, chi.shape)), -chi)
    return out.to(torch.complex128 if real == torch.float64 else torch.complex64)


@accepts_arrays
def apply_ctf(
    wave: torch.Tensor,
    *,
    sampling_a: float,
    microscope: Microscope,
    defocus_a: Scalar,
    astigmatism_a: Scalar = 0.0,
    astigmatism_angle_rad: Scalar = 0.0,
    cs_a: Scalar | None = None,
) -> torch.Tensor:
    """Image wave ``F⁻¹[ctf · F[ψ]]`` of an exit wave ``(..., ny, nx)`` (see :func:`ctf`)."""
    if not isinstance(wave, torch.Tensor):
        raise TypeError(f"wave must be a torch.Tensor, got {type(wave).__name__}")
    if wave.ndim < 2:
        raise ValueError(f"wave must have shape (..., ny, nx), got {tuple(wave.shape)}")
    cdtype = (
        torch.complex128 if wave.dtype in (torch.float64, torch.complex128) else torch.complex64
    )
    h, _ = _shared_ctf(tuple(wave.shape[-2:]), sampling_a, microscope, defocus_a, astigmatism_a,
                       astigmatism_angle_rad, cs_a, wave.device, cdtype)  # fmt: skip
    spectrum = fft2(wave.to(torch.promote_types(cdtype, h.dtype))) * h  # h is only read
    memory.release_in_backward(spectrum)  # backward frees and allocates 6 grids around it
    return ifft2(spectrum)


@accepts_arrays
def image_intensity(wave: torch.Tensor) -> torch.Tensor:
    """Intensity ``|ψ|²`` (real; smooth gradient also where ψ = 0)."""
    if not isinstance(wave, torch.Tensor):
        raise TypeError(f"wave must be a torch.Tensor, got {type(wave).__name__}")
    if not wave.is_complex():
        return wave**2
    return wave.real**2 + wave.imag**2


# --------------------------------------------------------------------------- 1-D helpers
def ctf_1d(
    k_per_a: torch.Tensor,
    *,
    microscope: Microscope,
    defocus_a: Scalar,
    cs_a: Scalar | None = None,
) -> torch.Tensor:
    """Phase-contrast transfer ``sin(χ(k) − φ_pp) · E_t · E_s · aperture`` (rotational average).

    The image contrast of a weak phase object is ``2 σ V̂(k) × ctf_1d(k)``: negative values
    (low k in underfocus) render positive potential dark. The phase plate acts on all k
    here (the continuous limit), the aperture edge is hard.

    Parameters
    ----------
    k_per_a
        Spatial frequencies [1/Å], any shape.
    microscope
        Lens settings.
    defocus_a
        Defocus [Å], > 0 underfocus.
    cs_a
        Spherical aberration [Å]; ``None`` uses ``microscope.cs_a``.
    """
    if not isinstance(k_per_a, torch.Tensor):
        k_per_a = torch.as_tensor(k_per_a, dtype=torch.float64)
    cs_a = microscope.cs_a if cs_a is None else cs_a
    _check_aberrations(defocus_a, 0.0, 0.0, cs_a)
    real = torch.float64 if k_per_a.dtype == torch.float64 else torch.float32
    for p in (defocus_a, cs_a):
        if isinstance(p, torch.Tensor) and p.dtype == torch.float64:
            real = torch.float64
    k = k_per_a.to(real)
    zero = torch.zeros_like(k)
    chi, gx, _gy = aberration_phase(
        k, zero, wavelength_a=microscope.wavelength_a, defocus_a=defocus_a, cs_a=cs_a
    )
    envelope = temporal_envelope(k, microscope=microscope) * torch.exp(
        -((microscope.illumination_semiangle_rad / (2.0 * microscope.wavelength_a)) ** 2) * gx**2
    )
    return (
        torch.sin(chi - microscope.phase_plate_rad) * envelope * aperture(k, microscope=microscope)
    )


def ctf_zeros_per_a(
    n: int,
    *,
    defocus_a: float,
    cs_a: float,
    energy_ev: float,
    phase_shift_rad: float = 0.0,
) -> torch.Tensor:
    """First ``n`` zeros k > 0 [1/Å] of ``sin(χ(k) − φ)``, analytically.

    Solves ``½ π Cs λ³ u² − π λ Δf u − (φ + m π) = 0`` for ``u = k²`` over the integers m
    that can give one of the first n zeros. Returns a float64 tensor (shorter than n only
    when fewer zeros exist, e.g. overfocus without Cs).
    """
    require_positive_int("n", n)
    require_finite("defocus_a", defocus_a, "Å")
    require_finite("cs_a", cs_a, "Å")
    require_finite("phase_shift_rad", phase_shift_rad, "rad")
    lam = electron_wavelength_a(energy_ev)
    a = 0.5 * math.pi * cs_a * lam**3
    b = -math.pi * lam * defocus_a
    chi_extreme = -b * b / (4 * a) if a != 0 and -b / (2 * a) > 0 else 0.0
    m_max = int(math.ceil((abs(chi_extreme) + abs(phase_shift_rad)) / math.pi)) + n + 2
    roots: list[float] = []
    for m in range(-m_max, m_max + 1):
        c = -(phase_shift_rad + m * math.pi)
        if a == 0.0:
            cands = [-c / b] if b != 0.0 else []
        else:
            disc = b * b - 4 * a * c
            if disc < 0:
                continue
            sq = math.sqrt(disc)
            # numerically stable quadratic roots
            q = -0.5 * (b + math.copysign(sq, b)) if b != 0 else 0.5 * sq
            cands = [q / a, c / q] if q != 0 else [0.0]
        scale = abs(b / a) if a != 0 else 1.0
        roots.extend(u for u in cands if u > 1e-12 * max(scale, 1e-30))
    roots = sorted(set(roots))
    # merge double roots (tangent zeros) found twice
    unique: list[float] = []
    for u in roots:
        if not unique or u - unique[-1] > 1e-12 * u:
            unique.append(u)
    return torch.tensor([math.sqrt(u) for u in unique[:n]], dtype=torch.float64)
