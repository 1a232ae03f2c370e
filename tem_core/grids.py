"""Frequency grids on the FFT layout, shared by every stage.

Spatial frequencies follow ``torch.fft.fftfreq``: FFT order (zero frequency at index 0), in
1/Å for a pixel size ``sampling_a`` [Å] or in cycles per pixel for ``sampling_a = 1``. Each
function validates the shape once (:func:`tem_core.validation.require_grid_shape`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tem_core.validation import require_grid_shape, require_positive

__all__ = [
    "frequencies_per_a",
    "frequency_squared_per_a2",
    "radial_frequency_cycles_per_px",
]


def frequencies_per_a(
    shape: Sequence[int],
    sampling_a: float = 1.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequencies ``(ky, kx)`` of an ``(ny, nx)`` FFT grid [1/Å], FFT order.

    Parameters
    ----------
    shape
        Grid shape ``(ny, nx)``.
    sampling_a
        Pixel size [Å]; 1 gives cycles per pixel.
    device, dtype
        Of the result.

    Returns
    -------
    (ky, kx)
        Broadcastable views of shape ``(ny, 1)`` and ``(1, nx)``.
    """
    ny, nx = require_grid_shape(shape)
    require_positive("sampling_a", sampling_a, "Å")
    ky = torch.fft.fftfreq(ny, d=sampling_a, device=device, dtype=dtype)
    kx = torch.fft.fftfreq(nx, d=sampling_a, device=device, dtype=dtype)
    return ky[:, None], kx[None, :]


def frequency_squared_per_a2(
    shape: Sequence[int],
    sampling_a: float = 1.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``|k|² = ky² + kx²`` on an ``(ny, nx)`` FFT grid [1/Å²] (cycles²/px² if ``sampling_a=1``)."""
    ky, kx = frequencies_per_a(shape, sampling_a, device=device, dtype=dtype)
    return ky**2 + kx**2


def radial_frequency_cycles_per_px(
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Radial spatial frequency ``|ω|`` of each FFT bin [cycles/pixel], FFT order.

    Parameters
    ----------
    shape
        Image shape ``(ny, nx)``.
    device, dtype
        Of the result.

    Returns
    -------
    Tensor
        ``(ny, nx)``, from 0 to ``√0.5 ≈ 0.707`` in the corners (0.5 at Nyquist on an axis).
    """
    return frequency_squared_per_a2(shape, device=device, dtype=dtype).sqrt_()  # one grid
