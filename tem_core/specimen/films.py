"""Amorphous films as atoms (helper of :mod:`tem_core.specimen`, which re-exports it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tem_core.structure import AtomicModel
from tem_core.units import AVOGADRO_PER_MOL, CM3_TO_A3
from tem_core.validation import require_generator, require_nonnegative, require_positive

#: Standard atomic weights [g/mol] of the film elements offered.
_ATOMIC_WEIGHT_G_PER_MOL = {6: 12.011, 14: 28.085, 79: 196.967}


def amorphous_film(
    *,
    extent_a: Sequence[float],
    thickness_a: float,
    generator: torch.Generator,
    atomic_number: int = 6,
    density_g_per_cm3: float = 2.0,
    b_factor_a2: float = 1.0,
    z0_a: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> AtomicModel:
    """Atoms of an amorphous film: uniformly random positions at a given mass density.

    A thin film of amorphous carbon (the default, 2.0 g/cm³, 0.100 atoms/Å³) scatters into
    all spatial frequencies with a smooth spectrum, so its image shows the CTF as Thon rings.
    Positions are independent and uniform (no excluded volume between atoms: the film's
    power spectrum is the atoms' form factor squared, as for an ideal gas).

    Parameters
    ----------
    extent_a
        ``(Lx, Ly)`` lateral size [Å].
    thickness_a
        Film thickness [Å]; the atoms fill ``z0_a <= z < z0_a + thickness_a``.
    generator
        Random generator (CPU) for the positions.
    atomic_number
        Element: 6 (carbon), 14 (silicon) or 79 (gold).
    density_g_per_cm3
        Mass density [g/cm³].
    b_factor_a2
        Debye-Waller factor of every atom [Å²].
    z0_a
        Lower face of the film [Å].
    dtype
        Floating dtype of positions, B-factors and occupancies.

    Returns
    -------
    AtomicModel
        ``round(ρ N_A / M · Lx Ly t)`` atoms, occupancy 1.
    """
    if len(extent_a) != 2:
        raise ValueError(f"extent_a must be (Lx, Ly) [Å], got {tuple(extent_a)}")
    require_positive("extent_a", list(extent_a), "Å")
    require_positive("thickness_a", thickness_a, "Å")
    require_positive("density_g_per_cm3", density_g_per_cm3, "g/cm³")
    require_nonnegative("b_factor_a2", b_factor_a2, "Å²")
    if atomic_number not in _ATOMIC_WEIGHT_G_PER_MOL:
        raise ValueError(
            f"atomic_number must be one of {sorted(_ATOMIC_WEIGHT_G_PER_MOL)}, "
            f"got {atomic_number!r}"
        )
    require_generator(generator)
    per_a3 = (
        density_g_per_cm3 / CM3_TO_A3 * AVOGADRO_PER_MOL / _ATOMIC_WEIGHT_G_PER_MOL[atomic_number]
    )
    lx, ly = (float(v) for v in extent_a)
    n = round(per_a3 * lx * ly * float(thickness_a))
    box = torch.tensor([lx, ly, float(thickness_a)], dtype=dtype)
    positions = torch.rand(n, 3, generator=generator, dtype=dtype) * box
    positions[:, 2] += float(z0_a)
    return AtomicModel(
        atomic_numbers=torch.full((n,), atomic_number, dtype=torch.int64),
        positions_a=positions,
        b_factors_a2=torch.full((n,), float(b_factor_a2), dtype=dtype),
        occupancies=torch.ones(n, dtype=dtype),
        name=f"amorphous film Z={atomic_number}, {thickness_a:g} Å",
    )
