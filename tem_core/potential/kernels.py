"""Separable Gaussian splatting: pixel- and slice-integrated 3-D Gaussians on a 2-D grid.

Private helper of :mod:`tem_core.potential` (solvent geometry in ``solvent.py``, input checks
in ``checks.py``). Each atom carries ``K`` isotropic,
normalised 3-D Gaussians ``g_b(r) = (4π/b)^{3/2} exp(-4π² r²/b)`` with amplitudes
``A_k`` [V·Å³] and widths ``b_k`` [Å²]. Integrated over the slice ``[z0, z1]`` and
averaged over pixel ``[ix, iy]`` this is, exactly,

``V[iy, ix] = Σ_atoms Σ_k A_k · Z_k · X_k[ix] · Y_k[iy] / s²``   [V·Å]

with ``X_k[ix] = ½ (erf(2π (x_{ix+1} − x)/√b_k) − erf(2π (x_ix − x)/√b_k))`` (the
fraction of the 1-D Gaussian inside the pixel's x range; same for ``Y`` and ``Z``).

The erf factors are computed in torch (differentiable by autograd); only the sum
over the ``W × W`` pixel window of every atom (the "splat") is a Taichi kernel,
wrapped in :class:`SplatFunction` whose backward is the hand-written adjoint
(a gather; no atomics). The forward is a deterministic gather too: atoms are
sorted by the first row of their window, and one thread owns one image row (or a
row segment on CUDA) and adds the atoms that cover it in a fixed order, so the
result is bitwise reproducible. :func:`splat_torch` is the pure-torch twin
(``index_add_``), chunked over atoms.
"""

# (no ``from __future__ import annotations``: Taichi reads the kernels' annotations at runtime)

import contextlib
import math
import os

import torch

from tem_core._taichi import get_taichi

#: Largest atomic number with Peng 1996 coefficients in gemmi.
MAX_ATOMIC_NUMBER = 98
#: Atoms per chunk in the torch twin and the erf preparation (bounds memory).
CHUNK_ATOMS = 32768

_KERNELS: dict[torch.dtype, tuple] = {}


def _build_kernels(dtype: torch.dtype):
    """Compile-once Taichi kernels for one float dtype (float32 or float64)."""
    if dtype in _KERNELS:
        return _KERNELS[dtype]
    ti = get_taichi()
    fp = ti.f64 if dtype == torch.float64 else ti.f32
    arr1i = ti.types.ndarray(dtype=ti.i32, ndim=1)
    arr2 = ti.types.ndarray(dtype=fp, ndim=2)
    arr3 = ti.types.ndarray(dtype=fp, ndim=3)

    @ti.kernel
    def splat_forward(
        w: arr2,
        dx: arr3,
        dy: arr3,
        kx0: arr1i,
        wins: arr1i,
        row_start: arr1i,
        out: arr2,
        col_chunk: ti.i32,
        n_gauss: ti.template(),
    ):
        ny = out.shape[0]
        nx = out.shape[1]
        win_max = dx.shape[2]
        n_chunks = (nx + col_chunk - 1) // col_chunk
        for iy, c in ti.ndrange(ny, n_chunks):
            c0 = c * col_chunk
            c1 = ti.min(c0 + col_chunk, nx)
            for d in range(win_max):
                r = iy - d
                while r < 0:
                    r += ny
                for j in range(row_start[r], row_start[r + 1]):
                    wj = wins[j]
                    if d < wj:
                        wdy = ti.Vector([w[j, k] * dy[j, k, d] for k in ti.static(range(n_gauss))])
                        for m in range(wj):
                            ix = kx0[j] + m
                            while ix >= nx:
                                ix -= nx
                            if ix >= c0 and ix < c1:
                                acc = ti.cast(0.0, fp)
                                for k in ti.static(range(n_gauss)):
                                    acc += wdy[k] * dx[j, k, m]
                                out[iy, ix] = out[iy, ix] + acc

    @ti.kernel
    def splat_backward(
        w: arr2,
        dx: arr3,
        dy: arr3,
        kx0: arr1i,
        ky0: arr1i,
        wins: arr1i,
        grad_out: arr2,
        grad_w: arr2,
        grad_dx: arr3,
        grad_dy: arr3,
    ):
        ny = grad_out.shape[0]
        nx = grad_out.shape[1]
        for j, k in ti.ndrange(dx.shape[0], dx.shape[1]):
            acc_w = ti.cast(0.0, fp)
            wk = w[j, k]
            for d in range(wins[j]):
                iy = (ky0[j] + d) % ny
                dyv = dy[j, k, d]
                acc_dy = ti.cast(0.0, fp)
                for m in range(wins[j]):
                    ix = (kx0[j] + m) % nx
                    g = grad_out[iy, ix]
                    dxv = dx[j, k, m]
                    acc_w += g * dyv * dxv
                    acc_dy += g * dxv
                    grad_dx[j, k, m] = grad_dx[j, k, m] + g * wk * dyv
                grad_dy[j, k, d] = wk * acc_dy
            grad_w[j, k] = acc_w

    _KERNELS[dtype] = (splat_forward, splat_backward)
    return _KERNELS[dtype]


