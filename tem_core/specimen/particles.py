"""Specimen geometry, particle placement and tilting (see :mod:`tem_core.specimen`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tem_core.specimen.checks import _check_poses, _check_rotations
from tem_core.specimen.ice import IceSlab, _check_hole_in_field
from tem_core.structure import (
    AtomicModel,
    compose_rotations,
    rotate_points,
    rotation_about_axis,
)
from tem_core.validation import (
    require_finite,
    require_generator,
    require_integer,
    require_nonnegative,
    require_positive,
)


def _extent(extent_a: Sequence[float]) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in extent_a)
    except TypeError as exc:
        raise TypeError(f"extent_a must be a pair (Lx, Ly) [Å], got {extent_a!r}") from exc
    if len(values) != 2:
        raise ValueError(f"extent_a must be a pair (Lx, Ly) [Å], got {extent_a!r}")
    require_positive("extent_a", list(values), "Å")
    return values  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True, eq=False)
class Specimen:
    """Atoms in the specimen frame with the ice slab and the particle poses.

    Parameters
    ----------
    atoms
        All atoms, positions in the specimen frame [Å].
    extent_a
        Field of view ``(Lx, Ly)`` [Å]; ``x in [0, Lx)``, ``y in [0, Ly)``.
    ice
        The ice slab.
    slab_center_a
        ``(3,)`` centre of the slab [Å] (untilted ``(Lx/2, Ly/2, thickness/2)``).
    slab_normal
        ``(3,)`` unit normal of the slab (untilted ``(0, 0, 1)``).
    particle_centers_a, particle_radii_a, particle_rotations
        ``(K, 3)`` centres [Å], ``(K,)`` bounding-sphere radii [Å], ``(K, 3, 3)`` rotations.
    tilt_angle_rad, tilt_axis_angle_rad
        Tilt applied by :func:`tilt_specimen` [rad]; axis angle from +x [rad].
    """

    atoms: AtomicModel
    extent_a: tuple[float, float]
    ice: IceSlab
    slab_center_a: torch.Tensor
    slab_normal: torch.Tensor
    particle_centers_a: torch.Tensor
    particle_radii_a: torch.Tensor
    particle_rotations: torch.Tensor
    tilt_angle_rad: float = 0.0
    tilt_axis_angle_rad: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.atoms, AtomicModel):
            raise TypeError(f"atoms must be an AtomicModel, got {type(self.atoms).__name__}")
        if not isinstance(self.ice, IceSlab):
            raise TypeError(f"ice must be an IceSlab, got {type(self.ice).__name__}")
        object.__setattr__(self, "extent_a", _extent(self.extent_a))
        for name, shape in (("slab_center_a", (3,)), ("slab_normal", (3,))):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"{name} must be a tensor of shape {shape}, got {value!r}")
            require_finite(name, value, "Å" if name.endswith("_a") else "")
        if abs(float(torch.linalg.vector_norm(self.slab_normal.detach())) - 1.0) > 1e-6:
            raise ValueError(f"slab_normal must be a unit vector, got {self.slab_normal.tolist()}")
        k = self.particle_centers_a.shape[0] if self.particle_centers_a.ndim == 2 else -1
        if (
            tuple(self.particle_centers_a.shape) != (k, 3)
            or tuple(self.particle_radii_a.shape) != (k,)
            or tuple(self.particle_rotations.shape) != (k, 3, 3)
        ):
            raise ValueError(
                "particle_centers_a, particle_radii_a, particle_rotations must have shapes "
                f"(K, 3), (K,), (K, 3, 3); got {tuple(self.particle_centers_a.shape)}, "
                f"{tuple(self.particle_radii_a.shape)}, {tuple(self.particle_rotations.shape)}"
            )
        for name in ("tilt_angle_rad", "tilt_axis_angle_rad"):
            object.__setattr__(self, name, float(getattr(self, name)))
            require_finite(name, getattr(self, name), "rad")
        if not abs(self.tilt_angle_rad) < math.pi / 2:
            raise ValueError(
                f"tilt_angle_rad must lie in (-pi/2, pi/2), got {self.tilt_angle_rad} rad"
            )
        _check_hole_in_field(self.ice, self.extent_a)

    @property
    def hole_center_a(self) -> torch.Tensor:
        """Centre of the support hole [Å]: the slab centre (the hole axis is the slab normal)."""
        return self.slab_center_a

    @property
    def n_particles(self) -> int:
        """Number of particles K."""
        return int(self.particle_centers_a.shape[0])

    def z_range_a(self) -> tuple[float, float]:
        """``(z_min, z_max)`` [Å] covering the (tilted) slab over the field and every atom.

        The slab half-thickness is the larger of the ice and, with a carbon support around
        a hole, the carbon film.
        """
        half = 0.5 * self.ice.max_thickness_a
        if self.ice.hole_diameter_a is not None and self.ice.support != "vacuum":
            half = max(half, 0.5 * self.ice.support_thickness_a)
        c = self.slab_center_a.detach().double().cpu()
        n = self.slab_normal.detach().double().cpu()
        lx, ly = self.extent_a
        zs = []
        for x in (0.0, lx):
            for y in (0.0, ly):
                for s in (-half, half):
                    offset = (x - float(c[0])) * float(n[0]) + (y - float(c[1])) * float(n[1])
                    zs.append(float(c[2]) + (s - offset) / float(n[2]))
        z_min, z_max = min(zs), max(zs)
        if len(self.atoms):
            z = self.atoms.positions_a.detach()[:, 2]
            z_min, z_max = min(z_min, float(z.min())), max(z_max, float(z.max()))
        return z_min, z_max


def random_rotations(
    n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Rotation matrices drawn uniformly (Haar measure) on SO(3).

    Normalised 4-D Gaussian vectors are uniform on the unit quaternion sphere, which
    covers SO(3) twice and uniformly (Shoemake 1992, Graphics Gems III).

    Parameters
    ----------
    n
        Number of rotations (>= 0).
    generator
        Source of randomness; its device is used.

    Returns
    -------
    Tensor
        ``(n, 3, 3)`` proper rotations acting on column vectors.
    """
    require_integer("n", n, minimum=0)
    require_generator(generator)
    q = torch.randn(n, 4, generator=generator, dtype=dtype, device=generator.device)
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, 1)


