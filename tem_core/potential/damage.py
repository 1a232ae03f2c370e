"""Radiation damage: exposure-dependent attenuation of the specimen's potential.

Part of the potential stage (:mod:`tem_core.potential`). Grant & Grigorieff (2015, eLife 4:e06980)
measured how fast the signal of a frozen-hydrated specimen fades with accumulated exposure
``N`` [e/Å²]: the amplitude at spatial frequency ``k`` [1/Å] decays as
``exp(−N / (2 N_e(k)))`` with the critical exposure

``N_e(k) = a k^b + c``,   a = 0.245 e/Å², b = −1.665, c = 2.81 e/Å²   (300 kV).

Damage cross-sections scale as ``1/β²`` (β = v/c), so ``N_e`` is scaled by
``β²(E)/β²(300 kV)`` at other energies (0.80 at 200 kV, the factor Grant & Grigorieff
quote). An exposure of dose ``D`` after a prior dose ``D₀`` records the average
amplitude over the exposure,

``A(k) = (2 N_e / D) [exp(−D₀/(2 N_e)) − exp(−(D₀ + D)/(2 N_e))]``   (``A → 1`` as ``k → 0``),

applied to every slice of the potential (atoms, ice and support; the mean, ``k = 0``, is
kept), but not to the fluctuations of the amorphous ice's structure: those are not a
protein losing its structure but water molecules moving under the beam, whose own exposure
average (McMullan et al. 2015; :class:`tem_core.potential.IceStructure`) replaces it
(:func:`ice_exposed`). This is the same curve the dose-weighting of motion-corrected
movies uses; it is an empirical average over the specimen, not a model of bond breaking.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from tem_core import memory, units
from tem_core._fft import fft2, ifft2
from tem_core.validation import require_finite, require_nonnegative, require_positive


@dataclass(frozen=True, kw_only=True)
class RadiationDamage:
    """Critical-exposure curve ``N_e(k) = a k^b + c`` at 300 kV (Grant & Grigorieff 2015).

    Parameters
    ----------
    a_e_per_a2
        ``a`` [e/Å²] (≥ 0).
    b
        Exponent ``b`` (≤ 0: higher frequencies fade faster).
    c_e_per_a2
        ``c`` [e/Å²] (≥ 0); ``a + c > 0``.
    """

    a_e_per_a2: float = 0.245
    b: float = -1.665
    c_e_per_a2: float = 2.81

    def __post_init__(self) -> None:
        require_nonnegative("a_e_per_a2", self.a_e_per_a2, "e/Å²")
        require_nonnegative("c_e_per_a2", self.c_e_per_a2, "e/Å²")
        require_finite("b", self.b)
        if self.b > 0:
            raise ValueError(f"b must be <= 0 (high frequencies fade first), got {self.b}")
        if not self.a_e_per_a2 + self.c_e_per_a2 > 0:
            raise ValueError(
                "a_e_per_a2 + c_e_per_a2 must be > 0, got "
                f"{self.a_e_per_a2} + {self.c_e_per_a2} e/Å²"
            )

    def critical_exposure_e_per_a2(self, k_per_a: torch.Tensor, energy_ev: float) -> torch.Tensor:
        """``N_e(k)`` [e/Å²] at frequencies ``k`` [1/Å] and beam energy [eV] (inf at k = 0)."""
        require_positive("energy_ev", energy_ev, "eV")
        k = k_per_a.abs()
        safe = torch.where(k > 0, k, torch.ones_like(k))
        ne = self.a_e_per_a2 * safe**self.b + self.c_e_per_a2
        ne = torch.where(k > 0, ne, torch.full_like(k, float("inf")))
        return ne * (_beta2(energy_ev) / _beta2(300.0 * units.KV_TO_EV))

    def attenuation(
        self,
        k_per_a: torch.Tensor,
        *,
        prior_dose_e_per_a2: float,
        dose_e_per_a2: float,
        energy_ev: float,
    ) -> torch.Tensor:
        """Exposure-averaged amplitude ``A(k)`` in (0, 1] (module docstring)."""
        require_nonnegative("prior_dose_e_per_a2", prior_dose_e_per_a2, "e/Å²")
        require_positive("dose_e_per_a2", dose_e_per_a2, "e/Å²")
        ne2 = 2.0 * self.critical_exposure_e_per_a2(k_per_a, energy_ev)
        d0, d = float(prior_dose_e_per_a2), float(dose_e_per_a2)
        x = d / ne2
        # (ne2/d) e^{−d0/ne2} (1 − e^{−x}); −expm1 keeps precision where x is tiny
        safe = torch.where(x > 0, x, torch.ones_like(x))
        averaged = torch.where(x > 0, -torch.expm1(-safe) / safe, torch.ones_like(x))
        return torch.exp(-d0 / ne2) * averaged


def _beta2(energy_ev: float) -> float:
    gamma = units.relativistic_mass_ratio(energy_ev)
    return 1.0 - 1.0 / gamma**2


def attenuation_filter(
    shape: tuple[int, int],
    sampling_a: float,
    damage: RadiationDamage,
    *,
    prior_dose_e_per_a2: float,
    dose_e_per_a2: float,
    energy_ev: float,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``A(|k|)`` on the ``(ny, nx)`` FFT grid (FFT order) [dimensionless]."""
    ny, nx = shape
    ky = torch.fft.fftfreq(ny, d=sampling_a, dtype=torch.float64, device=device)
    kx = torch.fft.fftfreq(nx, d=sampling_a, dtype=torch.float64, device=device)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    a = damage.attenuation(
        k, prior_dose_e_per_a2=prior_dose_e_per_a2, dose_e_per_a2=dose_e_per_a2,
        energy_ev=energy_ev,
    )  # fmt: skip
    return a.to(dtype)


def damaged(slices, attenuation: torch.Tensor):
    """Apply ``attenuation`` (FFT order, real) to each complex slice of an iterator."""
    for sl in slices:
        memory.release_at_boundary()  # the slice's temporaries, before the transforms
        spectrum = fft2(sl)
        if spectrum.requires_grad:
            yield ifft2(spectrum * attenuation.to(sl.real.dtype))
        else:  # the same values, one grid fewer
            yield ifft2(spectrum.mul_(attenuation.to(sl.real.dtype)))


def attenuated(potential: torch.Tensor, attenuation: torch.Tensor | None, field=None):
    """``potential`` through ``attenuation`` (if not ``None``), plus an unfiltered ``field``
    (a tensor, or ``None`` / a float 0 for none): the ice structure's fluctuations, which
    carry their own exposure average (:class:`tem_core.potential.IceStructure`)."""
    if attenuation is not None:
        potential = next(damaged([potential], attenuation))
    return potential if field is None or isinstance(field, float) else potential + field


def ice_exposed(settings, dose_e_per_a2: float, energy_ev: float):
    """``settings`` (a :class:`tem_core.potential.PotentialSettings`) whose ice structure, if
    any, averages its beam-induced motion over an exposure of ``dose_e_per_a2`` [e/Å²] at
    ``energy_ev`` [eV] (as a 300 kV exposure scaled by ``β²(300 kV)/β²(E)``, like ``N_e``)."""
    ice = settings.ice_structure
    if ice is None:
        return settings
    require_positive("dose_e_per_a2", dose_e_per_a2, "e/Å²")
    exposure = float(dose_e_per_a2) * _beta2(300.0 * units.KV_TO_EV) / _beta2(energy_ev)
    ice = dataclasses.replace(ice, exposure_e_per_a2=exposure)
    return dataclasses.replace(settings, ice_structure=ice)
