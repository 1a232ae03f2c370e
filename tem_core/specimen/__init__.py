"""Specimens: particles embedded in a slab of vitreous ice, optionally tilted.

Stage 2 of the forward model (``units -> structure -> specimen -> potential -> ...``).

Geometry (untilted, see ``book/design.md``): the field of view covers
``x in [0, Lx)``, ``y in [0, Ly)`` [Å]; the ice slab fills ``z in [0, thickness_a]`` with
its centre at ``(Lx/2, Ly/2, thickness_a/2)`` and normal ``+z``; the beam travels to +z.
An optional circular hole of ``hole_diameter_a`` in a support film (carbon of
``support_thickness_a`` centred on the slab mid-plane, or vacuum) has its axis through the
slab centre along the slab normal; outside the hole the potential stage puts the support.

Particles: each copy of a model is centred on its geometric centre, rotated by a rotation
drawn uniformly on SO(3) (or given), and placed at a random position where its bounding
sphere lies inside the field, inside the ice (and inside the hole, if there is one) and at
least ``min_gap_a`` from every other particle's bounding sphere (random sequential addition,
largest particles first). Tilting (:func:`tilt_specimen`) rotates atoms, slab and particle
poses about the slab centre by ``+θ`` about the in-plane axis at angle ``φ`` from +x
(right-handed about the axis direction); the beam stays along z.

Randomness only through an explicit ``torch.Generator``: the same seed gives the same
specimen.
"""

from tem_core.specimen.assemblies import assembly_in_ice
from tem_core.specimen.films import amorphous_film
from tem_core.specimen.ice import IceSlab, random_ice_slab
from tem_core.specimen.particles import (
    Specimen,
    build_specimen,
    place_particles,
    random_rotations,
    tilt_specimen,
)

__all__ = [
    "IceSlab",
    "Specimen",
    "random_rotations",
    "place_particles",
    "build_specimen",
    "tilt_specimen",
    "amorphous_film",
    "random_ice_slab",
    "assembly_in_ice",
]
