"""Input checks of :mod:`tem_core.potential`: backend, atom tensors, specimen field vs grid."""

from __future__ import annotations

import warnings

import torch

from tem_core import memory
from tem_core.potential.kernels import MAX_ATOMIC_NUMBER
from tem_core.validation import (
    beam_energy,
    require_float_dtype,
    require_grid_shape,
    require_in_range,
    require_nonnegative,
    require_positive,
    require_shape,
    static_positive,
)


def static_grid(shape, sampling_a) -> tuple[tuple[int, int], float]:
    """``(shape, sampling_a)`` as Python ints and a float (``validation.DTYPE_DEVICE_RULES``)."""
    return require_grid_shape(shape), static_positive("sampling_a", sampling_a, "Å")


def static_settings(settings) -> None:
    """Store a ``PotentialSettings``' static settings as Python numbers (checked)."""
    shape, sampling_a = static_grid(settings.shape, settings.sampling_a)
    thickness = static_positive("slice_thickness_a", settings.slice_thickness_a, "Å")
    values = dict(shape=shape, sampling_a=sampling_a, slice_thickness_a=thickness)
    if settings.energy_ev is not None:
        values["energy_ev"] = beam_energy("energy_ev", settings.energy_ev)
    for name, value in values.items():
        object.__setattr__(settings, name, value)


def material_values(settings) -> None:
    """Check a ``PotentialSettings``' mean inner potentials [V], absorption fractions and
    inelastic mean free paths [Å]."""
    require_nonnegative("ice_potential_v", settings.ice_potential_v, "V")
    require_nonnegative("carbon_potential_v", settings.carbon_potential_v, "V")
    require_in_range("atom_absorption_fraction", settings.atom_absorption_fraction, 0.0, 1.0)
    if settings.ice_structure_absorption_fraction is not None:
        require_in_range("ice_structure_absorption_fraction",
                         settings.ice_structure_absorption_fraction, 0.0, 1.0)  # fmt: skip
    require_positive("ice_mfp_300kv_a", settings.ice_mfp_300kv_a, "Å")
    require_positive("carbon_mfp_300kv_a", settings.carbon_mfp_300kv_a, "Å")
    require_nonnegative("gold_potential_v", settings.gold_potential_v, "V")
    require_positive("gold_mfp_300kv_a", settings.gold_mfp_300kv_a, "Å")


def static_map_voxel(settings) -> None:
    """Store ``settings.map_voxel_a`` as a Python float, checked ``0 < voxel ≤ sampling_a``."""
    if settings.map_voxel_a is None:
        return
    voxel = static_positive("map_voxel_a", settings.map_voxel_a, "Å")
    if voxel > settings.sampling_a:
        raise ValueError(
            f"map_voxel_a must not exceed sampling_a ({settings.sampling_a} Å), got {voxel} Å"
        )
    object.__setattr__(settings, "map_voxel_a", voxel)


def check_specimen_grid(specimen, shape: tuple[int, int], sampling_a: float) -> None:
    """Check that the specimen's field ``extent_a = (Lx, Ly)`` is the grid's ``(nx, ny)·s``.

    The potential is computed on ``shape × sampling_a``; particles and solvent are placed in
    ``extent_a``. A mismatch of half a pixel or more pushes particles into a corner or folds
    them back into the field: ``ValueError``. A smaller one (rounding) warns.
    """
    ny, nx = shape
    for axis, length, n in (("x", specimen.extent_a[0], nx), ("y", specimen.extent_a[1], ny)):
        grid = n * sampling_a
        mismatch = abs(length - grid)
        if mismatch >= 0.5 * sampling_a:
            raise ValueError(
                f"specimen.extent_a ({axis}) must equal the grid's {n} px x sampling_a "
                f"{sampling_a} Å = {grid} Å, got {length} Å; build the specimen with "
                f"extent_a = (nx * sampling_a, ny * sampling_a) or choose shape = "
                f"(round(Ly / sampling_a), round(Lx / sampling_a))"
            )
        if mismatch > 1e-6 * grid:
            warnings.warn(
                f"specimen.extent_a ({axis}) = {length} Å differs from the grid's {n} px x "
                f"{sampling_a} Å = {grid} Å by {mismatch:.3g} Å (less than half a pixel)",
                stacklevel=3,
            )


