"""Streaming machinery of :mod:`tem_core.potential`: element tables, per-atom Gaussians, atoms
sorted by z and bucketed into slices, the solvent of each slice, and the one-pass projection.

:class:`AtomCoefficients` holds what does not change when the specimen moves (a tilt series
computes it once); ``_Prepared`` sorts one pose's atoms by z. Physics and units are those of
the package docstring.
"""

from __future__ import annotations

import math
import weakref

import torch

from tem_core import memory, units
from tem_core._taichi import taichi_available, taichi_device_matches
from tem_core.potential.checks import check_atoms, warn_outside_field
from tem_core.potential.ice import IceField
from tem_core.potential.kernels import MAX_ATOMIC_NUMBER, gaussian_radius_a, project_gaussians
from tem_core.potential.solvent import SolventGeometry

_TABLES: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _element_tables_f64() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import gemmi

    a = torch.zeros(MAX_ATOMIC_NUMBER + 1, 5, dtype=torch.float64)
    b = torch.ones(MAX_ATOMIC_NUMBER + 1, 5, dtype=torch.float64)
    vol = torch.zeros(MAX_ATOMIC_NUMBER + 1, dtype=torch.float64)
    for z in range(1, MAX_ATOMIC_NUMBER + 1):
        element = gemmi.Element(z)
        a[z] = torch.tensor(element.c4322.a, dtype=torch.float64)
        b[z] = torch.tensor(element.c4322.b, dtype=torch.float64)
        vol[z] = 0.0 if z == 1 else 4.0 / 3.0 * math.pi * float(element.vdw_r) ** 3
    return a, b, vol


def _tables(device: torch.device, dtype: torch.dtype):
    key = (str(device), dtype)
    if key not in _TABLES:
        base = _TABLES.get(("cpu", torch.float64)) or _element_tables_f64()
        _TABLES[("cpu", torch.float64)] = base
        _TABLES[key] = tuple(t.to(device=device, dtype=dtype) for t in base)
    return _TABLES[key]


def _use_taichi(backend: str, tensor: torch.Tensor) -> bool:
    if backend == "torch":
        return False
    if backend == "taichi":
        if not taichi_available():
            raise RuntimeError("backend='taichi' requested but taichi cannot be imported")
        if not taichi_device_matches(tensor):
            raise ValueError(
                f"backend='taichi' cannot run on device {tensor.device}; use 'auto' or 'torch'"
            )
        return True
    return taichi_device_matches(tensor)


# ----------------------------------------------------------------------------- atoms
def _atom_gaussians(atomic_numbers, b_factors_a2, occupancies, dtype, tolerance):
    a, b, _ = _tables(atomic_numbers.device, dtype)
    amplitudes = units.PENG_PREFACTOR_V_A2 * a[atomic_numbers] * occupancies.to(dtype)[:, None]
    widths = b[atomic_numbers] + b_factors_a2.to(dtype)[:, None]
    return amplitudes, widths, gaussian_radius_a(widths, tolerance)


