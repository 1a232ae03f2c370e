"""2-D FFTs with the normalisation applied by hand.

torch 2.13's CPU FFT (pocketfft path, 2 threads) scales the result of a *normalised*
2-D transform of a 2048 x 2048 complex64 array wrongly: ``torch.fft.ifft2`` comes back
1/N² too small, and ``norm="ortho"`` is off as well (pytorch/pytorch#169670; seen on the
2-core machines this project is tested on, any other shape and complex128 are fine).
The unnormalised transforms are correct, so every transform in ``tem_core`` goes through
these wrappers, which call torch without normalisation and scale afterwards. The cost is
one elementwise multiply; the results and gradients are those of ``torch.fft``.
``tests/test_fft.py`` guards the workaround at the affected shape.
"""

from __future__ import annotations

import math

import torch

_NORMS = ("backward", "ortho", "forward")


def _scale(x: torch.Tensor, norm: str, *, inverse: bool) -> float:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    n = x.shape[-1] * x.shape[-2]
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    # "backward": the inverse carries 1/n; "forward": the forward transform does.
    return 1.0 / n if (norm == "backward") == inverse else 1.0


def fft2(x: torch.Tensor, *, norm: str = "backward") -> torch.Tensor:
    """Forward 2-D FFT over the last two axes; same result as ``torch.fft.fft2(x, norm=norm)``."""
    scale = _scale(x, norm, inverse=False)
    y = torch.fft.fft2(x, norm="backward")  # unnormalised forward transform
    return y if scale == 1.0 else y * scale


def ifft2(x: torch.Tensor, *, norm: str = "backward") -> torch.Tensor:
    """Inverse 2-D FFT over the last two axes; same result as ``torch.fft.ifft2(x, norm=norm)``."""
    scale = _scale(x, norm, inverse=True)
    y = torch.fft.ifft2(x, norm="forward")  # unnormalised inverse transform
    if scale == 1.0:
        return y
    return y * scale if y.requires_grad else y.mul_(scale)  # same values; in place: one grid
