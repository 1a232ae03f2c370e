"""Where the ice slab and the carbon film lie: per-pixel z intervals and the hole weight."""

from __future__ import annotations

import torch

from tem_core._autodiff import autograd_follows
from tem_core.validation import require_positive


class SolventGeometry:
    """Per-pixel (pixel centre) ice and carbon intervals along z and the hole weight."""

    def __init__(self, specimen, shape, sampling_a: float, dtype, device) -> None:
        ice = specimen.ice
        ny, nx = shape
        s = float(sampling_a)
        f64 = dict(dtype=torch.float64, device=device)
        centre = torch.as_tensor(specimen.slab_center_a, **f64).detach()
        normal = torch.as_tensor(specimen.slab_normal, **f64).detach()
        normal = normal / torch.linalg.norm(normal)
        if abs(float(normal[2])) < 1e-6:
            raise ValueError(
                f"slab_normal must not be perpendicular to the beam, got {normal.tolist()}"
            )
        require_positive("ice.thickness_a", ice.thickness_a, "Å")
        # A slab without a hole, tilted about x (or y) or not at all, varies along one axis
        # only: then its geometry is computed on one column (row) and broadcast, bitwise the
        # values of every column (row), and its lengths on that line too.
        self.line_axis = None
        if ice.hole_diameter_a is None:  # (a meniscus needs a hole)
            if float(normal[0]) == 0.0:
                self.line_axis = -1  # constant along x
            elif float(normal[1]) == 0.0:
                self.line_axis = -2  # constant along y
        rows, cols = (ny, 1) if self.line_axis == -1 else (1, nx) if self.line_axis else (ny, nx)
        yc, xc = torch.meshgrid(
            (torch.arange(rows, **f64) + 0.5) * s, (torch.arange(cols, **f64) + 0.5) * s,
            indexing="ij",
        )  # fmt: skip
        self.rel_x, self.rel_y = xc - centre[0], yc - centre[1]
        self.centre, self.normal, self.sampling_a = centre, normal, s
        self.in_plane = self.rel_x * normal[0] + self.rel_y * normal[1]
        thickness = ice.thickness_a
        if getattr(ice, "edge_thickness_a", None) is not None:
            # meniscus: thickness at the pixel ray's crossing of the mid-plane
            mid_z = -self.in_plane / normal[2]
            rho = torch.sqrt(self.rel_x**2 + self.rel_y**2 + mid_z**2)
            thickness = ice.thickness_at_a(rho)
        self.ice_lo, self.ice_hi = self._interval(thickness)
        if self.line_axis is not None:  # read-only broadcast views of the line
            self.rel_x, self.rel_y, self.in_plane, self.ice_lo, self.ice_hi = (
                t.expand(ny, nx)
                for t in (self.rel_x, self.rel_y, self.in_plane, self.ice_lo, self.ice_hi)
            )
        self.hole_radius_a = (
            None if ice.hole_diameter_a is None else 0.5 * float(ice.hole_diameter_a)
        )
        self.support = ice.support if self.hole_radius_a is not None else "vacuum"
        self.carbon = self.support != "vacuum"  # a support film (carbon or gold) outside
        if self.carbon:
            require_positive("ice.support_thickness_a", ice.support_thickness_a, "Å")
            self.c_lo, self.c_hi = self._interval(ice.support_thickness_a)
        self.dtype = dtype

    def line_lengths(self, z0: float, z1: float) -> torch.Tensor:
        """Ice length in the slice on one line (``line_axis`` is not None): ``(ny, 1)`` or
        ``(1, nx)``; equal to :meth:`lengths` there."""
        index = (slice(None), slice(0, 1)) if self.line_axis == -1 else (slice(0, 1), slice(None))
        lo, hi = self.ice_lo[index], self.ice_hi[index]
        return (torch.clamp(hi, max=z1) - torch.clamp(lo, min=z0)).clamp(min=0).to(self.dtype)

    def _interval(self, thickness_a: float):
        nz = self.normal[2]
        a = self.centre[2] + (0.5 * thickness_a - self.in_plane) / nz
        b = self.centre[2] + (-0.5 * thickness_a - self.in_plane) / nz
        return torch.minimum(a, b), torch.maximum(a, b)

    def lengths(self, z0: float, z1: float):
        """``(ice_length_a, carbon_length_a)`` in the slice per pixel, hole weighting applied
        (a read-only broadcast view of one line where :attr:`line_axis` is set).

        Computed in place on five grids (the geometry is float64 and never needs a graph):
        the expression form made ~30 temporary grids per slice, which with glibc's defaults
        crept the heap between two page releases (issue 13). Same operations in the same
        order, so the same bits (tests/test_potential.py compares with the expression form).
        Geometry that autograd follows (a gradient, a forward-mode tangent, which ``out=``
        refuses, or a torch.func transform) takes the expression form.
        """
        if self._followed():
            return self.lengths_reference(z0, z1)
        if self.line_axis is not None:  # no hole: the line's lengths, broadcast (read only)
            return self.line_lengths(z0, z1).expand(self.ice_lo.shape), None
        ice_len = torch.clamp(self.ice_hi, max=z1)
        b = torch.clamp(self.ice_lo, min=z0)
        ice_len.sub_(b).clamp_(min=0)
        if self.hole_radius_a is None:
            return ice_len.to(self.dtype), None
        # z_eval = clamp(mid, ice_lo, ice_hi), then rel_z = z_eval - centre_z (in b)
        b.fill_(0.5 * (z0 + z1))
        torch.maximum(b, self.ice_lo, out=b)
        torch.minimum(b, self.ice_hi, out=b)
        b.sub_(self.centre[2])
        t = torch.mul(self.rel_y, self.normal[1])
        along = torch.mul(self.rel_x, self.normal[0])  # rel · normal
        along.add_(t)
        torch.mul(b, self.normal[2], out=t)
        along.add_(t)
        inside = torch.mul(self.rel_x, self.rel_x)  # distance from the hole's axis
        torch.mul(self.rel_y, self.rel_y, out=t)
        inside.add_(t)
        torch.mul(b, b, out=t)
        inside.add_(t)
        torch.mul(along, along, out=t)
        inside.sub_(t).clamp_(min=0).sqrt_()
        inside.neg_().add_(self.hole_radius_a).div_(self.sampling_a).add_(0.5).clamp_(0.0, 1.0)
        carbon_len = None
        if self.carbon:
            c_len = torch.clamp(self.c_hi, max=z1, out=along)
            torch.clamp(self.c_lo, min=z0, out=b)
            c_len.sub_(b).clamp_(min=0)
            torch.neg(inside, out=b).add_(1.0)  # 1 - inside
            carbon_len = c_len.mul_(b).to(self.dtype)
        return ice_len.mul_(inside).to(self.dtype), carbon_len

    def _followed(self) -> bool:
        tensors = [self.ice_lo, self.ice_hi, self.rel_x, self.rel_y, self.centre, self.normal]
        if self.hole_radius_a is not None and self.carbon:
            tensors += [self.c_lo, self.c_hi]
        return autograd_follows(*tensors)

    def lengths_reference(self, z0: float, z1: float):
        """:meth:`lengths` as one expression (the twin its in-place form is tested against)."""
        ice_len = (torch.clamp(self.ice_hi, max=z1) - torch.clamp(self.ice_lo, min=z0)).clamp(min=0)
        if self.hole_radius_a is None:
            return ice_len.to(self.dtype), None
        z_eval = torch.clamp(torch.full_like(ice_len, 0.5 * (z0 + z1)), self.ice_lo, self.ice_hi)
        rel_z = z_eval - self.centre[2]
        along = self.rel_x * self.normal[0] + self.rel_y * self.normal[1] + rel_z * self.normal[2]
        dist = torch.sqrt((self.rel_x**2 + self.rel_y**2 + rel_z**2 - along**2).clamp(min=0))
        inside = ((self.hole_radius_a - dist) / self.sampling_a + 0.5).clamp(0.0, 1.0)
        carbon_len = None
        if self.carbon:
            c_len = (torch.clamp(self.c_hi, max=z1) - torch.clamp(self.c_lo, min=z0)).clamp(min=0)
            carbon_len = ((1.0 - inside) * c_len).to(self.dtype)
        return (inside * ice_len).to(self.dtype), carbon_len
