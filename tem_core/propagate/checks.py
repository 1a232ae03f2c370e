"""Sampling warnings and memory preflight for :mod:`tem_core.propagate` (criteria there)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from tem_core import memory
from tem_core.units import electron_wavelength_a
from tem_core.validation import (
    require_grid_shape,
    require_in_range,
    require_integer,
    require_positive,
    require_positive_int,
)


class SamplingWarning(UserWarning):
    """Sampling, band limit or slice thickness too coarse for the beam energy."""


def check_fraction(bandlimit_fraction: float | None) -> None:
    if bandlimit_fraction is not None:
        require_in_range("bandlimit_fraction", bandlimit_fraction, 0.0, 1.0, "(of Nyquist)")
        if bandlimit_fraction <= 0:
            raise ValueError(f"bandlimit_fraction must be > 0 (or None), got {bandlimit_fraction}")


# --------------------------------------------------------------------------- checks
def check_sampling(
    shape: Sequence[int],
    *,
    sampling_a: float,
    slice_thickness_a: float,
    energy_ev: float,
    bandlimit_fraction: float | None = 2.0 / 3.0,
    stacklevel: int = 2,
) -> list[str]:
    """Warn (:class:`SamplingWarning`) when sampling or slice thickness are too coarse.

    The two criteria are documented in :mod:`tem_core.propagate`. Returns the list of
    messages (empty when all is well).

    Parameters
    ----------
    shape
        ``(ny, nx)`` grid shape.
    sampling_a
        Pixel size [Å].
    slice_thickness_a
        Slice thickness [Å].
    energy_ev
        Beam energy [eV].
    bandlimit_fraction
        Band limit as a fraction of Nyquist (``None``: Nyquist).
    stacklevel
        Passed to :func:`warnings.warn` (3 points at the caller of :func:`multislice`).
    """
    ny, nx = require_grid_shape(shape)
    require_positive("sampling_a", sampling_a, "Å")
    require_positive("slice_thickness_a", slice_thickness_a, "Å")
    check_fraction(bandlimit_fraction)
    wavelength = electron_wavelength_a(energy_ev)
    fraction = 1.0 if bandlimit_fraction is None else bandlimit_fraction
    k_bl = fraction / (2.0 * sampling_a)
    messages = []
    field_a = min(ny, nx) * sampling_a
    spread_a = wavelength * k_bl * slice_thickness_a
    if spread_a > field_a / 2.0:
        messages.append(
            f"Fresnel propagator undersampled: over slice_thickness_a={slice_thickness_a} Å "
            f"a wave at the band limit spreads {spread_a:.3g} Å sideways, more than half "
            f"the field of view ({field_a:.3g} Å) at energy_ev={energy_ev} eV; "
            "use thinner slices or a larger grid"
        )
    depth_of_field_a = 1.0 / (2.0 * wavelength * k_bl**2)
    if slice_thickness_a > depth_of_field_a:
        messages.append(
            f"slice_thickness_a={slice_thickness_a} Å exceeds the depth of field at the band "
            f"limit, 1/(2 λ k²) = {depth_of_field_a:.3g} Å at energy_ev={energy_ev} eV and "
            f"sampling_a={sampling_a} Å; "
            "propagation inside a slice is not negligible: use thinner slices"
        )
    for message in messages:
        warnings.warn(message, SamplingWarning, stacklevel=stacklevel)
    return messages


def check_ctf_sampling(
    shape: Sequence[int],
    *,
    sampling_a: float,
    energy_ev: float,
    defocus_a: float,
    cs_a: float = 0.0,
    astigmatism_a: float = 0.0,
    bandlimit_fraction: float | None = 2.0 / 3.0,
    stacklevel: int = 2,
) -> list[str]:
    """Warn (:class:`SamplingWarning`) when the CTF phase aliases on the grid.

    The phase ``χ(k) = π λ (½ C_s λ² k⁴ − Δf k²)`` must change by less than π between
    neighbouring Fourier pixels (``Δk = 1/(N·sampling_a)``, N the smaller side) up to the
    band limit; otherwise the point-spread function, of radius ``|∂χ/∂k|/(2π)``, is wider
    than half the field and wraps around (aliasing). The worst direction of astigmatism is
    used (``Δf ± a/2``). Returns the list of messages (empty when all is well).

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    sampling_a
        Pixel size [Å].
    energy_ev
        Beam energy [eV].
    defocus_a
        Defocus [Å] (largest of a series).
    cs_a
        Spherical aberration [Å].
    astigmatism_a
        Two-fold astigmatism [Å].
    bandlimit_fraction
        Band limit of the wave as a fraction of Nyquist (``None``: Nyquist).
    """
    ny, nx = require_grid_shape(shape)
    require_positive("sampling_a", sampling_a, "Å")
    check_fraction(bandlimit_fraction)
    wavelength = electron_wavelength_a(energy_ev)
    fraction = 1.0 if bandlimit_fraction is None else bandlimit_fraction
    k_bl = fraction / (2.0 * sampling_a)
    step = 1.0 / (min(ny, nx) * sampling_a)
    k = torch.linspace(0.0, k_bl, 1025, dtype=torch.float64)
    slope = torch.zeros_like(k)
    half = 0.5 * abs(float(astigmatism_a))
    for df in (float(defocus_a) - half, float(defocus_a) + half):
        dchi_dk = 2.0 * math.pi * wavelength * (float(cs_a) * wavelength**2 * k**3 - df * k)
        slope = torch.maximum(slope, dchi_dk.abs())
    per_pixel = float(slope.max()) * step
    messages = []
    if per_pixel > math.pi:
        field_a = min(ny, nx) * sampling_a
        messages.append(
            f"CTF aliased: at defocus_a={defocus_a} Å the aberration phase changes by "
            f"{per_pixel:.3g} rad per Fourier pixel (more than π) below the band limit of a "
            f"{ny} x {nx} grid at sampling_a={sampling_a} Å; the point-spread function "
            f"({float(slope.max()) / (2 * math.pi):.3g} Å radius) is wider than half the field "
            f"({field_a / 2:.3g} Å). Use a larger field of view or less defocus"
        )
    for message in messages:
        warnings.warn(message, SamplingWarning, stacklevel=stacklevel)
    return messages


def available_memory_bytes(device=None) -> int:
    """Memory a grid may use on ``device`` [bytes]: free memory on CUDA, ``MemAvailable``
    (bounded by a cgroup limit) on the CPU; see :func:`tem_core.memory.available_memory_bytes`."""
    return memory.available_memory_bytes(device)


def estimate_wave_memory_bytes(
    shape: Sequence[int],
    dtype: torch.dtype = torch.complex64,
    *,
    device=None,
    n_slices: int = 1,
    requires_grad: bool = False,
) -> int:
    """Working memory of :func:`multislice` on a grid, checked before allocating.

    :func:`tem_core.memory.multislice_bytes`: the arrays one step holds (propagator, wave,
    transmission and its band-limited copy, the transmitted wave, the inverse FFT and the
    next wave, complex; the band-limit mask) and, with autograd, the 3 complex arrays kept
    per slice until ``backward``. The same count is part of the micrograph preflight.

    Parameters
    ----------
    shape
        ``(ny, nx)`` (leading batch dimensions are multiplied in).
    dtype
        Complex (or real) dtype of the wave.
    device
        Where it would run (``None``: CPU).
    n_slices
        Number of slices (matters only with ``requires_grad``).
    requires_grad
        Whether the graph for backpropagation is kept.

    Raises
    ------
    tem_core.memory.MemoryPreflightError
        (a ``ValueError`` and a ``MemoryError``) when the estimate exceeds
        :func:`available_memory_bytes`.

    Returns
    -------
    int
        Estimated bytes.
    """
    if len(shape) < 2:
        raise ValueError(f"shape must be (..., ny, nx), got {tuple(shape)!r}")
    shape = tuple(require_integer("shape entries", s, minimum=1) for s in shape)
    require_positive_int("n_slices", n_slices)
    needed = memory.multislice_bytes(shape, dtype, n_slices=n_slices, requires_grad=requires_grad)
    return memory.require_memory(
        f"a {' x '.join(str(s) for s in shape)} {dtype} multislice"
        + (f" with gradients over {n_slices} slices" if requires_grad else ""),
        needed,
        device,
        "use a smaller grid, complex64, or fewer slices per backward pass",
    )
