"""Ground truth and data preparation for reconstructions: the specimen's potential on the
reconstruction grid, even/odd tilt halves, contrast normalisation and binning."""

from __future__ import annotations

import math

import torch

from tem_core.potential import PotentialSettings, iter_slice_potentials, slice_edges_a
from tem_core.reconstruct.geometry import TiltGeometry
from tem_core.validation import require_positive


def potential_on_grid(
    specimen, geometry: TiltGeometry, *, energy_ev: float, include_solvent: bool = True
) -> torch.Tensor:
    """The untilted specimen's electrostatic potential on the reconstruction grid [V].

    Voxel ``(k, j, i)`` is the average of the potential over the cube of edge
    ``geometry.voxel_size_a`` centred on the tilt axis' frame: ``x``, ``y`` as the stack's pixels,
    ``z`` centred on the slab centre (the point the specimen is tilted about). The potential
    stage's slices (one voxel thick) are resampled onto the voxels by their overlap along z.
    Requires the tilt axis along y (``tilt_axis_angle_rad = π/2``), where the reconstruction's
    x and y are the images'.

    Returns
    -------
    torch.Tensor
        ``(nz, ny, nx)`` float64 real potential [V] on the specimen's device.
    """
    if geometry.quarter_turns != 0:
        raise ValueError(
            "geometry.tilt_axis_angle_rad must be pi/2 (tilt axis along y) for the truth on "
            f"the reconstruction grid, got {geometry.tilt_axis_angle_rad} rad"
        )
    nz, ny, nx = geometry.volume_shape
    v = geometry.voxel_size_a
    settings = PotentialSettings(
        shape=(ny, nx),
        sampling_a=v,
        slice_thickness_a=v,
        energy_ev=energy_ev,
        include_solvent=include_solvent,
    )
    edges = slice_edges_a(specimen, settings)
    z_centre = float(specimen.slab_center_a[2])
    grid_lo = z_centre - 0.5 * nz * v
    positions = specimen.atoms.positions_a
    out = torch.zeros((nz, ny, nx), dtype=torch.float64, device=positions.device)
    for k, slab in enumerate(iter_slice_potentials(specimen, settings)):
        start = (float(edges[k]) - grid_lo) / v  # in voxels
        first = math.floor(start)
        frac = start - first
        values = slab.real.to(torch.float64) / v  # mean potential over the slice [V]
        for index, weight in ((first, 1.0 - frac), (first + 1, frac)):
            if 0 <= index < nz and weight > 0:
                out[index] += weight * values
    return out


def split_even_odd(
    stack: torch.Tensor, geometry: TiltGeometry
) -> tuple[tuple[torch.Tensor, TiltGeometry], tuple[torch.Tensor, TiltGeometry]]:
    """Two independent half series: tilts 0, 2, 4, ... and 1, 3, 5, ... (in stack order)."""
    geometry.check_stack(stack)
    if geometry.n_tilts < 2:
        raise ValueError(f"stack must hold at least 2 tilts to split, got {geometry.n_tilts}")
    halves = []
    for start in (0, 1):
        angles = geometry.angles_rad[start::2]
        half = TiltGeometry(
            angles_rad=angles,
            detector_shape=geometry.detector_shape,
            pixel_size_a=geometry.pixel_size_a,
            thickness_a=geometry.thickness_a,
            tilt_axis_angle_rad=geometry.tilt_axis_angle_rad,
        )
        halves.append((stack[start::2].contiguous(), half))
    return halves[0], halves[1]


def image_contrast(stack: torch.Tensor, *, invert: bool) -> torch.Tensor:
    """Per-image contrast ``(I - <I>) / <I>`` (``invert``: ``(<I> - I) / <I>``).

    Phase-contrast cryo-EM images of protein at underfocus are dark where the potential is
    high: ``invert=True`` makes the reconstruction positive there. HAADF (incoherent, bright
    mass) needs no inversion.
    """
    if stack.ndim != 3:
        raise ValueError(f"stack must be (n_tilts, ny, nx), got shape {tuple(stack.shape)}")
    mean = stack.mean(dim=(1, 2), keepdim=True)
    if bool((mean.abs() < 1e-30).any()):
        raise ValueError("stack images must have a non-zero mean to normalise their contrast")
    c = (stack - mean) / mean
    return -c if invert else c


def bin_stack(
    stack: torch.Tensor, geometry: TiltGeometry, factor: int
) -> tuple[torch.Tensor, TiltGeometry]:
    """Average ``factor x factor`` pixels (cropping the remainder); the pixel size grows."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    geometry.check_stack(stack)
    if factor == 1:
        return stack, geometry
    binned = torch.nn.functional.avg_pool2d(stack[:, None], factor)[:, 0]
    require_positive("binned image size", min(binned.shape[1:]), "px")
    return binned.contiguous(), TiltGeometry(
        angles_rad=geometry.angles_rad,
        detector_shape=tuple(binned.shape[1:]),
        pixel_size_a=geometry.pixel_size_a * factor,
        thickness_a=geometry.thickness_a,
        tilt_axis_angle_rad=geometry.tilt_axis_angle_rad,
    )
