"""Taichi ray-marching kernels of :mod:`tem_core.render`: the forward march and its adjoint.

The forward kernel composites front to back; the adjoint kernel replays each ray in the same
order and, knowing the ray's final colour and transmittance, gets the colour still to come
behind every sample (final minus accumulated) and so the derivative of the pixel with respect
to that sample's alpha and colour without storing the ray. The torch twin is
``tem_core.render._march_torch``; tests compare values and gradients of both.
"""

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

    @ti.func
    def scatter(g: ti.template(), x: ti.f32, y: ti.f32, z: ti.f32, value: ti.f32):
        # adjoint of ``sample``: spread ``value`` over the eight neighbours (atomic adds)
        xs, ys, zs = x + 1.0, y + 1.0, z + 1.0
        x0, y0, z0 = ti.cast(xs, ti.i32), ti.cast(ys, ti.i32), ti.cast(zs, ti.i32)
        fx, fy, fz = xs - x0, ys - y0, zs - z0
        for dz, dy, dx in ti.static(ti.ndrange(2, 2, 2)):
            wz = fz if dz == 1 else 1.0 - fz
            wy = fy if dy == 1 else 1.0 - fy
            wx = fx if dx == 1 else 1.0 - fx
            g[z0 + dz, y0 + dy, x0 + dx] += wz * wy * wx * value

    @ti.kernel
    def march_adjoint(
        vol: ti.types.ndarray(),
        opacity: ti.types.ndarray(),
        color: ti.types.ndarray(),
        origins: ti.types.ndarray(),
        dirs: ti.types.ndarray(),
        t_start: ti.types.ndarray(),
        n_steps: ti.types.ndarray(),
        out: ti.types.ndarray(),
        grad_out: ti.types.ndarray(),
        grad_vol: ti.types.ndarray(),
        grad_opacity: ti.types.ndarray(),
        grad_color: ti.types.ndarray(),
        vmin: ti.f32,
        bins_per_value: ti.f32,
        threshold: ti.f32,
        step_len: ti.f32,
        min_transmittance: ti.f32,
        mip: ti.template(),
    ):
        nb = opacity.shape[0]
        for r in range(origins.shape[0]):
            if ti.static(mip):
                # the gradient goes to the (first) sample holding the maximum, found again
                g = grad_out[r, 0] + grad_out[r, 1] + grad_out[r, 2]
                best = -3.0e38
                bx, by, bz = 0.0, 0.0, 0.0
                for k in range(n_steps[r]):
                    t = t_start[r] + (k + 0.5) * step_len
                    x = origins[r, 0] + t * dirs[r, 0]
                    y = origins[r, 1] + t * dirs[r, 1]
                    z = origins[r, 2] + t * dirs[r, 2]
                    v = sample(vol, x, y, z)
                    if v > best:
                        best = v
                        bx, by, bz = x, y, z
                if n_steps[r] > 0:
                    scatter(grad_vol, bx, by, bz, g)
            else:
                gr, gg, gb, ga_out = grad_out[r, 0], grad_out[r, 1], grad_out[r, 2], grad_out[r, 3]
                fin_r, fin_g, fin_b = out[r, 0], out[r, 1], out[r, 2]
                trans_final = 1.0 - out[r, 3]
                trans = 1.0
                cr, cg, cb = 0.0, 0.0, 0.0
                for k in range(n_steps[r]):
                    if trans < min_transmittance:
                        break
                    t = t_start[r] + (k + 0.5) * step_len
                    x = origins[r, 0] + t * dirs[r, 0]
                    y = origins[r, 1] + t * dirs[r, 1]
                    z = origins[r, 2] + t * dirs[r, 2]
                    v = sample(vol, x, y, z)
                    if v >= threshold:
                        u_raw = (v - vmin) * bins_per_value
                        u = ti.min(ti.max(u_raw, 0.0), nb - 1.0)
                        i0 = ti.min(ti.cast(u, ti.i32), nb - 2)
                        f = u - i0
                        a = (1.0 - f) * opacity[i0] + f * opacity[i0 + 1]
                        kr = (1.0 - f) * color[i0, 0] + f * color[i0 + 1, 0]
                        kg = (1.0 - f) * color[i0, 1] + f * color[i0 + 1, 1]
                        kb = (1.0 - f) * color[i0, 2] + f * color[i0 + 1, 2]
                        w = trans * a
                        cr += w * kr
                        cg += w * kg
                        cb += w * kb
                        # colour and transmittance behind this sample, per unit of (1 - a)
                        keep = ti.max(1.0 - a, 1e-30)
                        d_a = gr * (trans * kr - (fin_r - cr) / keep)
                        d_a += gg * (trans * kg - (fin_g - cg) / keep)
                        d_a += gb * (trans * kb - (fin_b - cb) / keep)
                        d_a += ga_out * trans_final / keep
                        grad_opacity[i0] += (1.0 - f) * d_a
                        grad_opacity[i0 + 1] += f * d_a
                        grad_color[i0, 0] += (1.0 - f) * w * gr
                        grad_color[i0 + 1, 0] += f * w * gr
                        grad_color[i0, 1] += (1.0 - f) * w * gg
                        grad_color[i0 + 1, 1] += f * w * gg
                        grad_color[i0, 2] += (1.0 - f) * w * gb
                        grad_color[i0 + 1, 2] += f * w * gb
                        if u_raw >= 0.0 and u_raw <= nb - 1.0:
                            d_f = d_a * (opacity[i0 + 1] - opacity[i0])
                            d_f += w * gr * (color[i0 + 1, 0] - color[i0, 0])
                            d_f += w * gg * (color[i0 + 1, 1] - color[i0, 1])
                            d_f += w * gb * (color[i0 + 1, 2] - color[i0, 2])
                            scatter(grad_vol, x, y, z, d_f * bins_per_value)
                        trans *= 1.0 - a

    return march, march_adjoint


