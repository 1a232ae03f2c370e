"""Projected potential per slice: atoms (Peng 1996), amorphous ice, carbon film, absorption.

Model (isolated-atom superposition, see ``book/design.md`` for units and signs):

* Atom ``Z`` at ``r_j``: ``V(r) = C Σ_i a_i (4π/b'_i)^{3/2} exp(−4π²|r − r_j|²/b'_i)`` [V]
  with Peng 1996 five-Gaussian electron scattering factors ``a_i`` [Å], ``b_i`` [Å²]
  (International Tables C, Table 4.3.2.2, via ``gemmi.Element(Z).c4322``), the B-factor
  folded in (``b'_i = b_i + B_j``), weighted by the occupancy, ``C = h²/(2π m0 e)``.
* Each Gaussian is integrated analytically over the slice's z range and averaged over each
  pixel's area (erf in x, y, z), so ``Σ_pixels V_z · s² = C Σ_i a_i`` per atom, exactly, less
  the truncated tails. The window half-width per atom is ``R = √b'_max/(2π) · erfcinv(tol/2)``
  (widest Gaussian, ``tol = cutoff_tolerance = 1e-4``): the lost fraction is below ``tol``.
* Solvent: amorphous ice of mean inner potential :data:`ICE_MEAN_INNER_POTENTIAL_V` fills the
  slab ``|(r − c)·n| ≤ t/2`` inside the support hole; outside the hole a carbon film of
  :data:`CARBON_MEAN_INNER_POTENTIAL_V` (or vacuum). Both follow from number density × the
  Peng integral ``C Σ a`` of the constituent atoms (isolated-atom model, consistent with the
  atoms; measured mean inner potentials of vitreous ice are lower, about 3.5 V, because of
  bonding). Ice is sampled at pixel centres; the hole edge is smoothed over one pixel.
* Excluded volume: each atom removes ice over a Gaussian of volume ``v_Z`` (Fraser, MacRae &
  Suzuki 1978, J. Appl. Cryst. 11:693: ``exp(−π r²/v^{2/3})`` integrates to ``v``), i.e. a
  Gaussian of width ``b = 4π v^{2/3}`` and amplitude ``−V_ice v_Z``, integrated with the same
  erf machinery; net ice is clamped at 0 per pixel (dense protein holds no ice).
  ``v_Z = 4/3 π r_vdW³`` with Bondi's van der Waals radii (``gemmi.Element.vdw_r``) for every
  heavy atom and ``v_H = 0``: hydrogens are folded into their heavy atoms, so models with and
  without explicit hydrogens displace the same volume. For crambin (1CRN) the sum is 6103 Å³,
  6% above the 5734 Å³ from the protein partial specific volume 0.73 cm³/g.
* Absorption (imaginary potential ``V'`` ≥ 0, zero-loss / energy-filtered imaging): ice and
  carbon remove the inelastically scattered electrons, ``|t|² = exp(−2σV'_z) = exp(−L/Λ)``,
  hence ``V' = 1/(2σΛ)`` [V] with the inelastic mean free path ``Λ`` (ice: 350 nm at 300 kV,
  the value usually quoted for vitreous ice, measurements spanning about 300-400 nm; amorphous
  carbon: about 150 nm at 300 kV, Egerton's estimate for density ≈ 2 g/cm³), scaled with beam
  energy as ``Λ ∝ β²`` (Bethe cross-section ∝ 1/v², logarithm neglected). Atoms absorb a fixed
  fraction of their potential, ``V' = f V`` with ``f = 0.07`` (the amplitude contrast commonly
  assumed for cryo-EM of proteins); so do the ice structure's fluctuations, ``V' = f δV``
  (``ice_structure_absorption_fraction``; why: :mod:`tem_core.potential.ice`).

Boundary conditions: the field of view is periodic (atoms near one edge also spill onto the
opposite edge, as in FFT multislice) unless ``periodic=False``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tem_core import units
from tem_core._taichi import taichi_available
from tem_core.potential import checks
from tem_core.potential.checks import check_atoms, check_backend, check_specimen_grid
from tem_core.potential.damage import RadiationDamage, attenuated, damaged
from tem_core.potential.ice import IceStructure, ice_mean_inner_potential_v
from tem_core.potential.kernels import SplatScratch, _single_torch_thread, project_gaussians
from tem_core.potential.maps import ParticleMaps, refuse_atom_gradients
from tem_core.potential.streaming import (
    ATOM_GAUSSIANS_CACHE,
    AtomCoefficients,
    _atom_gaussians,
    _atoms_through_slices,
    _Prepared,
    _slice_edges,
    _Solvent,
    _tables,
    _use_taichi,
    slice_edges_a,
)
from tem_core.validation import require_in_range, require_positive

__all__ = [
    "PotentialSettings", "slice_potential", "iter_slice_potentials", "projected_potential",
    "slice_edges_a", "AtomCoefficients", "peng_coefficients", "displaced_volumes_a3",
    "mean_inner_potential_v", "absorptive_potential_v", "inelastic_mean_free_path_a",
    "ICE_MEAN_INNER_POTENTIAL_V", "CARBON_MEAN_INNER_POTENTIAL_V", "IceStructure",
    "ice_mean_inner_potential_v", "RadiationDamage", "check_specimen_grid", "ParticleMaps",
    "PARTICLE_REPRESENTATIONS",
]  # fmt: skip

#: Values of ``PotentialSettings.particle_representation``.
PARTICLE_REPRESENTATIONS = ("atoms", "map")

#: Density of low-density amorphous (vitreous) ice [g/cm³] (Dubochet et al. 1988, Q. Rev.
#: Biophys. 21:129, about 0.93-0.94). TEM-simulator uses 33.5 molecules/nm³ (1.0 g/cm³, 4.88 V).
ICE_DENSITY_G_PER_CM3 = 0.94
WATER_MOLAR_MASS_G_PER_MOL = 18.01528
#: Water molecules per Å³ in amorphous ice: 0.94 g/cm³ → 0.031422 Å⁻³ (31.4 nm⁻³).
ICE_MOLECULES_PER_A3 = (
    ICE_DENSITY_G_PER_CM3 / WATER_MOLAR_MASS_G_PER_MOL * units.AVOGADRO_PER_MOL / units.CM3_TO_A3
)
#: Density of evaporated amorphous carbon support film [g/cm³] (typical 1.8-2.2).
CARBON_DENSITY_G_PER_CM3 = 2.0
CARBON_MOLAR_MASS_G_PER_MOL = 12.011
CARBON_ATOMS_PER_A3 = (
    CARBON_DENSITY_G_PER_CM3
    / CARBON_MOLAR_MASS_G_PER_MOL
    * units.AVOGADRO_PER_MOL
    / units.CM3_TO_A3
)
#: Inelastic mean free paths at 300 kV [Å]; see the module docstring for sources.
ICE_INELASTIC_MFP_300KV_A = 3500.0
CARBON_INELASTIC_MFP_300KV_A = 1500.0
#: Imaginary/real ratio of the atoms' potential (amplitude contrast).
ATOM_ABSORPTION_FRACTION = 0.07
# Beam energy of the absorption model when PotentialSettings.energy_ev is None and no
# microscope supplies one (a potential computed on its own) [eV].
DEFAULT_ENERGY_EV = 300.0 * units.KV_TO_EV


def peng_coefficients(*, device=None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Peng 1996 coefficients ``(a [Å], b [Å²])``, each ``(99, 5)``, row ``Z`` (row 0 unused)."""
    a, b, _ = _tables(torch.device(device or "cpu"), dtype)
    return a, b


