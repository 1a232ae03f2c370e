"""Atomic models: read PDB / mmCIF files, build biological assemblies, add hydrogens.

Stage 1 of the forward model (``units -> structure -> specimen -> ...``). An
:class:`AtomicModel` holds, per atom, the atomic number Z, the position (x, y, z) [Å],
the isotropic Debye-Waller factor B [Å²] and the occupancy, as torch tensors (float32 on the
CPU by default, the working precision of every stage; ``dtype=torch.float64`` for tests and
checks to rounding; cast with :meth:`AtomicModel.to`).

Reading (:func:`read_structure`)
--------------------------------
* PDB and mmCIF, plain or gzipped (``.gz``), parsed with gemmi. The first model is used
  unless ``model_index`` says otherwise (2OM3 holds five models).
* Alternate conformations: for each atom of a residue present in several conformers
  (altloc A, B, ...), the conformer with the highest occupancy is kept (the first one on a
  tie) and its occupancy is set to the sum over the conformers, capped at 1, so the atom's
  total scattering mass is preserved. This is documented behaviour, not warned about.
* Waters (HOH, WAT, H2O, DOD) and deposited hydrogens (H, D) are kept or dropped with
  ``keep_waters`` / ``keep_hydrogens``.
* Anisotropic displacement parameters (ANISOU) are ignored: the isotropic B is used.
  B = 0 is allowed; negative B, occupancies outside [0, 1], non-finite numbers, unknown
  element symbols and elements beyond californium (Z > 98, no Peng parameters) are errors
  that name the file, the atom and, where it can be found, the line.

Hydrogens (``add_hydrogens``, default ``False``)
------------------------------------------------
Most deposited cryo-EM and X-ray models carry no hydrogens, yet a protein has about as
many hydrogens as heavy atoms and the Peng scattering factor of H at s = 0 (0.53 Å) is a
fifth of carbon's (2.51 Å): hydrogens carry about 18 % of a protein's integrated
electron-scattering potential (crambin with hydrogens added: 17.7 %). With ``add_hydrogens=True``
every residue that has no deposited hydrogen gets, for each heavy atom, the standard
number of bonded hydrogens of its residue type (table in :mod:`tem_core.structure.hydrogens`:
the 20 amino acids, MSE, RNA and DNA nucleotides and water, polymer residues at neutral
pH), as H atoms placed **at the position of the heavy atom they are bonded to**, with
the heavy atom's B and occupancy. This "united atom" placement puts the right scattering
mass in the right residue; the C-H / N-H / O-H bond (1.0-1.1 Å) is shorter than the
resolution of any cryo-EM simulation the package is meant for (> 2 Å), and the atoms'
B-factor blurring (B = 20-100 Å² gives an rms displacement of 0.5-1.1 Å) is of the same
size, so at these resolutions the offset changes the projected potential negligibly. Do not
use it for sub-2-Å work: place hydrogens with a modelling program (e.g. gemmi, Reduce)
instead. Residue types without a template (ligands, ions, modified residues) get no
hydrogens, with one warning listing them.

Assemblies
----------
:func:`assembly_operators` returns the operators of a biological assembly (PDB
REMARK 350 BIOMT records or mmCIF ``pdbx_struct_oper_list`` / ``pdbx_struct_assembly_gen``)
as a ``(K, 3, 4)`` tensor ``[R | t]`` with ``t`` in Å; :func:`helical_operators` builds
them from a helical rise and twist; :func:`expand_assembly` applies them
(``x' = R x + t``). 5IRE (Zika virion) expands from 11,024 atoms with 60 operators to
661,440 atoms; the first model of 2OM3 (TMV) from 1,279 atoms with 49 operators to 62,671.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tem_core.structure.files import (
    _check_coordinates,
    _load,
    _select_conformers,
    _where,
    fetch_pdb,
)
from tem_core.structure.geometry import (
    _as_operators,
    _axis_vector,
    compose_rotations,
    rotate_points,
    rotation_about_axis,
)
from tem_core.structure.hydrogens import hydrogen_count
from tem_core.validation import (
    require_finite,
    require_float_dtype,
    require_integer,
    require_positive_int,
    require_shape,
)

__all__ = [
    "AtomicModel",
    "read_structure",
    "assembly_operators",
    "helical_operators",
    "expand_assembly",
    "fetch_pdb",
    "rotation_about_axis",
    "rotate_points",
    "compose_rotations",
]

MAX_ATOMIC_NUMBER = 98  # Peng 1996 parameters exist for Z = 1..98
WATER_NAMES = frozenset({"HOH", "WAT", "H2O", "DOD"})


@dataclass(frozen=True, kw_only=True, eq=False)
class AtomicModel:
    """Atoms of a molecule or specimen.

    Parameters
    ----------
    atomic_numbers
        ``(N,)`` int64 tensor, Z in 1..98.
    positions_a
        ``(N, 3)`` floating tensor of (x, y, z) positions [Å].
    b_factors_a2
        ``(N,)`` isotropic Debye-Waller factors B as in PDB files [Å²], >= 0.
    occupancies
        ``(N,)`` occupancies in [0, 1].
    name
        Free-text label (e.g. the file stem).
    """

    atomic_numbers: torch.Tensor
    positions_a: torch.Tensor
    b_factors_a2: torch.Tensor
    occupancies: torch.Tensor
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("atomic_numbers", "positions_a", "b_factors_a2", "occupancies"):
            value = getattr(self, field)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{field} must be a torch.Tensor, got {type(value).__name__}")
        z, pos = self.atomic_numbers, self.positions_a
        if z.ndim != 1 or z.dtype != torch.int64:
            raise ValueError(
                f"atomic_numbers must be a 1-D int64 tensor, got {z.dtype} {tuple(z.shape)}"
            )
        n = z.shape[0]
        if pos.shape != (n, 3) or not pos.is_floating_point():
            raise ValueError(
                f"positions_a must be a floating (N, 3) tensor with N = {n}, "
                f"got {pos.dtype} {tuple(pos.shape)}"
            )
        for field in ("b_factors_a2", "occupancies"):
            value = getattr(self, field)
            if value.shape != (n,) or not value.is_floating_point():
                raise ValueError(
                    f"{field} must be a floating ({n},) tensor, "
                    f"got {value.dtype} {tuple(value.shape)}"
                )
        for field in ("positions_a", "b_factors_a2", "occupancies"):
            require_float_dtype(field, getattr(self, field))
        devices = {t.device for t in (z, pos, self.b_factors_a2, self.occupancies)}
        if len(devices) > 1:
            raise ValueError(
                f"all AtomicModel tensors must be on one device, got {sorted(map(str, devices))}"
            )
        if n == 0:
            return
        z_min, z_max = int(z.min()), int(z.max())
        if z_min < 1 or z_max > MAX_ATOMIC_NUMBER:
            raise ValueError(
                f"atomic_numbers must lie in [1, {MAX_ATOMIC_NUMBER}], got min {z_min}, max {z_max}"
            )
        for field, unit in (("positions_a", "Å"), ("b_factors_a2", "Å²")):
            value = getattr(self, field).detach()
            if not bool(torch.isfinite(value).all()):
                bad = value[~torch.isfinite(value)][0].item()
                raise ValueError(f"{field} must be finite, got {bad} {unit}")
        b_min = float(self.b_factors_a2.detach().min())
        if b_min < 0:
            raise ValueError(f"b_factors_a2 must be >= 0, got min {b_min} Å²")
        occ = self.occupancies.detach()
        o_min, o_max = float(occ.min()), float(occ.max())
        if not bool(torch.isfinite(occ).all()) or o_min < 0 or o_max > 1:
            raise ValueError(f"occupancies must lie in [0, 1], got min {o_min}, max {o_max}")

    def __len__(self) -> int:
        return int(self.atomic_numbers.shape[0])

    def __repr__(self) -> str:
        return (
            f"AtomicModel(name={self.name!r}, n_atoms={len(self)}, dtype={self.positions_a.dtype}, "
            f"device={self.positions_a.device})"
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> AtomicModel:
        """Copy to ``device``; ``dtype`` (floating) applies to positions, B and occupancies."""
        if dtype is not None:
            require_float_dtype("dtype", dtype)
        return AtomicModel(
            atomic_numbers=self.atomic_numbers.to(device=device),
            positions_a=self.positions_a.to(device=device, dtype=dtype),
            b_factors_a2=self.b_factors_a2.to(device=device, dtype=dtype),
            occupancies=self.occupancies.to(device=device, dtype=dtype),
            name=self.name,
        )

    def _replace_positions(self, positions_a: torch.Tensor, name: str | None = None) -> AtomicModel:
        return AtomicModel(
            atomic_numbers=self.atomic_numbers,
            positions_a=positions_a,
            b_factors_a2=self.b_factors_a2,
            occupancies=self.occupancies,
            name=self.name if name is None else name,
        )

    def transformed(
        self, rotation: torch.Tensor, translation_a: torch.Tensor | Sequence[float]
    ) -> AtomicModel:
        """Rigid motion ``x' = R x + t`` (differentiable in ``rotation`` and ``translation_a``).

        Parameters
        ----------
        rotation
            ``(3, 3)`` rotation matrix acting on column vectors.
        translation_a
            ``(3,)`` translation [Å].
        """
        pos = self.positions_a
        rotation = torch.as_tensor(rotation).to(device=pos.device, dtype=pos.dtype)
        translation = torch.as_tensor(translation_a).to(device=pos.device, dtype=pos.dtype)
        require_shape("rotation", rotation, (3, 3))
        require_shape("translation_a", translation, (3,))
        return self._replace_positions(rotate_points(rotation, pos) + translation)

    def center_a(self) -> torch.Tensor:
        """Geometric centre (unweighted mean position), ``(3,)`` [Å]."""
        if len(self) == 0:
            return self.positions_a.new_zeros(3)
        return self.positions_a.mean(dim=0)

    def centered(self) -> AtomicModel:
        """Copy translated so that the geometric centre lies at the origin."""
        return self._replace_positions(self.positions_a - self.center_a())

    def bounding_radius_a(self) -> float:
        """Largest distance of an atom from the geometric centre [Å] (no margin added)."""
        if len(self) == 0:
            return 0.0
        pos = self.positions_a.detach()
        return float(torch.linalg.vector_norm(pos - pos.mean(dim=0), dim=1).max())

    @staticmethod
    def concatenate(models: Sequence[AtomicModel]) -> AtomicModel:
        """Join models (same device; floats cast to the first model's dtype)."""
        models = list(models)
        if not models:
            raise ValueError("concatenate needs at least one AtomicModel, got an empty sequence")
        for m in models:
            if not isinstance(m, AtomicModel):
                raise TypeError(f"concatenate expects AtomicModel items, got {type(m).__name__}")
        dtype = models[0].positions_a.dtype
        return AtomicModel(
            atomic_numbers=torch.cat([m.atomic_numbers for m in models]),
            positions_a=torch.cat([m.positions_a.to(dtype) for m in models]),
            b_factors_a2=torch.cat([m.b_factors_a2.to(dtype) for m in models]),
            occupancies=torch.cat([m.occupancies.to(dtype) for m in models]),
            name="+".join(dict.fromkeys(m.name for m in models if m.name)),
        )


# --------------------------------------------------------------------------- reading


def read_structure(
    path: str | os.PathLike,
    *,
    model_index: int = 0,
    keep_waters: bool = True,
    keep_hydrogens: bool = True,
    add_hydrogens: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    name: str | None = None,
) -> AtomicModel:
    """Read atoms from a PDB or mmCIF file (optionally gzipped).

    Parameters
    ----------
    path
        ``.pdb``, ``.ent``, ``.cif``, ``.mmcif``, each optionally ``.gz``.
    model_index
        Which model of a multi-model file (0 = first).
    keep_waters, keep_hydrogens
        Keep water molecules / deposited hydrogen (and deuterium) atoms.
    add_hydrogens
        Add the standard hydrogens of each residue lacking them, at the bonded heavy
        atom's position (see the module docstring). Default ``False``.
    dtype, device
        Floating dtype and device of the returned tensors (default float32, CPU: every
        later stage follows it, so float32 gives complex64 multislice; positions of a
        500 Å specimen are then rounded to 3e-5 Å).
    name
        Label of the model (default: the file name without ``.gz`` and format suffix).

    Returns
    -------
    AtomicModel
        Positions [Å], B [Å²], occupancies, Z.
    """
    structure, path, lines, fmt = _load(path)
    require_integer("model_index", model_index)
    if len(structure) == 0:
        raise ValueError(
            f"{path}: no atoms found (no ATOM/HETATM records; empty, truncated or not a "
            "structure file)"
        )
    if not 0 <= model_index < len(structure):
        raise ValueError(
            f"model_index {model_index} out of range: {path} holds {len(structure)} model(s)"
        )
    z_list: list[int] = []
    xyz: list[tuple[float, float, float]] = []
    b_list: list[float] = []
    occ_list: list[float] = []
    no_template: dict[str, int] = {}
    n_read = 0
    for chain in structure[model_index]:
        for residue in chain:
            is_water = residue.name.upper() in WATER_NAMES or residue.is_water()
            n_read += len(residue)
            if is_water and not keep_waters:
                continue
            has_h = any(atom.element.is_hydrogen for atom in residue)
            for atom, occupancy in _select_conformers(residue):
                z = atom.element.atomic_number
                pos = (atom.pos.x, atom.pos.y, atom.pos.z)
                problem = None
                if z == 0:
                    problem = "unknown or missing element symbol"
                elif z > MAX_ATOMIC_NUMBER:
                    problem = (
                        f"element {atom.element.name} (Z = {z} > {MAX_ATOMIC_NUMBER}) "
                        "has no scattering parameters"
                    )
                elif not all(math.isfinite(v) for v in pos):
                    problem = f"non-finite coordinates {pos} Å"
                elif not math.isfinite(atom.b_iso) or atom.b_iso < 0:
                    problem = f"B-factor must be finite and >= 0, got {atom.b_iso} Å²"
                elif not (math.isfinite(occupancy) and 0.0 <= occupancy <= 1.0):
                    problem = f"occupancy must lie in [0, 1], got {occupancy}"
                if problem is not None:
                    where = _where(atom, residue, chain, lines, fmt)
                    raise ValueError(f"{path}: {problem} for {where}")
                if z == 1 and not keep_hydrogens:
                    continue
                count = 1
                if add_hydrogens and z != 1 and not (has_h and keep_hydrogens):
                    n_h = hydrogen_count(residue.name, atom.name)
                    if n_h is None:
                        no_template[residue.name] = no_template.get(residue.name, 0) + 1
                        n_h = 0
                    count += n_h
                    z_list.extend([z] + [1] * n_h)
                else:
                    z_list.append(z)
                xyz.extend([pos] * count)
                b_list.extend([atom.b_iso] * count)
                occ_list.extend([occupancy] * count)
    if n_read == 0:
        raise ValueError(f"{path}: no atoms found in model {model_index}")
    if not z_list:
        raise ValueError(
            f"{path}: no atoms left after dropping waters (keep_waters={keep_waters}) "
            f"and hydrogens (keep_hydrogens={keep_hydrogens})"
        )
    if no_template:
        listing = ", ".join(f"{k} ({v} atoms)" for k, v in sorted(no_template.items()))
        warnings.warn(
            f"{path}: add_hydrogens has no hydrogen template for residue types {listing}; "
            "their atoms got no hydrogens",
            stacklevel=2,
        )
    _check_coordinates(path, xyz)
    if name is None:
        name = path.name
        for suffix in (".gz", ".cif", ".mmcif", ".pdb", ".ent"):
            name = name.removesuffix(suffix)
    return AtomicModel(
        atomic_numbers=torch.tensor(z_list, dtype=torch.int64, device=device),
        positions_a=torch.tensor(xyz, dtype=dtype, device=device),
        b_factors_a2=torch.tensor(b_list, dtype=dtype, device=device),
        occupancies=torch.tensor(occ_list, dtype=dtype, device=device),
        name=name,
    )


# --------------------------------------------------------------------------- assemblies


def assembly_operators(
    path: str | os.PathLike, *, assembly_id: str = "1", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Operators of a biological assembly read from PDB REMARK 350 or mmCIF.

    Parameters
    ----------
    path
        Structure file (PDB or mmCIF, optionally gzipped).
    assembly_id
        Assembly name (``"1"`` is the first in both formats).

    Returns
    -------
    Tensor
        ``(K, 3, 4)`` operators ``[R | t]`` with ``t`` in Å, in file order (duplicates removed).
        Apply them with :func:`expand_assembly`; all operators are applied to the whole
        model (a warning says so when the assembly gives different chains different operators).
    """
    structure, path, _, _ = _load(path)
    assemblies = list(structure.assemblies)
    if not assemblies:
        raise ValueError(
            f"{path} defines no biological assembly (no REMARK 350 BIOMT / pdbx_struct_assembly "
            "records); use the asymmetric unit, or pass operators to expand_assembly yourself"
        )
    names = [a.name for a in assemblies]
    if str(assembly_id) not in names:
        raise ValueError(f"assembly_id {assembly_id!r} not found in {path}; available: {names}")
    assembly = assemblies[names.index(str(assembly_id))]
    operators: list[list[list[float]]] = []
    known: set[tuple[float, ...]] = set()
    per_generator: list[set[tuple[float, ...]]] = []
    for generator in assembly.generators:
        seen = set()
        for op in generator.operators:
            mat = op.transform.mat.tolist()
            vec = op.transform.vec.tolist()
            matrix = [mat[i] + [vec[i]] for i in range(3)]
            key = tuple(round(v, 6) for row in matrix for v in row)
            seen.add(key)
            if key not in known:
                known.add(key)
                operators.append(matrix)
        per_generator.append(seen)
    if not operators:
        raise ValueError(f"assembly {assembly_id!r} of {path} lists no operators")
    if any(s != per_generator[0] for s in per_generator[1:]):
        warnings.warn(
            f"assembly {assembly_id!r} of {path} applies different operators to different "
            f"chains; the {len(operators)} operators returned are the union and "
            "expand_assembly applies each to every atom",
            stacklevel=2,
        )
    return torch.tensor(operators, dtype=dtype)


def helical_operators(
    *,
    rise_a: float,
    twist_rad: float,
    n_subunits: int,
    axis: str | Sequence[float] = "z",
    first_index: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Operators of a helical assembly: subunit k is rotated by k·twist about ``axis``
    (through the origin) and shifted by k·rise along it.

    Parameters
    ----------
    rise_a
        Axial rise per subunit [Å] (TMV: 1.408 Å).
    twist_rad
        Rotation per subunit [rad], right-handed about ``axis`` (TMV: 22.03°, 16.34 per turn).
    n_subunits
        Number of subunits K.
    axis
        ``"x"``, ``"y"``, ``"z"`` or a 3-vector.
    first_index
        Index of the first subunit (e.g. ``-(K // 2)`` to centre the segment on the origin).

    Returns
    -------
    Tensor
        ``(K, 3, 4)`` operators ``[R | t]`` [Å].
    """
    require_finite("rise_a", rise_a, "Å")
    require_finite("twist_rad", twist_rad, "rad")
    require_positive_int("n_subunits", n_subunits)
    require_integer("first_index", first_index)
    unit = _axis_vector(axis, dtype)
    k = torch.arange(first_index, first_index + n_subunits, dtype=dtype)
    rotations = rotation_about_axis(unit.expand(n_subunits, 3), k * float(twist_rad))
    translations = (k * float(rise_a))[:, None] * unit
    return torch.cat([rotations, translations[:, :, None]], dim=2)


def expand_assembly(model: AtomicModel, operators) -> AtomicModel:
    """Apply assembly operators to every atom: copy k is ``R_k x + t_k``.

    Parameters
    ----------
    model
        Asymmetric unit.
    operators
        ``(K, 3, 4)`` (or ``(K, 4, 4)``, or a list of 3x4 matrices) ``[R | t]``, ``t`` in Å,
        e.g. from :func:`assembly_operators` or :func:`helical_operators`.

    Returns
    -------
    AtomicModel
        ``K·N`` atoms, copy-major (all atoms of operator 0 first). Differentiable in the positions.
    """
    if not isinstance(model, AtomicModel):
        raise TypeError(f"model must be an AtomicModel, got {type(model).__name__}")
    pos = model.positions_a
    ops = _as_operators(operators, pos.dtype, pos.device)
    k = ops.shape[0]
    expanded = rotate_points(ops[:, :, :3], pos) + ops[:, None, :, 3]
    return AtomicModel(
        atomic_numbers=model.atomic_numbers.repeat(k),
        positions_a=expanded.reshape(-1, 3),
        b_factors_a2=model.b_factors_a2.repeat(k),
        occupancies=model.occupancies.repeat(k),
        name=f"{model.name} x{k}" if model.name else f"x{k}",
    )