def place_particles(
    radii_a: torch.Tensor | Sequence[float],
    *,
    extent_a: Sequence[float],
    thickness_a: float,
    generator: torch.Generator,
    min_gap_a: float = 5.0,
    max_attempts: int = 10_000,
    hole_diameter_a: float | None = None,
) -> torch.Tensor:
    """Random non-overlapping positions for bounding spheres inside the ice slab.

    Each sphere lies inside the field (``x in [r, Lx - r]``, same for y, so no particle
    wraps around the periodic field), inside the ice (``z in [r, thickness_a - r]``),
    inside the hole when ``hole_diameter_a`` is given (centred in the field), and at least
    ``min_gap_a`` from the other spheres. Random sequential addition, largest first.

    Parameters
    ----------
    radii_a
        ``(K,)`` bounding-sphere radii [Å].
    extent_a
        Field of view ``(Lx, Ly)`` [Å].
    thickness_a
        Ice thickness [Å].
    generator
        Source of randomness.
    min_gap_a
        Smallest gap between two spheres [Å].
    max_attempts
        Random trials per particle before giving up.
    hole_diameter_a
        Diameter of the support hole [Å], or ``None``.

    Returns
    -------
    Tensor
        ``(K, 3)`` float64 centres [Å], in the order of ``radii_a``, on the generator's device.

    Raises
    ------
    ValueError
        If a particle cannot fit (larger than the ice thickness, field or hole), or if not
        all particles could be packed; the message says how many fit.
    """
    lx, ly = _extent(extent_a)
    require_positive("thickness_a", thickness_a, "Å")
    require_nonnegative("min_gap_a", min_gap_a, "Å")
    require_integer("max_attempts", max_attempts, minimum=1)
    device = generator.device
    radii = torch.as_tensor(radii_a, dtype=torch.float64).detach().to(device).reshape(-1)
    require_nonnegative("radii_a", radii, "Å")
    for i, r in enumerate(radii.tolist()):
        if 2 * r > thickness_a:
            raise ValueError(
                f"particle {i} (bounding-sphere diameter {2 * r:.1f} Å) is thicker than the ice "
                f"(thickness_a = {thickness_a} Å); use thicker ice or a smaller particle"
            )
        if 2 * r > min(lx, ly):
            raise ValueError(
                f"particle {i} (bounding-sphere diameter {2 * r:.1f} Å) does not fit in the "
                f"field extent_a = ({lx}, {ly}) Å"
            )
        if hole_diameter_a is not None and 2 * r > hole_diameter_a:
            raise ValueError(
                f"particle {i} (bounding-sphere diameter {2 * r:.1f} Å) does not fit in the "
                f"hole (hole_diameter_a = {hole_diameter_a} Å)"
            )
    k = radii.shape[0]
    centers = torch.zeros(k, 3, dtype=torch.float64, device=device)
    placed: list[int] = []
    batch = min(max_attempts, 512)
    for count, i in enumerate(torch.argsort(radii, descending=True, stable=True).tolist()):
        r = float(radii[i])
        found = None
        tried = 0
        while found is None and tried < max_attempts:
            m = min(batch, max_attempts - tried)
            tried += m
            u = torch.rand(m, 3, generator=generator, dtype=torch.float64, device=device)
            span = torch.tensor([lx, ly, thickness_a], dtype=torch.float64, device=device) - 2 * r
            cand = r + u * span
            ok = torch.ones(m, dtype=torch.bool, device=device)
            if hole_diameter_a is not None:
                rho = torch.hypot(cand[:, 0] - lx / 2, cand[:, 1] - ly / 2)
                ok &= rho <= hole_diameter_a / 2 - r
            if placed:
                idx = torch.tensor(placed, device=device)
                dist = torch.cdist(cand, centers[idx])
                ok &= (dist >= radii[idx] + r + min_gap_a).all(dim=1)
            hits = torch.nonzero(ok).flatten()
            if hits.numel():
                found = cand[int(hits[0])]
        if found is None:
            raise ValueError(
                f"could place only {count} of {k} particles (no free position for a sphere of "
                f"radius {r:.1f} Å after max_attempts = {max_attempts} trials) in extent_a = "
                f"({lx}, {ly}) Å, thickness_a = {thickness_a} Å, min_gap_a = {min_gap_a} Å; "
                "enlarge the field or the ice, or place fewer particles"
            )
        centers[i] = found
        placed.append(i)
    return centers


