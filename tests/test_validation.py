"""Validation helpers: messages name parameter, value and unit."""

from __future__ import annotations

import numpy as np
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
    with pytest.raises(ValueError, match=r"^dqe must lie in \[0.0, 1.0\], got 1.5$"):
        validation.require_in_range("dqe", 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^dqe must lie in \(0.0, 1.0\), got 1.0$"):
        validation.require_in_range("dqe", 1.0, 0.0, 1.0, inclusive=False)
    with pytest.raises(ValueError, match="n_slices must be a positive integer"):
        validation.require_positive_int("n_slices", 0)
    with pytest.raises(ValueError, match=r"positions_a must have shape \(\*, 3\)"):
        validation.require_shape("positions_a", torch.zeros(4, 2), (None, 3))
    with pytest.raises(TypeError, match="sampling_a must be a number"):
        validation.require_positive("sampling_a", "1.0", "Å")


def test_shape_entries_named_exact_or_any() -> None:
    validation.require_shape("positions_a", torch.zeros(5, 3), ("N", 3))
    with pytest.raises(ValueError, match=r"^positions_a must have shape \(N, 3\), got \(5, 2\)$"):
        validation.require_shape("positions_a", torch.zeros(5, 2), ("N", 3))
    with pytest.raises(ValueError, match=r"^occupancies must have shape \(5,\) to match"):
        validation.require_shape("occupancies", torch.zeros(4), (5,), "to match positions_a")
    with pytest.raises(TypeError, match="positions_a must be a torch.Tensor, got list"):
        validation.require_shape("positions_a", [[0.0, 0.0, 0.0]], ("N", 3))


@pytest.mark.parametrize(
    ("value", "minimum", "exc", "message"),
    [
        (2.0, None, TypeError, r"^index must be an int, got 2.0$"),
        (True, None, TypeError, r"^index must be an int, got True$"),
        (-1, 0, ValueError, r"^index must be a non-negative integer, got -1$"),
        (0, 1, ValueError, r"^index must be a positive integer, got 0$"),
        (8, 16, ValueError, r"^index must be an integer >= 16 pixels, got 8$"),
        ("3", 1, ValueError, r"^index must be a positive integer, got '3'$"),
    ],
)
def test_integer_errors(value, minimum, exc, message) -> None:
    with pytest.raises(exc, match=message):
        validation.require_integer("index", value, minimum, "pixels" if minimum == 16 else "")


def test_integer_accepts_numpy_integers_and_returns_int() -> None:
    out = validation.require_integer("n", np.int64(3), minimum=1)
    assert out == 3 and type(out) is int
    assert validation.require_integer("index", -4) == -4


def test_grid_shape() -> None:
    assert validation.require_grid_shape(torch.Size([4, 6])) == (4, 6)
    assert validation.require_grid_shape([np.int32(2), 3]) == (2, 3)
    with pytest.raises(ValueError, match=r"^shape must be a pair \(ny, nx\) of positive"):
        validation.require_grid_shape((4,))
    with pytest.raises(ValueError, match=r"^shape \(nx\) must be a positive integer, got 0$"):
        validation.require_grid_shape((4, 0))


def test_generator_type_and_device() -> None:
    g = torch.Generator()
    assert validation.require_generator(g, torch.zeros(2), "image") is g
    with pytest.raises(TypeError, match="^generator must be a torch.Generator, got int$"):
        validation.require_generator(0)
    meta = torch.zeros(2, device="meta")
    with pytest.raises(ValueError, match=r"generator is on cpu but image is on meta; create it"):
        validation.require_generator(g, meta, "image")


def test_bool_rejects_truthy_values() -> None:
    validation.require_bool("overwrite", False)
    with pytest.raises(TypeError, match="^overwrite must be a bool, got 1$"):
        validation.require_bool("overwrite", 1)
