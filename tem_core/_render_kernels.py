"""Taichi ray-marching kernel of :mod:`tem_core.render` (forward only; its torch twin is
``tem_core.render._march_torch``, which also provides the gradients)."""

# (no ``from __future__ import annotations``: Taichi reads the kernels' annotations at runtime)
import functools

import torch

from tem_core._taichi import get_taichi


@functools.cache
def _kernel():
    ti = get_taichi()

    @ti.func
    def sample(vol: ti.template(), x: ti.f32, y: ti.f32, z: ti.f32) -> ti.f32:
        # ``vol`` is padded by one zero voxel on every side and the point lies inside the
        # box [-0.5, n - 0.5]: all eight neighbours exist, no bounds checks
        xs, ys, zs = x + 1.0, y + 1.0, z + 1.0
        x0, y0, z0 = ti.cast(xs, ti.i32), ti.cast(ys, ti.i32), ti.cast(zs, ti.i32)
        fx, fy, fz = xs - x0, ys - y0, zs - z0
        c00 = (1.0 - fx) * vol[z0, y0, x0] + fx * vol[z0, y0, x0 + 1]
        c01 = (1.0 - fx) * vol[z0, y0 + 1, x0] + fx * vol[z0, y0 + 1, x0 + 1]
        c10 = (1.0 - fx) * vol[z0 + 1, y0, x0] + fx * vol[z0 + 1, y0, x0 + 1]
        c11 = (1.0 - fx) * vol[z0 + 1, y0 + 1, x0] + fx * vol[z0 + 1, y0 + 1, x0 + 1]
        return (1.0 - fz) * ((1.0 - fy) * c00 + fy * c01) + fz * ((1.0 - fy) * c10 + fy * c11)

    @ti.kernel
    def march(
        vol: ti.types.ndarray(),
        opacity: ti.types.ndarray(),
        color: ti.types.ndarray(),
        origins: ti.types.ndarray(),
        dirs: ti.types.ndarray(),
        t_start: ti.types.ndarray(),
        n_steps: ti.types.ndarray(),
        out: ti.types.ndarray(),
        vmin: ti.f32,
        bins_per_value: ti.f32,
        threshold: ti.f32,
        step_len: ti.f32,
        min_transmittance: ti.f32,
        mip: ti.template(),
    ):
        nb = opacity.shape[0]
        for r in range(origins.shape[0]):
            trans = 1.0
            cr, cg, cb = 0.0, 0.0, 0.0
            peak = -3.0e38
            for k in range(n_steps[r]):
                if ti.static(not mip):
                    if trans < min_transmittance:
                        break
                t = t_start[r] + (k + 0.5) * step_len
                v = sample(
                    vol,
                    origins[r, 0] + t * dirs[r, 0],
                    origins[r, 1] + t * dirs[r, 1],
                    origins[r, 2] + t * dirs[r, 2],
                )
                if ti.static(mip):
                    peak = ti.max(peak, v)
                elif v >= threshold:
                    u = ti.min(ti.max((v - vmin) * bins_per_value, 0.0), nb - 1.0)
                    i0 = ti.min(ti.cast(u, ti.i32), nb - 2)
                    f = u - i0
                    # ``opacity`` holds the per-step alpha of each bin, 1 - exp(-σ step)
                    a = (1.0 - f) * opacity[i0] + f * opacity[i0 + 1]
                    w = trans * a
                    cr += w * ((1.0 - f) * color[i0, 0] + f * color[i0 + 1, 0])
                    cg += w * ((1.0 - f) * color[i0, 1] + f * color[i0 + 1, 1])
                    cb += w * ((1.0 - f) * color[i0, 2] + f * color[i0 + 1, 2])
                    trans *= 1.0 - a
            if ti.static(mip):
                if n_steps[r] == 0:
                    peak = 0.0
                out[r, 0], out[r, 1], out[r, 2], out[r, 3] = peak, peak, peak, 1.0
            else:
                out[r, 0], out[r, 1], out[r, 2], out[r, 3] = cr, cg, cb, 1.0 - trans

    return march


def march_taichi(
    volume,
    opacity,
    color,
    origins,
    dirs,
    t_start,
    n_steps,
    *,
    vmin,
    bins_per_value,
    threshold,
    step,
    min_transmittance,
    mip,
) -> torch.Tensor:
    """``(n_rays, 4)`` float32: RGB and accumulated opacity (MIP: the maximum, repeated).

    ``opacity`` is the per-step alpha table ``1 - exp(-σ step)`` of the bins.
    """
    out = torch.empty((origins.shape[0], 4), dtype=torch.float32, device=volume.device)
    padded = torch.nn.functional.pad(volume.detach().float(), (1, 1, 1, 1, 1, 1))
    _kernel()(
        padded.contiguous(),
        opacity.detach().float().contiguous(),
        color.detach().float().contiguous(),
        origins.float().contiguous(),
        dirs.float().contiguous(),
        t_start.float().contiguous(),
        n_steps.int().contiguous(),
        out,
        float(vmin),
        float(bins_per_value),
        float(threshold),
        float(step),
        float(min_transmittance),
        bool(mip),
    )
    return out
