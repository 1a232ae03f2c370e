"""Taichi kernels of the particle maps (:mod:`tem_core.potential.maps`).

* :func:`gather_kernel`: the Kaiser-Bessel gather of
  :class:`tem_core.potential.kaiser_bessel.KBGatherFunction`, which holds the torch reference
  (:func:`~tem_core.potential.kaiser_bessel.kb_interpolate`) and the adjoint. One thread per
  point: the ``3 × KB_WIDTH`` weights read from the same table as the reference (offsets
  rounded to the table step in float64), then the ``KB_WIDTH³`` taps summed x first, then
  y, then z, as the reference's contractions.
* :func:`march_kernel`: the cumulative sums along the beam of a coarse map sampled
  trilinearly (``grid_sample``'s ``align_corners=False``, zero padding) on the rays of a
  patch, kept only at the requested sample indices; :func:`split_cumulative` runs it, or
  its torch reference (``grid_sample``, ``cumsum``) when Taichi does not. The maps are
  constants (no gradient), so it has no backward.
"""

# (no ``from __future__ import annotations``: Taichi reads the kernels' annotations at runtime)

import torch

from tem_core.potential.kaiser_bessel import KB_WIDTH

_GATHER_KERNELS: dict[torch.dtype, object] = {}


def gather_kernel(dtype: torch.dtype):
    """Compile-once Taichi kernel of the Kaiser-Bessel gather for one real dtype."""
    if dtype in _GATHER_KERNELS:
        return _GATHER_KERNELS[dtype]
    from tem_core._taichi import get_taichi

    ti = get_taichi()
    fp = ti.f64 if dtype == torch.float64 else ti.f32
    w = KB_WIDTH
    half = w // 2 - 1

    @ti.func
    def wrap(i, big):
        """``i mod big`` for ``−big ≤ i < 2 big`` (one tap past a wrapped first index)."""
        j = i
        if j < 0:
            j += big
        if j >= big:
            j -= big
        return j

    @ti.kernel
    def gather(
        flat: ti.types.ndarray(dtype=fp, ndim=1),
        coords: ti.types.ndarray(dtype=ti.f64, ndim=2),
        table: ti.types.ndarray(dtype=fp, ndim=1),
        out: ti.types.ndarray(dtype=fp, ndim=2),
        big: ti.i64,
        steps: ti.f64,
        last: ti.i32,
    ):
        row = big + w - 1
        for p in range(coords.shape[0]):
            wz = ti.Vector([0.0] * w, dt=fp)
            wy = ti.Vector([0.0] * w, dt=fp)
            wx = ti.Vector([0.0] * w, dt=fp)
            iz = ti.Vector([0] * w, dt=ti.i64)
            iy = ti.Vector([0] * w, dt=ti.i64)
            cz, cy, cx = coords[p, 0], coords[p, 1], coords[p, 2]
            fz = ti.cast(ti.floor(cz), ti.i64) - half
            fy = ti.cast(ti.floor(cy), ti.i64) - half
            fx = ti.cast(ti.floor(cx), ti.i64) - half
            # first taps taken modulo big (exact integer arithmetic), the next ones wrapped
            gz = fz - big * ti.cast(ti.floor(ti.cast(fz, ti.f64) / big), ti.i64)
            gy = fy - big * ti.cast(ti.floor(ti.cast(fy, ti.f64) / big), ti.i64)
            x0 = fx - big * ti.cast(ti.floor(ti.cast(fx, ti.f64) / big), ti.i64)
            for t in ti.static(range(w)):
                oz = ti.min(ti.cast(ti.round(ti.abs(cz - ti.cast(fz + t, ti.f64)) * steps),
                                    ti.i32), last)
                oy = ti.min(ti.cast(ti.round(ti.abs(cy - ti.cast(fy + t, ti.f64)) * steps),
                                    ti.i32), last)
                ox = ti.min(ti.cast(ti.round(ti.abs(cx - ti.cast(fx + t, ti.f64)) * steps),
                                    ti.i32), last)
                wz[t] = table[oz]
                wy[t] = table[oy]
                wx[t] = table[ox]
                iz[t] = wrap(gz + t, big)
                iy[t] = wrap(gy + t, big)
            re = ti.cast(0.0, fp)
            im = ti.cast(0.0, fp)
            for a in ti.static(range(w)):
                re_z = ti.cast(0.0, fp)
                im_z = ti.cast(0.0, fp)
                for b in ti.static(range(w)):
                    start = 2 * ((iz[a] * big + iy[b]) * row + x0)
                    re_y = ti.cast(0.0, fp)
                    im_y = ti.cast(0.0, fp)
                    for t in ti.static(range(w)):
                        re_y += flat[start + 2 * t] * wx[t]
                        im_y += flat[start + 2 * t + 1] * wx[t]
                    re_z += re_y * wy[b]
                    im_z += im_y * wy[b]
                re += re_z * wz[a]
                im += im_z * wz[a]
            out[p, 0] = re
            out[p, 1] = im

    _GATHER_KERNELS[dtype] = gather
    return gather




