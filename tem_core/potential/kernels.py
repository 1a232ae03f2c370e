"""Separable Gaussian splatting: pixel- and slice-integrated 3-D Gaussians on a 2-D grid.

Private helper of :mod:`tem_core.potential` (solvent geometry in ``solvent.py``, input checks
in ``checks.py``). Each atom carries ``K`` isotropic,
normalised 3-D Gaussians ``g_b(r) = (4π/b)^{3/2} exp(-4π² r²/b)`` with amplitudes
``A_k`` [V·Å³] and widths ``b_k`` [Å²]. Integrated over the slice ``[z0, z1]`` and
averaged over pixel ``[ix, iy]`` this is, exactly,

``V[iy, ix] = Σ_atoms Σ_k A_k · Z_k · X_k[ix] · Y_k[iy] / s²``   [V·Å]

with ``X_k[ix] = ½ (erf(2π (x_{ix+1} − x)/√b_k) − erf(2π (x_ix − x)/√b_k))`` (the
fraction of the 1-D Gaussian inside the pixel's x range; same for ``Y`` and ``Z``).

On the CPU with Taichi, :func:`project_gaussians` runs one
:class:`~tem_core.potential.band_kernels.BandSplatFunction` call: everything from the
positions (slice fraction, windows, a stable counting sort by row band, the erf profiles and
the splat) happens in one kernel, threads own bands of rows (no atomics, deterministic), and
no ``N × K × W`` array is written. On CUDA one :class:`GaussianSplatFunction` call per slice
computes the erf
factors inside the kernel (from a float64-accurate table and a short Taylor series, see
:func:`erf_table`) and sums the ``W × W`` window of every atom (the "splat"); its backward
is a hand-written adjoint kernel (a gather; no atomics) giving the gradients wrt the
weights, the widths and the positions. The forward is a deterministic gather too: atoms are
bucketed by the first row and the column chunk of their window, and one thread owns one
image row on the CPU (a 32-column segment of it on CUDA) and adds the atoms of the buckets
that reach it in a fixed order, so the result is bitwise reproducible and no atom-column
pair is visited more than about ``1 + W/32`` times. :func:`splat_torch` with
:func:`_edge_fractions` is the pure-torch twin (``index_add_``), chunked over atoms and
bucketed by window size; :class:`SplatFunction` splats given edge fractions (tests).
"""

# (no ``from __future__ import annotations``: Taichi reads the kernels' annotations at runtime)

import contextlib
import math
import os

import torch

from tem_core.potential.band_kernels import BandSplatFunction
from tem_core.potential.splat_kernels import build_kernels, erf_table

#: Largest atomic number with Peng 1996 coefficients in gemmi.
MAX_ATOMIC_NUMBER = 98
#: Atoms per chunk in the torch twin and the erf preparation (bounds memory).
CHUNK_ATOMS = 32768

#: Column chunk of the CUDA splat (a thread owns ``chunk`` columns of one row).
CUDA_COLUMN_CHUNK = 32


def _column_chunk(device: torch.device, nx: int) -> int:
    """Columns per thread: the whole row on the CPU, ``CUDA_COLUMN_CHUNK`` on a GPU."""
    return nx if device.type == "cpu" else min(nx, CUDA_COLUMN_CHUNK)


def _cell_buckets(kx0: torch.Tensor, ky0: torch.Tensor, ny: int, nx: int, chunk: int):
    """Sort atoms by (first row, column chunk of the first column).

    Returns the sorting order, the ``ny · n_chunks + 1`` bucket starts (int32) and
    ``n_chunks``.
    """
    n_chunks = (nx + chunk - 1) // chunk
    cell = ky0.to(torch.int64) * n_chunks + torch.div(
        kx0.to(torch.int64), chunk, rounding_mode="floor"
    )
    order = torch.argsort(cell, stable=True)
    bounds = torch.arange(ny * n_chunks + 1, device=cell.device, dtype=torch.int64)
    cell_start = torch.searchsorted(cell[order], bounds).to(torch.int32).contiguous()
    return order, cell_start, n_chunks


def _splat_launch(kernels, w, dx, dy, kx0, wins, cell_start, ny, nx, chunk, win_max):
    out = torch.zeros((ny, nx), dtype=w.dtype, device=w.device)
    kernels["splat_forward"](w, dx, dy, kx0, wins, cell_start, out, chunk, win_max,
                             int(dx.shape[1]))  # fmt: skip
    return out