class _March(torch.autograd.Function):
    """The Taichi march as an autograd function whose backward is the adjoint kernel."""

    @staticmethod
    def forward(ctx, volume, opacity, color, origins, dirs, t_start, n_steps, settings):
        march, _ = _kernel()
        padded = torch.nn.functional.pad(volume.detach().float(), (1, 1, 1, 1, 1, 1))
        args = (
            padded.contiguous(),
            opacity.detach().float().contiguous(),
            color.detach().float().contiguous(),
            origins.detach().float().contiguous(),
            dirs.detach().float().contiguous(),
            t_start.detach().float().contiguous(),
            n_steps.int().contiguous(),
        )
        out = torch.empty((origins.shape[0], 4), dtype=torch.float32, device=volume.device)
        march(*args, out, *settings)
        ctx.save_for_backward(*args, out)
        ctx.settings = settings
        ctx.dtypes = (volume.dtype, opacity.dtype, color.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        *args, out = ctx.saved_tensors
        padded, opacity, color = args[:3]
        _, adjoint = _kernel()
        grad_padded = torch.zeros_like(padded)
        grad_opacity = torch.zeros_like(opacity)
        grad_color = torch.zeros_like(color)
        adjoint(
            *args,
            out.detach(),  # saved output: it requires grad itself
            grad_out.detach().float().contiguous(),
            grad_padded,
            grad_opacity,
            grad_color,
            *ctx.settings,
        )
        volume_dtype, opacity_dtype, color_dtype = ctx.dtypes
        grad_volume = grad_padded[1:-1, 1:-1, 1:-1].to(volume_dtype)
        return (
            grad_volume,
            grad_opacity.to(opacity_dtype),
            grad_color.to(color_dtype),
            None,
            None,
            None,
            None,
            None,
        )


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

    ``opacity`` is the per-step alpha table ``1 - exp(-σ step)`` of the bins. Differentiable
    with respect to ``volume``, ``opacity`` and ``color`` (the adjoint kernel; float32).
    """
    settings = (
        float(vmin),
        float(bins_per_value),
        float(threshold),
        float(step),
        float(min_transmittance),
        bool(mip),
    )
    return _March.apply(volume, opacity, color, origins, dirs, t_start, n_steps, settings)