_MARCH_KERNELS: dict[torch.dtype, object] = {}


def march_kernel(dtype: torch.dtype):
    """Compile-once Taichi kernel of the ray march for one real dtype.

    ``march(coarse, origin, steps, keep, busy, ball, out, n_z, n)``: ``coarse``
    ``(n, n, n, 2)`` [z, y, x, channel] flattened (channels last: the V and X taps of a
    sample share cache lines);
    ``origin`` ``(3,)`` and ``steps`` ``(3, 3)`` (rows: per x pixel, per y pixel, per z
    sample) float64 grid_sample coordinates ``(x, y, z)`` in ``[−1, 1]``; ``keep`` ``(K,)``
    sorted sample indices in ``[0, n_z]``; ``busy`` (:func:`busy_blocks`) ``(n − 1)³``
    flattened, 0 where a sample's 8 taps are all zero (the sample adds ±0 to a sum that
    starts at +0: skipped, the sums stay bitwise the same) and ``ball`` a sphere holding
    every non-zero tap (the samples of a ray outside it are skipped, as well); ``out``
    ``(2, K, m_y, m_x)``: per channel and ray the sum of the first ``keep[k]`` samples
    (accumulated in float64).
    """
    if dtype in _MARCH_KERNELS:
        return _MARCH_KERNELS[dtype]
    from tem_core._taichi import get_taichi

    ti = get_taichi()
    fp = ti.f64 if dtype == torch.float64 else ti.f32

    @ti.func
    def pair(coarse: ti.template(), i):
        """(V, X) of the voxel at flat index ``i // 2``: adjacent in memory."""
        return ti.Vector([coarse[i], coarse[i + 1]], dt=fp)

    @ti.func
    def tap(coarse: ti.template(), z, y, x, n):
        """:func:`pair` with bounds: zero outside the map."""
        v = ti.Vector([0.0, 0.0], dt=fp)
        if 0 <= z < n and 0 <= y < n and 0 <= x < n:
            v = pair(coarse, 2 * ((z * n + y) * n + x))
        return v

    @ti.func
    def trilinear(coarse: ti.template(), z0, y0, x0, tz, ty, tx, n, inside):
        """(V, X) at one point: both channels of a tap are adjacent in memory."""
        zero = ti.Vector([0.0, 0.0], dt=fp)
        v000 = v001 = v010 = v011 = v100 = v101 = v110 = v111 = zero
        if inside:  # the whole 2 × 2 × 2 block in the map: no bounds checks
            i = 2 * ((z0 * n + y0) * n + x0)
            row = 2 * n
            plane = 2 * n * n
            v000 = pair(coarse, i)
            v001 = pair(coarse, i + 2)
            v010 = pair(coarse, i + row)
            v011 = pair(coarse, i + row + 2)
            v100 = pair(coarse, i + plane)
            v101 = pair(coarse, i + plane + 2)
            v110 = pair(coarse, i + plane + row)
            v111 = pair(coarse, i + plane + row + 2)
        else:
            v000 = tap(coarse, z0, y0, x0, n)
            v001 = tap(coarse, z0, y0, x0 + 1, n)
            v010 = tap(coarse, z0, y0 + 1, x0, n)
            v011 = tap(coarse, z0, y0 + 1, x0 + 1, n)
            v100 = tap(coarse, z0 + 1, y0, x0, n)
            v101 = tap(coarse, z0 + 1, y0, x0 + 1, n)
            v110 = tap(coarse, z0 + 1, y0 + 1, x0, n)
            v111 = tap(coarse, z0 + 1, y0 + 1, x0 + 1, n)
        v0 = (v000 * (1 - tx) + v001 * tx) * (1 - ty) + (v010 * (1 - tx) + v011 * tx) * ty
        v1 = (v100 * (1 - tx) + v101 * tx) * (1 - ty) + (v110 * (1 - tx) + v111 * tx) * ty
        return v0 * (1 - tz) + v1 * tz

    @ti.kernel
    def march(
        coarse: ti.types.ndarray(dtype=fp, ndim=1),
        origin: ti.types.ndarray(dtype=ti.f64, ndim=1),
        steps: ti.types.ndarray(dtype=ti.f64, ndim=2),
        keep: ti.types.ndarray(dtype=ti.i32, ndim=1),
        busy: ti.types.ndarray(dtype=ti.u8, ndim=1),
        ball: ti.types.ndarray(dtype=ti.f64, ndim=1),
        out: ti.types.ndarray(dtype=fp, ndim=4),
        n_z: ti.i32,
        n: ti.i32,
    ):
        n_keep = keep.shape[0]
        o0 = ti.Vector([origin[0], origin[1], origin[2]], dt=ti.f64)
        sz = ti.Vector([steps[2, 0], steps[2, 1], steps[2, 2]], dt=ti.f64)
        sy = ti.Vector([steps[1, 0], steps[1, 1], steps[1, 2]], dt=ti.f64)
        sx = ti.Vector([steps[0, 0], steps[0, 1], steps[0, 2]], dt=ti.f64)
        half = 0.5 * ti.cast(n, ti.f64)
        centre = ti.Vector([ball[0], ball[1], ball[2]], dt=ti.f64)
        for iy, ix in ti.ndrange(out.shape[2], out.shape[3]):
            oy = ti.cast(iy, ti.f64) * sy
            ox = ti.cast(ix, ti.f64) * sx
            # the samples within ball[3] voxels of ball[:3] (float64, ± 1 sample): the others
            # have no non-zero tap (ball[3] includes a margin over √3), so they are skipped
            rel = ((o0 + oy + ox + 1) * half - 0.5) - centre
            dirn = sz * half
            qa = dirn.dot(dirn)
            qb = dirn.dot(rel)
            qc = rel.dot(rel) - ball[3] * ball[3]
            disc = qb * qb - qa * qc
            s_lo = n_z
            s_hi = -1
            if disc >= 0 and qa > 0 and ball[3] >= 0:
                root = ti.sqrt(disc)
                # clamped to [−1, n_z] in float64 before the cast (a tiny step: a huge root)
                last = ti.cast(n_z, ti.f64)
                s_lo = ti.cast(ti.math.clamp(ti.floor((-qb - root) / qa) - 1, -1.0, last), ti.i32)
                s_hi = ti.cast(ti.math.clamp(ti.ceil((-qb + root) / qa) + 1, -1.0, last), ti.i32)
            acc_v = ti.cast(0.0, ti.f64)
            acc_x = ti.cast(0.0, ti.f64)
            k = 0
            for s in range(n_z + 1):
                while k < n_keep:
                    if keep[k] != s:
                        break
                    out[0, k, iy, ix] = ti.cast(acc_v, fp)
                    out[1, k, iy, ix] = ti.cast(acc_x, fp)
                    k += 1
                if s < n_z and s_lo <= s and s <= s_hi:
                    # the grid_sample coordinate (float64 sum, as the reference's grid)
                    g = ti.cast(o0 + ti.cast(s, ti.f64) * sz + oy + ox, fp)
                    # grid_sample's unnormalisation (align_corners=False)
                    px = ((g[0] + 1) * n - 1) / 2
                    py = ((g[1] + 1) * n - 1) / 2
                    pz = ((g[2] + 1) * n - 1) / 2
                    x0 = ti.cast(ti.floor(px), ti.i32)
                    y0 = ti.cast(ti.floor(py), ti.i32)
                    z0 = ti.cast(ti.floor(pz), ti.i32)
                    if z0 >= -1 and z0 < n and y0 >= -1 and y0 < n and x0 >= -1 and x0 < n:
                        tx = px - ti.cast(x0, fp)
                        ty = py - ti.cast(y0, fp)
                        tz = pz - ti.cast(z0, fp)
                        inside = (0 <= x0 and x0 + 1 < n and 0 <= y0 and y0 + 1 < n
                                  and 0 <= z0 and z0 + 1 < n)  # fmt: skip
                        taps = 1
                        if inside:  # skip a block of 8 zero taps: it adds ±0, i.e. nothing
                            taps = ti.cast(busy[(z0 * (n - 1) + y0) * (n - 1) + x0], ti.i32)
                        if taps != 0:
                            v = trilinear(coarse, z0, y0, x0, tz, ty, tx, n, inside)
                            acc_v += ti.cast(v[0], ti.f64)
                            acc_x += ti.cast(v[1], ti.f64)

    _MARCH_KERNELS[dtype] = march
    return march


