"""Direct volume rendering: emission-absorption ray marching, MIP and orthoslices.

Inverse stage (a consumer of reconstructions). A :class:`Camera` (orthographic or
perspective, orbiting the volume's centre) casts one ray per pixel; each ray is intersected
with the volume's box and sampled every ``step_voxels`` by trilinear interpolation (zero
outside). A :class:`TransferFunction` maps a sample value to an extinction coefficient
``σ`` [1/voxel] and a colour by linear interpolation in two tables; samples below the
``threshold`` are transparent (as in the paper's renderings). Front-to-back
emission-absorption compositing (Max 1995, IEEE TVCG 1:99)::

    α_i = 1 - exp(-σ(v_i) Δt),   C = Σ_i T_i α_i c(v_i),   T_i = Π_{j<i} (1 - α_j)

stopping where ``T`` falls below ``min_transmittance`` (early ray termination, applied
identically by both implementations). ``mode="mip"`` returns the maximum sample instead.

Two implementations of the marching, both differentiable with respect to the volume and
both transfer tables: Taichi kernels (float32; an ``autograd.Function`` whose backward is
an adjoint kernel that replays each ray, so no per-sample state is stored) and their pure
torch twin (device- and dtype-following, autograd). :func:`render` uses Taichi unless a
float64 gradient is asked for (``backend`` forces one); tests check that values and
gradients agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tem_core.validation import (
    require_finite,
    require_float_dtype,
    require_integer,
    require_positive,
    require_same_device,
)

__all__ = [
    "MODES",
    "PROJECTIONS",
    "Camera",
    "TransferFunction",
    "orthoslices",
    "render",
    "transfer_function",
]

MODES = ("emission-absorption", "mip")
PROJECTIONS = ("orthographic", "perspective")


@dataclass(frozen=True, kw_only=True)
class Camera:
    """A camera orbiting the volume's centre.

    Parameters
    ----------
    image_shape
        ``(height, width)`` of the image [px].
    azimuth_rad
        Rotation of the viewing direction about the volume's y axis (the tilt axis) [rad];
        0 looks along +z (the beam), showing x to the right and y downwards.
    elevation_rad
        Tilt of the viewing direction towards -y, in (-π/2, π/2) [rad].
    projection
        ``"orthographic"`` or ``"perspective"``.
    zoom
        Magnification; 1 fits the volume's bounding sphere into the image.
    distance
        Perspective only: eye distance from the centre in bounding-sphere radii (> 1).
    """

    image_shape: tuple[int, int] = (256, 256)
    azimuth_rad: float = 0.0
    elevation_rad: float = 0.0
    projection: str = "orthographic"
    zoom: float = 1.0
    distance: float = 3.0

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.image_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"image_shape must be (height, width) > 0, got {self.image_shape}")
        object.__setattr__(self, "image_shape", shape)
        require_finite("azimuth_rad", self.azimuth_rad, "rad")
        require_finite("elevation_rad", self.elevation_rad, "rad")
        if not abs(self.elevation_rad) < 0.5 * math.pi:
            raise ValueError(f"elevation_rad must lie in (-pi/2, pi/2), got {self.elevation_rad}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        require_positive("zoom", self.zoom)
        require_finite("distance", self.distance)
        if not self.distance > 1:
            raise ValueError(f"distance must be > 1 bounding-sphere radius, got {self.distance}")

    def basis(self) -> torch.Tensor:
        """Rows: right, down and forward unit vectors in volume coordinates (x, y, z)."""
        ca, sa = math.cos(self.azimuth_rad), math.sin(self.azimuth_rad)
        ce, se = math.cos(self.elevation_rad), math.sin(self.elevation_rad)
        forward = torch.tensor([sa * ce, -se, ca * ce], dtype=torch.float64)
        right = torch.tensor([ca, 0.0, -sa], dtype=torch.float64)
        down = torch.linalg.cross(forward, right)
        return torch.stack([right, down, forward])

    def rays(self, volume_shape, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions ``(h * w, 3)`` in voxel-index coordinates (x, y, z)."""
        nz, ny, nx = volume_shape
        h, w = self.image_shape
        radius = 0.5 * math.sqrt(nx * nx + ny * ny + nz * nz)
        centre = torch.tensor([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2], dtype=torch.float64)
        right, down, forward = self.basis()
        half = radius / self.zoom
        px = 2 * half / max(h, w)
        sx = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) * px
        sy = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) * px
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        offsets = gx.reshape(-1, 1) * right + gy.reshape(-1, 1) * down
        if self.projection == "orthographic":
            origins = centre + offsets - 2 * radius * forward
            dirs = forward.expand_as(origins)
        else:
            eye = centre - self.distance * radius * forward
            # the bounding sphere fills the image at zoom 1
            tan_half = math.tan(math.asin(1.0 / self.distance)) / self.zoom
            dirs = forward + offsets / half * tan_half
            dirs = dirs / dirs.norm(dim=1, keepdim=True)
            origins = eye.expand_as(dirs)
        return origins.to(device).contiguous(), dirs.contiguous().to(device)


