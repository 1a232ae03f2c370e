"""Frequency grids: FFT order, units, shape validation."""

from __future__ import annotations

import math

import pytest
import torch

from tem_core import grids


def test_frequencies_follow_fft_order_in_inverse_angstrom() -> None:
    ky, kx = grids.frequencies_per_a((4, 6), 2.0, dtype=torch.float64)
    assert ky.shape == (4, 1) and kx.shape == (1, 6)
    # bins j / (n s) for j < n/2, then negative; Nyquist 1/(2 s) = 0.25 1/Å stored as negative
    assert ky.flatten().tolist() == [0.0, 0.125, -0.25, -0.125]
    assert kx.flatten().tolist() == pytest.approx([0, 1 / 12, 1 / 6, -0.25, -1 / 6, -1 / 12])


def test_radial_frequency_corner_and_axis_nyquist() -> None:
    omega = grids.radial_frequency_cycles_per_px((8, 8), dtype=torch.float64)
    assert omega[0, 0] == 0.0
    assert omega[4, 0] == 0.5 and omega[0, 4] == 0.5
    assert omega[4, 4] == pytest.approx(math.sqrt(0.5), abs=1e-15)
    assert omega.dtype == torch.float64


def test_squared_frequency_scales_with_sampling() -> None:
    per_px = grids.frequency_squared_per_a2((5, 3), dtype=torch.float64)
    per_a = grids.frequency_squared_per_a2((5, 3), 0.5, dtype=torch.float64)
    torch.testing.assert_close(per_a, per_px / 0.25, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("shape", "sampling_a", "message"),
    [
        ((4,), 1.0, r"shape must be a pair \(ny, nx\)"),
        ((4, 0), 1.0, r"shape \(nx\) must be a positive integer, got 0"),
        ((4, 4), 0.0, "sampling_a must be > 0, got 0.0 Å"),
    ],
)
def test_bad_grid_raises(shape, sampling_a, message) -> None:
    with pytest.raises(ValueError, match=message):
        grids.frequencies_per_a(shape, sampling_a)
