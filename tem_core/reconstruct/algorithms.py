"""SIRT and weighted back-projection (ramp and SIRT-like filters).

SIRT follows IMOD's ``tilt`` (Mastronarde's SIRT; Gilbert 1972): re-project the current volume,
subtract it from the data, divide the residual by each ray's length through the volume,
back-project it, divide by the number of angles that reach each voxel, and add it times a
relaxation factor ``λ``::

    x <- x + λ C A^T R (b - A x),   R = 1 / (A 1) (ray lengths),   C = 1 / (A^T 1)

``A^T 1`` is the angle count wherever every ray through a voxel meets the detector (the
strip weights of a voxel sum to 1 per angle), and smaller at the corners of the slab whose
rays leave the detector at high tilt; this is also ASTRA's ``SIRT`` with the ``strip``
projector. ``nonnegative=True`` clamps the volume at 0 after each iteration (ASTRA's
``MinConstraint = 0``).

Weighted back-projection filters each image along the direction perpendicular to the tilt
axis and back-projects with the angular spacing as weight: the ramp (Ram-Lak, the spatial
kernel of Kak & Slaney 1988, eq. 61) or a SIRT-like filter that mimics ``k`` SIRT iterations
(Zeng 2012, Med. Phys. 39:603; IMOD's ``FakeSIRTiterations``): the ramp times the Landweber
window ``1 - (1 - min(1, λ m(ν)))^k`` with ``m(ν) = |cos θ| / (π nz |ν|)`` the response of
one normalised SIRT step to frequency ``ν`` [cycles/voxel] for a slab ``nz`` voxels thick.
"""

from __future__ import annotations

import math

import torch

from tem_core.reconstruct.geometry import TiltGeometry
from tem_core.reconstruct.projector import TomographyOperator
from tem_core.validation import require_float_dtype, require_same_device

FILTERS = ("ramp", "sirt")


def _operator(geometry, stack, chunk_slices, progress) -> TomographyOperator:
    if not isinstance(geometry, TiltGeometry):
        raise TypeError(f"geometry must be a TiltGeometry, got {type(geometry).__name__}")
    geometry.check_stack(stack)
    if not stack.is_floating_point():
        raise TypeError(f"stack must be a floating-point tensor, got {stack.dtype}")
    require_float_dtype("stack", stack)
    return TomographyOperator(
        geometry,
        device=stack.device,
        dtype=stack.dtype,
        chunk_slices=chunk_slices,
        progress=False,
    )


def _progress(op: TomographyOperator, desc: str, show: bool):
    from tqdm.auto import tqdm

    starts = range(0, op.ny, op.chunk)
    return tqdm(starts, desc=desc, disable=not show, leave=False)


def sirt(
    stack: torch.Tensor,
    geometry: TiltGeometry,
    *,
    n_iterations: int = 20,
    relaxation: float = 1.0,
    nonnegative: bool = False,
    initial: torch.Tensor | None = None,
    chunk_slices: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """SIRT reconstruction of a tilt series (IMOD's normalisation; see the module notes).

    Parameters
    ----------
    stack
        ``(n_tilts, ny, nx)`` images, sorted like ``geometry.angles_rad`` [any unit].
    geometry
        Angles, tilt axis, pixel size and thickness.
    n_iterations
        Number of SIRT iterations.
    relaxation
        Relaxation factor ``λ`` in (0, 2) (converges for ``λ < 2``; IMOD and ASTRA use 1).
    nonnegative
        Clamp the volume at 0 after every iteration.
    initial
        Starting volume ``(nz, ny, nx)`` (``None``: zeros).
    chunk_slices
        Slices along the tilt axis reconstructed together (``None``: automatic).
    progress
        Progress bar over the chunks of slices.

    Returns
    -------
    torch.Tensor
        ``(nz, ny, nx)`` volume in the aligned frame [stack unit per voxel], on the stack's
        device and dtype. Not differentiable (use :class:`TomographyOperator` for that).
    """
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, int) or n_iterations < 0:
        raise ValueError(f"n_iterations must be a non-negative integer, got {n_iterations!r}")
    if not (math.isfinite(relaxation) and 0 < relaxation < 2):
        raise ValueError(f"relaxation must lie in (0, 2), got {relaxation}")
    op = _operator(geometry, stack, chunk_slices, False)
    if initial is not None:
        if isinstance(initial, torch.Tensor) and isinstance(stack, torch.Tensor):
            require_same_device("initial", initial, "stack", stack)
        geometry.check_volume(initial, "initial")
    with torch.no_grad():
        b = op.to_aligned(stack.detach())
        row = op.ray_lengths()
        col = op.voxel_weights()
        inv_row = torch.where(row > 1e-6, 1.0 / row, torch.zeros_like(row))
        inv_col = torch.where(col > 1e-6, relaxation / col, torch.zeros_like(col))
        out = stack.new_zeros(geometry.volume_shape)
        for y0 in _progress(op, "SIRT", progress):
            y1 = min(y0 + op.chunk, op.ny)
            bc = op.stack_columns(b, y0, y1).contiguous()
            if initial is None:
                x = bc.new_zeros((op.nz * op.nx, y1 - y0))
            else:
                x = op.volume_columns(initial.to(stack), y0, y1).contiguous()
            for _ in range(n_iterations):
                residual = bc - op.A_columns(x)
                residual.mul_(inv_row)
                x.addcmul_(op.At_columns(residual), inv_col)
                if nonnegative:
                    x.clamp_(min=0.0)
            out[:, y0:y1, :] = x.reshape(op.nz, op.nx, y1 - y0).permute(0, 2, 1)
    return out


