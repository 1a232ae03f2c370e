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

    One per :func:`~tem_core.propagate.multislice` call: :meth:`plane` (unit plane wave) or
    :meth:`of` (any wave) starts a run of line slices, :meth:`step` steps it, :meth:`wave`
    ends it and returns the wave on the grid; the kept frequencies and the propagator's rows
    are cached between runs. Pure torch: autograd follows the wave and the propagator.
    """

    def __init__(self, shape) -> None:
        self.shape = tuple(shape)
        self.data: torch.Tensor | None = None  # None: no run in progress
        self.axis = -1
        self._plane = False  # the frequency 0 only: the wave is constant along axis
        self._keep: dict[int, torch.Tensor] = {}
        self._rows_for: torch.Tensor | None = None
        self._rows_mode: tuple | None = None
        self._rows: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return self.data is not None

    def _length(self, axis: int) -> int:
        """Number of points along the constant axis."""
        return self.shape[1] if axis == -1 else self.shape[0]

    def plane(self, axis: int, *, dtype: torch.dtype, device) -> None:
        """Start with the unit plane wave: the single frequency 0, of value ``n``
        (unnormalised transform)."""
        ny, nx = self.shape
        line = ny if axis == -1 else nx
        self.data = torch.full((1, line), float(self._length(axis)), dtype=dtype, device=device)
        self.axis, self._plane, self.index = axis, True, None

    def of(self, wave: torch.Tensor, axis: int, propagator: torch.Tensor) -> None:
        """Start with ``wave`` transformed along ``axis``, keeping the frequencies where
        ``propagator`` (its aperture; the same in every step of a call) is not zero
        everywhere: the next step zeroes the others."""
        if axis not in self._keep:
            dim_line = -2 if axis == -1 else -1
            self._keep[axis] = (propagator != 0).any(dim=dim_line).nonzero().reshape(-1)
        keep = self._keep[axis]
        spectrum = torch.fft.fft(wave, dim=axis, norm="backward")
        if axis == -1:  # frequencies as rows: a transposed copy, then whole rows
            spectrum = spectrum.transpose(-1, -2).contiguous()
        self.data = spectrum.index_select(-2, keep)
        self.axis, self._plane, self.index = axis, False, keep

    def _rows_of(self, propagator: torch.Tensor) -> torch.Tensor:
        """``propagator / n_line`` on the kept frequencies, one row each (cached)."""
        mode = (self.axis, self._plane)
        if self._rows_for is not propagator or self._rows_mode != mode:
            rows = propagator if self.axis == -2 else propagator.transpose(-1, -2)
            rows = rows[:1] if self._plane else rows.index_select(-2, self.index)
            self._rows = (rows * (1.0 / rows.shape[-1])).contiguous()  # row-major, as data
            self._rows_for, self._rows_mode = propagator, mode
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
        """End the run: the wave on the grid, ``(..., ny, nx)`` (an inverse transform along
        ``axis``)."""
        data, axis, self.data = self.data, self.axis, None
        n = self._length(axis)
        if self._plane:  # constant along axis
            line = data * (1.0 / n)
            line = line if axis == -2 else line.transpose(-1, -2)
            return line.expand(*line.shape[:-2], *self.shape).contiguous()
        full = list(data.shape)
        full[-2] = n  # frequencies as rows, as data
        spectrum = data.new_zeros(full).index_copy(-2, self.index, data)
        wave = torch.fft.ifft(spectrum, dim=-2, norm="forward")  # unnormalised, scaled here
        wave = wave * (1.0 / n) if wave.requires_grad else wave.mul_(1.0 / n)
        return wave if axis == -2 else wave.transpose(-1, -2).contiguous()
