"""Validation helpers: messages name parameter, value and unit."""

from __future__ import annotations

import pytest
import torch

from tem_core import validation


def test_finite_message() -> None:
    with pytest.raises(ValueError, match=r"defocus_a must be finite, got nan Å"):
        validation.require_finite("defocus_a", float("nan"), "Å")


def test_tensor_values() -> None:
    validation.require_positive("dose_e_per_a2", torch.tensor([1.0, 2.0]), "e/Å²")
    with pytest.raises(ValueError, match=r"dose_e_per_a2 must be > 0, got -1.0 e/Å²"):
        validation.require_positive("dose_e_per_a2", torch.tensor([1.0, -1.0]), "e/Å²")


def test_range_and_int_and_shape() -> None:
    with pytest.raises(ValueError, match=r"dqe must lie in \(0, 1\]|dqe must lie in"):
        validation.require_in_range("dqe", 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="n_slices must be a positive integer"):
        validation.require_positive_int("n_slices", 0)
    with pytest.raises(ValueError, match=r"positions_a must have shape \(\*, 3\)"):
        validation.require_shape("positions_a", torch.zeros(4, 2), (None, 3))
    with pytest.raises(TypeError, match="sampling_a must be a number"):
        validation.require_positive("sampling_a", "1.0", "Å")