def displaced_volumes_a3(atomic_numbers: torch.Tensor, *, dtype=torch.float64) -> torch.Tensor:
    """Volume of solvent each atom displaces [Å³]: ``4/3 π r_vdW³``, 0 for hydrogen."""
    return _tables(atomic_numbers.device, dtype)[2][atomic_numbers]


def mean_inner_potential_v(composition: dict[int, float], number_density_per_a3: float) -> float:
    """Isolated-atom mean inner potential ``C n Σ_Z count_Z Σ_i a_i(Z)`` [V].

    Parameters
    ----------
    composition
        Atoms per formula unit by atomic number, e.g. ``{8: 1, 1: 2}`` for water.
    number_density_per_a3
        Formula units per volume [1/Å³].
    """
    require_positive("number_density_per_a3", number_density_per_a3, "1/Å³")
    a = _tables(torch.device("cpu"), torch.float64)[0]
    total = sum(count * float(a[z].sum()) for z, count in composition.items())
    return units.PENG_PREFACTOR_V_A2 * total * number_density_per_a3


#: Amorphous ice, 0.94 g/cm³, isolated-atom model: 4.575 V.
ICE_MEAN_INNER_POTENTIAL_V = mean_inner_potential_v({8: 1, 1: 2}, ICE_MOLECULES_PER_A3)
#: Gold (19.3 g/cm³): 29.9 V; Λ at 300 kV [Å] from Egerton's 106 F E₀/(E_m ln(2βE₀/E_m)) nm.
GOLD_ATOMS_PER_A3 = 19.3 / 196.96657 * units.AVOGADRO_PER_MOL / units.CM3_TO_A3
GOLD_INELASTIC_MFP_300KV_A = 850.0
#: Amorphous carbon, 2.0 g/cm³: 12.04 V (TEM-simulator: 12.0 V).
CARBON_MEAN_INNER_POTENTIAL_V = mean_inner_potential_v({6: 1}, CARBON_ATOMS_PER_A3)
GOLD_MEAN_INNER_POTENTIAL_V = mean_inner_potential_v({79: 1}, GOLD_ATOMS_PER_A3)


