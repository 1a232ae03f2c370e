"""Taichi kernels of the Gaussian splat (private helper of :mod:`tem_core.potential.kernels`).

* ``edge_fractions``: the erf pixel fractions ``X_k[m]``, ``Y_k[d]`` of every atom and
  Gaussian, by the tabulated Taylor series of :func:`erf_table` (:func:`taylor_erf`, the
  one erf of these kernels and of :mod:`tem_core.potential.band_kernels`);
* ``splat_forward``: the deterministic row (and column-chunk) gather of the windows;
* ``splat_backward``: adjoint of the splat of given fractions (:class:`SplatFunction`);
* ``gaussian_backward``: adjoint of fractions + splat wrt weights, widths and positions
  (:class:`GaussianSplatFunction`).

Python float constants inside a kernel become float32 literals (``default_fp``): every
constant that is not exact in float32 is applied outside the kernels, in torch.
"""

# (no ``from __future__ import annotations``: Taichi reads the kernels' annotations at runtime)

import math

import torch

from tem_core._taichi import get_taichi

_KERNELS: dict[tuple[torch.dtype, str], object] = {}

#: Spacing of the erf table used inside the Taichi kernels (Taylor expansion about the
#: nearest node, |h| ≤ 1/128: truncation error below 1e-16 with 6 terms, see :func:`erf_table`).
ERF_TABLE_STEP = 1.0 / 64.0
#: Beyond this argument erf(x) = ±1 to float64 rounding (erfc(6) = 2e-17).
ERF_TABLE_MAX = 6.0
_ERF_TABLES: dict[tuple[str, torch.dtype], torch.Tensor] = {}


