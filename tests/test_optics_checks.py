"""tem_core.optics.check_thon_ring_sampling: the Thon-ring aliasing threshold."""

from __future__ import annotations

import math
import warnings

import pytest

from tem_core.optics import check_thon_ring_sampling
from tem_core.propagate import SamplingWarning
from tem_core.units import electron_wavelength_a

ENERGY_EV = 300e3
LAMBDA_A = electron_wavelength_a(ENERGY_EV)


def _defocus_for_step(step_rad: float, *, n: int, sampling_a: float, k: float) -> float:
    """Defocus (C_s = 0) at which χ changes by ``step_rad`` per Fourier pixel at ``k``."""
    return step_rad / (2 * math.pi * LAMBDA_A * k / (n * sampling_a))


def _check(**kwargs) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return check_thon_ring_sampling(energy_ev=ENERGY_EV, **kwargs)


@pytest.mark.parametrize("margin", [0.99, 1.01])
def test_thon_ring_threshold_is_half_pi_per_fourier_pixel(margin: float) -> None:
    n, s = 256, 2.0
    df = margin * _defocus_for_step(math.pi / 2, n=n, sampling_a=s, k=0.5 / s)
    messages = _check(shape=(n, n), sampling_a=s, defocus_a=df, cs_a=0.0)
    assert bool(messages) == (margin > 1)
    if messages:
        assert "Thon rings" in messages[0] and "undersampled" in messages[0]


def test_book_cases_and_the_displayed_frequency_range() -> None:
    # chapter 02's carbon film: 256² px of 2 Å; 1.5 µm is fine, 4 µm aliases the rings at
    # Nyquist (2.38 rad per pixel with C_s = 2.7 mm) but not up to 0.15 1/Å
    film = {"shape": (256, 256), "sampling_a": 2.0, "cs_a": 2.7e7}
    assert _check(defocus_a=15_000.0, **film) == []
    with pytest.warns(SamplingWarning, match=r"χ changes by 2\.38 rad > π/2"):
        check_thon_ring_sampling(defocus_a=40_000.0, energy_ev=ENERGY_EV, **film)
    assert _check(defocus_a=40_000.0, max_frequency_per_a=0.15, **film) == []


def test_astigmatism_adds_half_its_magnitude() -> None:
    n, s = 256, 2.0
    df = _defocus_for_step(math.pi / 2, n=n, sampling_a=s, k=0.5 / s)
    assert _check(shape=(n, n), sampling_a=s, defocus_a=0.98 * df, cs_a=0.0) == []
    messages = _check(
        shape=(n, n), sampling_a=s, defocus_a=0.98 * df, cs_a=0.0, astigmatism_a=0.1 * df
    )
    assert messages


def test_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="sampling_a must be > 0, got 0"):
        check_thon_ring_sampling(
            (8, 8), sampling_a=0.0, defocus_a=1.0, cs_a=0.0, energy_ev=ENERGY_EV
        )
    with pytest.raises(ValueError, match="max_frequency_per_a must be > 0"):
        check_thon_ring_sampling(
            (8, 8),
            sampling_a=1.0,
            defocus_a=1.0,
            cs_a=0.0,
            energy_ev=ENERGY_EV,
            max_frequency_per_a=-1.0,
        )