def inelastic_mean_free_path_a(mfp_300kv_a: float, energy_ev: float) -> float:
    """Scale a 300 kV inelastic mean free path to ``energy_ev`` with ``Λ ∝ β² = (v/c)²`` [Å]."""

    def beta2(e):
        gamma = units.relativistic_mass_ratio(e)
        return 1.0 - 1.0 / gamma**2

    return mfp_300kv_a * beta2(energy_ev) / beta2(300.0 * units.KV_TO_EV)


def absorptive_potential_v(mean_free_path_a: float, energy_ev: float) -> float:
    """Imaginary potential ``V' = 1/(2σΛ)`` [V] removing electrons at rate ``1/Λ`` [1/Å]."""
    require_positive("mean_free_path_a", mean_free_path_a, "Å")
    return 1.0 / (2.0 * units.interaction_parameter(energy_ev) * mean_free_path_a)


@dataclass(frozen=True, kw_only=True)
class PotentialSettings:
    """Discretisation and material model of the potential.

    Parameters
    ----------
    shape : (int, int)
        Grid ``(ny, nx)``.
    sampling_a
        Pixel size [Å].
    slice_thickness_a
        Slice thickness along the beam [Å].
    cutoff_tolerance
        Largest fraction of each atom's integral lost by the window truncation.
    backend
        ``"auto"`` (Taichi when it runs on the atoms' device), ``"taichi"`` or ``"torch"``.
    periodic
        Periodic field of view (default, as FFT multislice); else atoms are clipped.
    include_solvent
        Add the ice slab / carbon film of the specimen; False: atoms in vacuum.
    exclude_solvent
        Remove ice displaced by atoms (excluded volume).
    ice_potential_v, carbon_potential_v
        Mean inner potentials [V].
    energy_ev
        Beam energy [eV], used only by the absorption model. ``None`` (default): the
        microscope's energy when :mod:`tem_core.simulate` images the specimen, so the energy
        is stated once, in :class:`tem_core.optics.Microscope`; 300 kV
        (:data:`DEFAULT_ENERGY_EV`) when a potential function is called on its own.
    absorption
        Add the imaginary (absorptive) potential.
    atom_absorption_fraction
        ``V'/V`` of the atoms.
    ice_structure_absorption_fraction
        ``V'/V`` of the ice structure's fluctuations; ``None`` (default): the atoms'. The
        mean ice absorbs by its inelastic mean free path (``ice_mfp_300kv_a``) regardless.
    ice_mfp_300kv_a, carbon_mfp_300kv_a
        Inelastic mean free paths at 300 kV [Å], scaled to ``energy_ev``.
    gold_potential_v, gold_mfp_300kv_a
        Mean inner potential [V] and 300 kV inelastic mean free path [Å] of a gold support.
    ice_structure
        :class:`IceStructure`: add amorphous-ice fluctuations (3.7 Å ring; one seeded 3-D
        field that tilts with the specimen); ``None`` (default): uniform ice.
    particle_representation
        ``"atoms"`` (default, exact: every atom's Gaussians integrated over pixel and slice)
        or ``"map"``: each particle type's potential and excluded ice as maps computed once
        and projected per pose by the Fourier slice theorem (:mod:`tem_core.potential.maps`;
        an approximation, much faster for tilt series; no gradient wrt the atoms).
    map_voxel_a
        Voxel of those maps [Å] (≤ ``sampling_a``); ``None``: half the pixel.
    """

    shape: tuple[int, int]
    sampling_a: float
    slice_thickness_a: float
    cutoff_tolerance: float = 1e-4
    backend: str = "auto"
    periodic: bool = True
    include_solvent: bool = True
    exclude_solvent: bool = True
    ice_potential_v: float = ICE_MEAN_INNER_POTENTIAL_V
    carbon_potential_v: float = CARBON_MEAN_INNER_POTENTIAL_V
    energy_ev: float | None = None
    absorption: bool = True
    atom_absorption_fraction: float = ATOM_ABSORPTION_FRACTION
    ice_structure_absorption_fraction: float | None = None
    ice_mfp_300kv_a: float = ICE_INELASTIC_MFP_300KV_A
    carbon_mfp_300kv_a: float = CARBON_INELASTIC_MFP_300KV_A
    gold_potential_v: float = GOLD_MEAN_INNER_POTENTIAL_V
    gold_mfp_300kv_a: float = GOLD_INELASTIC_MFP_300KV_A
    ice_structure: IceStructure | None = None
    particle_representation: str = "atoms"
    map_voxel_a: float | None = None

    def __post_init__(self) -> None:
        checks.static_settings(self)  # shape, sampling, thickness, energy as Python numbers
        require_in_range("cutoff_tolerance", self.cutoff_tolerance, 1e-12, 0.1, inclusive=True)
        check_backend(self.backend)
        checks.material_values(self)  # mean inner potentials, absorption, mean free paths
        if not isinstance(self.ice_structure, IceStructure | None):
            raise TypeError(f"ice_structure must be an IceStructure, got {self.ice_structure!r}")
        if self.particle_representation not in PARTICLE_REPRESENTATIONS:
            raise ValueError(
                f"particle_representation must be one of {PARTICLE_REPRESENTATIONS}, "
                f"got {self.particle_representation!r}"
            )
        checks.static_map_voxel(self)

    def map_voxel(self) -> float:
        """Voxel of the particle maps [Å]: ``map_voxel_a``, default half the pixel."""
        return 0.5 * self.sampling_a if self.map_voxel_a is None else self.map_voxel_a

    @property
    def ice_structure_absorption(self) -> float:
        """``V'/V`` of the ice structure's fluctuations in use (0 without absorption)."""
        f = self.ice_structure_absorption_fraction
        return float(self.atom_absorption_fraction if f is None else f) * self.absorption

    @property
    def absorption_energy_ev(self) -> float:
        """The beam energy the absorption model uses [eV]: ``energy_ev`` or 300 kV."""
        return DEFAULT_ENERGY_EV if self.energy_ev is None else float(self.energy_ev)

    def ice_absorption_v(self) -> float:
        """Imaginary potential of ice at ``energy_ev`` [V] (0.219 V at 300 kV)."""
        energy = self.absorption_energy_ev
        mfp = inelastic_mean_free_path_a(self.ice_mfp_300kv_a, energy)
        return absorptive_potential_v(mfp, energy) if self.absorption else 0.0

    def support_potentials_v(self, support: str) -> tuple[float, float]:
        """``(V, V')`` [V] of a ``"carbon"`` or ``"gold"`` support film."""
        if support != "gold":
            return self.carbon_potential_v, self.carbon_absorption_v()
        mfp = inelastic_mean_free_path_a(self.gold_mfp_300kv_a, self.absorption_energy_ev)
        v_abs = absorptive_potential_v(mfp, self.absorption_energy_ev) if self.absorption else 0.0
        return self.gold_potential_v, v_abs

    def carbon_absorption_v(self) -> float:
        """Imaginary potential of the carbon film at ``energy_ev`` [V]."""
        energy = self.absorption_energy_ev
        mfp = inelastic_mean_free_path_a(self.carbon_mfp_300kv_a, energy)
        return absorptive_potential_v(mfp, energy) if self.absorption else 0.0

    def for_views(self, tilts_rad, tilt_axis_rad: float) -> PotentialSettings:
        """These settings with the ice modes on the views ``tilts_rad`` [rad] about
        ``tilt_axis_rad`` [rad] (:meth:`IceStructure.for_views`; one ice for a series)."""
        ice = self.ice_structure and self.ice_structure.for_views(tilts_rad, tilt_axis_rad)
        return self if ice is self.ice_structure else dataclasses.replace(self, ice_structure=ice)

    def at_energy(self, energy_ev: float) -> PotentialSettings:
        """These settings for a beam of ``energy_ev`` [eV] (the microscope's).

        Fills in ``energy_ev=None``; raises when an explicit ``energy_ev`` differs.
        """
        require_positive("energy_ev", energy_ev, "eV")
        if self.energy_ev is None:
            return dataclasses.replace(self, energy_ev=float(energy_ev))
        if not math.isclose(self.energy_ev, float(energy_ev), rel_tol=1e-9):
            raise ValueError(
                f"potential.energy_ev ({self.energy_ev} eV, used for absorption) must equal "
                f"microscope.energy_ev, got {energy_ev} eV (or leave potential.energy_ev=None)"
            )
        return self