class SplatFunction(torch.autograd.Function):
    """``out[iy, ix] = Σ_j Σ_k w[j,k] dy[j,k,(iy−ky0_j) mod ny] dx[j,k,(ix−kx0_j) mod nx]``.

    Atom ``j`` covers a ``wins[j] × wins[j]`` window (entries of ``dx``/``dy`` beyond it are
    ignored). Inputs must be sorted by :func:`_cell_buckets` (``cell_start`` its bucket
    starts) with ``kx0`` in ``[0, nx)`` and ``ky0`` in ``[0, ny)``; the image is periodic.
    Differentiable wrt ``w``, ``dx`` and ``dy``.
    """

    @staticmethod
    def forward(
        ctx, w, dx, dy, kx0, ky0, wins, ny: int, nx: int, cell_start=None, chunk: int | None = None
    ):  # noqa: D102
        kernels = build_kernels(w.dtype)
        w, dx, dy = w.detach().contiguous(), dx.detach().contiguous(), dy.detach().contiguous()
        kx0, ky0, wins = (t.to(torch.int32).contiguous() for t in (kx0, ky0, wins))
        chunk = _column_chunk(w.device, nx) if chunk is None else int(chunk)
        if cell_start is None:  # sorted by row only: valid when there is one chunk per row
            chunk = nx
            cell_start = _cell_buckets(kx0, ky0, ny, nx, chunk)[1]
        if w.shape[0] > 0:
            out = _splat_launch(kernels, w, dx, dy, kx0, wins, cell_start, ny, nx, chunk,
                                int(dx.shape[2]))  # fmt: skip
        else:
            out = torch.zeros((ny, nx), dtype=w.dtype, device=w.device)
        ctx.save_for_backward(w, dx, dy, kx0, ky0, wins)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        w, dx, dy, kx0, ky0, wins = ctx.saved_tensors
        kernels = build_kernels(w.dtype)
        grad_w = torch.zeros_like(w)
        grad_dx = torch.zeros_like(dx)
        grad_dy = torch.zeros_like(dy)
        if w.shape[0] > 0:
            kernels["splat_backward"](
                w, dx, dy, kx0, ky0, wins, grad_out.contiguous(), grad_w, grad_dx, grad_dy
            )
        return grad_w, grad_dx, grad_dy, None, None, None, None, None, None, None


def splat_taichi(w, dx, dy, kx0, ky0, wins, ny: int, nx: int, *, chunk: int | None = None):
    """Taichi splat (buckets atoms by row and column chunk first); periodic ``(ny, nx)`` image.

    ``chunk``: columns per thread (default: the whole row on the CPU, 32 on CUDA); any value
    gives the same image up to the order of additions.
    """
    chunk = _column_chunk(w.device, nx) if chunk is None else int(chunk)
    order, cell_start, _ = _cell_buckets(kx0, ky0, ny, nx, chunk)
    return SplatFunction.apply(
        w[order], dx[order], dy[order], kx0[order], ky0[order], wins[order], ny, nx,
        cell_start, chunk,
    )  # fmt: skip


