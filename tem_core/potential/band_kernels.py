"""CPU splat of pixel- and slice-integrated Gaussians by row bands, fused from positions.

Private helper of :mod:`tem_core.potential.kernels` (the CPU path of
:func:`~tem_core.potential.kernels.project_gaussians`; CUDA keeps the row/column-chunk gather
of :mod:`tem_core.potential.splat_kernels`). The image is cut into bands of ``H ≥ W`` rows
(``W`` the largest window); one thread owns a band and adds, in a fixed order, every atom
whose window reaches it, so no atomics are needed and the result is bitwise reproducible.
Everything per atom is done inside the kernels, from the positions: the slice fraction
``Z_k`` (erf in z), the window, and the separable erf profiles ``X_k[m]``, ``Y_k[d]`` (each
``W + 1`` erf evaluations per Gaussian; the ``W × W`` footprint is ``Σ_k c_k Y_k[d] X_k[m]``,
no erf in the inner loop). Nothing of size ``N × K × W`` is written to memory: the ``x``
profiles of an atom live in a per-band scratch row while its rows are added.

``band_keys`` computes each atom's first pixel on the canvas, its window and band;
``band_order`` is a serial, stable counting sort by band; ``band_splat`` the forward;
``band_backward`` the hand-written adjoint (one pass per atom over its window of the
incoming gradient, recomputing the profiles; per row only register sums of the gradient
against the x profiles and their derivatives, nothing accumulated in memory), giving the
gradients wrt positions (x, y and z through the slice fraction), and, only when asked for,
amplitudes and widths (``2π/√b``). Each window row is added with its own length ``w`` (a
fixed 16-pixel row measured 30% slower: the rows are not vectorised).

Python float constants inside a kernel become float32 literals (``default_fp``): only
constants exact in float32 appear in the kernels; ``1/√π`` and ``1/s²`` are kernel arguments.
"""

# (no ``from __future__ import annotations``: Taichi reads the kernels' annotations at runtime)

import math

import torch

from tem_core._taichi import get_taichi
from tem_core.potential.splat_kernels import erf_table, taylor_erf

_KERNELS: dict[torch.dtype, dict] = {}
#: Rows per band (at least the largest window): fixed, so results do not depend on threads.
BAND_ROWS = 16