def slice_potential(
    atomic_numbers: torch.Tensor,
    positions_a: torch.Tensor,
    b_factors_a2: torch.Tensor,
    occupancies: torch.Tensor,
    *,
    z0_a: float,
    z1_a: float,
    shape: tuple[int, int],
    sampling_a: float,
    backend: str = "auto",
    cutoff_tolerance: float = 1e-4,
    periodic: bool = True,
) -> torch.Tensor:
    """Pixel-averaged projected potential of the atoms' part inside ``z0_a ≤ z < z1_a``.

    Differentiable wrt ``positions_a``, ``b_factors_a2`` and ``occupancies``.

    Parameters
    ----------
    atomic_numbers
        ``(N,)`` integer tensor, Z in 1..98.
    positions_a
        ``(N, 3)`` ``(x, y, z)`` [Å]; the dtype and device of the result follow it.
    b_factors_a2
        ``(N,)`` Debye-Waller factors B ≥ 0 [Å²].
    occupancies
        ``(N,)`` weights in [0, 1].
    z0_a, z1_a
        Slice bounds along the beam [Å].
    shape
        ``(ny, nx)``.
    sampling_a
        Pixel size [Å].
    backend
        ``"auto"``, ``"taichi"`` or ``"torch"``.
    cutoff_tolerance
        Largest lost fraction of each atom's integral.
    periodic
        Wrap atoms around the field of view (else clip).

    Returns
    -------
    Tensor
        ``(ny, nx)`` projected potential V_z [V·Å].
    """
    # With Taichi on a small CPU the torch work here is light: one torch thread (torch's
    # OpenMP barriers stall on a loaded machine, see kernels._single_torch_thread)
    light = (
        isinstance(positions_a, torch.Tensor)
        and positions_a.device.type == "cpu"
        and backend != "torch"
        and (os.cpu_count() or 1) <= 4
        and taichi_available()
    )
    with _single_torch_thread(light):
        return _slice_potential(
            atomic_numbers, positions_a, b_factors_a2, occupancies, z0_a, z1_a, shape,
            sampling_a, backend, cutoff_tolerance, periodic,
        )  # fmt: skip