def busy_blocks(coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``coarse`` ``(2, n, n, n)`` is non-zero, for :func:`march_kernel` to skip the
    samples without a non-zero tap: ``(flags, ball)``, ``flags`` ``(n − 1)³`` uint8
    flattened, 1 where the ``2 × 2 × 2`` block of voxels starting at ``[z, y, x]`` holds a
    non-zero value (either channel); ``ball`` float64 ``(x, y, z, r)`` [voxels] a sphere
    holding every non-zero voxel's centre, ``r`` enlarged by 2 voxels (a sample's taps lie
    within √3 of it; ``r = −1``: no non-zero voxel)."""
    nonzero = (coarse != 0).any(0)
    block = torch.nn.functional.max_pool3d(nonzero[None, None].to(torch.float32), 2, stride=1)
    flags = (block[0, 0] > 0).to(torch.uint8).contiguous().view(-1)
    ball = torch.tensor([0.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    at = torch.nonzero(nonzero).flip(1).to(torch.float64)  # (x, y, z) voxel indices
    if at.shape[0]:
        centre = (at.amin(0) + at.amax(0)) / 2
        radius = float(torch.linalg.vector_norm(at - centre, dim=1).max()) + 2.0
        ball = torch.cat([centre, torch.tensor([radius], dtype=torch.float64)])
    return flags, ball.to(coarse.device)


def split_cumulative(coarse, g0, steps, sizes, j, w, use_taichi, busy=None):
    """Cumulative sums along the beam of ``coarse`` ``(2, n, n, n)`` on the rays of a patch,
    at the slice boundaries: ``(at, total)``, ``at`` ``(2, n_b, m, m)`` linearly
    interpolated between samples ``j`` and ``j + 1`` with weights ``w`` ``(n_b,)``, and
    ``total`` ``(2, 1, m, m)`` over all ``n_z`` samples.

    ``coarse`` is best stored channels last (``coarse.permute(1, 2, 3, 0)`` contiguous, as
    :class:`tem_core.potential.maps` keeps it); any other layout is copied for the kernel.
    ``g0`` ``(3,)`` and ``steps`` (three ``(3,)``: per x pixel, y pixel, z sample) are the
    float64 ``grid_sample`` coordinates (x, y, z) of the first sample and the steps;
    ``sizes = (m, n_z)``. ``use_taichi``: :func:`march_kernel` (only the sums at the
    needed samples), else the torch reference (every sample, ``grid_sample`` and
    ``cumsum``). ``busy``: :func:`busy_blocks` of ``coarse`` (made here if ``None``).
    """
    m_px, n_z = sizes
    device, dtype = coarse.device, coarse.dtype
    if use_taichi:
        keep = torch.unique(torch.cat([j, j + 1, torch.tensor([n_z])]))
        cum = torch.empty((2, keep.numel(), m_px, m_px), dtype=dtype, device=device)
        flat = coarse.permute(1, 2, 3, 0).contiguous().view(-1)  # no copy if channels last
        busy = busy_blocks(coarse) if busy is None else busy
        march_kernel(dtype)(flat, g0.to(device).contiguous(),
                            torch.stack(steps).to(device).contiguous(),
                            keep.to(device=device, dtype=torch.int32), *busy, cum, n_z,
                            coarse.shape[-1])  # fmt: skip
        lookup = torch.searchsorted(keep, torch.cat([j, j + 1])).to(device)
        lo, hi = lookup[: j.numel()], lookup[j.numel() :]
        at = cum[:, lo] + w[None, :, None, None] * (cum[:, hi] - cum[:, lo])
        return at, cum[:, -1:]
    f64 = dict(dtype=torch.float64, device=device)
    ax = [torch.arange(k, **f64) for k in (m_px, m_px, n_z)]
    grid = (
        g0.to(device)
        + ax[2][:, None, None, None] * steps[2].to(device)
        + ax[1][None, :, None, None] * steps[1].to(device)
        + ax[0][None, None, :, None] * steps[0].to(device)
    ).to(dtype)  # (n_z, m_y, m_x, 3) as (x, y, z) of the template frame
    sample = torch.nn.functional.grid_sample(
        coarse[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]  # (2, n_z, m, m)
    cum = torch.cat([torch.zeros_like(sample[:, :1]), torch.cumsum(sample, 1)], 1)
    j = j.to(device)
    at = cum[:, j] + w[None, :, None, None] * (cum[:, j + 1] - cum[:, j])  # (2, nb, m, m)
    return at, cum[:, -1:]