def _row_starts(ky0_sorted: torch.Tensor, ny: int) -> torch.Tensor:
    rows = torch.arange(ny + 1, device=ky0_sorted.device, dtype=ky0_sorted.dtype)
    return torch.searchsorted(ky0_sorted, rows).to(torch.int32).contiguous()


class SplatFunction(torch.autograd.Function):
    """``out[iy, ix] = Σ_j Σ_k w[j,k] dy[j,k,(iy−ky0_j) mod ny] dx[j,k,(ix−kx0_j) mod nx]``.

    Atom ``j`` covers a ``wins[j] × wins[j]`` window (entries of ``dx``/``dy`` beyond it are
    ignored). Inputs must be sorted by ``ky0`` (in ``[0, ny)``) with ``kx0`` in ``[0, nx)``;
    the image is periodic. Differentiable wrt ``w``, ``dx`` and ``dy``.
    """

    @staticmethod
    def forward(ctx, w, dx, dy, kx0, ky0, wins, ny: int, nx: int):  # noqa: D102
        forward_kernel, _ = _build_kernels(w.dtype)
        w, dx, dy = w.detach().contiguous(), dx.detach().contiguous(), dy.detach().contiguous()
        kx0, ky0, wins = (t.to(torch.int32).contiguous() for t in (kx0, ky0, wins))
        out = torch.zeros((ny, nx), dtype=w.dtype, device=w.device)
        if w.shape[0] > 0:
            row_start = _row_starts(ky0, ny)
            col_chunk = nx if w.device.type == "cpu" else 32
            forward_kernel(w, dx, dy, kx0, wins, row_start, out, col_chunk, int(dx.shape[1]))
        ctx.save_for_backward(w, dx, dy, kx0, ky0, wins)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        w, dx, dy, kx0, ky0, wins = ctx.saved_tensors
        _, backward_kernel = _build_kernels(w.dtype)
        grad_w = torch.zeros_like(w)
        grad_dx = torch.zeros_like(dx)
        grad_dy = torch.zeros_like(dy)
        if w.shape[0] > 0:
            backward_kernel(
                w, dx, dy, kx0, ky0, wins, grad_out.contiguous(), grad_w, grad_dx, grad_dy
            )
        return grad_w, grad_dx, grad_dy, None, None, None, None, None


def splat_taichi(w, dx, dy, kx0, ky0, wins, ny: int, nx: int) -> torch.Tensor:
    """Taichi splat (sorts atoms by window row first); periodic ``(ny, nx)`` image."""
    order = torch.argsort(ky0, stable=True)
    return SplatFunction.apply(
        w[order], dx[order], dy[order], kx0[order], ky0[order], wins[order], ny, nx
    )


