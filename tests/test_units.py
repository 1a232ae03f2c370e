"""Reference values for the beam: wavelength and interaction parameter.

Reference values (sources in book/references.md): CODATA 2018 constants, and
consistent with Kirkland, *Advanced Computing in Electron Microscopy* (2nd ed., 2010),
Table 2.2 (λ = 0.03701 / 0.02508 / 0.01969 Å at 100 / 200 / 300 kV) and eq. 5.6 for σ
(σ(200 kV) = 7.29e-4 rad/(V·Å)).
"""

from __future__ import annotations

import math

import pytest

from tem_core import units


@pytest.mark.parametrize(
    ("kv", "wavelength_a"),
    [(100.0, 0.037014), (200.0, 0.025079), (300.0, 0.019687)],
)
def test_wavelength_reference(kv: float, wavelength_a: float) -> None:
    assert units.electron_wavelength_a(kv * units.KV_TO_EV) == pytest.approx(wavelength_a, abs=5e-7)


@pytest.mark.parametrize(
    ("kv", "sigma"),
    [(100.0, 9.2440e-4), (200.0, 7.2884e-4), (300.0, 6.5262e-4)],
)
def test_interaction_parameter_reference(kv: float, sigma: float) -> None:
    assert units.interaction_parameter(kv * units.KV_TO_EV) == pytest.approx(sigma, rel=1e-4)


def test_sigma_200kv_kirkland() -> None:
    # Kirkland 2010, p. 77: sigma = 0.00072884 rad/(V·Å) at 200 kV.
    assert units.interaction_parameter(200e3) == pytest.approx(7.29e-4, rel=2e-3)


def test_peng_prefactor() -> None:
    # C = h² / (2π m0 e) = 47.8776 V·Å² (physics.md); carbon: C Σa = 120.115 V·Å³.
    assert units.PENG_PREFACTOR_V_A2 == pytest.approx(47.8776, abs=1e-4)
    carbon_a = [0.0893, 0.2563, 0.757, 1.0487, 0.3575]
    assert units.PENG_PREFACTOR_V_A2 * sum(carbon_a) == pytest.approx(120.115, abs=1e-3)


def test_nonrelativistic_limit() -> None:
    # At 1 eV relativity is negligible: λ = h / sqrt(2 m0 e E) = 12.2643 Å.
    classical = units.PLANCK_J_S / math.sqrt(2 * units.ELECTRON_MASS_KG * units.ELEMENTARY_CHARGE_C)
    assert units.electron_wavelength_a(1.0) == pytest.approx(classical * units.M_TO_A, rel=1e-6)
    assert units.relativistic_mass_ratio(300e3) == pytest.approx(1.587084, rel=1e-6)


def test_named_conversions_agree_with_each_other() -> None:
    """Each conversion written as a literal in units.py, checked against the metre."""
    m = units.M_TO_A
    assert units.MM_TO_A == pytest.approx(m * 1e-3, rel=1e-15)
    assert units.UM_TO_A == pytest.approx(m * 1e-6, rel=1e-15)
    assert units.NM_TO_A == pytest.approx(m * 1e-9, rel=1e-15)
    assert units.CM3_TO_A3 == pytest.approx((m * 1e-2) ** 3, rel=1e-15)
    assert units.NM3_TO_A3 == pytest.approx(units.NM_TO_A**3, rel=1e-15)
    assert units.E_PER_NM2_TO_E_PER_A2 == pytest.approx(1 / units.NM_TO_A**2, rel=1e-15)
    assert units.DEG_TO_RAD * units.RAD_TO_DEG == pytest.approx(1.0, rel=1e-15)
    assert 180 * units.DEG_TO_RAD == pytest.approx(math.pi, rel=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_energy_errors(bad: float) -> None:
    with pytest.raises(ValueError, match="energy_ev must be"):
        units.electron_wavelength_a(bad)
