"""Camera MTF: parametric (TEM-simulator's generalised Lorentzians), tabulated, applied."""

from __future__ import annotations

import torch

from tem_core import memory
from tem_core._autodiff import autograd_follows
from tem_core._fft import fft2, ifft2
from tem_core.detector.params import Scalar, _as_tensor, _check_mtf_params
from tem_core.detector.tables import _interp_table, load_mtf_table
from tem_core.interop import accepts_arrays


def _lorentzian(omega2: torch.Tensor, width: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """TEM-simulator's generalised Lorentzian 2^p·y^(−p)/(2 + (2^p − 2)·y^(−p)), y = 1 + width·ω².

    Equals ``1/y`` for ``p = 1`` and 1 at ω = 0 for every ``p``.
    """
    z = torch.exp(-power * torch.log1p(width * omega2))  # y^(-p)
    two_p = torch.exp2(power)
    return two_p * z / (2.0 + (two_p - 2.0) * z)


def mtf_parametric(
    frequency_cycles_per_px: torch.Tensor,
    *,
    a: Scalar,
    b: Scalar,
    c: Scalar,
    alpha: Scalar,
    beta: Scalar,
    p: Scalar = 1.0,
    q: Scalar = 1.0,
) -> torch.Tensor:
    """TEM-simulator's parametric MTF.

    ``MTF(ω) = (a·L_p(αω²) + b·L_q(βω²) + c) / (a + b + c)`` with the generalised Lorentzian
    ``L_p = 2^p·y^(−p) / (2 + (2^p − 2)·y^(−p))``, ``y = 1 + αω²``; ``p = q = 1`` gives the
    plain form ``a/(1 + αω²) + b/(1 + βω²) + c``. ``MTF(0) = 1``; for ``a, b, c, α, β ≥ 0``
    and ``p, q > 0`` it decreases monotonically towards ``c/(a + b + c)``.
    Defaults of TEM-simulator's examples, ``a, b, c, α, β = 0.7, 0.2, 0.1, 10, 40``, give
    0.8285 / 0.5879 / 0.3182 at ω = 0.125 / 0.25 / 0.5.

    Parameters
    ----------
    frequency_cycles_per_px
        Spatial frequency ω (any shape; radial frequency for images) [cycles/pixel].
    a, b, c
        Weights of the two Lorentzians and of the constant term (≥ 0, ``a + b + c > 0``).
    alpha, beta
        Widths of the Lorentzians (≥ 0) [pixel²].
    p, q
        Shape exponents of the two Lorentzians (> 0).

    Every parameter is a float or a tensor (broadcast against the frequencies; differentiable).
    """
    _check_mtf_params(a, b, c, alpha, beta, p, q)
    return _mtf_of_omega2(frequency_cycles_per_px**2, (a, b, c, alpha, beta, p, q))


def _mtf_of_omega2(omega2: torch.Tensor, params: tuple) -> torch.Tensor:
    """:func:`mtf_parametric` of ``ω²``, which it owns: without a graph the MTF is built in
    place in ``ω²``'s two Lorentzians (4 grids at the peak with ``ω²`` instead of 7; the
    same values, op for op). ``params``: ``(a, b, c, alpha, beta, p, q)``, checked."""
    a_, b_, c_, alpha_, beta_, p_, q_ = (_as_tensor(v, omega2) for v in params)
    if autograd_follows(omega2, *params):
        mtf = a_ * _lorentzian(omega2, alpha_, p_) + b_ * _lorentzian(omega2, beta_, q_) + c_
        return mtf / (a_ + b_ + c_)
    mtf = _lorentzian_in_place(omega2, alpha_, p_).mul_(a_)
    mtf.add_(_lorentzian_in_place(omega2, beta_, q_).mul_(b_))
    return mtf.add_(c_).div_(a_ + b_ + c_)


def _lorentzian_in_place(
    omega2: torch.Tensor, width: torch.Tensor, power: torch.Tensor
) -> torch.Tensor:
    """:func:`_lorentzian` with one temporary (no graph): the same ops on the same values."""
    z = torch.mul(width, omega2).log1p_().mul_(-power).exp_()  # y^(-p)
    two_p = torch.exp2(power)
    out = torch.mul(two_p, z)
    return out.div_(z.mul_(two_p - 2.0).add_(2.0))


def mtf_tabulated(frequency_cycles_per_px: torch.Tensor, *, camera: str) -> torch.Tensor:
    """Published MTF of ``camera`` at the given frequencies, by linear interpolation.

    ``MTF(0) = 1``. The MTF is even, so ``|ω|`` is used. Beyond the last tabulated
    frequency (0.5 cycles/pixel, or 0.492 for the Falcon tables) the last value is
    continued: the corners of a 2-D grid (radial frequency up to 0.707) get the Nyquist value.

    Parameters
    ----------
    frequency_cycles_per_px
        Frequencies (any shape, floating) [cycles/pixel]; the result follows its device
        and dtype.
    camera
        One of :func:`available_cameras`.
    """
    freq, mtf = load_mtf_table(camera)
    if not isinstance(frequency_cycles_per_px, torch.Tensor):
        raise TypeError("frequency_cycles_per_px must be a torch.Tensor")
    x = frequency_cycles_per_px
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    return _interp_table(x.abs(), freq, mtf)


@accepts_arrays
def apply_mtf(image: torch.Tensor, mtf: torch.Tensor) -> torch.Tensor:
    """Filter ``image`` with a real transfer function: ``real(ifft2(fft2(image) · mtf))``.

    Parameters
    ----------
    image
        ``(..., ny, nx)`` real image (batch dimensions allowed).
    mtf
        ``(ny, nx)`` (or broadcastable) transfer function in FFT order, e.g. from
        :func:`mtf_parametric` applied to :func:`radial_frequency_cycles_per_px`.
    """
    if image.ndim < 2:
        raise ValueError(
            f"image must have at least 2 dimensions (..., ny, nx), got {tuple(image.shape)}"
        )
    if tuple(mtf.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(
            f"mtf shape {tuple(mtf.shape)} does not match the image's last two dimensions "
            f"{tuple(image.shape[-2:])}"
        )
    spectrum = fft2(image) * mtf
    memory.release_in_backward(spectrum)  # heap pages back between the transforms' backward
    return ifft2(spectrum).real


def apply_radial_mtf(image: torch.Tensor, mtf: torch.Tensor) -> torch.Tensor:
    """:func:`apply_mtf` for an even transfer function (``MTF(−ω) = MTF(ω)``, as every radial
    MTF of :class:`tem_core.detector.Detector`): the product of a real image's Hermitian
    spectrum with an even real filter is Hermitian, so the half-spectrum transforms
    (``rfft2``, ``irfft2``) give the same image, within rounding, for half the work. Shapes
    as :func:`apply_mtf` (checked there); normalised by hand (see :mod:`tem_core._fft`)."""
    if image.is_complex() or tuple(mtf.shape[-2:]) != tuple(image.shape[-2:]):
        return apply_mtf(image, mtf)  # (raises on a shape mismatch)
    ny, nx = image.shape[-2:]
    spectrum = torch.fft.rfft2(image) * mtf[..., : nx // 2 + 1]
    memory.release_in_backward(spectrum)
    out = torch.fft.irfft2(spectrum, s=(ny, nx), norm="forward")  # unnormalised inverse
    return out * (1.0 / (ny * nx)) if out.requires_grad else out.mul_(1.0 / (ny * nx))