def splat_torch(w, dx, dy, kx0, ky0, wins, ny: int, nx: int) -> torch.Tensor:
    """Pure-torch twin of :func:`splat_taichi` (``index_add``), chunked over atoms.

    ``dx``/``dy`` must be zero beyond each atom's window (``wins``), as prepared by
    :func:`project_gaussians`.
    """
    out = torch.zeros(ny * nx, dtype=w.dtype, device=w.device)
    win = dx.shape[2]
    offsets = torch.arange(win, device=w.device)
    step = max(1, CHUNK_ATOMS // 4)
    for start in range(0, w.shape[0], step):
        sl = slice(start, start + step)
        values = torch.einsum("nk,nkl,nkm->nlm", w[sl], dy[sl], dx[sl])
        iy = (ky0[sl, None] + offsets) % ny
        ix = (kx0[sl, None] + offsets) % nx
        flat = iy[:, :, None] * nx + ix[:, None, :]
        out = out.index_add(0, flat.reshape(-1), values.reshape(-1))
    return out.reshape(ny, nx)


def _edge_fractions(centre, start_px, win: int, sampling_a: float, scale):
    """``(N, K, W)`` fractions of each 1-D Gaussian inside the ``W`` pixels from ``start_px``.

    ``scale = 2π/√b`` with shape ``(N, K)``; ``centre`` (N,) [Å]; ``start_px`` (N,) int.
    """
    edges = torch.arange(win + 1, device=centre.device, dtype=centre.dtype) * sampling_a
    rel = (start_px.to(centre.dtype) * sampling_a - centre)[:, None] + edges  # (N, W+1)
    cdf = torch.special.erf(scale[:, :, None] * rel[:, None, :])
    return 0.5 * (cdf[:, :, 1:] - cdf[:, :, :-1])


def _window_buckets(windows: torch.Tensor, spread: int = 2) -> list[torch.Tensor]:
    """Atom indices grouped by window size (sizes within ``spread`` pixels), in chunks.

    Each group is padded to its largest window, so grouping bounds the wasted erf work.
    """
    order = torch.argsort(windows, stable=True)
    ws = windows[order].contiguous()
    unique = torch.unique(ws).tolist()
    out, i = [], 0
    while i < len(unique):
        j = i
        while j + 1 < len(unique) and unique[j + 1] <= unique[i] + spread:
            j += 1
        a = int(torch.searchsorted(ws, torch.tensor(unique[i], device=ws.device)))
        b = int(torch.searchsorted(ws, torch.tensor(unique[j], device=ws.device), right=True))
        out.extend(order[k : min(k + CHUNK_ATOMS, b)] for k in range(a, b, CHUNK_ATOMS))
        i = j + 1
    return out


def gaussian_radius_a(widths_b_a2: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Window half-width [Å] so that every Gaussian loses at most ``tolerance`` of its integral.

    For a square window of half-width ``R`` the lost fraction of a Gaussian of width
    ``b`` is ``1 − erf(u)² ≤ 2 erfc(u)`` with ``u = 2πR/√b``; ``erfc(u) = tolerance/2``
    for the widest Gaussian (largest ``b``) bounds every narrower one too:
    ``R = √b_max / (2π) · erfcinv(tolerance / 2)``. The same ``R`` bounds the z tails
    cut off by the streaming slicer (each side loses ≤ tolerance/4).
    """
    u = torch.special.erfinv(torch.tensor(1.0 - tolerance / 2.0, dtype=torch.float64)).item()
    b_max = widths_b_a2.detach().amax(dim=-1)
    return torch.sqrt(b_max) * (u / (2.0 * math.pi))


@contextlib.contextmanager
def _single_torch_thread(active: bool):
    """Run torch single-threaded while Taichi's CPU kernels are interleaved with torch ops.

    Used on machines with at most 4 cores: there torch's OpenMP workers spin-wait between
    operations and compete with Taichi's thread pool for the same cores (measured on 2 busy
    cores: up to 20x slower). Taichi still uses every core for the splat; the torch work in
    between is light. ``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported also helps.
    """
    if not active:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def project_gaussians(
    positions_a: torch.Tensor,
    amplitudes: torch.Tensor,
    widths_b_a2: torch.Tensor,
    radii_a: torch.Tensor,
    *,
    z0_a: float,
    z1_a: float,
    shape: tuple[int, int],
    sampling_a: float,
    periodic: bool,
    use_taichi: bool,
) -> torch.Tensor:
    """Slice-integrated, pixel-averaged sum of 3-D Gaussians [amplitude unit / Å²].

    Parameters are validated by the caller. ``amplitudes`` and ``widths_b_a2`` are
    ``(N, K)``; ``radii_a`` (N,) the window half-widths (from :func:`gaussian_radius_a`).
    """
    ny, nx = shape
    s = float(sampling_a)
    out = torch.zeros((ny, nx), dtype=positions_a.dtype, device=positions_a.device)
    if positions_a.shape[0] == 0:
        return out
    small_cpu = (os.cpu_count() or 1) <= 4
    with _single_torch_thread(use_taichi and small_cpu and positions_a.device.type == "cpu"):
        return _project_gaussians(
            positions_a,
            amplitudes,
            widths_b_a2,
            radii_a,
            z0_a,
            z1_a,
            (ny, nx),
            s,
            periodic,
            use_taichi,
        )


def _project_gaussians(
    positions_a, amplitudes, widths_b_a2, radii_a, z0_a, z1_a, shape, s, periodic, use_taichi
):
    ny, nx = shape
    out = torch.zeros((ny, nx), dtype=positions_a.dtype, device=positions_a.device)
    splat = splat_taichi if use_taichi else splat_torch
    scale = (2.0 * math.pi) * torch.rsqrt(widths_b_a2)
    x, y, z = positions_a[:, 0], positions_a[:, 1], positions_a[:, 2]
    frac_z = 0.5 * (
        torch.special.erf(scale * (z1_a - z)[:, None])
        - torch.special.erf(scale * (z0_a - z)[:, None])
    )
    weights = amplitudes * frac_z / (s * s)
    windows = (torch.floor(2.0 * radii_a.detach() / s) + 2).to(torch.int64)
    for idx in _window_buckets(windows):
        wins = windows[idx]
        rad = radii_a.detach()[idx]
        kx0 = torch.floor((x.detach()[idx] - rad) / s).to(torch.int64)
        ky0 = torch.floor((y.detach()[idx] - rad) / s).to(torch.int64)
        if not periodic:  # drop atoms whose window misses the field; pad the canvas
            keep = (kx0 > -wins) & (kx0 < nx) & (ky0 > -wins) & (ky0 < ny)
            idx, kx0, ky0, wins = idx[keep], kx0[keep], ky0[keep], wins[keep]
            if idx.numel() == 0:
                continue
        win = int(wins.max())
        inside = (torch.arange(win, device=wins.device) < wins[:, None])[:, None, :]
        dx = _edge_fractions(x[idx], kx0, win, s, scale[idx]) * inside
        dy = _edge_fractions(y[idx], ky0, win, s, scale[idx]) * inside
        if periodic:
            out = out + splat(weights[idx], dx, dy, kx0 % nx, ky0 % ny, wins, ny, nx)
        else:
            pad = win
            canvas = splat(
                weights[idx], dx, dy, kx0 + pad, ky0 + pad, wins, ny + 2 * pad, nx + 2 * pad
            )
            out = out + canvas[pad : pad + ny, pad : pad + nx]
    return out
