"""Checks and run settings of :mod:`tem_core.simulate`: the cheap preflight before any work
(energies, specimen vs grid, CTF sampling, memory: :func:`micrograph_memory_bytes` from the
arrays counted in :mod:`tem_core.memory`) and the thread count of small grids."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections.abc import Sequence

import torch

from tem_core import _heap, memory
from tem_core.detector import Detector
from tem_core.optics import Microscope
from tem_core.potential import (
    PotentialSettings,
    check_specimen_grid,
    peng_coefficients,
    slice_edges_a,
)
from tem_core.potential.kernels import (
    BAND_MIN_ATOMS_PER_PIXEL,
    gaussian_radius_a,
    window_size_px,
)
from tem_core.propagate import check_ctf_sampling
from tem_core.specimen import Specimen


def _plain_values(value: float | torch.Tensor) -> tuple[float, ...]:
    """A float or tensor parameter as plain floats (detached), for checks only."""
    if isinstance(value, torch.Tensor):
        return tuple(value.detach().double().reshape(-1).cpu().tolist()) or (0.0,)
    return (float(value),)


def _requires_grad(specimen: Specimen) -> bool:
    atoms = specimen.atoms
    return torch.is_grad_enabled() and any(
        t.requires_grad for t in (atoms.positions_a, atoms.b_factors_a2, atoms.occupancies)
    )


def atom_slice_range(specimen: Specimen, potential: PotentialSettings) -> tuple[int, int, int]:
    """``(n_slices, first, last)``: the slices of :func:`slice_edges_a` and the first and last
    index of those that hold atoms (z ± cutoff radius); ``first > last`` when none does.

    The atoms' own slicing (``include_solvent=False``) starts at their lowest z - cutoff and
    ends at most one slice above their highest z + cutoff, so ``last`` may be one too high.
    """
    edges = slice_edges_a(specimen, potential).tolist()
    n = len(edges) - 1
    if specimen.atoms.positions_a.shape[0] == 0:
        return n, n, -1
    atom_edges = slice_edges_a(specimen, dataclasses.replace(potential, include_solvent=False))
    lo, hi = float(atom_edges[0]), float(atom_edges[-1])
    inside = [i for i in range(n) if edges[i + 1] > lo and edges[i] < hi]
    return (n, inside[0], inside[-1]) if inside else (n, n, -1)


def micrograph_memory_bytes(
    specimen: Specimen,
    *,
    potential: PotentialSettings,
    microscope: Microscope,
    detector: Detector | None = None,
    method: str = "multislice",
    damage: bool = False,
) -> int:
    """Estimated peak memory of one :func:`micrograph` of ``specimen`` [bytes].

    The largest phase of :func:`tem_core.memory.micrograph_phases` for this specimen's
    dtype and solvent, these settings, and (when the atoms require grad and grad mode is
    on) its slices holding atoms and those after them; ``damage``: a radiation-damage
    filter is applied. This is what the preflight compares with the available memory of
    the atoms' device.
    """
    return _memory(specimen, potential, microscope, detector, method, damage)[0]


def _memory(specimen, potential, microscope, detector, method, damage) -> tuple[int, int]:
    """``(bytes, slices whose arrays autograd keeps)``."""
    grad = _requires_grad(specimen)
    ice = specimen.ice
    solvent = bool(potential.include_solvent and ice is not None)
    hole = solvent and ice.hole_diameter_a is not None
    normal = [float(v) for v in specimen.slab_normal.detach().reshape(-1)[:2]]
    line = solvent and not hole and 0.0 in normal  # the slab geometry on one line
    n_slices = n_later = 0
    if grad:
        n_total, first, last = atom_slice_range(specimen, potential)
        n_slices, n_later = max(0, last - first + 1), max(0, n_total - 1 - last)
        # ice-only slices of a flat, uniform slab are constant along x and y: multislice
        # transmits them on one line and autograd keeps no grid for them
        flat = not specimen.tilt_angle_rad or specimen.tilt_axis_angle_rad % (math.pi / 2) == 0
        if solvent and not hole and not potential.ice_structure and flat:
            n_later = 0
    atoms, band = None, True
    if potential.particle_representation == "atoms":  # maps: their own arrays, not counted
        atoms, band = _atom_load(specimen, potential, method, grad, solvent)
    needed = memory.micrograph_bytes(
        potential.shape,
        specimen.atoms.positions_a.dtype,
        n_slices=n_slices,
        n_later_slices=n_later,
        requires_grad=grad,
        method=method,
        solvent=solvent,
        support=hole and ice.support != "vacuum",
        hole=hole,
        line=line,
        ice_field_modes=potential.ice_structure.n_modes if solvent and potential.ice_structure
        else 0,
        inelastic=not microscope.energy_filter,
        damage=damage,
        tabulated_mtf=detector is not None and detector.mtf_camera is not None,
        atoms=atoms,
        band_splat=band,
    )  # fmt: skip
    return needed, n_slices + n_later if grad else 0


_RADII: dict = {}  # the last atoms' window radii: (weak refs, versions, tolerance) -> radii


def _window_radii_a(specimen: Specimen, potential: PotentialSettings) -> torch.Tensor:
    """Each atom's window radius [Å] (its widest Peng Gaussian, B folded in), float64, CPU.

    Kept for the last atoms seen (the same element and B-factor tensors, unchanged): a tilt
    series preflights every tilt with the same atoms.
    """
    atoms = specimen.atoms
    z_num, b = atoms.atomic_numbers, atoms.b_factors_a2
    key = (z_num._version, b._version, potential.cutoff_tolerance)
    refs = _RADII.get("refs")
    if refs and refs[0]() is z_num and refs[1]() is b and _RADII["key"] == key:
        return _RADII["radii"]
    b_widest = peng_coefficients()[1].amax(dim=1)[z_num.detach().cpu()]
    widths = b_widest + b.detach().to(device="cpu", dtype=torch.float64)
    radii = gaussian_radius_a(widths[:, None], potential.cutoff_tolerance)
    _RADII.update(refs=(weakref.ref(z_num), weakref.ref(b)), key=key, radii=radii)
    return radii


def _atom_load(specimen, potential, method, grad, solvent) -> tuple[dict[str, int] | None, bool]:
    """:func:`tem_core.memory.atom_bytes` for this specimen: atoms per slice (z ± each atom's
    window radius over the stream's slices), and which slices the CPU band kernel splats
    (at least :data:`BAND_MIN_ATOMS_PER_PIXEL` atoms per pixel: no edge-fraction arrays).
    Returns the bytes and whether any slice uses the band kernel."""
    pos = specimen.atoms.positions_a.detach()
    n = int(pos.shape[0])
    if n == 0:
        return None, False
    radii = _window_radii_a(specimen, potential)
    if method == "projection":
        counts = torch.tensor([n])
    else:
        z = pos[:, 2].to(device="cpu", dtype=torch.float64)
        extent = (float((z - radii).min()), float((z + radii).max()))
        edges = slice_edges_a(specimen, potential, atom_z_extent_a=extent)
        m, dz = edges.numel() - 1, potential.slice_thickness_a
        z = z - float(edges[0])
        first = torch.floor((z - radii) / dz).clamp(0, m - 1).to(torch.int64)
        last = torch.floor((z + radii) / dz).clamp(0, m - 1).to(torch.int64)
        change = torch.bincount(first, minlength=m + 1) - torch.bincount(last + 1, minlength=m + 1)
        counts = torch.cumsum(change, 0)[:m]
    ny, nx = potential.shape
    if pos.device.type == "cpu":
        bucketed = counts < BAND_MIN_ATOMS_PER_PIXEL * ny * nx
    else:
        bucketed = torch.ones_like(counts, dtype=torch.bool)
    edge_counts = counts[bucketed]
    load = memory.atom_bytes(
        n,
        pos.dtype,
        slice_atoms=int(counts.max()),
        edge_atoms=int(edge_counts.max()) if edge_counts.numel() else 0,
        atom_slices=int(counts.sum()),
        edge_atom_slices=int(edge_counts.sum()),
        edge_px=window_size_px(float(radii.max()), potential.sampling_a),
        solvent=solvent and potential.exclude_solvent,
        requires_grad=grad,
        projection=method == "projection",
    )
    return load, bool((~bucketed).any())


def _preflight(
    potential: PotentialSettings,
    device: torch.device,
    microscope: Microscope,
    specimen: Specimen | None = None,
    defocus_a: Sequence[float] = (),
    astigmatism_a: float = 0.0,
    *,
    detector: Detector | None = None,
    method: str = "multislice",
    damage: bool = False,
    n_images: int = 0,
) -> None:
    """Cheap checks before any work: energies, specimen vs grid, CTF sampling, memory.

    ``n_images``: float32 images kept in memory (a tilt series' tilts, stacked at the end).
    """
    if not isinstance(potential, PotentialSettings):
        raise TypeError(f"potential must be a PotentialSettings, got {type(potential).__name__}")
    if not isinstance(microscope, Microscope):
        raise TypeError(f"microscope must be a Microscope, got {type(microscope).__name__}")
    potential.at_energy(microscope.energy_ev)  # before the memory check: a cheap mistake first
    if specimen is not None and not isinstance(specimen, Specimen):
        raise TypeError(f"specimen must be a Specimen, got {type(specimen).__name__}")
    if specimen is not None:
        dtype = specimen.atoms.positions_a.dtype
        needed, n_graph = _memory(specimen, potential, microscope, detector, method, damage)
        # a tilt series keeps its images (float32) and stacks them at the end
        needed = memory.with_stored_images(needed, potential.shape, n_images)
        ny, nx = potential.shape
        memory.require_memory(
            f"a {ny} x {nx} {dtype} micrograph"
            + (f" with gradients over {n_graph} slices" if n_graph else "")
            + (f" and {n_images} stored images" if n_images else ""),
            needed,
            device,
            "use a smaller grid, float32, or fewer slices per backward pass",
        )
        check_specimen_grid(specimen, potential.shape, potential.sampling_a)
    if defocus_a:
        worst = max(defocus_a, key=lambda d: abs(float(d)))
        check_ctf_sampling(
            potential.shape,
            sampling_a=potential.sampling_a,
            energy_ev=microscope.energy_ev,
            defocus_a=float(worst),
            cs_a=float(microscope.cs_a),
            astigmatism_a=float(astigmatism_a),
            stacklevel=4,
        )


#: Grids of at most this many pixels are imaged with one torch thread on CPU in a tilt
#: series: their FFTs and elementwise operations are too small to gain from a second thread,
#: and on a loaded 2-core machine the threads' contention made a 400² FFT 8× slower
#: (10.3 ms instead of 1.2 ms, ``benchmarks/vs_temsim.py`` notes); Taichi keeps its threads.
#: Their tilts also skip the stages' heap releases (``memory.DEFER_RELEASES``): the series
#: releases once after each tilt (6-7 malloc_trim calls, 7 ms CPU per 400² tilt, before),
#: and only when the heap holds more than ``_heap.RETAINED_FREE_HEAP_BYTES`` free (the
#: next tilt reuses the free blocks; a release made it fault its pages in again).
SINGLE_THREAD_MAX_PIXELS = 512 * 512


def _small_grid(potential: PotentialSettings, device: torch.device | None) -> bool:
    ny, nx = potential.shape
    return ny * nx <= SINGLE_THREAD_MAX_PIXELS and (device is None or device.type == "cpu")


def _release_between_tilts(potential: PotentialSettings, device: torch.device | None) -> bool:
    """The heap release after a tilt: bounded (:func:`tem_core._heap.release_beyond`) for
    small grids, every tilt for the others."""
    if _small_grid(potential, device):
        return _heap.release_beyond()
    return memory.release_at_boundary()


@contextlib.contextmanager
def _small_grid_threads(potential: PotentialSettings, device: torch.device | None):
    small = _small_grid(potential, device)
    previous = torch.get_num_threads()
    token = memory.DEFER_RELEASES.set(True) if small else None
    try:
        if small and previous != 1:
            torch.set_num_threads(1)
        yield
    finally:
        if small and previous != 1:
            torch.set_num_threads(previous)
        if token is not None:
            memory.DEFER_RELEASES.reset(token)