def _slice_potential(
    atomic_numbers, positions_a, b_factors_a2, occupancies, z0_a, z1_a, shape, sampling_a,
    backend, cutoff_tolerance, periodic,
):  # fmt: skip
    dtype = getattr(positions_a, "dtype", None)  # not a tensor: check_atoms raises
    cached = ATOM_GAUSSIANS_CACHE.get(
        atomic_numbers, b_factors_a2, occupancies, dtype, cutoff_tolerance
    )
    # atoms seen unchanged before: only the positions need checking again
    check_atoms(atomic_numbers, positions_a, b_factors_a2, occupancies, known=cached is not None)
    shape, sampling_a = checks.static_grid(shape, sampling_a)
    require_in_range("cutoff_tolerance", cutoff_tolerance, 1e-12, 0.1)
    check_backend(backend)
    require_in_range("z0_a", z0_a, -math.inf, math.inf, "Å", inclusive=False)
    require_in_range("z1_a", z1_a, -math.inf, math.inf, "Å", inclusive=False)
    if not z1_a > z0_a:
        raise ValueError(f"z1_a must be > z0_a, got z0_a={z0_a} Å, z1_a={z1_a} Å")
    if cached is None:
        cached = _atom_gaussians(atomic_numbers, b_factors_a2, occupancies, dtype, cutoff_tolerance)
        ATOM_GAUSSIANS_CACHE.put(
            atomic_numbers, b_factors_a2, occupancies, dtype, cutoff_tolerance, cached
        )
    amplitudes, widths, radii = cached
    checks.preflight_slice(positions_a, radii, shape, sampling_a, periodic)
    return project_gaussians(
        positions_a,
        amplitudes,
        widths,
        radii,
        z0_a=float(z0_a),
        z1_a=float(z1_a),
        shape=tuple(shape),
        sampling_a=float(sampling_a),
        periodic=periodic,
        use_taichi=_use_taichi(backend, positions_a),
    )


