"""Slices constant along one axis (ice of a slab tilted about x or y, outside the atoms):
found cheaply, transmitted and band-limited on one line (private helpers of
:func:`tem_core.propagate.multislice`)."""

from __future__ import annotations

import torch


def constant_axis(potential: torch.Tensor) -> int | None:
    """The axis (-1: along x, -2: along y) along which a slice is constant, else ``None``.

    Ice-only slices of a slab tilted about x (or y) vary along one axis only; their
    transmission function and its band limit are then computed on one line, exactly (the
    2-D transform of a function of y alone lives on the kx = 0 column). Only without
    autograd: a slice that merely happens to be constant could still carry different
    gradients along the constant axis.
    """
    if potential.ndim != 2 or (torch.is_grad_enabled() and potential.requires_grad):
        return None
    if potential.stride(-1) == 0:  # a broadcast view of one column
        return -1
    if potential.stride(-2) == 0:
        return -2
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
