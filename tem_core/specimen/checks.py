"""Private validation helpers of :mod:`tem_core.specimen` (user-given particle poses)."""

from __future__ import annotations

import warnings

import torch


def _check_rotations(rotations: torch.Tensor, name: str) -> None:
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    rot = rotations.detach()
    err = (rot @ rot.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(rot) if rot.shape[0] else err
    if rot.shape[0] and (float(err.max()) > 1e-6 or float(det.min()) <= 0):
        raise ValueError(f"{name} must be proper rotation matrices (R R^T = I, det R = +1)")


def _check_poses(
    centers: torch.Tensor, radii: torch.Tensor, lx: float, ly: float, thickness_a: float
) -> None:
    """Raise on overlapping bounding spheres; warn when a sphere leaves the ice or field."""
    k = centers.shape[0]
    if k > 1:
        dist = torch.cdist(centers, centers)
        overlap = dist < radii[:, None] + radii[None, :]
        overlap.fill_diagonal_(False)
        pairs = torch.nonzero(torch.triu(overlap)).tolist()
        if pairs:
            i, j = pairs[0]
            raise ValueError(
                f"poses overlap: particles {i} and {j} are {float(dist[i, j]):.1f} Å apart, less "
                f"than the sum of their bounding radii {float(radii[i] + radii[j]):.1f} Å "
                f"({len(pairs)} overlapping pair(s))"
            )
    r = radii
    outside = (
        (centers[:, 2] - r < 0)
        | (centers[:, 2] + r > thickness_a)
        | (centers[:, 0] - r < 0)
        | (centers[:, 0] + r > lx)
        | (centers[:, 1] - r < 0)
        | (centers[:, 1] + r > ly)
    )
    if bool(outside.any()):
        warnings.warn(
            f"{int(outside.sum())} of {k} posed particles stick out of the ice slab "
            f"(z in [0, {thickness_a}] Å) or the field (0..{lx}, 0..{ly}) Å",
            stacklevel=3,
        )