def _streaming_setup(specimen, settings, coefficients):
    if not isinstance(settings, PotentialSettings):
        raise TypeError(f"settings must be a PotentialSettings, got {type(settings).__name__}")
    if coefficients is not None and not isinstance(coefficients, AtomCoefficients | ParticleMaps):
        raise TypeError(
            "coefficients must be an AtomCoefficients, a ParticleMaps or None, got "
            f"{type(coefficients).__name__}"
        )
    check_specimen_grid(specimen, settings.shape, settings.sampling_a)
    mapped = None
    if settings.particle_representation == "map":
        refuse_atom_gradients(specimen)
        if not isinstance(coefficients, ParticleMaps):
            with torch.no_grad():
                coefficients = ParticleMaps(specimen, settings)
        coefficients.check(specimen, settings)
        mapped = coefficients.pose(specimen, settings.shape)
        prepared = _Prepared(coefficients.loose_atoms(specimen), settings, None)
    else:
        if isinstance(coefficients, ParticleMaps):
            raise ValueError(
                "coefficients is a ParticleMaps but settings.particle_representation is "
                "'atoms'; pass AtomCoefficients or set particle_representation='map'"
            )
        prepared = _Prepared(specimen, settings, coefficients)
    edges = _slice_edges(specimen, settings, prepared, mapped)
    common = dict(
        shape=tuple(settings.shape),
        sampling_a=settings.sampling_a,
        periodic=settings.periodic,
        use_taichi=prepared.use_taichi,
        scratch=SplatScratch(),  # edge-fraction buffers reused slice after slice
    )
    if mapped is not None:
        mapped.set_edges(edges.tolist())
    return prepared, edges, common, _Solvent(specimen, settings, prepared, common, mapped)