def build_specimen(
    models: AtomicModel | Sequence[AtomicModel],
    counts: int | Sequence[int],
    *,
    extent_a: Sequence[float],
    ice: IceSlab,
    generator: torch.Generator,
    poses: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_gap_a: float = 5.0,
    max_attempts: int = 10_000,
) -> Specimen:
    """Place ``counts[i]`` copies of ``models[i]`` in the ice with random (or given) poses.

    Parameters
    ----------
    models
        One model or a list; each is centred on its geometric centre first.
    counts
        Copies per model (int or list of the same length as ``models``).
    extent_a
        Field of view ``(Lx, Ly)`` [Å].
    ice
        Ice slab (and support hole).
    generator
        Source of randomness (rotations first, then positions).
    poses
        Optional ``(rotations (K, 3, 3), centers_a (K, 3) [Å])`` for the K = sum(counts)
        particles in model order, instead of random ones; checked for overlap.
    min_gap_a
        Smallest gap between bounding spheres for random placement [Å].
    max_attempts
        Random trials per particle (see :func:`place_particles`).

    Returns
    -------
    Specimen
        Untilted specimen; atoms follow the models' dtype and device.
    """
    model_list = [models] if isinstance(models, AtomicModel) else list(models)
    count_list = [counts] if isinstance(counts, int) else list(counts)
    if len(model_list) != len(count_list):
        raise ValueError(f"got {len(model_list)} models but {len(count_list)} counts")
    for i, c in enumerate(count_list):
        require_integer(f"counts[{i}]", c, minimum=0)
    for m in model_list:
        if not isinstance(m, AtomicModel):
            raise TypeError(f"models must be AtomicModel objects, got {type(m).__name__}")
    lx, ly = _extent(extent_a)
    centred = [m.centered() for m in model_list]
    per_model = [m.bounding_radius_a() for m in centred]
    radii = torch.tensor(
        [r for r, c in zip(per_model, count_list, strict=True) for _ in range(c)],
        dtype=torch.float64,
    )
    k = int(radii.shape[0])
    if poses is None:
        rotations = random_rotations(k, generator=generator)
        centers = place_particles(
            radii,
            extent_a=(lx, ly),
            thickness_a=ice.thickness_a,
            generator=generator,
            min_gap_a=min_gap_a,
            max_attempts=max_attempts,
            hole_diameter_a=ice.hole_diameter_a,
        )
    else:
        rotations, centers = (torch.as_tensor(p) for p in poses)
        if tuple(rotations.shape) != (k, 3, 3) or tuple(centers.shape) != (k, 3):
            raise ValueError(
                f"poses must be (rotations (K, 3, 3), centers_a (K, 3)) with K = {k}, "
                f"got {tuple(rotations.shape)} and {tuple(centers.shape)}"
            )
        require_finite("poses centers_a", centers, "Å")
        _check_rotations(rotations, "poses rotations")
        _check_poses(centers.detach().double().cpu(), radii, lx, ly, ice.thickness_a)
    device = model_list[0].positions_a.device if model_list else torch.device("cpu")
    dtype = model_list[0].positions_a.dtype if model_list else torch.float64
    rotations = rotations.to(device=device, dtype=dtype)
    centers = centers.to(device=device, dtype=dtype)
    pieces = []
    start = 0
    for model, c in zip(centred, count_list, strict=True):
        if c == 0:
            continue
        rot, cen = rotations[start : start + c], centers[start : start + c]
        pos = rotate_points(rot, model.positions_a.to(device=device, dtype=dtype))
        pieces.append(
            AtomicModel(
                atomic_numbers=model.atomic_numbers.to(device).repeat(c),
                positions_a=(pos + cen[:, None, :]).reshape(-1, 3),
                b_factors_a2=model.b_factors_a2.to(device=device, dtype=dtype).repeat(c),
                occupancies=model.occupancies.to(device=device, dtype=dtype).repeat(c),
                name=model.name,
            )
        )
        start += c
    if pieces:
        atoms = AtomicModel.concatenate(pieces)
    else:
        empty = torch.zeros(0, dtype=dtype, device=device)
        atoms = AtomicModel(
            atomic_numbers=torch.zeros(0, dtype=torch.int64, device=device),
            positions_a=empty.reshape(0, 3),
            b_factors_a2=empty,
            occupancies=empty,
            name="empty",
        )
    return Specimen(
        atoms=atoms,
        extent_a=(lx, ly),
        ice=ice,
        slab_center_a=torch.tensor(
            [lx / 2, ly / 2, ice.thickness_a / 2], dtype=dtype, device=device
        ),
        slab_normal=torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device),
        particle_centers_a=centers,
        particle_radii_a=radii.to(device=device, dtype=dtype),
        particle_rotations=rotations,
    )