class SplatScratch:
    """Edge-fraction buffers reused by the splat calls of one stream of slices.

    :class:`GaussianSplatFunction` writes each call's ``(N, K, W)`` edge fractions into
    these buffers instead of fresh arrays when no input needs a gradient (nothing is kept
    for ``backward``). Reusing them avoids allocating (and page-faulting) two arrays of up
    to tens of MB per slice, whose varying sizes also fragment the C heap. A buffer grows
    by 25 % over the largest request and lives as long as the stream holding this object.
    """

    def __init__(self) -> None:
        self._flat: dict[tuple, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
        """A contiguous ``shape`` view of buffer ``name`` (contents undefined)."""
        numel = math.prod(shape)
        key = (name, dtype, torch.device(device))
        buf = self._flat.get(key)
        if buf is None or buf.numel() < numel:
            self._flat.pop(key, None)
            buf = torch.empty(numel + numel // 4, dtype=dtype, device=device)
            self._flat[key] = buf
        return buf[:numel].view(shape)

    @property
    def nbytes(self) -> int:
        """Bytes held [bytes]."""
        return sum(b.numel() * b.element_size() for b in self._flat.values())


class GaussianSplatFunction(torch.autograd.Function):
    """Edge fractions (erf, computed in the kernel) and splat in one Taichi call.

    ``out = Σ_j Σ_k w[j,k] · Y_k[iy] · X_k[ix]`` with ``X_k[kx0_j + m] = ½(erf(sc (rx_j +
    (m+1)s)) − erf(sc (rx_j + m s)))``, ``rx_j = kx0_j s − x_j`` (same for ``Y``), periodic.
    The atoms must be sorted by :func:`_cell_buckets`; ``kx0``/``ky0`` are the first window
    pixel wrapped into the image. Differentiable wrt ``w``, ``scale``, ``rx`` and ``ry``
    (hand-written adjoint kernel); the torch twin is :func:`_edge_fractions` +
    :func:`splat_torch`.
    """

    @staticmethod
    def forward(
        ctx,
        w,
        scale,
        rx,
        ry,
        kx0,
        ky0,
        wins,
        cell_start,
        ny: int,
        nx: int,
        sampling_a: float,
        win_max: int,
        chunk: int,
        scratch: SplatScratch | None = None,
    ):  # noqa: D102
        kernels = build_kernels(w.dtype)
        w, scale = w.detach().contiguous(), scale.detach().contiguous()
        rx, ry = rx.detach().contiguous(), ry.detach().contiguous()
        n, k = w.shape
        if scratch is not None and not any(ctx.needs_input_grad[:4]):  # no backward: reuse
            dx = scratch.take("dx", (n, k, win_max), w.dtype, w.device)
            dy = scratch.take("dy", (n, k, win_max), w.dtype, w.device)
        else:
            dx = torch.empty((n, k, win_max), dtype=w.dtype, device=w.device)
            dy = torch.empty_like(dx)
        tab = erf_table(w.device, w.dtype)
        kernels["edge_fractions"](scale, rx, ry, wins, float(sampling_a), tab, dx, dy)
        out = _splat_launch(kernels, w, dx, dy, kx0, wins, cell_start, ny, nx, chunk, win_max)
        ctx.save_for_backward(w, scale, rx, ry, dx, dy, kx0, ky0, wins)
        ctx.sampling_a = float(sampling_a)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        w, scale, rx, ry, dx, dy, kx0, ky0, wins = ctx.saved_tensors
        kernels = build_kernels(w.dtype)
        grads = [torch.zeros_like(w) for _ in range(4)]  # w, scale, rx (N, K), ry (N, K)
        scratch = torch.empty_like(dx)
        kernels["gaussian_backward"](
            w, scale, rx, ry, dx, dy, kx0, ky0, wins, grad_out.contiguous(), ctx.sampling_a,
            scratch, *grads,
        )  # fmt: skip
        grad_w, grad_scale, grad_rx, grad_ry = grads
        c = 1.0 / math.sqrt(math.pi)
        return (grad_w, c * grad_scale, c * grad_rx.sum(1), c * grad_ry.sum(1)) + (None,) * 10


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
    win_max: int | None = None,
    scratch: SplatScratch | None = None,
) -> torch.Tensor:
    """Slice-integrated, pixel-averaged sum of 3-D Gaussians [amplitude unit / Å²].

    Parameters are validated by the caller. ``amplitudes`` and ``widths_b_a2`` are
    ``(N, K)``; ``radii_a`` (N,) the window half-widths (from :func:`gaussian_radius_a`).
    ``win_max``: an upper bound of the window sizes ``⌊2 r / s⌋ + 2`` [px] (from
    :func:`window_size_px` of the largest radius; computed from ``radii_a`` when ``None``,
    which costs a device synchronisation on a GPU). ``scratch``: a :class:`SplatScratch`
    whose buffers the splat reuses when nothing needs a gradient (a stream of slices).
    """
    ny, nx = shape
    s = float(sampling_a)
    if positions_a.shape[0] == 0:
        return torch.zeros((ny, nx), dtype=positions_a.dtype, device=positions_a.device)
    small_cpu = (os.cpu_count() or 1) <= 4
    with _single_torch_thread(use_taichi and small_cpu and positions_a.device.type == "cpu"):
        if use_taichi:
            return _project_gaussians_taichi(
                positions_a, amplitudes, widths_b_a2, radii_a, z0_a, z1_a, (ny, nx), s,
                periodic, win_max, scratch,
            )  # fmt: skip
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


def window_size_px(radius_a, sampling_a: float):
    """Pixels per side of an atom's window: ``⌊2 r / s⌋ + 2`` (float or tensor ``radius_a``)."""
    if isinstance(radius_a, torch.Tensor):
        return (torch.floor(2.0 * radius_a.detach() / sampling_a) + 2).to(torch.int64)
    return int(math.floor(2.0 * float(radius_a) / sampling_a)) + 2


def _weights_and_scale(positions_a, amplitudes, widths_b_a2, z0_a, z1_a, s):
    """Per-Gaussian weights ``A_k Z_k / s²`` (slice fraction ``Z_k``) and ``2π/√b_k``."""
    scale = (2.0 * math.pi) * torch.rsqrt(widths_b_a2)
    z = positions_a[:, 2]
    frac_z = 0.5 * (
        torch.special.erf(scale * (z1_a - z)[:, None])
        - torch.special.erf(scale * (z0_a - z)[:, None])
    )
    return amplitudes * frac_z / (s * s), scale


#: The CPU band kernel is used when a call has at least this many atoms per pixel: its
#: fixed cost per call grows with the canvas (counting sort by row, tiles, fold), which a
#: projection of all atoms amortises (one apoferritin 256²: 0.5 atoms/px; the field 1024²:
#: 0.6) but a multislice slice does not (the field's 20 Å slices: ~0.03 atoms/px; exit wave
#: 2.37 s with the band kernel against 1.79 s with the bucketed kernel, idle, 2026-12-01).
BAND_MIN_ATOMS_PER_PIXEL = 0.1


def _project_gaussians_taichi(
    positions_a, amplitudes, widths_b_a2, radii_a, z0_a, z1_a, shape, s, periodic, win_max,
    scratch=None,
):
    """One :class:`GaussianSplatFunction` call for all atoms (no window-size buckets).

    On the CPU: one :class:`~tem_core.potential.band_kernels.BandSplatFunction` call, fused
    from the positions (slice fractions, windows, sorting and erf profiles in the kernels).
    """
    ny, nx = shape
    if (
        positions_a.device.type == "cpu"
        and positions_a.shape[0] >= BAND_MIN_ATOMS_PER_PIXEL * ny * nx
    ):
        scale = (2.0 * math.pi) * torch.rsqrt(widths_b_a2)
        if win_max is None:
            win_max = int(window_size_px(radii_a.detach().max(), s))
        return BandSplatFunction.apply(
            positions_a, amplitudes, scale, radii_a.detach(), float(z0_a), float(z1_a), ny, nx,
            s, bool(periodic), int(win_max),
        )  # fmt: skip
    weights, scale = _weights_and_scale(positions_a, amplitudes, widths_b_a2, z0_a, z1_a, s)
    rad = radii_a.detach()
    wins = window_size_px(rad, s)
    if win_max is None:
        win_max = int(wins.max())
    else:  # the kernels' buffers hold win_max pixels (a bound from the caller)
        wins = wins.clamp_max(int(win_max))
    x, y = positions_a[:, 0], positions_a[:, 1]
    kx0 = torch.floor((x.detach() - rad) / s).to(torch.int64)
    ky0 = torch.floor((y.detach() - rad) / s).to(torch.int64)
    if periodic:
        kx0w, ky0w, cy, cx = kx0 % nx, ky0 % ny, ny, nx
    else:  # drop atoms whose window misses the field; pad the canvas
        keep = (kx0 > -wins) & (kx0 < nx) & (ky0 > -wins) & (ky0 < ny)
        if not bool(keep.all()):
            x, y, weights, scale = x[keep], y[keep], weights[keep], scale[keep]
            kx0, ky0, wins = kx0[keep], ky0[keep], wins[keep]
        pad = win_max
        kx0w, ky0w, cy, cx = kx0 + pad, ky0 + pad, ny + 2 * pad, nx + 2 * pad
    rx = kx0.to(x.dtype) * s - x
    ry = ky0.to(y.dtype) * s - y
    chunk = _column_chunk(positions_a.device, cx)
    order, cell_start, _ = _cell_buckets(kx0w, ky0w, cy, cx, chunk)
    ints = [t[order].to(torch.int32).contiguous() for t in (kx0w, ky0w, wins)]
    out = GaussianSplatFunction.apply(
        weights[order], scale[order], rx[order], ry[order], *ints, cell_start, cy, cx, s,
        int(win_max), chunk, scratch,
    )  # fmt: skip
    if not periodic:
        out = out[pad : pad + ny, pad : pad + nx]
    return out


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