def iter_slice_potentials(
    specimen,
    settings: PotentialSettings,
    *,
    coefficients: AtomCoefficients | ParticleMaps | None = None,
    attenuation: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Stream the specimen's complex slice potentials, one slice at a time, increasing z.

    Atoms are sorted by z once; each slice projects only the atoms whose z ± cutoff radius
    overlaps it, so memory does not grow with the specimen's thickness.

    Parameters
    ----------
    specimen
        :class:`tem_core.specimen.Specimen` (atoms, ice slab geometry).
    settings
        :class:`PotentialSettings`.
    coefficients
        :class:`AtomCoefficients` of these atoms (e.g. computed once for a tilt series), or
        with ``settings.particle_representation="map"`` the :class:`ParticleMaps`; ``None``
        computes them.
    attenuation
        Radiation-damage filter (FFT order, real; :func:`damage.attenuation_filter`) applied
        to each slice except the ice structure's fluctuations, which carry their own
        exposure average (:attr:`IceStructure.exposure_e_per_a2`); ``None``: none.

    Yields
    ------
    Tensor
        ``(ny, nx)`` complex: real part V_z [V·Å], imaginary part V'_z ≥ 0 [V·Å], dtype the
        complex counterpart of the atoms' positions, on their device. Slices follow
        :func:`slice_edges_a`. A slice of plain ice that varies along one axis only (a slab
        without a hole, tilted about x or y) is a read-only broadcast view of one line
        (stride 0 along the other axis); ``.contiguous()`` gives a writable copy.
    """
    prepared, edges, common, solvent = _streaming_setup(specimen, settings, coefficients)
    edges = edges.tolist()
    atom_fraction = settings.atom_absorption_fraction if settings.absorption else 0.0
    mapped = solvent.mapped
    for z0, z1 in zip(edges[:-1], edges[1:], strict=True):
        pos, amp, wid, rad = prepared.select(prepared.atoms, z0, z1)
        if pos.shape[0] == 0 and (mapped is None or not mapped.touches(z0, z1)):
            line = solvent.line_slice(z0, z1)  # plain ice varying along one axis: one line
            if line is not None:
                plain = torch.complex(*line).expand(tuple(settings.shape))
                yield plain if attenuation is None else next(damaged([plain], attenuation))
                continue
        real = project_gaussians(pos, amp, wid, rad, z0_a=z0, z1_a=z1, **common)
        if mapped is not None:
            part = mapped.slice(z0, z1, prepared.dtype, prepared.device)
            if part is not None:
                real = real + part[0]
        imag = atom_fraction * real
        part = solvent.parts(z0, z1)
        if part is not None:
            real = real + part[0]
            imag = imag + part[1]
        yield attenuated(torch.complex(real, imag), attenuation, part and part[2])


def projected_potential(
    specimen,
    settings: PotentialSettings,
    *,
    coefficients: AtomCoefficients | ParticleMaps | None = None,
    attenuation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of all slices of :func:`iter_slice_potentials`: complex ``(ny, nx)`` [V·Å].

    The atoms are projected in one pass (their slice fractions telescope); the solvent,
    whose excluded volume is clamped slice by slice, is summed slice by slice where atoms
    exclude it and over whole runs of slices elsewhere. Equal to summing the streamed slices
    within rounding, and much faster for thick or tilted specimens. ``attenuation``: as in
    :func:`iter_slice_potentials`.
    """
    prepared, edges, common, solvent = _streaming_setup(specimen, settings, coefficients)
    real = _atoms_through_slices(prepared, edges, common)
    mapped = solvent.mapped
    if mapped is not None:
        real = real + mapped.total(prepared.dtype, prepared.device)[0]
        geometry = solvent.geometry
        # plain ice: a copy's excluded ice is clamped once, against the ice of the interval
        # holding its centre (the atoms' path clamps it per slice: the same when the slices
        # are thicker than the particle; see tem_core.potential.maps). Otherwise per slice.
        mapped.whole_column = geometry is None or (
            geometry.hole_radius_a is None and solvent.ice_field is None
        )
    atom_fraction = settings.atom_absorption_fraction if settings.absorption else 0.0
    imag = atom_fraction * real
    part = solvent.total(edges.tolist())
    if part is not None:
        real = real + part[0]
        imag = imag + part[1]
    return attenuated(torch.complex(real, imag), attenuation, part and part[2])