def build_band_kernels(dtype: torch.dtype) -> dict:
    """Compile-once Taichi kernels of the band splat for one float dtype."""
    if dtype in _KERNELS:
        return _KERNELS[dtype]
    ti = get_taichi()
    fp = ti.f64 if dtype == torch.float64 else ti.f32
    arr1i = ti.types.ndarray(dtype=ti.i32, ndim=1)
    arr2i = ti.types.ndarray(dtype=ti.i32, ndim=2)
    arr4 = ti.types.ndarray(dtype=fp, ndim=4)
    arr1 = ti.types.ndarray(dtype=fp, ndim=1)
    arr2 = ti.types.ndarray(dtype=fp, ndim=2)
    erf_tab, erf_gauss = taylor_erf(ti, fp)

    @ti.func
    def splat_bucket(b, pos: ti.template(), amp: ti.template(), scale: ti.template(),
                     rel: ti.template(), idx: ti.template(), order: ti.template(),
                     start: ti.template(), z0, z1, sampling, inv_s2, tab: ti.template(),
                     scratch: ti.template(), out: ti.template(), wm, cx,
                     n_gauss: ti.template()):  # fmt: skip
        """Add the atoms whose first row lies in band ``b``, in the bucket's order."""
        for i in range(start[b], start[b + 1]):
            j = order[i]
            left = idx[j, 0]
            top = idx[j, 1]
            w = idx[j, 2]
            rx = rel[j, 0]
            ry = rel[j, 1]
            z = pos[j, 2]
            prev = ti.Vector([0.0] * n_gauss, dt=fp)
            for k in ti.static(range(n_gauss)):
                sc = scale[j, k]
                # ⅛ of the three ½ of the x, y and z fractions, 1/s² of the pixel average
                dz = erf_tab(sc * (z1 - z), tab) - erf_tab(sc * (z0 - z), tab)
                c = 0.125 * amp[j, k] * dz * inv_s2
                base = (b * n_gauss + k) * wm
                e0 = erf_tab(sc * rx, tab)
                for m in range(w):
                    e1 = erf_tab(sc * (rx + ti.cast(m + 1, fp) * sampling), tab)
                    scratch[base + m] = c * (e1 - e0)
                    e0 = e1
                prev[k] = erf_tab(sc * ry, tab)
            for d in range(w):
                dy = ti.Vector([0.0] * n_gauss, dt=fp)
                for k in ti.static(range(n_gauss)):
                    cur = erf_tab(scale[j, k] * (ry + ti.cast(d + 1, fp) * sampling), tab)
                    dy[k] = cur - prev[k]
                    prev[k] = cur
                o = (top + d) * cx + left
                for m in range(w):
                    a = out[o + m]
                    for k in ti.static(range(n_gauss)):
                        a += dy[k] * scratch[(b * n_gauss + k) * wm + m]
                    out[o + m] = a

    @ti.kernel
    def band_forward(
        pos: arr2,
        amp: arr2,
        scale: arr2,
        rad: arr1,
        rel: arr2,
        idx: arr2i,
        start: arr1i,
        order: arr1i,
        tab: arr2,
        scratch: arr1,
        out: arr1,
        z0: fp,
        z1: fp,
        sampling: fp,
        inv_s2: fp,
        geometry: ti.types.vector(8, ti.i32),
        n_gauss: ti.template(),
    ):
        win_max, ny, nx, pad, periodic, band_h, cx, stride = geometry
        n_bands = start.shape[0] // 2
        # 1. first window pixel ⌊(x − r)/s⌋ (as torch computes it), window ⌊2r/s⌋ + 2 ≤ win_max;
        # periodic: wrapped into [0, n); else shifted by pad, and atoms missing the field
        # get band −1. idx[j] = (column, row, window, band) on the canvas.
        for j in range(pos.shape[0]):
            r = rad[j]
            w = ti.min(ti.cast(ti.floor(2.0 * r / sampling), ti.i32) + 2, win_max)
            kx = ti.cast(ti.floor((pos[j, 0] - r) / sampling), ti.i32)
            ky = ti.cast(ti.floor((pos[j, 1] - r) / sampling), ti.i32)
            rel[j, 0] = ti.cast(kx, fp) * sampling - pos[j, 0]
            rel[j, 1] = ti.cast(ky, fp) * sampling - pos[j, 1]
            b = -1
            if periodic:
                kx = kx % nx
                ky = ky % ny
                b = ky // band_h
            elif kx > -w and kx < nx and ky > -w and ky < ny:
                kx += pad
                ky += pad
                b = ky // band_h
            idx[j, 0] = kx
            idx[j, 1] = ky
            idx[j, 2] = w
            idx[j, 3] = b
        # 2. stable counting sort by band, serial (reproducible order); start[n_bands + 1 + b]
        # is the fill pointer of band b
        ti.loop_config(serialize=True)
        for j in range(pos.shape[0]):
            if idx[j, 3] >= 0:
                start[idx[j, 3] + 1] += 1
        ti.loop_config(serialize=True)
        for b in range(n_bands):
            start[b + 1] += start[b]
            start[n_bands + 1 + b] = start[b]
        ti.loop_config(serialize=True)
        for j in range(pos.shape[0]):
            b = idx[j, 3]
            if b >= 0:
                order[start[n_bands + 1 + b]] = j
                start[n_bands + 1 + b] += 1
        # 3. out[row_j + d, col_j + m] += Σ_k c_k Δy_k[d] Δx_k[m]. An atom of band b (its
        # first row) writes into bands b and b + 1 only (H ≥ W): the even bands run in
        # parallel, then the odd ones, so every pixel is owned by one thread at a time, each
        # atom's profiles are computed once and the order of the additions is fixed.
        ti.loop_config(block_dim=1)
        for h in range((n_bands + 1) // 2):
            splat_bucket(2 * h, pos, amp, scale, rel, idx, order, start, z0, z1, sampling,
                         inv_s2, tab, scratch, out, stride, cx, n_gauss)  # fmt: skip
        ti.loop_config(block_dim=1)
        for h in range(n_bands // 2):
            splat_bucket(2 * h + 1, pos, amp, scale, rel, idx, order, start, z0, z1, sampling,
                         inv_s2, tab, scratch, out, stride, cx, n_gauss)  # fmt: skip

    @ti.kernel
    def band_backward(
        pos: arr2,
        amp: arr2,
        scale: arr2,
        rel: arr2,
        idx: arr2i,
        order: arr1i,
        start: arr1i,
        z0: fp,
        z1: fp,
        sampling: fp,
        inv_s2: fp,
        two_over_sqrt_pi: fp,
        tab: arr2,
        grad_out: arr2,
        scratch: arr4,
        grad_pos: arr2,
        grad_amp: arr2,
        grad_scale: arr2,
        n_gauss: ti.template(),
        shape_grads: ti.template(),
    ):
        # Adjoint of band_splat, atom by atom within a band (each atom once: its own bucket).
        # With G the incoming gradient on the atom's window, u = sc·rel, g(u) = e^{−u²}:
        # ∂Δx[m]/∂rx = (2/√π) sc (g_{m+1} − g_m) =: sc Γx[m],
        # ∂Δx[m]/∂sc = (2/√π)(rel_{m+1} g_{m+1} − rel_m g_m) =: Ρx[m] (same in y); per row d
        # U_k[d] = Σ_m G[d,m] Δx_k[m], V_k[d] = Σ_m G[d,m] Γx_k[m] (Q_k[d]: with Ρx_k), all
        # register sums along the row; then S_k = Σ_d U_k Δy_k (amplitude, z), Σ_d V_k Δy_k
        # (x), Σ_d U_k Γy_k (y), Σ_d (Q_k Δy_k + U_k Ρy_k) (width).
        ti.loop_config(block_dim=1)
        for b in range(start.shape[0] - 1):
            for i in range(start[b], start[b + 1]):
                j = order[i]
                left = idx[j, 0]
                top = idx[j, 1]
                w = idx[j, 2]
                rx = rel[j, 0]
                ry = rel[j, 1]
                z = pos[j, 2]
                for k in ti.static(range(n_gauss)):
                    sc = scale[j, k]
                    e0, t0 = erf_gauss(sc * rx, tab, two_over_sqrt_pi)
                    rel0 = rx
                    for m in range(w):
                        r1 = rx + ti.cast(m + 1, fp) * sampling
                        e1, t1 = erf_gauss(sc * r1, tab, two_over_sqrt_pi)
                        scratch[b, 0, k, m] = e1 - e0
                        scratch[b, 1, k, m] = t1 - t0
                        if ti.static(shape_grads):
                            scratch[b, 2, k, m] = r1 * t1 - rel0 * t0
                        e0 = e1
                        t0 = t1
                        rel0 = r1
                s_acc = ti.Vector([0.0] * n_gauss, dt=fp)
                x_acc = ti.Vector([0.0] * n_gauss, dt=fp)
                y_acc = ti.Vector([0.0] * n_gauss, dt=fp)
                s2_acc = ti.Vector([0.0] * n_gauss, dt=fp)
                prev = ti.Vector([0.0] * n_gauss, dt=fp)
                g_prev = ti.Vector([0.0] * n_gauss, dt=fp)
                for k in ti.static(range(n_gauss)):
                    u = scale[j, k] * ry
                    e, t = erf_gauss(u, tab, two_over_sqrt_pi)
                    prev[k] = e
                    g_prev[k] = t
                # two rows at a time: each Δx, Γx (Ρx) value loaded once for both (the row
                # past an odd window is inside the canvas; its Δy is 0 and its terms skipped)
                d = 0
                while d < w:
                    two = d + 1 < w
                    rel0 = ry + ti.cast(d, fp) * sampling
                    rel1 = rel0 + sampling
                    rel2 = rel1 + sampling
                    dy_a = ti.Vector([0.0] * n_gauss, dt=fp)
                    dy_b = ti.Vector([0.0] * n_gauss, dt=fp)
                    g_a = ti.Vector([0.0] * n_gauss, dt=fp)
                    g_b = ti.Vector([0.0] * n_gauss, dt=fp)
                    for k in ti.static(range(n_gauss)):
                        cur, t = erf_gauss(scale[j, k] * rel1, tab, two_over_sqrt_pi)
                        dy_a[k] = cur - prev[k]
                        prev[k] = cur
                        g_a[k] = t
                        if two:
                            cur, t = erf_gauss(scale[j, k] * rel2, tab, two_over_sqrt_pi)
                            dy_b[k] = cur - prev[k]
                            prev[k] = cur
                            g_b[k] = t
                    u_a = ti.Vector([0.0] * n_gauss, dt=fp)
                    u_b = ti.Vector([0.0] * n_gauss, dt=fp)
                    v_a = ti.Vector([0.0] * n_gauss, dt=fp)
                    v_b = ti.Vector([0.0] * n_gauss, dt=fp)
                    q_a = ti.Vector([0.0] * n_gauss, dt=fp)
                    q_b = ti.Vector([0.0] * n_gauss, dt=fp)
                    for m in range(w):
                        ga = grad_out[top + d, left + m]
                        gb = grad_out[top + d + 1, left + m]
                        for k in ti.static(range(n_gauss)):
                            x = scratch[b, 0, k, m]
                            gx = scratch[b, 1, k, m]
                            u_a[k] += ga * x
                            u_b[k] += gb * x
                            v_a[k] += ga * gx
                            v_b[k] += gb * gx
                            if ti.static(shape_grads):
                                q = scratch[b, 2, k, m]
                                q_a[k] += ga * q
                                q_b[k] += gb * q
                    for k in ti.static(range(n_gauss)):
                        s_acc[k] += u_a[k] * dy_a[k]
                        x_acc[k] += v_a[k] * dy_a[k]
                        y_acc[k] += u_a[k] * (g_a[k] - g_prev[k])
                        if ti.static(shape_grads):
                            s2_acc[k] += q_a[k] * dy_a[k] + u_a[k] * (
                                rel1 * g_a[k] - rel0 * g_prev[k]
                            )
                    g_prev = g_a
                    if two:
                        for k in ti.static(range(n_gauss)):
                            s_acc[k] += u_b[k] * dy_b[k]
                            x_acc[k] += v_b[k] * dy_b[k]
                            y_acc[k] += u_b[k] * (g_b[k] - g_prev[k])
                            if ti.static(shape_grads):
                                s2_acc[k] += q_b[k] * dy_b[k] + u_b[k] * (
                                    rel2 * g_b[k] - rel1 * g_prev[k]
                                )
                        g_prev = g_b
                    d += 2
                gx = ti.cast(0.0, fp)
                gy = ti.cast(0.0, fp)
                gz = ti.cast(0.0, fp)
                for k in ti.static(range(n_gauss)):
                    sc = scale[j, k]
                    a8 = 0.125 * amp[j, k] * inv_s2
                    uz1 = sc * (z1 - z)
                    uz0 = sc * (z0 - z)
                    ez1, gz1 = erf_gauss(uz1, tab, two_over_sqrt_pi)
                    ez0, gz0 = erf_gauss(uz0, tab, two_over_sqrt_pi)
                    dz = ez1 - ez0
                    c = a8 * dz
                    # d/dx = −d/drx; each Δ' carries 2/√π
                    gx -= c * sc * x_acc[k]
                    gy -= c * sc * y_acc[k]
                    gz += a8 * s_acc[k] * sc * (gz0 - gz1)
                    if ti.static(shape_grads):
                        grad_amp[j, k] = 0.125 * inv_s2 * dz * s_acc[k]
                        grad_scale[j, k] = c * s2_acc[k] + a8 * s_acc[k] * (
                            (z1 - z) * gz1 - (z0 - z) * gz0
                        )
                grad_pos[j, 0] = gx
                grad_pos[j, 1] = gy
                grad_pos[j, 2] = gz

    kernels = dict(band_forward=band_forward, band_backward=band_backward)
    _KERNELS[dtype] = kernels
    return kernels


def _canvas(ny: int, nx: int, pad: int, periodic: bool) -> tuple[int, int]:
    """Canvas shape: the field plus ``pad`` rows/columns after it (periodic) or around it."""
    extra = pad if periodic else 2 * pad
    return ny + extra, nx + extra


def _fold(canvas: torch.Tensor, ny: int, nx: int) -> torch.Tensor:
    """Periodic image from a canvas whose windows run past the field: tiles summed (exact)."""
    cy, cx = canvas.shape
    ty, tx = -(-cy // ny), -(-cx // nx)
    if ty == 1 and tx == 1:
        return canvas
    full = torch.nn.functional.pad(canvas, (0, tx * nx - cx, 0, ty * ny - cy))
    return full.reshape(ty, ny, tx, nx).sum(dim=(0, 2))


def band_height(win_max: int, band_rows: int = BAND_ROWS) -> int:
    """Rows per band: ``band_rows``, at least ``win_max`` (a window then reaches one further
    band at most). Independent of the number of threads, so that the order of the additions,
    hence the rounding, is the same on every machine and in every process."""
    return max(int(win_max), int(band_rows))


class BandSplatFunction(torch.autograd.Function):
    """Pixel- and slice-integrated Gaussians splatted by row bands (CPU Taichi kernels).

    ``out[iy, ix] = Σ_j Σ_k A_jk Z_jk Y_jk[iy] X_jk[ix] / s²`` with the erf fractions of
    :mod:`tem_core.potential.kernels` (``scale = 2π/√b``), windows ``⌊2 r_j/s⌋ + 2``
    (at most ``win_max``) from ``⌊(x_j − r_j)/s⌋``. Differentiable wrt ``positions``
    ``(N, 3)``, ``amplitudes`` and ``scale`` ``(N, K)`` (hand-written adjoint kernel).
    """

    @staticmethod
    def forward(ctx, positions, amplitudes, scale, radii, z0_a: float, z1_a: float,
                ny: int, nx: int, sampling_a: float, periodic: bool, win_max: int,
                band_rows: int = BAND_ROWS):  # fmt: skip  # noqa: D102
        kern = build_band_kernels(positions.dtype)
        dtype, device = positions.dtype, positions.device
        pos = positions.detach().contiguous()
        amp = amplitudes.detach().contiguous()
        sc = scale.detach().contiguous()
        rad = radii.detach().to(dtype).contiguous()
        n, n_gauss = amp.shape
        pad = int(win_max)
        cy, cx = _canvas(ny, nx, pad, periodic)
        band_h = band_height(pad, band_rows)
        n_bands = -(-cy // band_h)
        rel = torch.empty((n, 2), dtype=dtype, device=device)
        idx = torch.empty((n, 4), dtype=torch.int32, device=device)
        start = torch.zeros(2 * n_bands + 1, dtype=torch.int32, device=device)
        order = torch.empty(n, dtype=torch.int32, device=device)
        out = torch.zeros((cy, cx), dtype=dtype, device=device)
        stride = pad
        scratch = torch.empty(n_bands * n_gauss * stride, dtype=dtype, device=device)
        s = float(sampling_a)
        geometry = (pad, ny, nx, pad, int(periodic), band_h, cx, stride)
        if n > 0:
            tab = erf_table(device, dtype)
            kern["band_forward"](pos, amp, sc, rad, rel, idx, start, order, tab, scratch,
                                 out.view(-1), float(z0_a), float(z1_a), s, 1.0 / (s * s),
                                 geometry, n_gauss)  # fmt: skip
        ctx.save_for_backward(pos, amp, sc, rel, idx, start, order)
        ctx.static = (float(z0_a), float(z1_a), ny, nx, s, periodic, pad)
        if periodic:
            return _fold(out, ny, nx)
        return out[pad : pad + ny, pad : pad + nx]

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        pos, amp, sc, rel, idx, start, order = ctx.saved_tensors
        z0, z1, ny, nx, s, periodic, pad = ctx.static
        kern = build_band_kernels(pos.dtype)
        cy, cx = _canvas(ny, nx, pad, periodic)
        grad_out = grad_out.to(pos.dtype)
        if periodic:
            reps = (-(-cy // ny), -(-cx // nx))
            canvas = grad_out.repeat(*reps)[:cy, :cx].contiguous()
        else:
            canvas = torch.nn.functional.pad(grad_out, (pad, pad, pad, pad)).contiguous()
        n_bands, n_gauss = start.shape[0] // 2, amp.shape[1]
        # amplitudes and widths usually need no gradient (fixed atoms): skip their sums
        shape_grads = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        planes = 3 if shape_grads else 2  # Δx, Γx (, Ρx) of the band's current atom
        scratch = torch.empty((n_bands, planes, n_gauss, pad), dtype=pos.dtype, device=pos.device)
        grad_pos = torch.zeros_like(pos)
        size = amp.shape if shape_grads else (1, n_gauss)
        grad_amp = torch.zeros(size, dtype=amp.dtype, device=amp.device)
        grad_scale = torch.zeros(size, dtype=sc.dtype, device=sc.device)
        if pos.shape[0] > 0:
            kern["band_backward"](pos, amp, sc, rel, idx, order,
                                  start[: n_bands + 1], z0, z1, s, 1.0 / (s * s),
                                  2.0 / math.sqrt(math.pi),
                                  erf_table(pos.device, pos.dtype),
                                  canvas, scratch, grad_pos, grad_amp, grad_scale,
                                  n_gauss, shape_grads)  # fmt: skip
        if not shape_grads:
            grad_amp = grad_scale = None
        return (grad_pos, grad_amp, grad_scale) + (None,) * 9
