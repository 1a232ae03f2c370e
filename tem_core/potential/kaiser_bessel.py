"""Kaiser-Bessel interpolation of an oversampled 3-D Fourier grid (NUFFT-style gridding).

:mod:`tem_core.potential.maps` reads a particle map's 3-D Fourier transform on the plane of
each projection (Fourier slice theorem). The map is divided by the kernel's transform
(:func:`kb_transform`) before its zero-padded FFT, so that interpolating the grid with the
kernel (:func:`kb_interpolate`, ``KB_WIDTH`` taps per axis) returns the map's transform up to
the kernel's leakage (Beatty, Nishimura & Pauly 2005, IEEE Trans. Med. Imaging 24:799;
measured: 8e-4 of the mean with 4 taps, 1e-5 with 6).

:func:`kb_interpolate` is the torch reference; :func:`kb_gather` runs the same sums in one
Taichi kernel (:class:`KBGatherFunction`: per point the ``3 × KB_WIDTH`` weights from the
same table, then the ``KB_WIDTH³`` taps, x first, then y, then z, nothing of size
``P × KB_WIDTH³`` written to memory), with the adjoint (spreading onto the grid) as its
backward; equal to the reference within rounding (tested).
"""

from __future__ import annotations

import math

import torch

#: Zero-padding factor of the map before its 3-D FFT (oversampling of the Fourier grid).
MAP_PADDING = 2
#: Taps per axis of the Kaiser-Bessel kernel that interpolates the Fourier grid (NUFFT-style
#: gridding: the map is divided by the kernel's transform before the FFT).
KB_WIDTH = 4


def _kb_beta() -> float:
    # Beatty, Nishimura & Pauly 2005 (IEEE TMI 24:799), oversampling MAP_PADDING
    sigma, w = MAP_PADDING, KB_WIDTH
    return math.pi * math.sqrt((w / sigma) ** 2 * (sigma - 0.5) ** 2 - 0.8)


def _kb_kernel(t: torch.Tensor) -> torch.Tensor:
    """Kaiser-Bessel kernel ``I0(β √(1 − (2t/W)²))`` at offsets ``t`` [grid steps], 0 outside."""
    w = KB_WIDTH
    arg = (1.0 - (2.0 * t / w) ** 2).clamp_min(0.0)
    return torch.where(t.abs() <= w / 2, torch.special.i0(_kb_beta() * arg.sqrt()), 0.0)


def kb_transform(xi: torch.Tensor) -> torch.Tensor:
    """Fourier transform of :func:`_kb_kernel` at ``xi`` [cycles per grid step], float64."""
    w, beta = KB_WIDTH, _kb_beta()
    a = beta**2 - (math.pi * w * xi) ** 2
    root = a.abs().sqrt().clamp_min(1e-12)
    return w * torch.where(a >= 0, torch.sinh(root) / root, torch.sin(root) / root)


_KB_TABLE: dict[tuple, torch.Tensor] = {}
_KB_TABLE_STEPS = 4096  # samples per grid step: linear table error < 1e-7 of the peak


