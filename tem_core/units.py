"""Physical constants, electron optics of the beam, and unit conversions.

Internal units of tem_core are fixed once, here:

========================  ==============================
quantity                  unit
========================  ==============================
length                    Å (angstrom)
energy                    eV (beam energy as kinetic energy of the electron)
angle                     rad
dose                      electrons / Å²
projected potential       V·Å
potential                 V
========================  ==============================

Field units (kV, mm, µm, nm, mrad, e/nm², degrees) appear only at the edges
(notebook parameter cells, file readers) and are converted with the named
constants below, e.g. ``cs_a = 2.7 * MM_TO_A``.

Sign conventions used throughout the package
--------------------------------------------
* Defocus ``defocus_a > 0`` means **underfocus** (the cryo-EM convention of
  CTFFIND/RELION, and Kirkland's); the aberration phase is
  ``chi(k) = pi * lambda * k**2 * (0.5 * Cs * lambda**2 * k**2 - defocus)`` and the
  exit wave's spectrum is multiplied by ``exp(-1j * chi)``, so protein is dark in
  underfocus. Free-space propagation over ``dz`` multiplies by
  ``exp(-1j * pi * lambda * dz * k**2)``.
* A wave travelling along +z through a potential ``V`` picks up the phase
  ``exp(+1j * sigma * V_z)`` (Kirkland's convention), with ``sigma`` from
  :func:`interaction_parameter`.
* Images are ``(..., ny, nx)`` tensors; pixel ``[iy, ix]`` covers
  ``x in [ix * s, (ix + 1) * s)``, ``y in [iy * s, (iy + 1) * s)`` for sampling
  ``s`` [Å]; atom positions are ``(..., 3)`` tensors ordered ``(x, y, z)`` [Å],
  with the beam travelling towards +z.
* Spatial frequencies are in 1/Å (``torch.fft.fftfreq(n, d=sampling_a)``);
  detector frequencies in cycles per pixel (Nyquist = 0.5).

Constants are CODATA 2018 (exact SI values where defined).
"""

from __future__ import annotations

import math

from tem_core.validation import static_positive

# --- CODATA 2018 --------------------------------------------------------------
PLANCK_J_S = 6.62607015e-34  # h, exact
ELEMENTARY_CHARGE_C = 1.602176634e-19  # e, exact
SPEED_OF_LIGHT_M_S = 299_792_458.0  # c, exact
ELECTRON_MASS_KG = 9.1093837015e-31  # m0, CODATA 2018
ELECTRON_REST_ENERGY_EV = ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2 / ELEMENTARY_CHARGE_C
AVOGADRO_PER_MOL = 6.02214076e23  # exact

# --- conversions to internal units (multiply a field value by these) ---------
M_TO_A = 1e10
NM_TO_A = 10.0
UM_TO_A = 1e4
MM_TO_A = 1e7
KV_TO_EV = 1e3
MRAD_TO_RAD = 1e-3
DEG_TO_RAD = math.pi / 180.0
RAD_TO_DEG = 180.0 / math.pi
E_PER_NM2_TO_E_PER_A2 = 1e-2  # 1 e/Å² = 100 e/nm²
NM3_TO_A3 = 1e3
CM3_TO_A3 = 1e24

#: Prefactor C = h² / (2π m0 e) that turns Peng/Kirkland electron scattering
#: factors [Å] into potentials: V_z(ρ) = C Σ a_i (4π/b_i) exp(-4π²ρ²/b_i) [V·Å].
#: Value 47.8776 V·Å².
PENG_PREFACTOR_V_A2 = (
    PLANCK_J_S**2 / (2.0 * math.pi * ELECTRON_MASS_KG * ELEMENTARY_CHARGE_C) * M_TO_A**2
)


def relativistic_mass_ratio(energy_ev: float) -> float:
    """Lorentz factor γ = m / m0 = 1 + E / (m0 c²).

    Parameters
    ----------
    energy_ev
        Kinetic energy of the electron (accelerating voltage × e) [eV].
    """
    energy_ev = static_positive("energy_ev", energy_ev, "eV")
    return 1.0 + energy_ev / ELECTRON_REST_ENERGY_EV


def electron_wavelength_a(energy_ev: float) -> float:
    """Relativistic electron wavelength λ = h / sqrt(2 m0 e E (1 + e E / (2 m0 c²))).

    Parameters
    ----------
    energy_ev
        Kinetic energy of the electron [eV], e.g. ``300 * KV_TO_EV``.

    Returns
    -------
    float
        Wavelength [Å]: 0.037014 (100 kV), 0.025079 (200 kV), 0.019687 (300 kV).
    """
    energy_ev = static_positive("energy_ev", energy_ev, "eV")
    e_joule = energy_ev * ELEMENTARY_CHARGE_C
    momentum = math.sqrt(
        2.0
        * ELECTRON_MASS_KG
        * e_joule
        * (1.0 + e_joule / (2.0 * ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2))
    )
    return PLANCK_J_S / momentum * M_TO_A


def interaction_parameter(energy_ev: float) -> float:
    """Interaction parameter σ = 2π m e λ / h² with the relativistic mass m.

    Parameters
    ----------
    energy_ev
        Kinetic energy of the electron [eV].

    Returns
    -------
    float
        σ [rad / (V·Å)]: 9.2440e-4 (100 kV), 7.2884e-4 (200 kV), 6.5262e-4 (300 kV).
    """
    wavelength_m = electron_wavelength_a(energy_ev) / M_TO_A
    mass = ELECTRON_MASS_KG * relativistic_mass_ratio(energy_ev)
    sigma_si = (  # rad/(V·m)
        2.0 * math.pi * mass * ELEMENTARY_CHARGE_C * wavelength_m / PLANCK_J_S**2
    )
    return sigma_si / M_TO_A