def angular_weights(angles_rad: torch.Tensor) -> torch.Tensor:
    """Angular interval of each tilt [rad]: half the distance to its neighbours (ends: one side).

    Uniform steps ``Δθ`` give ``Δθ`` everywhere; their sum is the covered range plus one step.
    """
    a = angles_rad.to(torch.float64)
    if a.numel() == 1:
        return torch.full_like(a, math.pi)
    order = torch.argsort(a)
    s = a[order]
    gaps = s[1:] - s[:-1]
    w = torch.empty_like(s)
    w[1:-1] = 0.5 * (gaps[1:] + gaps[:-1])
    w[0], w[-1] = gaps[0], gaps[-1]
    out = torch.empty_like(w)
    out[order] = w
    return out


def ramp_kernel_response(n_pad: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Frequency response (length ``n_pad // 2 + 1``) of the spatial Ram-Lak kernel.

    ``h[0] = 1/4``, ``h[n] = -1/(π n)^2`` for odd ``n``, 0 for even (Kak & Slaney eq. 61,
    unit sampling): a band-limited ``|ν|`` [cycles/voxel] without the DC offset of a sampled
    ramp.
    """
    n = torch.arange(n_pad, dtype=dtype, device=device)
    n = torch.minimum(n, n_pad - n)
    h = torch.zeros(n_pad, dtype=dtype, device=device)
    h[0] = 0.25
    odd = (n % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    return torch.fft.rfft(h).real


def wbp_filter(
    geometry: TiltGeometry,
    *,
    filter: str = "ramp",  # noqa: A002 - the usual name
    sirt_iterations: int = 10,
    relaxation: float = 1.0,
    dtype=torch.float64,
    device=None,
) -> torch.Tensor:
    """Per-tilt frequency responses ``(n_tilts, n_pad // 2 + 1)`` of the WBP filter.

    Includes the angular weights, so that back-projecting the filtered images gives the
    volume in the stack's unit per voxel.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    nx = geometry.volume_shape[2]
    n_pad = 1 << max(6, math.ceil(math.log2(2 * nx)))
    ramp = ramp_kernel_response(n_pad, dtype=dtype, device=device)
    weights = angular_weights(geometry.angles_tensor(dtype=dtype, device=device))
    response = weights[:, None] * ramp[None, :]
    if filter == "sirt":
        if (
            isinstance(sirt_iterations, bool)
            or not isinstance(sirt_iterations, int)
            or sirt_iterations < 1
        ):
            raise ValueError(f"sirt_iterations must be a positive integer, got {sirt_iterations!r}")
        if not (math.isfinite(relaxation) and 0 < relaxation < 2):
            raise ValueError(f"relaxation must lie in (0, 2), got {relaxation}")
        nu = torch.fft.rfftfreq(n_pad, dtype=dtype, device=device)
        cos = torch.cos(geometry.angles_tensor(dtype=dtype, device=device)).abs()
        step = relaxation * cos[:, None] / (math.pi * geometry.nz * nu.clamp(min=1e-12)[None, :])
        window = 1.0 - (1.0 - step.clamp(max=1.0)) ** sirt_iterations
        response = response * window
    return response


def wbp(
    stack: torch.Tensor,
    geometry: TiltGeometry,
    *,
    filter: str = "ramp",  # noqa: A002
    sirt_iterations: int = 10,
    relaxation: float = 1.0,
    chunk_slices: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Weighted (filtered) back-projection.

    Parameters
    ----------
    filter
        ``"ramp"`` (Ram-Lak) or ``"sirt"`` (SIRT-like: mimics ``sirt_iterations`` iterations
        of :func:`sirt` with ``relaxation``; see the module notes).

    Returns
    -------
    torch.Tensor
        ``(nz, ny, nx)`` volume [stack unit per voxel], differentiable with respect to
        ``stack`` (filtering and back-projection are linear torch operations; then the
        whole stack is filtered at once, else chunk by chunk of slices).
    """
    op = _operator(geometry, stack, chunk_slices, progress)
    n_det = op.n_det
    response = wbp_filter(
        geometry,
        filter=filter,
        sirt_iterations=sirt_iterations,
        relaxation=relaxation,
        device=stack.device,
    )
    n_pad = 2 * (response.shape[1] - 1)

    def filtered(rows: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(rows.to(torch.float64), n=n_pad, dim=-1)
        out = torch.fft.irfft(spectrum * response[:, None, :], n=n_pad, dim=-1)[..., :n_det]
        return out.to(stack.dtype).contiguous()

    b = op.to_aligned(stack)
    if torch.is_grad_enabled() and stack.requires_grad:  # differentiable, whole stack at once
        return op.backproject_aligned(filtered(b))
    out = stack.new_empty(geometry.volume_shape)
    with torch.no_grad():  # chunk by chunk of slices: bounded temporaries
        for y0 in _progress(op, "WBP", progress):
            y1 = min(y0 + op.chunk, op.ny)
            cols = op.At_columns(op.stack_columns(filtered(b[:, y0:y1, :]), 0, y1 - y0))
            out[:, y0:y1, :] = cols.reshape(op.nz, op.nx, y1 - y0).permute(0, 2, 1)
    return out