@dataclass(frozen=True, eq=False)
class TransferFunction:
    """Value -> (extinction [1/voxel], RGB colour) by linear interpolation in tables.

    ``opacity`` is ``(n_bins,)`` and ``color`` ``(n_bins, 3)``, sampled uniformly over
    ``value_range``; either may require grad. Values outside the range take the end bins.
    """

    opacity: torch.Tensor
    color: torch.Tensor
    value_range: tuple[float, float]

    def __post_init__(self) -> None:
        if self.opacity.ndim != 1 or self.opacity.numel() < 2:
            raise ValueError(f"opacity must be (n_bins >= 2,), got {tuple(self.opacity.shape)}")
        if tuple(self.color.shape) != (self.opacity.numel(), 3):
            raise ValueError(
                f"color must be (n_bins, 3) = ({self.opacity.numel()}, 3), "
                f"got {tuple(self.color.shape)}"
            )
        require_finite("opacity", self.opacity)
        require_finite("color", self.color)
        if bool((self.opacity.detach() < 0).any()):
            raise ValueError("opacity must be >= 0 [1/voxel], got negative entries")
        lo, hi = (float(v) for v in self.value_range)
        require_finite("value_range", [lo, hi])
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {(lo, hi)}")


def transfer_function(
    value_range: tuple[float, float],
    *,
    colormap: str = "magma",
    max_opacity: float = 0.2,
    gamma: float = 1.5,
    n_bins: int = 64,
    dtype=torch.float32,
    device=None,
) -> TransferFunction:
    """A transfer function: extinction ``max_opacity * s**gamma`` and a matplotlib colormap
    of the normalised value ``s`` in [0, 1] over ``value_range``."""
    import matplotlib

    require_positive("max_opacity", max_opacity, "1/voxel")
    require_positive("gamma", gamma)
    require_integer("n_bins", n_bins, minimum=2)
    s = torch.linspace(0, 1, n_bins, dtype=torch.float64)
    rgb = matplotlib.colormaps[colormap](s.numpy())[:, :3]
    return TransferFunction(
        opacity=(max_opacity * s**gamma).to(dtype=dtype, device=device),
        color=torch.as_tensor(rgb, dtype=dtype, device=device),
        value_range=(float(value_range[0]), float(value_range[1])),
    )


def _box_entry(origins, dirs, volume_shape, step):
    """Entry distance and step count of every ray through the box [-0.5, n - 0.5]^3."""
    nz, ny, nx = volume_shape
    lo = torch.full((3,), -0.5, dtype=origins.dtype, device=origins.device)
    hi = torch.tensor([nx, ny, nz], dtype=origins.dtype, device=origins.device) - 0.5
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    ta, tb = (lo - origins) / safe, (hi - origins) / safe
    t0 = torch.minimum(ta, tb).amax(dim=1).clamp(min=0.0)
    t1 = torch.maximum(ta, tb).amin(dim=1)
    # midpoint samples t0 + (k + 1/2) step, k < n, all inside the box
    n = torch.floor((t1 - t0) / step + 0.5).clamp(min=0).to(torch.int64)
    return t0, n


def _alpha_table(tf: TransferFunction, step: float) -> torch.Tensor:
    """Per-step alpha of each bin, ``1 - exp(-σ step)`` (interpolated between bins)."""
    return -torch.expm1(-tf.opacity * step)