class _AtomGaussiansCache:
    """The last atoms' Peng coefficients, reused while the same tensors come back unchanged.

    Keyed by the identity (weak references) and in-place version counters of the atomic
    numbers, B-factors and occupancies, and by dtype, device and tolerance: positions are not
    part of the key (they change from call to call; the coefficients do not depend on them).
    Bypassed when B-factors or occupancies require gradients (the coefficients then carry
    their graph).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._refs: tuple = ()
        self._value: tuple | None = None

    @staticmethod
    def _key_of(tensors, dtype, tolerance) -> tuple:
        return (tuple((id(t), t._version) for t in tensors), dtype, tensors[0].device, tolerance)

    def get(self, atomic_numbers, b_factors_a2, occupancies, dtype, tolerance):
        tensors = (atomic_numbers, b_factors_a2, occupancies)
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            return None  # the checks that follow raise
        if b_factors_a2.requires_grad or occupancies.requires_grad:
            return None
        alive = len(self._refs) == 3 and all(
            r() is t for r, t in zip(self._refs, tensors, strict=True)
        )
        if alive and self._key == self._key_of(tensors, dtype, tolerance):
            return self._value
        return None

    def put(self, atomic_numbers, b_factors_a2, occupancies, dtype, tolerance, value) -> None:
        if b_factors_a2.requires_grad or occupancies.requires_grad:
            return
        tensors = (atomic_numbers, b_factors_a2, occupancies)
        self._refs = tuple(weakref.ref(t) for t in tensors)
        self._key = self._key_of(tensors, dtype, tolerance)
        self._value = value


ATOM_GAUSSIANS_CACHE = _AtomGaussiansCache()


def _excluded_gaussians(atomic_numbers, occupancies, dtype, tolerance, ice_v):
    vol = _tables(atomic_numbers.device, dtype)[2][atomic_numbers]
    keep = vol > 0
    vol = vol[keep]
    amplitudes = (ice_v * vol * occupancies.to(dtype)[keep])[:, None]
    widths = (4.0 * math.pi * vol ** (2.0 / 3.0))[:, None]
    return keep, amplitudes, widths, gaussian_radius_a(widths, tolerance)


class AtomCoefficients:
    """Per-atom Gaussian coefficients that do not change when the specimen moves.

    The Peng amplitudes and widths (B-factor folded in, occupancy weighted), the window
    radii, and the excluded-volume Gaussians depend on the atoms' elements, B-factors and
    occupancies and on the settings, never on the positions: a tilt series computes them
    once and passes them to every tilt (:func:`iter_slice_potentials`,
    :func:`projected_potential`), so that only the rotated positions are re-sorted per tilt.
    Rows follow the atoms' order in ``specimen.atoms``. Positions stay differentiable; when
    B-factors or occupancies require gradients the coefficients carry their graph, so make
    them anew for each backward pass (or call without ``coefficients``).

    Parameters
    ----------
    specimen
        :class:`tem_core.specimen.Specimen` whose atoms (any tilt) these coefficients serve.
    settings
        :class:`PotentialSettings` (cutoff tolerance, solvent and exclusion switches).
    """

    def __init__(self, specimen, settings) -> None:
        atoms = specimen.atoms
        z_num, pos = atoms.atomic_numbers, atoms.positions_a
        check_atoms(z_num, pos, atoms.b_factors_a2, atoms.occupancies)
        self.dtype, self.device, self.n_atoms = pos.dtype, pos.device, int(pos.shape[0])
        self.key = _coefficient_key(specimen, settings)
        tol = settings.cutoff_tolerance
        self.gaussians = _atom_gaussians(
            z_num, atoms.b_factors_a2, atoms.occupancies, self.dtype, tol
        )
        self.ice_v = settings.ice_potential_v if settings.include_solvent else 0.0
        self.excluded = None
        if settings.include_solvent and settings.exclude_solvent and self.ice_v > 0:
            self.excluded = _excluded_gaussians(
                z_num, atoms.occupancies, self.dtype, tol, self.ice_v
            )

    def check(self, specimen, settings) -> None:
        """Raise ``ValueError`` unless these coefficients were made for these atoms/settings."""
        if _coefficient_key(specimen, settings) != self.key:
            raise ValueError(
                "coefficients were computed for other atoms or settings (elements, B-factors, "
                "occupancies, cutoff_tolerance, solvent switches, ice_potential_v, dtype or "
                "device differ); compute AtomCoefficients(specimen, settings) for this specimen"
            )


def _coefficient_key(specimen, settings) -> tuple:
    atoms = specimen.atoms
    tensors = (atoms.atomic_numbers, atoms.b_factors_a2, atoms.occupancies)
    return (
        tuple((t.data_ptr(), tuple(t.shape), t.dtype, str(t.device), t._version) for t in tensors),
        atoms.positions_a.dtype,
        str(atoms.positions_a.device),
        settings.cutoff_tolerance,
        settings.include_solvent,
        settings.exclude_solvent,
        settings.ice_potential_v,
    )


class _Prepared:
    """Atoms sorted by z with their Gaussians, ready to be bucketed into slices."""

    def __init__(self, specimen, settings, coefficients: AtomCoefficients | None = None) -> None:
        atoms = specimen.atoms
        z_num, pos = atoms.atomic_numbers, atoms.positions_a
        if coefficients is None:
            coefficients = AtomCoefficients(specimen, settings)
        else:
            coefficients.check(specimen, settings)
            check_atoms(z_num, pos, atoms.b_factors_a2, atoms.occupancies)
        self.dtype, self.device = pos.dtype, pos.device
        self.use_taichi = _use_taichi(settings.backend, pos)
        order = torch.argsort(pos[:, 2].detach(), stable=True)
        pos = pos[order]
        amp, wid, rad = (t[order] for t in coefficients.gaussians)
        if not settings.periodic:  # periodic fields fold tilted atoms back, as FFT multislice
            warn_outside_field(pos, rad, settings.shape, settings.sampling_a, False, 5)
        self.atoms = self._group(pos, amp, wid, rad)
        self.ice_v = coefficients.ice_v
        self.excluded = None
        if coefficients.excluded is not None:
            keep, amp_e, wid_e, rad_e = coefficients.excluded
            keep_sorted = keep[order]
            # rows of the excluded Gaussians follow the kept atoms in the original order
            rank = torch.cumsum(keep.to(torch.int64), 0) - 1
            sel = rank[order[keep_sorted]]
            self.excluded = self._group(pos[keep_sorted], amp_e[sel], wid_e[sel], rad_e[sel])

    @staticmethod
    def _group(pos, amp, wid, rad):
        r_max = float(rad.max()) if rad.numel() else 0.0
        return pos, amp, wid, rad, pos[:, 2].detach().contiguous(), r_max

    def select(self, group, z0: float, z1: float):
        """Atoms of ``group`` whose z ± radius overlaps ``[z0, z1)`` (z is sorted)."""
        pos, amp, wid, rad, z, r_max = group
        if pos.shape[0] == 0:
            return pos, amp, wid, rad
        lo = int(torch.searchsorted(z, torch.tensor(z0 - r_max, dtype=z.dtype, device=z.device)))
        hi = int(torch.searchsorted(z, torch.tensor(z1 + r_max, dtype=z.dtype, device=z.device)))
        sl = slice(lo, hi)
        near = ((z[sl] + rad[sl]) > z0) & ((z[sl] - rad[sl]) < z1)
        idx = torch.arange(lo, hi, device=z.device)[near]
        return pos[idx], amp[idx], wid[idx], rad[idx]

    def z_extent(self) -> tuple[float, float] | None:
        pos, _, _, rad, z, _ = self.atoms
        if pos.shape[0] == 0:
            return None
        return float((z - rad).min()), float((z + rad).max())


class _KnownExtent:
    """The atoms' z extent given by the caller, in place of :meth:`_Prepared.z_extent`."""

    def __init__(self, lo: float, hi: float) -> None:
        self.extent = (lo, hi)

    def z_extent(self) -> tuple[float, float]:
        return self.extent