def warn_outside_field(positions_a, radii_a, shape, sampling_a, periodic, stacklevel=3):
    """Warn with the count of atoms whose whole window lies outside the field of view."""
    if positions_a.shape[0] == 0:
        return
    ny, nx = shape
    xy = positions_a.detach()[:, :2]
    rad = radii_a.detach()
    lx, ly = nx * sampling_a, ny * sampling_a
    outside = (
        (xy[:, 0] + rad < 0) | (xy[:, 0] - rad > lx) | (xy[:, 1] + rad < 0) | (xy[:, 1] - rad > ly)
    )
    count = int(outside.sum())
    if count:
        fate = (
            "folded back into the field (periodic=True)" if periodic else "dropped (periodic=False)"
        )
        warnings.warn(
            f"{count} of {positions_a.shape[0]} atoms lie outside the field of view "
            f"(x in [0, {lx:g}], y in [0, {ly:g}] Å, beyond their cutoff radius) and are {fate}",
            stacklevel=stacklevel,
        )


def check_backend(backend: str) -> None:
    if backend not in ("auto", "taichi", "torch"):
        raise ValueError(f"backend must be 'auto', 'taichi' or 'torch', got {backend!r}")


def check_atoms(atomic_numbers, positions_a, b_factors_a2, occupancies, known=False) -> None:
    """Shapes, dtypes and values of the atom tensors.

    ``known``: the atomic numbers, B-factors and occupancies were checked before and have
    not changed since (same tensors, same version): only their shapes and the positions
    are checked.
    """
    require_shape("positions_a", positions_a, ("N", 3))
    n = positions_a.shape[0]
    for name, t in (
        ("atomic_numbers", atomic_numbers),
        ("b_factors_a2", b_factors_a2),
        ("occupancies", occupancies),
    ):
        require_shape(name, t, (n,), "to match positions_a")
    if atomic_numbers.dtype.is_floating_point or atomic_numbers.is_complex():
        raise TypeError(f"atomic_numbers must be an integer tensor, got {atomic_numbers.dtype}")
    require_float_dtype("positions_a", positions_a)
    if known:
        _first_bad("positions_a", positions_a, ~torch.isfinite(positions_a), "must be finite", "Å")
        return
    _first_bad(
        "atomic_numbers",
        atomic_numbers,
        (atomic_numbers < 1) | (atomic_numbers > MAX_ATOMIC_NUMBER),
        f"must lie in [1, {MAX_ATOMIC_NUMBER}]",
        "",
    )
    for name, t, unit in (
        ("positions_a", positions_a, "Å"),
        ("b_factors_a2", b_factors_a2, "Å²"),
        ("occupancies", occupancies, ""),
    ):
        _first_bad(name, t, ~torch.isfinite(t), "must be finite", unit)
    _first_bad("b_factors_a2", b_factors_a2, b_factors_a2 < 0, "must be >= 0", "Å²")
    _first_bad(
        "occupancies", occupancies, (occupancies < 0) | (occupancies > 1), "must lie in [0, 1]", ""
    )


def _first_bad(name: str, t: torch.Tensor, bad: torch.Tensor, what: str, unit: str) -> None:
    if bool(bad.any()):
        value = t.detach()[bad][0].item()
        raise ValueError(f"{name} {what}, got {value} {unit}".rstrip())


def preflight_slice(positions_a, radii_a, shape, sampling_a, periodic) -> None:
    """Before :func:`slice_potential` projects: memory estimate, then atoms outside the field."""
    window = int(2.0 * float(radii_a.detach().max()) / sampling_a) + 2 if radii_a.numel() else 0
    ny, nx = shape
    memory.require_memory(
        f"a {ny} x {nx} {positions_a.dtype} slice of {positions_a.shape[0]} atoms",
        memory.slice_potential_bytes(shape, positions_a.dtype, positions_a.shape[0], window),
        positions_a.device,
        "use a smaller grid",
    )
    warn_outside_field(positions_a, radii_a, shape, sampling_a, periodic, stacklevel=4)
