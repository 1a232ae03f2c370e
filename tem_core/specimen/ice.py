"""The ice slab: thickness (uniform or a meniscus across the hole), support, random slabs.

Part of the specimen stage (:mod:`tem_core.specimen`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tem_core.validation import require_nonnegative, require_positive

#: Supports around the hole; the potential stage gives each its potential and absorption.
SUPPORTS = ("carbon", "gold", "vacuum")
#: Thickest ice accepted [Å] (1 µm): at 300 kV only exp(−10000/3500) = 6% passes unscattered.
MAX_ICE_THICKNESS_A = 10000.0


@dataclass(frozen=True, kw_only=True)
class IceSlab:
    """Slab of vitreous ice, optionally in a hole of a support film.

    Parameters
    ----------
    thickness_a
        Ice thickness along the slab normal [Å] (at the hole centre when the thickness
        varies), in (0, :data:`MAX_ICE_THICKNESS_A`].
    hole_diameter_a
        Diameter of the circular hole in the support film [Å]; ``None``: ice everywhere.
    support
        ``"carbon"``, ``"gold"`` or ``"vacuum"`` outside the hole.
    support_thickness_a
        Thickness of the support film, centred on the slab mid-plane [Å].
    edge_thickness_a
        Ice thickness at the hole edge [Å] (≥ ``thickness_a``): a meniscus
        ``t(ρ) = t_c + (t_e − t_c) (ρ/R)^p`` across the hole of radius ``R`` (TEM-simulator's
        example: 500 Å at the centre, 1000 Å at the edge); ``None``: uniform thickness.
    meniscus_exponent
        ``p`` of the meniscus profile (2: parabolic).
    """

    thickness_a: float
    hole_diameter_a: float | None = None
    support: str = "carbon"
    support_thickness_a: float = 150.0
    edge_thickness_a: float | None = None
    meniscus_exponent: float = 2.0

    def __post_init__(self) -> None:
        require_positive("thickness_a", self.thickness_a, "Å")
        if self.thickness_a > MAX_ICE_THICKNESS_A:
            raise ValueError(
                f"thickness_a must be <= {MAX_ICE_THICKNESS_A} Å (1 µm: thicker ice transmits "
                f"no usable image), got {self.thickness_a} Å"
            )
        if self.hole_diameter_a is not None:
            require_positive("hole_diameter_a", self.hole_diameter_a, "Å")
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        require_nonnegative("support_thickness_a", self.support_thickness_a, "Å")
        if self.edge_thickness_a is not None:
            if self.hole_diameter_a is None:
                raise ValueError("edge_thickness_a needs a hole: set hole_diameter_a [Å]")
            if not self.thickness_a <= self.edge_thickness_a <= MAX_ICE_THICKNESS_A:
                raise ValueError(
                    f"edge_thickness_a must lie in [thickness_a, {MAX_ICE_THICKNESS_A}] Å "
                    f"([{self.thickness_a}, {MAX_ICE_THICKNESS_A}] Å; a meniscus is thinnest at "
                    f"the centre), got {self.edge_thickness_a} Å"
                )
        require_positive("meniscus_exponent", self.meniscus_exponent)

    @property
    def max_thickness_a(self) -> float:
        """Largest ice thickness anywhere in the hole [Å]."""
        return max(self.thickness_a, self.edge_thickness_a or 0.0)

    def thickness_at_a(self, radius_a: torch.Tensor) -> torch.Tensor:
        """Ice thickness [Å] at in-plane distance ``radius_a`` [Å] from the hole axis."""
        if self.edge_thickness_a is None:
            return torch.full_like(radius_a, self.thickness_a)
        u = (radius_a / (0.5 * self.hole_diameter_a)).clamp(max=1.0) ** self.meniscus_exponent
        return self.thickness_a + (self.edge_thickness_a - self.thickness_a) * u


def random_ice_slab(
    *,
    generator: torch.Generator,
    thickness_range_a: tuple[float, float],
    edge_ratio_range: tuple[float, float] | None = None,
    hole_diameter_a: float | None = None,
    support: str = "carbon",
    support_thickness_a: float = 150.0,
) -> IceSlab:
    """An :class:`IceSlab` with a random thickness, one per micrograph (dataset generation).

    The centre thickness is uniform in ``thickness_range_a`` [Å]; with ``edge_ratio_range``
    (and a hole) the edge is that thickness times a ratio uniform in the range (≥ 1).
    """
    lo, hi = (float(v) for v in thickness_range_a)
    require_positive("thickness_range_a", [lo, hi], "Å")
    if hi < lo:
        raise ValueError(f"thickness_range_a must be (low, high), got {thickness_range_a} Å")
    u = torch.rand(2, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    thickness = lo + (hi - lo) * float(u[0])
    edge = None
    if edge_ratio_range is not None:
        r_lo, r_hi = (float(v) for v in edge_ratio_range)
        if not 1.0 <= r_lo <= r_hi:
            raise ValueError(f"edge_ratio_range must be (low, high) with 1 <= low <= high, "
                             f"got {edge_ratio_range}")  # fmt: skip
        edge = min(thickness * (r_lo + (r_hi - r_lo) * float(u[1])), MAX_ICE_THICKNESS_A)
    return IceSlab(
        thickness_a=thickness, hole_diameter_a=hole_diameter_a, support=support,
        support_thickness_a=support_thickness_a, edge_thickness_a=edge,
    )  # fmt: skip


def _check_hole_in_field(ice: IceSlab, extent_a: tuple[float, float]) -> None:
    """A vacuum-supported hole of uniform ice that covers the whole field does nothing."""
    if ice.hole_diameter_a is None or ice.support != "vacuum" or ice.edge_thickness_a:
        return
    half_diagonal = 0.5 * math.hypot(*extent_a)
    if 0.5 * ice.hole_diameter_a > half_diagonal:
        raise ValueError(
            f"hole_diameter_a = {ice.hole_diameter_a} Å (radius {0.5 * ice.hole_diameter_a} Å) "
            f"is larger than the field (half-diagonal {half_diagonal:.1f} Å) with support="
            "'vacuum': no support is in view; omit hole_diameter_a, use a smaller hole, or "
            "give a support ('carbon', 'gold') or an edge_thickness_a"
        )
