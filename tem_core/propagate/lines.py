"""Slices constant along one axis (ice of a slab tilted about x or y, outside the atoms):
found cheaply, transmitted and band-limited on one line, and the wave stepped through them
one line at a time (private helpers of :func:`tem_core.propagate.multislice`).

Why the steps separate (:class:`LineWave`)
------------------------------------------
For a transmission function ``t(y)`` constant along x, the multislice step
``ψ' = F⁻¹[P A F[ψ t]]`` commutes with the transform along x: with ``Ψ(kx, y)`` the
(unnormalised) transform of ``ψ`` along x, ``Ψ'(kx, ·) = F_y⁻¹[P(kx, ·) A(kx, ·) F_y[Ψ(kx, ·)
t]]``: each x frequency steps on its own, through 1-D transforms along y. So a run of such
slices keeps the wave as ``Ψ``: one transform along x into it and one back out of it, and per
slice one pair of 1-D transforms along y, on the x frequencies the aperture ``A`` keeps only
(about 2/3 of them at the default band limit: every other column is zeroed by the first step
and stays zero). Per step that is a third of the 2-D pair. Before the first slice with atoms
a plane wave has the single frequency ``kx = 0``: the slices there cost one line each. The
same arithmetic in another order: equal to the 2-D steps within rounding (tested in float64).
"""

from __future__ import annotations

import torch


def constant_axis(potential: torch.Tensor) -> int | None:
    """The axis (-1: along x, -2: along y) along which a slice is constant, else ``None``.

    Ice-only slices of a slab tilted about x (or y) vary along one axis only; their
    transmission function and its band limit are then computed on one line, exactly (the
    2-D transform of a function of y alone lives on the kx = 0 column). Only without
    autograd: a slice that merely happens to be constant could still carry different
    gradients along the constant axis. On devices other than the CPU only a broadcast view
    (stride 0, as :func:`tem_core.potential.iter_slice_potentials` yields for plain ice) is
    recognised: checking the values would wait for the device at every slice.
    """
    if potential.ndim != 2 or (torch.is_grad_enabled() and potential.requires_grad):
        return None
    if potential.stride(-1) == 0:  # a broadcast view of one column
        return -1
    if potential.stride(-2) == 0:
        return -2
    if potential.device.type != "cpu":
        return None
    # a few rows / columns first: a slice with atoms fails here at ~1 % of the full check
    ny, nx = potential.shape
    rows, cols = potential[:: max(1, ny // 8)], potential[:, :: max(1, nx // 8)]
    if bool((rows == rows[:, :1]).all()) and bool((potential == potential[:, :1]).all()):
        return -1
    if bool((cols == cols[:1, :]).all()) and bool((potential == potential[:1, :]).all()):
        return -2
    return None


def one_line(potential: torch.Tensor, axis: int) -> torch.Tensor:
    return potential[:, :1] if axis == -1 else potential[:1, :]


def bandlimit_line(t: torch.Tensor, mask: torch.Tensor | None, axis: int) -> torch.Tensor:
    """``F⁻¹[mask · F[t]]`` for ``t`` constant along ``axis`` (given as one line)."""
    if mask is None:
        return t
    dim = -2 if axis == -1 else -1  # t(y): its transform lives on the kx = 0 column
    line = mask[:, :1] if axis == -1 else mask[:1, :]
    # unnormalised transforms scaled by hand, as tem_core._fft does for 2-D
    spectrum = torch.fft.fft(t, dim=dim, norm="backward") * line
    return torch.fft.ifft(spectrum, dim=dim, norm="forward") / t.shape[dim]


def _times(fresh: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``fresh * factor``, in place unless autograd needs ``fresh`` (a differentiable factor)."""
    if factor.requires_grad and torch.is_grad_enabled():
        return fresh * factor
    return fresh.mul_(factor)


class LineWave:
    """A wave ``(..., ny, nx)`` held as its transform along the slices' constant ``axis``:
    ``data[..., j, :]`` is the line of frequency ``index[j]`` (the others are zero), along the
    axis the slices vary on. Steps through slices constant along ``axis`` (module docstring).

    Make one with :meth:`plane` (unit plane wave) or :meth:`of` (any wave); :meth:`wave`
    returns the wave on the grid. Pure torch: autograd follows the wave and the propagator.
    """

    def __init__(self, data, index, axis: int, shape, *, plane: bool = False) -> None:
        self.data, self.index, self.axis, self.shape = data, index, axis, tuple(shape)
        self._plane = plane  # the frequency 0 only: the wave is constant along axis
        self._rows_for: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    @property
    def _length(self) -> int:
        """Number of points along the constant axis."""
        return self.shape[1] if self.axis == -1 else self.shape[0]

    @classmethod
    def plane(cls, shape, axis: int, *, dtype: torch.dtype, device) -> LineWave:
        """The unit plane wave: the single frequency 0, of value ``n`` (unnormalised)."""
        ny, nx = shape
        n, line = (nx, ny) if axis == -1 else (ny, nx)
        data = torch.full((1, line), float(n), dtype=dtype, device=device)
        index = torch.zeros(1, dtype=torch.long, device=device)
        return cls(data, index, axis, shape, plane=True)

    @classmethod
    def of(cls, wave: torch.Tensor, axis: int, propagator: torch.Tensor) -> LineWave:
        """``wave`` transformed along ``axis``, keeping the frequencies where ``propagator``
        (its aperture) is not zero everywhere: the next step zeroes the others."""
        dim_line = -2 if axis == -1 else -1
        keep = (propagator != 0).any(dim=dim_line).nonzero().reshape(-1)
        spectrum = torch.fft.fft(wave, dim=axis, norm="backward").index_select(axis, keep)
        if axis == -1:
            spectrum = spectrum.transpose(-1, -2)
        return cls(spectrum.contiguous(), keep, axis, wave.shape[-2:])

    def _rows_of(self, propagator: torch.Tensor) -> torch.Tensor:
        """``propagator / n_line`` on the kept frequencies, one row each (cached)."""
        if self._rows_for is not propagator:
            rows = propagator.index_select(self.axis, self.index)
            if self.axis == -1:
                rows = rows.transpose(-1, -2)
            self._rows = (rows * (1.0 / rows.shape[-1])).contiguous()  # row-major, as data
            self._rows_for = propagator
        return self._rows

    def step(self, transmission: torch.Tensor, propagator: torch.Tensor) -> None:
        """Transmit through the line ``transmission`` (band-limited, ``(ny, 1)`` for
        ``axis=-1``, ``(1, nx)`` for ``axis=-2``), then propagate with ``propagator``
        ``(ny, nx)`` (unscaled, aperture included)."""
        product = self.data * transmission.reshape(-1)
        spectrum = _times(torch.fft.fft(product, dim=-1, norm="backward"),
                          self._rows_of(propagator))  # fmt: skip
        self.data = torch.fft.ifft(spectrum, dim=-1, norm="forward")  # unnormalised

    def wave(self) -> torch.Tensor:
        """The wave on the grid, ``(..., ny, nx)`` (an inverse transform along ``axis``)."""
        data = self.data if self.axis == -2 else self.data.transpose(-1, -2)
        n = self._length
        if self._plane:  # constant along axis
            return (data * (1.0 / n)).expand(*data.shape[:-2], *self.shape).contiguous()
        full = list(data.shape)
        full[self.axis] = n
        spectrum = data.new_zeros(full).index_copy(self.axis, self.index, data)
        return torch.fft.ifft(spectrum, dim=self.axis, norm="forward") * (1.0 / n)