def _tile_order(h: int, w: int, tile: int = 8) -> torch.Tensor:
    """Pixel indices ordered by ``tile`` x ``tile`` blocks (neighbouring rays share cache)."""
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    key = ((rows // tile) * ((w + tile - 1) // tile) + cols // tile) * tile * tile
    key = key + (rows % tile) * tile + cols % tile
    return torch.argsort(key.reshape(-1))


def _sample_torch(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples (zero outside) of ``volume`` at index points ``(..., 3)`` (x, y, z)."""
    nz, ny, nx = volume.shape
    scale = torch.tensor([nx - 1, ny - 1, nz - 1], dtype=points.dtype, device=points.device)
    grid = 2 * points / scale.clamp(min=1) - 1
    out = torch.nn.functional.grid_sample(
        volume[None, None],
        grid.reshape(1, 1, 1, -1, 3).to(volume.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out.reshape(points.shape[:-1])


def _march_torch(volume, tf, origins, dirs, t0, n, *, threshold, step, min_transmittance, mip):
    """Torch twin of the Taichi kernel: ``(n_rays, 4)`` in the volume's dtype."""
    n_max = int(n.max()) if n.numel() else 0
    out = []
    chunk = max(1, 2**22 // max(n_max, 1))
    for r0 in range(0, origins.shape[0], chunk):
        o, d = origins[r0 : r0 + chunk], dirs[r0 : r0 + chunk]
        k = torch.arange(n_max, dtype=o.dtype, device=o.device)
        t = t0[r0 : r0 + chunk, None] + (k[None, :] + 0.5) * step
        inside = k[None, :] < n[r0 : r0 + chunk, None]
        v = _sample_torch(volume, o[:, None, :] + t[..., None] * d[:, None, :])
        if mip:
            peak = torch.where(inside, v, torch.full_like(v, -3.0e38)).amax(dim=1)
            peak = torch.where(n[r0 : r0 + chunk] > 0, peak, torch.zeros_like(peak))
            out.append(torch.stack([peak, peak, peak, torch.ones_like(peak)], dim=1))
            continue
        nb = tf.opacity.numel()
        lo, hi = tf.value_range
        u = ((v - lo) * ((nb - 1) / (hi - lo))).clamp(0, nb - 1)
        i0 = u.detach().floor().long().clamp(max=nb - 2)
        f = u - i0
        alpha_t = _alpha_table(tf, step).to(v.dtype)
        col_t = tf.color.to(v.dtype)
        alpha = (1 - f) * alpha_t[i0] + f * alpha_t[i0 + 1]
        colour = (1 - f)[..., None] * col_t[i0] + f[..., None] * col_t[i0 + 1]
        alpha = alpha * (inside & (v >= threshold))
        survive = torch.cumprod(1 - alpha, dim=1)
        trans = torch.cat([torch.ones_like(survive[:, :1]), survive[:, :-1]], dim=1)
        alpha = alpha * (trans.detach() >= min_transmittance)  # early ray termination
        survive = torch.cumprod(1 - alpha, dim=1)
        trans = torch.cat([torch.ones_like(survive[:, :1]), survive[:, :-1]], dim=1)
        weight = trans * alpha
        rgb = (weight[..., None] * colour).sum(dim=1)
        out.append(torch.cat([rgb, (1 - survive[:, -1:])], dim=1))
    return torch.cat(out, dim=0)


def render(
    volume: torch.Tensor,
    camera: Camera,
    transfer: TransferFunction | None = None,
    *,
    mode: str = "emission-absorption",
    threshold: float = -math.inf,
    step_voxels: float = 1.0,
    min_transmittance: float = 1e-3,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
) -> torch.Tensor:
    """Render ``volume`` ``(nz, ny, nx)`` seen by ``camera``.

    Parameters
    ----------
    transfer
        Transfer function (required for emission-absorption).
    mode
        ``"emission-absorption"`` or ``"mip"`` (maximum-intensity projection).
    threshold
        Samples below this value are transparent [volume unit].
    step_voxels
        Sampling distance along a ray [voxels].
    min_transmittance
        Early ray termination: stop once the transmittance falls below this.
    background
        RGB behind the volume (emission-absorption only).
    backend
        ``"auto"`` (Taichi, forward and adjoint kernels, unless a float64 gradient is needed
        or Taichi cannot run on the volume's device), ``"taichi"`` or ``"torch"`` (the twin).

    Returns
    -------
    torch.Tensor
        ``(h, w, 4)``: RGB composited over ``background`` and the accumulated opacity;
        MIP: the maximum in the three colour channels and 1. On the volume's device.
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim != 3:
        raise ValueError(
            f"volume must be a (nz, ny, nx) tensor, got {getattr(volume, 'shape', volume)}"
        )
    if min(volume.shape) < 2:
        raise ValueError(
            f"volume must be at least 2 voxels along each axis, got {tuple(volume.shape)}"
        )
    if not volume.is_floating_point():
        raise TypeError(f"volume must be floating point, got {volume.dtype}")
    require_float_dtype("volume", volume)
    if isinstance(transfer, TransferFunction):
        require_same_device("transfer.opacity", transfer.opacity, "volume", volume)
        require_same_device("transfer.color", transfer.color, "volume", volume)
    if not bool(torch.isfinite(volume.detach()).all()):
        raise ValueError("volume must be finite, got NaN or infinite voxels")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "emission-absorption" and transfer is None:
        raise ValueError("transfer must be a TransferFunction for emission-absorption rendering")
    require_positive("step_voxels", step_voxels, "voxels")
    if not 0 <= min_transmittance < 1:
        raise ValueError(f"min_transmittance must lie in [0, 1), got {min_transmittance}")
    if backend not in ("auto", "taichi", "torch"):
        raise ValueError(f"backend must be 'auto', 'taichi' or 'torch', got {backend!r}")
    origins, dirs = camera.rays(volume.shape, device=volume.device)
    t0, n = _box_entry(origins, dirs, volume.shape, step_voxels)
    mip = mode == "mip"
    needs_grad = torch.is_grad_enabled() and (
        volume.requires_grad
        or (
            transfer is not None
            and (transfer.opacity.requires_grad or transfer.color.requires_grad)
        )
    )
    # Taichi computes in float32: float64 gradients come from the torch twin
    use_taichi = backend == "taichi" or (
        backend == "auto" and not (needs_grad and volume.dtype == torch.float64)
    )
    if use_taichi:
        from tem_core._taichi import taichi_device_matches

        if not taichi_device_matches(volume):
            if backend == "taichi":
                raise ValueError(f"backend='taichi' cannot run on {volume.device} in this process")
            use_taichi = False
    if use_taichi:
        from tem_core._render_kernels import march_taichi

        tf = transfer or transfer_function((0.0, 1.0), n_bins=2)
        lo, hi = tf.value_range
        order = _tile_order(*camera.image_shape).to(volume.device)
        tiled = march_taichi(
            volume,
            _alpha_table(tf, step_voxels),
            tf.color,
            origins[order],
            dirs[order],
            t0[order],
            n[order],
            vmin=lo,
            bins_per_value=(tf.opacity.numel() - 1) / (hi - lo),
            threshold=max(threshold, -3.0e38),
            step=step_voxels,
            min_transmittance=min_transmittance,
            mip=mip,
        )
        rgba = tiled[torch.argsort(order)].to(volume.dtype)
    else:
        o, d, t = origins.to(volume.dtype), dirs.to(volume.dtype), t0.to(volume.dtype)
        rgba = _march_torch(
            volume,
            transfer,
            o,
            d,
            t,
            n,
            threshold=threshold,
            step=step_voxels,
            min_transmittance=min_transmittance,
            mip=mip,
        )
    h, w = camera.image_shape
    rgba = rgba.reshape(h, w, 4)
    if not mip:
        bg = torch.tensor(background, dtype=rgba.dtype, device=rgba.device)
        rgba = torch.cat([rgba[..., :3] + (1 - rgba[..., 3:]) * bg, rgba[..., 3:]], dim=-1)
    return rgba


def orthoslices(volume: torch.Tensor, index: tuple[int, int, int] | None = None):
    """The three central (or ``index = (z, y, x)``) slices: ``(xy at z, xz at y, zy at x)``.

    Returns ``(volume[z], volume[:, y], volume[:, :, x].T)`` so that each is displayed with
    the shared axis matching: xy ``(ny, nx)``, xz ``(nz, nx)``, zy ``(ny, nz)``.
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim != 3:
        raise ValueError(
            f"volume must be a (nz, ny, nx) tensor, got {getattr(volume, 'shape', volume)}"
        )
    nz, ny, nx = volume.shape
    z, y, x = index if index is not None else (nz // 2, ny // 2, nx // 2)
    for name, i, n in (("z", z, nz), ("y", y, ny), ("x", x, nx)):
        if not 0 <= int(i) < n:
            raise ValueError(f"index {name} must lie in [0, {n}), got {i}")
    return volume[z], volume[:, y], volume[:, :, x].T