def _kb_table(dtype, device) -> torch.Tensor:
    key = (dtype, str(device), KB_WIDTH, MAP_PADDING)
    if key not in _KB_TABLE:
        t = torch.arange(KB_WIDTH // 2 * _KB_TABLE_STEPS + 2, dtype=torch.float64)
        _KB_TABLE[key] = _kb_kernel(t / _KB_TABLE_STEPS).to(device=device, dtype=dtype)
    return _KB_TABLE[key]


def kb_interpolate(flat: torch.Tensor, big: int, coords) -> torch.Tensor:
    """Kaiser-Bessel interpolation of the periodic ``(big,)*3`` grid at fractional indices
    ``coords = [iz, iy, ix]`` (float64, ``(P,)``); ``flat`` holds the grid with its first
    ``KB_WIDTH - 1`` x columns repeated at the end, so each x run of taps is contiguous."""
    w = KB_WIDTH
    start, weight = _kb_taps(big, coords, _kb_table(flat.real.dtype, flat.device))
    windows = torch.as_strided(flat, (flat.numel() - w + 1, w), (1, 1))
    values = windows.index_select(0, start.reshape(-1)).reshape(-1, w, w, w)  # (P, z, y, x)
    values = torch.einsum("pzyx,px->pzy", values, weight[2].to(values.dtype))
    values = torch.einsum("pzy,py->pz", values, weight[1].to(values.dtype))
    return torch.einsum("pz,pz->p", values, weight[0].to(values.dtype))


def _kb_taps(big: int, coords, table: torch.Tensor):
    """The taps of :func:`kb_interpolate` and of :class:`KBGatherFunction`'s adjoint: per
    point the flat index of the first x tap of each (z, y) row, ``(P, W, W)`` (periodic,
    rows of ``big + KB_WIDTH - 1``), and per axis ``[z, y, x]`` the ``(P, W)`` weights
    read from ``table``."""
    w = KB_WIDTH
    row = big + w - 1
    taps = torch.arange(w, device=coords[0].device)
    index, weight = [], []
    for c in coords:
        first = torch.floor(c).long() - (w // 2 - 1)
        pos = first[:, None] + taps[None, :]  # (P, W)
        offset = ((c[:, None] - pos).abs() * _KB_TABLE_STEPS).round().long()
        weight.append(table[offset.clamp_max(table.numel() - 1)])
        index.append(pos % big)
    start = (index[0][:, :, None] * big + index[1][:, None, :]) * row + index[2][:, None, :1]
    return start, weight


class KBGatherFunction(torch.autograd.Function):
    """:func:`kb_interpolate` by one Taichi kernel (CPU or CUDA, Taichi's arch).

    Differentiable wrt ``flat`` (the adjoint: each point's gradient spread onto its
    ``KB_WIDTH³`` taps with the same weights); the coordinates are constants (the poses of
    :mod:`tem_core.potential.maps` are detached): asking for their gradient raises.
    """

    @staticmethod
    def forward(ctx, flat, big: int, *coords):  # noqa: D102
        if any(c.requires_grad for c in coords):
            raise ValueError("coords of kb_gather must not require grad (constants)")
        from tem_core.potential.map_kernels import gather_kernel

        real = torch.view_as_real(flat.detach().contiguous())
        dtype = real.dtype
        table = _kb_table(dtype, flat.device)
        points = torch.stack([c.detach().to(torch.float64) for c in coords], dim=1).contiguous()
        out = torch.empty((points.shape[0], 2), dtype=dtype, device=flat.device)
        if points.shape[0]:
            gather_kernel(dtype)(real.view(-1), points, table, out, int(big),
                                  float(_KB_TABLE_STEPS), int(table.numel() - 1))  # fmt: skip
        ctx.big, ctx.size = int(big), flat.numel()
        ctx.save_for_backward(*[c.detach() for c in coords])
        return torch.view_as_complex(out)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        coords = ctx.saved_tensors
        start, weight = _kb_taps(ctx.big, coords, _kb_table(grad.real.dtype, grad.device))
        taps = torch.arange(KB_WIDTH, device=grad.device)
        where = (start[:, :, :, None] + taps).reshape(-1)  # (P, z, y, x) flat indices
        spread = (weight[0][:, :, None, None] * weight[1][:, None, :, None]
                  * weight[2][:, None, None, :])  # fmt: skip
        values = (grad[:, None, None, None] * spread.to(grad.dtype)).reshape(-1)
        out = torch.zeros(ctx.size, dtype=grad.dtype, device=grad.device)
        out.index_add_(0, where, values)
        return (out, None, *[None] * len(coords))


def kb_gather(flat: torch.Tensor, big: int, coords, use_taichi: bool = True) -> torch.Tensor:
    """:func:`kb_interpolate` (same arguments), by :class:`KBGatherFunction` when
    ``use_taichi`` (one fused Taichi kernel), else by the torch reference."""
    if not use_taichi:
        return kb_interpolate(flat, big, coords)
    return KBGatherFunction.apply(flat, int(big), *coords)