def erf_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(n, 8)``: at each node ``x_i = i · ERF_TABLE_STEP ≤ 6`` the Taylor coefficients of erf.

    The kernels evaluate ``erf(x_i + h)``, ``|h| ≤ 1/128``, by its Taylor series about the
    nearest node, ``erf(x_i) + Σ_{n=1..N} c_n hⁿ`` with ``c_n = (2/√π) e^{−x_i²} (−1)^{n−1}
    H_{n−1}(x_i)/n!`` (``H`` the physicists' Hermite polynomials, ``dⁿ erf/dxⁿ =
    (2/√π)(−1)^{n−1} H_{n−1} e^{−x²}``). The first omitted term is below ``max|H_N e^{−x²}|
    (1/128)^{N+1}/(N+1)! · 2/√π``: 5e-17 with N = 6 terms (float64), 1e-9 with N = 3
    (float32). Columns: ``erf(x_i)``, ``c_1 … c_6`` (float64); ``erf(x_i)``, ``c_1 … c_3``
    and ``2 c_2, 3 c_3, 4 c_4`` for the derivative ``Σ_n n c_n hⁿ⁻¹`` (float32), then 0.
    Computed once in float64 (``torch.special.erf``) and rounded to ``dtype``.
    """
    key = (str(device), dtype)
    if key not in _ERF_TABLES:
        n = int(round(ERF_TABLE_MAX / ERF_TABLE_STEP)) + 2
        x = torch.arange(n, dtype=torch.float64) * ERF_TABLE_STEP
        t = (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)
        x2 = x * x
        hermite = [
            torch.ones_like(x),
            2.0 * x,
            4.0 * x2 - 2.0,
            (8.0 * x2 - 12.0) * x,
            (16.0 * x2 - 48.0) * x2 + 12.0,
            ((32.0 * x2 - 160.0) * x2 + 120.0) * x,
        ]
        c = [t * (-1.0) ** (m - 1) * hermite[m - 1] / math.factorial(m) for m in range(1, 7)]
        cols = [torch.special.erf(x)] + c
        if dtype != torch.float64:
            cols = cols[:4] + [2.0 * c[1], 3.0 * c[2], 4.0 * c[3]]
        cols.append(torch.zeros_like(x))
        _ERF_TABLES[key] = torch.stack(cols, dim=1).to(device=device, dtype=dtype).contiguous()
    return _ERF_TABLES[key]


#: float32: erf(x) rounds to ±1 for |x| ≥ 3.92, and so does the table's series from there
#: (``tab[0]`` is 1.0, the correction below 2e-9): the erf-only evaluation stops here.
ERF_SATURATE_F32 = 4.0
_ERF_FUNCS: dict[object, tuple] = {}


def taylor_erf(ti, fp):
    """The one ``@ti.func`` of the tabulated erf shared by every splat kernel (per float type).

    ``erf(x, tab)``: ``erf(x)`` by the Taylor series about the nearest node of ``tab``
    (:func:`erf_table`), 6 terms in float64, 3 in float32; ``±1``
    from ``ERF_TABLE_MAX`` on (float64) or from ``ERF_SATURATE_F32`` (float32: there the
    series gives exactly ``±1.0`` too, so the early exit changes no bit).
    ``erf_gauss(x, tab, two_over_sqrt_pi)``: ``erf(x)`` (no early exit) and its derivative
    ``(2/√π) e^{−x²}``: in float32 the derived series ``Σ_n n c_n hⁿ⁻¹`` (4 terms, truncation
    < 1e-9, 0 from ``ERF_TABLE_MAX`` on), in float64 ``exp``
    (``two_over_sqrt_pi`` a kernel argument: a Python float would be a float32 literal).
    """
    if fp in _ERF_FUNCS:
        return _ERF_FUNCS[fp]
    inv_step = 1.0 / ERF_TABLE_STEP
    x_max = ERF_TABLE_MAX
    f64 = fp == ti.f64

    @ti.func
    def series(x, tab: ti.template(), gauss: ti.template(), limit: ti.template(),
               two_over_sqrt_pi):  # fmt: skip
        a = ti.abs(x)
        r = ti.cast(1.0, fp)
        g = ti.cast(0.0, fp)
        if a < limit:
            i = ti.cast(a * inv_step + 0.5, ti.i32)
            h = a - ti.cast(i, fp) * ti.cast(ERF_TABLE_STEP, fp)
            if ti.static(f64):  # 6 terms: truncation < 1e-16
                p = tab[i, 5] + h * tab[i, 6]
                p = tab[i, 4] + h * p
                p = tab[i, 3] + h * p
                p = tab[i, 2] + h * p
                p = tab[i, 1] + h * p
                r = tab[i, 0] + h * p
            else:  # 3 terms: truncation ≤ (1/128)⁴/4! · max|H₃ e^{−x²}| · 2/√π < 1e-9
                r = tab[i, 0] + h * (tab[i, 1] + h * (tab[i, 2] + h * tab[i, 3]))
                if ti.static(gauss):  # its derivative: 4 terms
                    g = tab[i, 1] + h * (tab[i, 4] + h * (tab[i, 5] + h * tab[i, 6]))
        if ti.static(f64 and gauss):
            g = two_over_sqrt_pi * ti.exp(-a * a)
        if x < 0:
            r = -r
        return r, g

    erf_limit = x_max if f64 else ERF_SATURATE_F32

    @ti.func
    def erf(x, tab: ti.template()):
        r, _ = series(x, tab, False, erf_limit, 0.0)
        return r

    @ti.func
    def erf_gauss(x, tab: ti.template(), two_over_sqrt_pi):
        return series(x, tab, True, x_max, two_over_sqrt_pi)

    _ERF_FUNCS[fp] = (erf, erf_gauss)
    return _ERF_FUNCS[fp]


def build_kernels(dtype: torch.dtype):
    """Compile-once Taichi kernels for one float dtype (float32 or float64)."""
    key = (dtype, "splat")
    if key in _KERNELS:
        return _KERNELS[key]
    ti = get_taichi()
    fp = ti.f64 if dtype == torch.float64 else ti.f32
    arr1i = ti.types.ndarray(dtype=ti.i32, ndim=1)
    arr1 = ti.types.ndarray(dtype=fp, ndim=1)
    arr2 = ti.types.ndarray(dtype=fp, ndim=2)
    arr3 = ti.types.ndarray(dtype=fp, ndim=3)
    erf_tab, _ = taylor_erf(ti, fp)

    @ti.kernel
    def edge_fractions(
        scale: arr2,
        rx: arr1,
        ry: arr1,
        wins: arr1i,
        sampling: fp,
        tab: arr2,
        dx: arr3,
        dy: arr3,
    ):
        # dx[j,k,m] = ½ (erf(sc (rx_j + (m+1) s)) − erf(sc (rx_j + m s))), rx_j = kx0_j s − x_j
        for j, k in ti.ndrange(dx.shape[0], dx.shape[1]):
            sc = scale[j, k]
            prev_x = erf_tab(sc * rx[j], tab)
            prev_y = erf_tab(sc * ry[j], tab)
            for m in range(wins[j]):
                edge = ti.cast(m + 1, fp) * sampling
                cur_x = erf_tab(sc * (rx[j] + edge), tab)
                cur_y = erf_tab(sc * (ry[j] + edge), tab)
                dx[j, k, m] = 0.5 * (cur_x - prev_x)
                dy[j, k, m] = 0.5 * (cur_y - prev_y)
                prev_x = cur_x
                prev_y = cur_y

    @ti.kernel
    def splat_forward(
        w: arr2,
        dx: arr3,
        dy: arr3,
        kx0: arr1i,
        wins: arr1i,
        cell_start: arr1i,
        out: arr2,
        col_chunk: ti.i32,
        win_max: ti.i32,
        n_gauss: ti.template(),
    ):
        # One thread owns columns [c0, c1) of row iy. Atoms are bucketed by (first row,
        # column chunk of their first column): the thread scans the buckets of the rows
        # iy − d (d < win_max) and only of the chunks from which a window reaches its own,
        # so an atom is visited by about 1 + win_max/chunk threads per row (not nx/chunk).
        ny = out.shape[0]
        nx = out.shape[1]
        n_chunks = (nx + col_chunk - 1) // col_chunk
        for iy, c in ti.ndrange(ny, n_chunks):
            c0 = c * col_chunk
            c1 = ti.min(c0 + col_chunk, nx)
            # chunks holding a first column in [c0 − win_max + 1, c1) (cyclically), each once
            lo = c0 - (win_max - 1)
            first = 0
            count = n_chunks
            if lo >= 0:
                first = lo // col_chunk
                count = c - first + 1
            elif lo + nx >= 0:
                first = (lo + nx) // col_chunk
                count = ti.min(n_chunks, n_chunks - first + c + 1)
            for d in range(win_max):
                r = iy - d
                while r < 0:
                    r += ny
                for q in range(count):
                    cc = first + q
                    if cc >= n_chunks:
                        cc -= n_chunks
                    cell = r * n_chunks + cc
                    for j in range(cell_start[cell], cell_start[cell + 1]):
                        wj = wins[j]
                        if d < wj:
                            wdy = ti.Vector(
                                [w[j, k] * dy[j, k, d] for k in ti.static(range(n_gauss))]
                            )
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

    @ti.kernel
    def gaussian_backward(
        w: arr2,
        scale: arr2,
        rx: arr1,
        ry: arr1,
        dx: arr3,
        dy: arr3,
        kx0: arr1i,
        ky0: arr1i,
        wins: arr1i,
        grad_out: arr2,
        sampling: fp,
        scratch: arr3,
        grad_w: arr2,
        grad_scale: arr2,
        grad_rx: arr2,
        grad_ry: arr2,
    ):
        # Adjoint of edge_fractions + splat_forward, one thread per (atom, Gaussian), a gather
        # from grad_out (no atomics). With u = sc·rel and G(u) = e^{−u²}:
        # ∂ dx[m]/∂rx = sc/√π (G(u_{m+1}) − G(u_m)),
        # ∂ dx[m]/∂sc = (rel_{m+1} G(u_{m+1}) − rel_m G(u_m))/√π.
        ny = grad_out.shape[0]
        nx = grad_out.shape[1]
        for j, k in ti.ndrange(dx.shape[0], dx.shape[1]):
            wj = wins[j]
            wk = w[j, k]
            sc = scale[j, k]
            for m in range(wj):
                scratch[j, k, m] = 0.0
            acc_w = ti.cast(0.0, fp)
            acc_ry = ti.cast(0.0, fp)
            acc_sy = ti.cast(0.0, fp)
            rel = ry[j]
            g_prev = ti.exp(-(sc * rel) * (sc * rel))
            for d in range(wj):
                iy = (ky0[j] + d) % ny
                dyv = dy[j, k, d]
                acc_dy = ti.cast(0.0, fp)
                for m in range(wj):
                    ix = (kx0[j] + m) % nx
                    g = grad_out[iy, ix]
                    acc_dy += g * dx[j, k, m]
                    scratch[j, k, m] = scratch[j, k, m] + g * dyv
                acc_w += acc_dy * dyv
                rel_next = ry[j] + ti.cast(d + 1, fp) * sampling
                g_next = ti.exp(-(sc * rel_next) * (sc * rel_next))
                acc_ry += acc_dy * (g_next - g_prev)
                acc_sy += acc_dy * (rel_next * g_next - rel * g_prev)
                rel = rel_next
                g_prev = g_next
            acc_rx = ti.cast(0.0, fp)
            acc_sx = ti.cast(0.0, fp)
            rel = rx[j]
            g_prev = ti.exp(-(sc * rel) * (sc * rel))
            for m in range(wj):
                rel_next = rx[j] + ti.cast(m + 1, fp) * sampling
                g_next = ti.exp(-(sc * rel_next) * (sc * rel_next))
                gm = scratch[j, k, m]
                acc_rx += gm * (g_next - g_prev)
                acc_sx += gm * (rel_next * g_next - rel * g_prev)
                rel = rel_next
                g_prev = g_next
            grad_w[j, k] = acc_w
            # times 1/√π, applied by the caller (a Python float here would be a float32 literal)
            grad_rx[j, k] = wk * sc * acc_rx
            grad_ry[j, k] = wk * sc * acc_ry
            grad_scale[j, k] = wk * (acc_sx + acc_sy)

    kernels = dict(
        edge_fractions=edge_fractions,
        splat_forward=splat_forward,
        splat_backward=splat_backward,
        gaussian_backward=gaussian_backward,
    )
    _KERNELS[key] = kernels
    return kernels
