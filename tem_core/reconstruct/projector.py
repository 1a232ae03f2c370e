"""Parallel-beam projector and back-projector (an exact adjoint pair), slice by slice.

Every slice of the volume perpendicular to the tilt axis shares one sparse strip-kernel matrix
(:mod:`tem_core.reconstruct._strip`, identical to ASTRA's ``strip`` projector); the volume is
projected as one sparse-dense matrix product over a chunk of slices (the slices are the dense
matrix's columns), chunk after chunk along the tilt axis, so the working memory beyond the
volume and the stack stays bounded. The back-projector multiplies by the stored transpose, so
``<A x, y> = <x, A^T y>`` holds to rounding. Images whose tilt axis is not along y are
rotated into the aligned frame by an exact quarter turn or a bilinear sparse matrix, whose
transpose is again the exact adjoint.

Both directions are :class:`torch.autograd.Function` s whose backward is the other direction,
so projections and reconstructions can sit inside an optimisation.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from tem_core.reconstruct._strip import strip_matrix
from tem_core.reconstruct.geometry import TiltGeometry

_CHUNK_BYTES = 64 * 2**20  # dense temporaries per chunk of slices [bytes]


@functools.lru_cache(maxsize=8)
def _slice_matrix(angles: tuple[float, ...], nz: int, nx: int, n_det: int) -> sp.csr_matrix:
    return strip_matrix(np.asarray(angles), nz=nz, nx=nx, n_det=n_det, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def _rotation_matrix(shape: tuple[int, int], alpha: float) -> sp.csr_matrix:
    """Bilinear resampling ``out = M @ in`` of an image rotated by ``alpha`` about its centre.

    Coordinates ``x`` (columns) and ``y`` (rows) are centred; the output pixel at ``p`` takes
    the input at ``R(-alpha) p``; samples outside the input are 0.
    """
    ny, nx = shape
    yy, xx = np.meshgrid(
        np.arange(ny) - 0.5 * (ny - 1), np.arange(nx) - 0.5 * (nx - 1), indexing="ij"
    )
    c, s = math.cos(alpha), math.sin(alpha)
    xs = c * xx + s * yy + 0.5 * (nx - 1)
    ys = -s * xx + c * yy + 0.5 * (ny - 1)
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    rows, cols, vals = [], [], []
    out_index = np.arange(ny * nx)
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        xi, yi = (x0 + dx).ravel(), (y0 + dy).ravel()
        keep = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny) & (w.ravel() > 0)
        rows.append(out_index[keep])
        cols.append(yi[keep] * nx + xi[keep])
        vals.append(w.ravel()[keep])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(ny * nx, ny * nx),
    )


def _torch_csr(matrix: sp.csr_matrix, device, dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            dtype=dtype,
            device=device,
        )


class TomographyOperator:
    """The projector ``A`` (volume -> stack) of a :class:`TiltGeometry` and its adjoint.

    Parameters
    ----------
    geometry
        Angles, detector shape, voxel size and thickness.
    device, dtype
        Where and in which precision the operator works (the tensors it is applied to must
        match).
    chunk_slices
        Slices along the tilt axis per sparse matrix product (``None``: as many as fit in
        about 64 MiB of temporaries).
    progress
        Show a progress bar over the chunks of slices.

    Notes
    -----
    ``A(volume)`` returns projections in the detector frame ``(n_tilts, ny, nx)`` [voxel
    value x voxel size in voxels, i.e. line integrals in voxel units]; ``A.T(stack)`` is the
    exact adjoint. :meth:`project_aligned` / :meth:`backproject_aligned` work in the frame
    where the tilt axis is along y (no in-plane rotation).
    """

    def __init__(
        self,
        geometry: TiltGeometry,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        chunk_slices: int | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(geometry, TiltGeometry):
            raise TypeError(f"geometry must be a TiltGeometry, got {type(geometry).__name__}")
        if chunk_slices is not None and (
            isinstance(chunk_slices, bool) or not isinstance(chunk_slices, int) or chunk_slices < 1
        ):
            raise ValueError(f"chunk_slices must be a positive integer, got {chunk_slices!r}")
        self.geometry = geometry
        self.device = torch.device("cpu" if device is None else device)
        self.dtype = dtype
        self.progress = progress
        geometry.check_memory(dtype, self.device)
        nz, ny, nx = geometry.volume_shape
        self.nz, self.ny, self.nx, self.n_det = nz, ny, nx, nx
        matrix = _slice_matrix(geometry.angles_rad, nz, nx, nx)
        self._A = _torch_csr(matrix, self.device, dtype)
        self._At = _torch_csr(matrix.T.tocsr(), self.device, dtype)
        item = torch.empty((), dtype=dtype).element_size()
        per_slice = (nz * nx + geometry.n_tilts * nx) * item * 3
        self.chunk = chunk_slices or max(1, min(ny, _CHUNK_BYTES // per_slice))
        self.chunk = min(self.chunk, ny)
        turns = geometry.quarter_turns
        self._rotation = None
        if turns is None:
            alpha = geometry.alignment_rotation_rad
            to = _rotation_matrix(geometry.detector_shape, alpha)
            back = _rotation_matrix(geometry.detector_shape, -alpha)
            self._rotation = tuple(
                _torch_csr(m, self.device, dtype) for m in (to, to.T.tocsr(), back, back.T.tocsr())
            )
        self._turns = turns or 0

    # --- layout helpers ----------------------------------------------------------------
    def _chunks(self, desc: str):
        from tqdm.auto import tqdm

        starts = range(0, self.ny, self.chunk)
        show = self.progress and len(starts) > 1
        return tqdm(starts, desc=desc, disable=not show, leave=False)

    def volume_columns(self, volume: torch.Tensor, y0: int, y1: int) -> torch.Tensor:
        """``(nz * nx, y1 - y0)``: slices ``y0:y1`` as matrix columns."""
        return volume[:, y0:y1, :].permute(0, 2, 1).reshape(self.nz * self.nx, y1 - y0)

    def stack_columns(self, stack: torch.Tensor, y0: int, y1: int) -> torch.Tensor:
        """``(n_tilts * n_det, y1 - y0)``: rows ``y0:y1`` of aligned images as columns."""
        n = stack.shape[0]
        return stack[:, y0:y1, :].permute(0, 2, 1).reshape(n * self.n_det, y1 - y0)

    # --- matrix products on columns ------------------------------------------------------
    def A_columns(self, x: torch.Tensor) -> torch.Tensor:
        return self._A @ x

    def At_columns(self, y: torch.Tensor) -> torch.Tensor:
        return self._At @ y

    def ray_lengths(self) -> torch.Tensor:
        """Row sums ``A 1`` as a ``(n_tilts * n_det, 1)`` column [voxels]."""
        ones = torch.ones(self.nz * self.nx, 1, dtype=self.dtype, device=self.device)
        return self.A_columns(ones)

    def voxel_weights(self) -> torch.Tensor:
        """Column sums ``A^T 1`` as a ``(nz * nx, 1)`` column (the number of tilts inside)."""
        ones = torch.ones(self.geometry.n_tilts * self.n_det, 1, dtype=self.dtype)
        return self.At_columns(ones.to(self.device))

    # --- aligned-frame operators (no autograd bookkeeping) -----------------------------
    def _project_aligned(self, volume: torch.Tensor) -> torch.Tensor:
        out = volume.new_empty((self.geometry.n_tilts, self.ny, self.n_det))
        for y0 in self._chunks("project"):
            y1 = min(y0 + self.chunk, self.ny)
            cols = self.A_columns(self.volume_columns(volume, y0, y1))
            out[:, y0:y1, :] = cols.reshape(-1, self.n_det, y1 - y0).permute(0, 2, 1)
        return out

    def _backproject_aligned(self, stack: torch.Tensor) -> torch.Tensor:
        out = stack.new_empty((self.nz, self.ny, self.nx))
        for y0 in self._chunks("back-project"):
            y1 = min(y0 + self.chunk, self.ny)
            cols = self.At_columns(self.stack_columns(stack, y0, y1))
            out[:, y0:y1, :] = cols.reshape(self.nz, self.nx, y1 - y0).permute(0, 2, 1)
        return out

    def _check(self, tensor: torch.Tensor, name: str) -> None:
        if tensor.dtype != self.dtype or tensor.device.type != self.device.type:
            raise ValueError(
                f"{name} must be {self.dtype} on {self.device} like the operator, got "
                f"{tensor.dtype} on {tensor.device}; build the operator with dtype=/device="
            )

    # --- in-plane alignment ------------------------------------------------------------
    def _rotate(self, stack: torch.Tensor, which: int) -> torch.Tensor:
        matrix = self._rotation[which]  # type: ignore[index]
        flat = stack.reshape(stack.shape[0], -1).T
        return (matrix @ flat).T.reshape(stack.shape)

    def to_aligned(self, stack: torch.Tensor) -> torch.Tensor:
        """Rotate detector-frame images so that the tilt axis runs along y."""
        if self._rotation is None:
            return torch.rot90(stack, -self._turns, dims=(-2, -1)) if self._turns else stack
        return self._rotate(stack, 0)

    def from_aligned(self, stack: torch.Tensor) -> torch.Tensor:
        """Rotate aligned images back into the detector frame (inverse of :meth:`to_aligned`)."""
        if self._rotation is None:
            return torch.rot90(stack, self._turns, dims=(-2, -1)) if self._turns else stack
        return self._rotate(stack, 2)

    # --- public, differentiable ----------------------------------------------------------
    def project_aligned(self, volume: torch.Tensor) -> torch.Tensor:
        """Projections ``(n_tilts, ny, n_det)`` in the aligned frame (differentiable)."""
        self.geometry.check_volume(volume)
        self._check(volume, "volume")
        return _Project.apply(volume, self)

    def backproject_aligned(self, stack: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`project_aligned` (differentiable)."""
        expected = (self.geometry.n_tilts, self.ny, self.n_det)
        if tuple(stack.shape) != expected:
            raise ValueError(f"stack must be aligned, shape {expected}, got {tuple(stack.shape)}")
        self._check(stack, "stack")
        return _Backproject.apply(stack, self)

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        """``A volume``: projections in the detector frame ``(n_tilts, ny, nx)``."""
        aligned = self.project_aligned(volume)
        if self._rotation is None:
            return self.from_aligned(aligned)
        return _Rotate.apply(aligned, self, 2, 3)  # R(-α), backward R(-α)^T

    def adjoint(self, stack: torch.Tensor) -> torch.Tensor:
        """``A^T stack``: back-projection of detector-frame images into the volume."""
        self.geometry.check_stack(stack)
        self._check(stack, "stack")
        if self._rotation is None:
            aligned = self.to_aligned(stack)
        else:
            aligned = _Rotate.apply(stack, self, 3, 2)  # R(-α)^T, backward R(-α)
        return self.backproject_aligned(aligned)

    @property
    def T(self) -> _Adjoint:  # noqa: N802 - the usual name of the adjoint
        return _Adjoint(self)


class _Adjoint:
    def __init__(self, op: TomographyOperator) -> None:
        self.op = op

    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(stack)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume, op):  # type: ignore[override]
        ctx.op = op
        return op._project_aligned(volume.detach())

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.op._backproject_aligned(grad.contiguous()), None


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, stack, op):  # type: ignore[override]
        ctx.op = op
        return op._backproject_aligned(stack.detach())

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.op._project_aligned(grad.contiguous()), None


class _Rotate(torch.autograd.Function):
    """One of the bilinear rotation matrices (``op._rotation[which]``); backward its transpose."""

    @staticmethod
    def forward(ctx, stack, op, which, transpose):  # type: ignore[override]
        ctx.op, ctx.transpose = op, transpose
        return op._rotate(stack.detach(), which)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.op._rotate(grad.contiguous(), ctx.transpose), None, None, None