def tilt_specimen(
    specimen: Specimen, *, tilt_angle_rad: float | torch.Tensor, tilt_axis_angle_rad: float = 0.0
) -> Specimen:
    """Rotate the specimen by ``+tilt_angle_rad`` about an in-plane axis through the slab centre.

    The axis is ``(cos φ, sin φ, 0)`` with ``φ = tilt_axis_angle_rad``; the rotation is
    right-handed about it. Atoms, slab normal, particle centres and rotations move; the
    beam stays along z. Tilting an already tilted specimen about the same axis adds the
    angles; another axis raises (tilt the untilted specimen instead).

    Parameters
    ----------
    specimen
        Specimen to tilt.
    tilt_angle_rad
        Tilt angle θ [rad], ``|total tilt| < π/2``; a tensor keeps the atom positions
        differentiable in θ.
    tilt_axis_angle_rad
        In-plane angle φ of the tilt axis from +x [rad].
    """
    require_finite("tilt_angle_rad", tilt_angle_rad, "rad")
    require_finite("tilt_axis_angle_rad", tilt_axis_angle_rad, "rad")
    phi = float(tilt_axis_angle_rad)
    theta_value = float(torch.as_tensor(tilt_angle_rad).detach())
    if specimen.tilt_angle_rad != 0.0 and not _same_axis(specimen.tilt_axis_angle_rad, phi):
        raise ValueError(
            f"specimen is already tilted about the axis at {specimen.tilt_axis_angle_rad} rad; "
            f"tilting about {phi} rad as well is not supported: tilt the untilted specimen"
        )
    total = specimen.tilt_angle_rad + theta_value
    if not abs(total) < math.pi / 2:
        raise ValueError(f"total tilt must lie in (-pi/2, pi/2), got {total} rad")
    pos = specimen.atoms.positions_a
    axis = torch.tensor([math.cos(phi), math.sin(phi), 0.0], dtype=pos.dtype, device=pos.device)
    theta = torch.as_tensor(tilt_angle_rad, dtype=pos.dtype).to(pos.device)
    rot = rotation_about_axis(axis, theta)
    c = specimen.slab_center_a.to(dtype=pos.dtype)
    atoms = specimen.atoms._replace_positions(rotate_points(rot, pos - c) + c)
    centers = specimen.particle_centers_a.to(pos.dtype)
    rotations = specimen.particle_rotations.to(pos.dtype)
    return Specimen(
        atoms=atoms,
        extent_a=specimen.extent_a,
        ice=specimen.ice,
        slab_center_a=specimen.slab_center_a,
        slab_normal=rotate_points(rot.detach(), specimen.slab_normal.to(pos.dtype)[None])[0],
        particle_centers_a=rotate_points(rot.detach(), centers - c) + c,
        particle_radii_a=specimen.particle_radii_a,
        particle_rotations=compose_rotations(rot.detach(), rotations),
        tilt_angle_rad=total,
        tilt_axis_angle_rad=phi,
    )


def _same_axis(phi_a: float, phi_b: float) -> bool:
    return abs(math.remainder(phi_a - phi_b, 2 * math.pi)) < 1e-12
