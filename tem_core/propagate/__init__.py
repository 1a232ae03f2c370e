"""Wave propagation through the specimen: multislice and the projection approximation.

Conventions (see ``book/design.md``)
------------------------------------
* Transmission through one slice: ``t = exp(i σ (V_z + i V'_z))`` with the projected
  slice potential ``V_z`` and the absorptive potential ``V'_z >= 0`` [V·Å], so the
  absorptive part attenuates the wave by ``exp(-σ V'_z)``.
* Fresnel propagation over a distance ``dz``: ``P(k) = exp(-i π λ dz k²)``.
* One multislice step, as in abTEM and Kirkland: *transmit, then propagate* over the
  thickness of that slice, ``ψ_{n+1} = F⁻¹[ P(dz_n) · A · F[ψ_n · t_n] ]``, so the
  returned exit wave lives in the plane at the bottom of the last slice.

Band limit (anti-aliasing)
--------------------------
Multiplying two waves band-limited to ``k_bl`` creates frequencies up to ``2 k_bl``; on
the periodic FFT grid (period ``2 k_N`` in frequency, ``k_N = 1 / (2 s)``) those wrap
around onto ``|k| >= 2 k_N - 2 k_bl``. With ``k_bl = (2/3) k_N`` every aliased component
lands outside the band-limit disc, where the next application of the circular aperture
``A = [|k| < k_bl]`` removes it. As abTEM does, the aperture multiplies the propagator
and each transmission function is band-limited too (``t ← F⁻¹[A F[t]]``). abTEM tapers
the aperture edge with a cosine of width ``0.01 / s``; here the edge is hard (the pixel at
exactly ``k_bl`` is excluded, like abTEM's ``cutoff = 0.6666666``). The band limit makes
the step non-unitary: the norm drops by the power scattered outside ``k_bl``
(``bandlimit_fraction=None`` disables it, and then ``mean |ψ|²`` is conserved exactly
for a real potential).

Sampling warnings (:class:`SamplingWarning`), see :func:`check_sampling`
------------------------------------------------------------------------
With the band limit ``k_bl = f / (2 s)``:

1. *Propagator aliasing*: the propagator phase ``π λ dz k²`` changes between
   neighbouring Fourier pixels (``Δk = 1 / (n s)``) by ``2 π λ dz k_bl Δk`` at the band
   limit; more than ``π`` aliases it. Equivalently the lateral spread ``λ k_bl dz`` of a
   wave scattered at the band-limit angle within one step exceeds half the field of view.
2. *Slice thickness*: the multislice step neglects propagation inside a slice. This is
   accurate while the slice is thinner than the depth of field at the band limit,
   ``dz <= 1 / (2 λ k_bl²)`` (intra-slice Fresnel phase ``π λ dz k_bl² <= π/2``); thicker
   slices warn. (At 300 kV and 1 Å pixels this allows 228 Å; atomic-resolution
   crystal work typically uses 1-2 Å slices.)

All functions are pure torch, differentiable with autograd with respect to the slice
potentials, the input wave and a tensor slice thickness, and follow the input's device
and dtype (complex64 from float32, complex128 from float64).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from tem_core._fft import fft2, ifft2
from tem_core._grid_cache import GridCache, plain_key
from tem_core.grids import frequency_squared_per_a2
from tem_core.memory import release_in_backward
from tem_core.propagate.checks import (
    SamplingWarning,
    available_memory_bytes,
    check_ctf_sampling,
    check_fraction,
    check_sampling,
    estimate_wave_memory_bytes,
)
from tem_core.propagate.lines import LineWave, _times, bandlimit_line, constant_axis, one_line
from tem_core.propagate.workspace import StepWorkspace
from tem_core.units import electron_wavelength_a, interaction_parameter
from tem_core.validation import (
    require_finite,
    require_grid_shape,
    require_positive,
    static_positive,
)

__all__ = [
    "SamplingWarning",
    "apply_bandlimit",
    "available_memory_bytes",
    "bandlimit_mask",
    "check_ctf_sampling",
    "check_sampling",
    "estimate_wave_memory_bytes",
    "fresnel_propagator",
    "multislice",
    "multislice_step",
    "phase_object_wave",
    "plane_wave",
    "transmission_function",
]


# --------------------------------------------------------------------------- helpers
#: Propagators and band-limit masks of :func:`multislice` by plain-number key (every tilt of a
#: series propagates on the same grid by the same slice thickness; read only)
PROPAGATOR_CACHE = GridCache()


def _shared(key: tuple, shape, make):
    """``make()`` kept in :data:`PROPAGATOR_CACHE` under ``key`` if it is all plain numbers."""
    return PROPAGATOR_CACHE.get(plain_key(*key), shape[0] * shape[1], make)


def _complex_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """complex64 for float32/complex64 (and lower), complex128 for float64/complex128."""
    if dtype in (torch.float64, torch.complex128):
        return torch.complex128
    return torch.complex64


def _real_dtype_for(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def bandlimit_mask(
    shape: Sequence[int], *, bandlimit_fraction: float | None = 2.0 / 3.0, device=None
) -> torch.Tensor:
    """Circular anti-aliasing aperture ``|k| < f · k_Nyquist`` on the FFT grid.

    Parameters
    ----------
    shape
        ``(ny, nx)`` grid shape.
    bandlimit_fraction
        Radius of the aperture as a fraction of the Nyquist frequency ``1 / (2 s)``;
        ``None`` gives an all-true mask.

    Returns
    -------
    Tensor
        Boolean ``(ny, nx)`` mask (frequencies in FFT order). Computed in cycles per pixel,
        so it does not depend on the pixel size. The boundary pixel is excluded.
    """
    ny, nx = require_grid_shape(shape)
    check_fraction(bandlimit_fraction)
    if bandlimit_fraction is None:
        return torch.ones((ny, nx), dtype=torch.bool, device=device)
    # cycles per pixel
    k2 = frequency_squared_per_a2((ny, nx), 1.0, device=device, dtype=torch.float64)
    cutoff = 0.5 * bandlimit_fraction
    return k2 < cutoff**2 * (1.0 - 1e-9)


def _scalar(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach())
    return float(value)


# --------------------------------------------------------------------------- operators
def plane_wave(
    shape: Sequence[int], *, device=None, dtype: torch.dtype = torch.complex64
) -> torch.Tensor:
    """Unit-amplitude plane wave along +z, ``ψ = 1`` everywhere (mean ``|ψ|² = 1``)."""
    ny, nx = require_grid_shape(shape)
    return torch.ones((ny, nx), device=device, dtype=dtype)


def transmission_function(potential_v_a: torch.Tensor, *, energy_ev: float) -> torch.Tensor:
    """Transmission function of one slice, ``t = exp(i σ (V + i V'))``.

    Parameters
    ----------
    potential_v_a
        Projected slice potential ``(..., ny, nx)`` [V·Å]: real ``V_z``, or complex with
        the absorptive potential ``V'_z >= 0`` [V·Å] as imaginary part.
    energy_ev
        Beam energy [eV].

    Returns
    -------
    Tensor
        Complex transmission function, complex64 for float32/complex64 input and
        complex128 for float64/complex128 input. Not band-limited.
    """
    if not isinstance(potential_v_a, torch.Tensor):
        raise TypeError(
            f"potential_v_a must be a torch.Tensor [V·Å], got {type(potential_v_a).__name__}"
        )
    sigma = interaction_parameter(energy_ev)
    cdtype = _complex_dtype_for(potential_v_a.dtype)
    if potential_v_a.is_complex():
        v = potential_v_a.to(cdtype)
        # exp(iσ(V + iV')) = exp(-σV') · exp(iσV), in real arithmetic (3-4× faster than the
        # complex exponential, equal to it within rounding)
        return torch.polar(torch.exp((-sigma) * v.imag), sigma * v.real)
    rdtype = _real_dtype_for(potential_v_a.dtype)
    return torch.polar(
        torch.ones((), dtype=rdtype, device=potential_v_a.device).expand_as(potential_v_a),
        sigma * potential_v_a.to(rdtype),
    )


def fresnel_propagator(
    shape: Sequence[int],
    *,
    sampling_a: float,
    thickness_a: float | torch.Tensor,
    energy_ev: float,
    device=None,
    dtype: torch.dtype = torch.complex64,
    bandlimit_fraction: float | None = 2.0 / 3.0,
) -> torch.Tensor:
    """Fresnel propagator ``P(k) = exp(-i π λ dz k²)`` times the anti-aliasing aperture.

    Parameters
    ----------
    shape
        ``(ny, nx)`` grid shape.
    sampling_a
        Pixel size [Å].
    thickness_a
        Propagation distance ``dz`` [Å] (float or 0-d tensor, differentiable; may be
        negative to propagate backwards).
    energy_ev
        Beam energy [eV].
    device, dtype
        Output device and complex dtype (a tensor ``thickness_a`` fixes the device when
        ``device`` is None, and float64 thickness gives complex128).
    bandlimit_fraction
        Aperture radius as a fraction of Nyquist, ``None`` for no band limit.

    Returns
    -------
    Tensor
        Complex ``(ny, nx)`` propagator in FFT order.
    """
    ny, nx = require_grid_shape(shape)
    require_positive("sampling_a", sampling_a, "Å")
    require_finite("thickness_a", thickness_a, "Å")
    check_fraction(bandlimit_fraction)
    if dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
    wavelength = electron_wavelength_a(energy_ev)
    if isinstance(thickness_a, torch.Tensor):
        if thickness_a.numel() != 1:
            raise ValueError(
                f"thickness_a must be a scalar [Å], got shape {tuple(thickness_a.shape)}"
            )
        device = thickness_a.device if device is None else device
        if thickness_a.dtype == torch.float64:
            dtype = torch.complex128
        rdtype = _real_dtype_for(dtype)
        dz = thickness_a.reshape(()).to(device=device, dtype=rdtype)
        k2 = frequency_squared_per_a2((ny, nx), sampling_a, device=device, dtype=rdtype)
        phase = (-math.pi * wavelength) * dz * k2
    else:
        # Python float: compute the phase in float64 and round once.
        k2 = frequency_squared_per_a2((ny, nx), sampling_a, device=device, dtype=torch.float64)
        phase = ((-math.pi * wavelength * float(thickness_a)) * k2).to(_real_dtype_for(dtype))
    prop = torch.polar(torch.ones_like(phase), phase).to(dtype)
    if bandlimit_fraction is not None:
        prop = prop * bandlimit_mask(
            (ny, nx), bandlimit_fraction=bandlimit_fraction, device=prop.device
        )
    return prop


def _propagator(shape, sampling_a, thickness_a, energy_ev, device, cdtype, fraction):
    """:func:`fresnel_propagator` in ``cdtype``, shared from :data:`PROPAGATOR_CACHE` when
    every argument is a plain number (a tensor thickness is made afresh)."""
    key = ("fresnel", shape, sampling_a, thickness_a, energy_ev, device, cdtype, fraction)
    return _shared(key, shape, lambda: fresnel_propagator(
        shape, sampling_a=sampling_a, thickness_a=thickness_a, energy_ev=energy_ev,
        device=device, dtype=cdtype, bandlimit_fraction=fraction,
    ).to(cdtype))  # fmt: skip


def _mask(shape, fraction, device):
    """:func:`bandlimit_mask`, shared from :data:`PROPAGATOR_CACHE` (plain numbers)."""
    return _shared(("mask", shape, fraction, device), shape,
                   lambda: bandlimit_mask(shape, bandlimit_fraction=fraction, device=device))


def apply_bandlimit(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Band-limit ``x`` ``(..., ny, nx)``: ``F⁻¹[mask · F[x]]`` (``mask=None``: unchanged).

    ``mask`` is a :func:`bandlimit_mask`; the operator is linear and self-adjoint.
    """
    if mask is None:
        return x
    return ifft2(fft2(x) * mask)


def multislice_step(
    wave: torch.Tensor,
    transmission: torch.Tensor,
    propagator: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One multislice step ``F⁻¹[P · F[ψ · t]]`` (transmit, then propagate).

    ``mask`` (boolean band-limit aperture) band-limits ``t`` first, as abTEM does; the
    aperture of the propagator itself is already inside ``propagator``.
    """
    t = apply_bandlimit(transmission, mask)
    return ifft2(fft2(wave * t) * propagator)


def _multislice_step_scaled(wave, transmission, scaled_propagator, scaled_mask):
    """:func:`multislice_step` with the inverse FFTs' ``1/n`` folded into the factors.

    ``scaled_propagator = propagator / n`` and ``scaled_mask = mask / n`` (real) or ``None``;
    the products with them are in place on fresh FFT outputs (autograd-safe: neither the
    FFT nor the product with a constant needs the overwritten values).
    """
    t = transmission
    if scaled_mask is not None:
        release_in_backward(t)  # in backward: between the band limit's and exp's arrays
        t = ifft2(_times(fft2(t), scaled_mask), norm="forward")  # unnormalised inverse
        release_in_backward(t)  # and between the product's and the band limit's
    product = wave * t
    release_in_backward(product)  # mid-step in backward: after propagation, before t
    return ifft2(_times(fft2(product), scaled_propagator), norm="forward")


def phase_object_wave(
    projected_potential_v_a: torch.Tensor,
    *,
    energy_ev: float,
    wave: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exit wave in the projection (phase-object) approximation, ``ψ = ψ₀ exp(i σ V_proj)``.

    The whole specimen acts in one plane; no propagation inside it and no band limit.
    Equal to :func:`multislice` for a thin specimen (``λ · thickness · k² → 0``).

    Parameters
    ----------
    projected_potential_v_a
        Potential projected through the whole specimen ``(ny, nx)`` [V·Å], real, or
        complex with the absorptive part as imaginary part.
    energy_ev
        Beam energy [eV].
    wave
        Incident wave; ``None`` for a unit plane wave.
    """
    t = transmission_function(projected_potential_v_a, energy_ev=energy_ev)
    if wave is None:
        return t
    return wave.to(torch.promote_types(wave.dtype, t.dtype)) * t


# --------------------------------------------------------------------------- multislice
def multislice(
    slices: Iterable[torch.Tensor],
    *,
    sampling_a: float,
    slice_thickness_a: float | torch.Tensor | Sequence[float],
    energy_ev: float,
    wave: torch.Tensor | None = None,
    bandlimit_fraction: float | None = 2.0 / 3.0,
    bandlimit_transmission: bool = True,
) -> torch.Tensor:
    """Exit wave by the multislice method, streaming the slices one at a time.

    Each step transmits through ``t_n = exp(i σ (V_n + i V'_n))`` (band-limited) and then
    propagates over the slice's thickness with the band-limited Fresnel propagator; see
    the module docstring for conventions, band limit and warnings. The slices are never
    stacked: a generator such as :func:`tem_core.potential.iter_slice_potentials` is
    consumed lazily (with autograd the graph still keeps per-slice tensors).

    Parameters
    ----------
    slices
        Iterable of projected slice potentials ``(ny, nx)`` (or ``(..., ny, nx)``) [V·Å],
        real or complex (imaginary part = absorptive potential >= 0), in increasing z.
    sampling_a
        Pixel size [Å].
    slice_thickness_a
        Thickness of every slice [Å] (float or 0-d tensor, differentiable), or one
        thickness per slice (1-D tensor or sequence).
    energy_ev
        Beam energy [eV].
    wave
        Incident wave ``(..., ny, nx)``; ``None`` for a unit plane wave (``ψ = 1``).
    bandlimit_fraction
        Anti-aliasing aperture radius as a fraction of Nyquist (abTEM: 2/3); ``None``
        disables the band limit.
    bandlimit_transmission
        Also band-limit each transmission function (abTEM does; costs 2 FFTs per slice).

    Returns
    -------
    Tensor
        Complex exit wave at the bottom of the last slice, complex64 for float32 input
        and complex128 for float64 input (promoted with ``wave``'s dtype).
    """
    sampling_a = static_positive("sampling_a", sampling_a, "Å")
    energy_ev = static_positive("energy_ev", energy_ev, "eV")
    check_fraction(bandlimit_fraction)
    per_slice = None
    if isinstance(slice_thickness_a, torch.Tensor) and slice_thickness_a.ndim > 0:
        per_slice = slice_thickness_a.reshape(-1)
    elif isinstance(slice_thickness_a, Sequence):
        per_slice = [float(t) for t in slice_thickness_a]
    if per_slice is not None:
        require_positive("slice_thickness_a", per_slice, "Å")
    else:
        require_positive("slice_thickness_a", slice_thickness_a, "Å")

    if wave is not None and not isinstance(wave, torch.Tensor):
        raise TypeError(f"wave must be a torch.Tensor or None, got {type(wave).__name__}")

    psi = wave
    workspace = lines = None
    mask = scaled_mask = scaled_prop = scaled_for = None
    propagator = None
    shape = None
    n_done = 0
    for index, potential in enumerate(slices):
        if not isinstance(potential, torch.Tensor):
            raise TypeError(
                f"slice {index} must be a torch.Tensor [V·Å], got {type(potential).__name__}"
            )
        if potential.ndim < 2:
            raise ValueError(
                f"slice {index} must have shape (..., ny, nx), got {tuple(potential.shape)}"
            )
        if shape is None:
            shape = tuple(potential.shape[-2:])
            cdtype = _complex_dtype_for(potential.dtype)
            if psi is None:
                psi = plane_wave(shape, device=potential.device, dtype=cdtype)
            else:
                if tuple(psi.shape[-2:]) != shape:
                    raise ValueError(
                        f"wave has shape {tuple(psi.shape)}, the slices (..., "
                        f"{shape[0]}, {shape[1]})"
                    )
                if psi.device != potential.device:
                    raise ValueError(
                        f"wave is on {psi.device} but the slices on {potential.device}"
                    )
                cdtype = torch.promote_types(_complex_dtype_for(psi.dtype), cdtype)
                psi = psi.to(cdtype)
            estimate_wave_memory_bytes(
                psi.shape,
                cdtype,
                device=potential.device,
                # a list of slices is counted in full; a stream is checked for its first
                n_slices=len(slices) if isinstance(slices, Sequence) else 1,
                requires_grad=torch.is_grad_enabled()
                and (potential.requires_grad or psi.requires_grad),
            )
            first_dz = _scalar(per_slice[0] if per_slice is not None else slice_thickness_a)
            check_sampling(
                shape,
                sampling_a=sampling_a,
                slice_thickness_a=first_dz,
                energy_ev=energy_ev,
                bandlimit_fraction=bandlimit_fraction,
                stacklevel=3,
            )
            if bandlimit_fraction is not None and bandlimit_transmission:
                mask = _mask(shape, bandlimit_fraction, potential.device)
            if per_slice is None:
                propagator = _propagator(shape, sampling_a, slice_thickness_a, energy_ev,
                                         potential.device, cdtype, bandlimit_fraction)
        elif tuple(potential.shape[-2:]) != shape:
            raise ValueError(
                f"slice {index} has shape {tuple(potential.shape)}, the first slice {shape}"
            )
        if per_slice is not None:
            if index >= len(per_slice):
                raise ValueError(
                    f"slice_thickness_a gives {len(per_slice)} thicknesses but there are "
                    "more slices"
                )
            same = (
                isinstance(per_slice, list)
                and index > 0
                and per_slice[index] == per_slice[index - 1]
            )
            if not same:  # floats repeat in practice: reuse the last propagator
                propagator = _propagator(shape, sampling_a, per_slice[index], energy_ev,
                                         potential.device, cdtype, bandlimit_fraction)
        if index == 0 or propagator is not scaled_for:
            # fold the inverse FFT's 1/n into the constant factors: one pass less per FFT
            n_px = shape[0] * shape[1]
            scaled_prop = propagator * (1.0 / n_px)
            if mask is not None and scaled_mask is None:
                scaled_mask = mask.to(_real_dtype_for(cdtype)) * (1.0 / n_px)
            scaled_for = propagator
        # no graph to record: the same arithmetic into reused buffers (workspace.py)
        buffered = _complex_dtype_for(potential.dtype) == cdtype and StepWorkspace.applies(
            potential, psi, scaled_prop
        )
        if buffered and workspace is None:
            workspace = StepWorkspace(interaction_parameter(energy_ev), cdtype, potential.device)
        axis = constant_axis(potential)
        if axis is not None:  # steps along lines, the wave transformed along axis (lines.py)
            if workspace is not None:
                psi = workspace.flush(psi)
            lines = LineWave(shape) if lines is None else lines
            if lines.active and lines.axis != axis:
                psi = lines.wave()
            if not lines.active and n_done == 0 and wave is None:
                lines.plane(axis, dtype=cdtype, device=potential.device)
            elif not lines.active:
                lines.of(psi, axis, propagator)
            t = transmission_function(one_line(potential, axis), energy_ev=energy_ev).to(cdtype)
            lines.step(bandlimit_line(t, mask, axis), propagator)
            n_done += 1
            continue
        if lines is not None and lines.active:
            psi = lines.wave()
        if buffered and axis is None and scaled_mask is not None and potential.ndim == 2:
            # band limit of this slice batched with the wave step of the previous one
            psi = workspace.push(psi, potential, scaled_mask, scaled_prop)
            n_done += 1
            continue
        if workspace is not None:
            psi = workspace.flush(psi)
        step = workspace.step if buffered else _multislice_step_scaled
        t = workspace.transmission(potential) if buffered else (
            transmission_function(potential, energy_ev=energy_ev).to(cdtype))  # fmt: skip
        psi = step(psi, t, scaled_prop, scaled_mask)
        release_in_backward(psi)  # heap pages back between the steps of backward
        n_done += 1
    if workspace is not None:
        psi = workspace.flush(psi)
    if lines is not None and lines.active:
        psi = lines.wave()
    if n_done == 0:
        raise ValueError("slices is empty: multislice needs at least one slice")
    if per_slice is not None and n_done != len(per_slice):
        raise ValueError(
            f"slice_thickness_a gives {len(per_slice)} thicknesses for {n_done} slices"
        )
    return psi
