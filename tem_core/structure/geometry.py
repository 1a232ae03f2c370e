"""Private geometry helpers of :mod:`tem_core.structure`: axis rotations, operator checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tem_core.validation import require_finite


def _axis_vector(axis: str | Sequence[float] | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(axis, str):
        lookup = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0]}
        if axis.lower() not in lookup:
            raise ValueError(f"axis must be 'x', 'y', 'z' or a 3-vector, got {axis!r}")
        return torch.tensor(lookup[axis.lower()], dtype=dtype)
    vec = torch.as_tensor(axis, dtype=dtype).detach().cpu()
    if vec.shape != (3,) or not bool(torch.isfinite(vec).all()) or float(vec.norm()) == 0:
        raise ValueError(f"axis must be a finite non-zero 3-vector, got {axis!r}")
    return vec / vec.norm()


def rotation_about_axis(axis: torch.Tensor, angle_rad: float | torch.Tensor) -> torch.Tensor:
    """Right-handed rotation by ``angle_rad`` [rad] about the unit vector ``axis`` (Rodrigues).

    Differentiable in ``angle_rad``; follows the dtype and device of ``axis``.
    """
    angle = torch.as_tensor(angle_rad, dtype=axis.dtype, device=axis.device)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = torch.zeros_like(x)
    rows = [
        torch.stack([zero, -z, y], -1),
        torch.stack([z, zero, -x], -1),
        torch.stack([-y, x, zero], -1),
    ]
    k = torch.stack(rows, -2)
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return eye + s * k + (1.0 - c) * (k @ k)


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _require_matrices(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor) or value.ndim < 2 or value.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must be a tensor of shape (..., 3, 3), got {_shape(value)}")


def rotate_points(rotation: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``points @ rotationᵀ``: each point (a row) rotated by ``rotation`` (acting on columns).

    ``rotation`` is ``(..., 3, 3)`` and ``points`` ``(N, 3)`` or ``(..., N, 3)`` (broadcast).
    Written as three elementwise products added in a fixed order instead of a matrix product:
    BLAS's float32 kernels round differently with one and with two threads on some CPUs
    (measured: MKL on an AVX-512 AMD EPYC, batched 3 × 3 products of 327 atoms), which made a
    specimen's atoms, and every image made from them, depend on the thread count in the last
    bit. This form gives the same bits for every thread count, CPU and batch size.
    """
    _require_matrices("rotation", rotation)
    if not isinstance(points, torch.Tensor) or points.ndim < 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be a tensor of shape (..., N, 3), got {_shape(points)}")
    r = rotation[..., None, :, :]
    return (
        points[..., 0:1] * r[..., :, 0]
        + points[..., 1:2] * r[..., :, 1]
        + points[..., 2:3] * r[..., :, 2]
    )


def compose_rotations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``(..., 3, 3)`` matrices, in the fixed order of :func:`rotate_points`."""
    _require_matrices("a", a)
    _require_matrices("b", b)
    return (
        a[..., :, 0:1] * b[..., 0:1, :]
        + a[..., :, 1:2] * b[..., 1:2, :]
        + a[..., :, 2:3] * b[..., 2:3, :]
    )


def _as_operators(operators, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    ops = torch.as_tensor(operators).to(device=device, dtype=dtype)
    if ops.ndim == 2:
        ops = ops[None]
    if ops.ndim != 3 or ops.shape[1:] not in ((3, 4), (4, 4)) or ops.shape[0] == 0:
        raise ValueError(
            f"operators must have shape (K, 3, 4) or (K, 4, 4) with K >= 1, got {tuple(ops.shape)}"
        )
    require_finite("operators", ops)
    if ops.shape[1] == 4:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=device)
        if not torch.allclose(ops[:, 3], bottom.expand(ops.shape[0], 4), atol=1e-6):
            raise ValueError("4x4 operators must have the last row (0, 0, 0, 1)")
        ops = ops[:, :3]
    rot = ops[:, :, :3].detach()
    eye = torch.eye(3, dtype=dtype, device=device)
    err = (rot @ rot.transpose(1, 2) - eye).abs().amax(dim=(1, 2))
    det = torch.linalg.det(rot)
    bad = torch.nonzero((err > 1e-3) | (det <= 0)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"operator {i} is not a proper rotation "
            f"(|R R^T - I| = {float(err[i]):.2e}, det = {float(det[i]):.4f})"
        )
    return ops