def _slice_edges(specimen, settings, prepared: _Prepared, mapped=None) -> torch.Tensor:
    lows, highs = [], []
    extent = None if mapped is None else mapped.z_extent()
    if extent is not None:  # particle maps: centre z ± (bounding radius + atom window)
        lows.append(extent[0])
        highs.append(extent[1])
    if settings.include_solvent:
        z_lo, z_hi = specimen.z_range_a()
        lows.append(float(z_lo))
        highs.append(float(z_hi))
    extent = prepared.z_extent()
    if extent is not None:
        lows.append(extent[0])
        highs.append(extent[1])
    if not lows:
        raise ValueError("specimen has no atoms and include_solvent=False: nothing to slice")
    z_lo, z_hi = min(lows), max(highs)
    dz = settings.slice_thickness_a
    n = max(1, math.ceil((z_hi - z_lo) / dz - 1e-9))
    return z_lo + dz * torch.arange(n + 1, dtype=torch.float64)


def slice_edges_a(
    specimen,
    settings,
    *,
    atom_z_extent_a: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Slice boundaries [Å], ``(n_slices + 1,)`` float64, spaced ``settings.slice_thickness_a``
    (a :class:`tem_core.potential.PotentialSettings`).

    They cover ``specimen.z_range_a()`` (when the solvent is included) and every atom's
    z ± cutoff radius, so no atom loses more than the cutoff tolerance along z.
    ``atom_z_extent_a``: ``(min(z − radius), max(z + radius))`` of the atoms when the caller
    has it [Å] (skips preparing the atoms; ``None`` computes it).
    """
    if atom_z_extent_a is not None and specimen.atoms.positions_a.shape[0]:
        lo, hi = (float(v) for v in atom_z_extent_a)
        return _slice_edges(specimen, settings, _KnownExtent(lo, hi))
    return _slice_edges(specimen, settings, _Prepared(specimen, settings))


class _Solvent:
    """Ice (less the volume the atoms exclude), ice fluctuations and support film per slice."""

    def __init__(self, specimen, settings, prepared: _Prepared, common, mapped=None):
        self.settings, self.prepared, self.common = settings, prepared, common
        self.mapped = mapped  # particle maps at this pose (tem_core.potential.maps), or None
        self.geometry = None
        if settings.include_solvent:
            self.geometry = SolventGeometry(
                specimen, settings.shape, settings.sampling_a, prepared.dtype, prepared.device
            )
        self.ice_field = None
        if self.geometry is not None and settings.ice_structure is not None and prepared.ice_v:
            self.ice_field = IceField(
                settings.ice_structure,
                specimen,
                settings.shape,
                settings.sampling_a,
                prepared.dtype,
                prepared.device,
            )
        ice_v = prepared.ice_v
        self.ice_ratio = settings.ice_absorption_v() / ice_v if ice_v > 0 else 0.0
        #: V'/V of the ice structure's fluctuations (the water's atoms absorb like atoms)
        self.field_ratio = settings.ice_structure_absorption

    def parts(self, z0: float, z1: float):
        """``(real, imag, field)`` [V·Å] of the solvent in ``[z0, z1)``: the real potential
        without the ice structure's fluctuations, the imaginary potential, and the
        fluctuations ``field`` (``None`` without them; complex, ``δV + i f δV`` with ``f =``
        ``settings.ice_structure_absorption``, when ``f > 0``: the potential is ``real + i
        imag + field``); ``None`` without solvent."""
        if self.geometry is None:
            return None
        prepared, settings = self.prepared, self.settings
        ice_len, carbon_len = self.geometry.lengths(z0, z1)
        ice = prepared.ice_v * ice_len
        excluded = self._excluded(z0, z1)
        if excluded is not None:
            ice = torch.relu(ice - excluded)
        real = ice
        imag = self.ice_ratio * ice
        field = None
        if self.ice_field is not None:  # fluctuations scaled by the pixel's ice fraction
            fraction = (ice / (prepared.ice_v * (z1 - z0))).clamp(0.0, 1.0)
            field = fraction * self.ice_field.slice_integral(z0, z1)
            if self.field_ratio > 0.0:
                field = torch.complex(field, self.field_ratio * field)
        if carbon_len is not None:
            support_v, support_abs_v = settings.support_potentials_v(self.geometry.support)
            real = real + support_v * carbon_len
            imag = imag + support_abs_v * carbon_len
        return real, imag, field

    def touches_excluded(self, z0: float, z1: float) -> bool:
        """True when atoms' (or particle maps') excluded volume reaches ``[z0, z1)``."""
        excluded = self.prepared.excluded
        if excluded is not None and self.prepared.select(excluded, z0, z1)[0].numel():
            return True
        return self.mapped is not None and self.mapped.touches(z0, z1)

    def _excluded(self, z0: float, z1: float):
        """Projected excluded ice in ``[z0, z1)`` [V·Å] (atoms and particle maps), or None."""
        out = None
        prepared = self.prepared
        if prepared.excluded is not None:
            pos_e, amp_e, wid_e, rad_e = prepared.select(prepared.excluded, z0, z1)
            out = project_gaussians(pos_e, amp_e, wid_e, rad_e, z0_a=z0, z1_a=z1, **self.common)
        if self.mapped is not None and self.mapped.excluded_v:
            part = self.mapped.slice(z0, z1, prepared.dtype, prepared.device)
            if part is not None:
                out = part[1] if out is None else out + part[1]
        return out

    def line_slice(self, z0: float, z1: float):
        """``(real, imag)`` on one line of a slice that holds plain ice only, else ``None``.

        Plain: no atoms' excluded volume reaches the slice, no hole, no ice structure, and
        the slab varies along one axis only (:attr:`SolventGeometry.line_axis`); the values
        equal :meth:`parts` on that line (no ice structure there: ``field`` is ``None``).
        """
        geometry, prepared = self.geometry, self.prepared
        if geometry is None or geometry.line_axis is None or self.ice_field is not None:
            return None
        if self.touches_excluded(z0, z1):
            return None
        ice = prepared.ice_v * geometry.line_lengths(z0, z1)
        return ice, self.ice_ratio * ice

    def total(self, bounds: list[float]):
        """Σ of :meth:`parts` over the slices between ``bounds`` (``field`` 0 without ice
        structure), or ``None`` without solvent.

        Without a hole edge or ice structure, the solvent of consecutive slices that no
        excluded volume reaches is the solvent of their union (ice lengths add), so each
        such run is computed once; slices with excluded atoms keep their own clamp.
        """
        if self.geometry is None:
            return None
        plain = self.geometry.hole_radius_a is None and self.ice_field is None
        intervals, run = [], None
        for z0, z1 in zip(bounds[:-1], bounds[1:], strict=True):
            if plain and not self.touches_excluded(z0, z1):
                run = (z0 if run is None else run[0], z1)
                continue
            if run is not None:
                intervals.append(run)
                run = None
            intervals.append((z0, z1))
        if run is not None:
            intervals.append(run)
        real = imag = field = 0.0
        for z0, z1 in intervals:
            part_real, part_imag, part_field = self.parts(z0, z1)
            real, imag = real + part_real, imag + part_imag
            field = field if part_field is None else field + part_field
            memory.release_at_boundary()  # each interval's temporaries (else the heap creeps)
        return real, imag, field


def _atoms_through_slices(prepared: _Prepared, edges: torch.Tensor, common) -> torch.Tensor:
    """Σ over slices of the atoms' slice potentials, in one pass over the atoms [V·Å].

    Each atom's slice fractions telescope: the slices ``s0..s1`` its z ± radius overlaps add
    up to the fraction inside ``[edges[s0], edges[s1 + 1]]``, so one projection with that
    fraction folded into the amplitudes equals the sum of :func:`iter_slice_potentials`'
    atom parts (within rounding).
    """
    pos, amp, wid, rad, z, _ = prepared.atoms
    if pos.shape[0] == 0:
        return torch.zeros(common["shape"], dtype=prepared.dtype, device=prepared.device)
    # the same comparisons as _Prepared.select, in the atoms' dtype
    e = edges.to(device=z.device, dtype=z.dtype)
    n = e.numel() - 1
    first = torch.searchsorted(e[1:], z - rad, right=True).clamp(0, n - 1)
    last = (torch.searchsorted(e, z + rad) - 1).clamp(0, n - 1)
    z0, z1 = e[first], e[last + 1]
    scale = (2.0 * math.pi) * torch.rsqrt(wid)
    zc = pos[:, 2]
    frac_z = 0.5 * (
        torch.special.erf(scale * (z1 - zc)[:, None])
        - torch.special.erf(scale * (z0 - zc)[:, None])
    )
    return project_gaussians(pos, amp * frac_z, wid, rad, z0_a=-_FAR_A, z1_a=_FAR_A, **common)


#: A z bound far beyond any atom [Å]: every Gaussian's fraction inside ±_FAR_A is exactly 1.
_FAR_A = 1e30
