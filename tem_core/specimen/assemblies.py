"""Copies of a biological assembly (e.g. a TMV segment) at given poses in an ice slab."""

from __future__ import annotations

import os

import torch

from tem_core.specimen.ice import IceSlab
from tem_core.specimen.particles import Specimen, _extent, build_specimen
from tem_core.structure import assembly_operators, expand_assembly, read_structure
from tem_core.validation import require_finite, require_integer, require_positive


def assembly_in_ice(
    structure_path: str | os.PathLike,
    *,
    extent_a: tuple[float, float],
    ice_thickness_a: float,
    rotations: torch.Tensor,
    offsets_a: torch.Tensor | None = None,
    n_subunits: int | None = None,
    assembly_id: str = "1",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Specimen:
    """Copies of a structure's biological assembly at given poses in a slab of ice.

    The recipe of the book's TMV scenes (chapters 6, 7 and 10): read the first model of
    ``structure_path``, expand it by its assembly operators (PDB ``REMARK 350`` BIOMT or
    mmCIF, e.g. the 49 helical subunits of the TMV segment 2OM3), keep the first
    ``n_subunits``, and place one copy per rotation, centred at ``offsets_a`` from the
    slab centre ``(Lx/2, Ly/2, thickness/2)``, in an ice slab filling the field.
    The poses are given, not drawn: no random generator is used.

    Parameters
    ----------
    structure_path
        PDB or mmCIF file with assembly operators (optionally gzipped).
    extent_a
        Field of view ``(Lx, Ly)`` [Å].
    ice_thickness_a
        Thickness of the ice slab [Å].
    rotations
        ``(K, 3, 3)`` rotation of each copy (applied to the centred assembly).
    offsets_a
        ``(K, 3)`` centre of each copy relative to the slab centre [Å]; default all at
        the centre.
    n_subunits
        Keep the first ``n_subunits`` assembly operators (default all).
    assembly_id
        Assembly to expand.
    dtype
        Floating dtype of the atoms (read and expanded in float64, then converted).
    device
        Device of the specimen's tensors (default CPU).

    Returns
    -------
    Specimen
        The untilted specimen (:func:`tem_core.specimen.build_specimen` with ``poses``):
        overlapping copies raise its ``ValueError``, copies leaving the ice or the field
        warn.
    """
    require_positive("ice_thickness_a", ice_thickness_a, "Å")
    lx, ly = _extent(extent_a)
    if not isinstance(rotations, torch.Tensor) or rotations.ndim != 3:
        got = tuple(rotations.shape) if isinstance(rotations, torch.Tensor) else rotations
        raise ValueError(f"rotations must be a (K, 3, 3) tensor, got {got!r}")
    k = int(rotations.shape[0])
    if k < 1:
        raise ValueError("rotations must hold at least one copy, got K = 0")
    if offsets_a is None:
        offsets_a = torch.zeros(k, 3, dtype=torch.float64)
    offsets_a = torch.as_tensor(offsets_a, dtype=torch.float64).cpu()
    if tuple(offsets_a.shape) != (k, 3):
        raise ValueError(
            f"offsets_a must be (K, 3) = ({k}, 3) [Å] like rotations, got {tuple(offsets_a.shape)}"
        )
    require_finite("offsets_a", offsets_a, "Å")
    operators = assembly_operators(structure_path, assembly_id=assembly_id)
    if n_subunits is not None:
        require_integer("n_subunits", n_subunits, minimum=1)
        if n_subunits > len(operators):
            raise ValueError(
                f"n_subunits must be at most the assembly's {len(operators)} operators, "
                f"got {n_subunits}"
            )
        operators = operators[:n_subunits]
    model = expand_assembly(read_structure(structure_path, dtype=torch.float64), operators)
    model = model.to(dtype=dtype, device=device)
    centre = torch.tensor([lx / 2, ly / 2, float(ice_thickness_a) / 2], dtype=torch.float64)
    return build_specimen(
        model,
        k,
        extent_a=(lx, ly),
        ice=IceSlab(thickness_a=float(ice_thickness_a)),
        generator=torch.Generator(),  # unused: the poses are given
        poses=(rotations.detach().cpu().double(), centre + offsets_a),
    )
