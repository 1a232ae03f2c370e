"""The CTF built in place when no parameter needs a graph (helper of :mod:`tem_core.optics`).

:func:`tem_core.optics.ctf` evaluates χ, its gradient and the envelopes as expressions on
``(ny, nx)`` grids: about 40 temporary grids in sequence, up to 10 alive at once. In a plain
Python process glibc serves grids under 32 MB from its heap, and torch asks for each with
``posix_memalign``, which takes 80 bytes more than the grid: the hole a freed grid leaves
never fits the next grid of the same size, so each temporary can extend the heap (a 1024²
float64 CTF raised the resident set by 13 grids where 7 were alive). Here the same
operations, on the same values in the same order, run in place on 6 grids
(:data:`tem_core.memory.CTF_REAL_GRIDS`): the result is bitwise that of the expressions.
Used only for scalar parameters (one CTF) that do not require grad.
"""

from __future__ import annotations

import math

import torch

from tem_core._autodiff import autograd_follows


def lean_applies(params: tuple, values: dict, focal_spread_a) -> bool:
    """Whether :func:`lean_ctf` computes the CTF: one CTF (every parameter one value) and no
    parameter that requires grad."""
    if autograd_follows(*params, focal_spread_a):
        return False
    if isinstance(focal_spread_a, torch.Tensor) and focal_spread_a.ndim:
        return False
    return all(v.numel() == 1 and v.ndim <= 2 for v in values.values())


def lean_ctf(kx, ky, *, microscope, params: dict, alpha, pixel_k_per_a: float):
    """``exp(−iχ) · E_t · E_s · aperture`` as :func:`tem_core.optics._ctf` computes it.

    ``kx`` ``(1, nx)`` and ``ky`` ``(ny, 1)`` [1/Å]; ``params``: the aberrations as tensors
    of one element (``defocus_a``, ``astigmatism_a``, ``astigmatism_angle_rad``, ``cs_a``,
    ``phase_plate_rad``, from ``optics._param``); ``alpha``: the illumination semi-angle
    [rad], the same; ``pixel_k_per_a``: the aperture edge's width [1/Å].
    """
    lam = microscope.wavelength_a
    defocus, astig, cs = params["defocus_a"], params["astigmatism_a"], params["cs_a"]
    angle = params["astigmatism_angle_rad"]
    # six grids, allocated before any is freed (a freed grid's hole would not fit the next)
    k = torch.add(kx**2, ky**2).sqrt_()
    k2 = kx**2 + ky**2
    c2, s2 = torch.cos(2.0 * angle), torch.sin(2.0 * angle)
    # k² cos(2(φ − φa)) = (kx² − ky²) cos 2φa + 2 kx ky sin 2φa
    k2_cos = torch.sub(kx**2, ky**2).mul_(c2)
    tmp = torch.mul(2.0 * kx, ky).mul_(s2)  # the temporaries' buffer from here on
    k2_cos.add_(tmp)
    chi = (k2**2).mul_(0.5 * cs * lam**2)
    chi.sub_(torch.mul(defocus, k2, out=tmp))
    chi.sub_(k2_cos.mul_(0.5 * astig)).mul_(math.pi * lam)
    radial = k2.mul_(2.0 * cs * lam**2).sub_(2.0 * defocus)
    gx = radial * kx
    gx.sub_(torch.add(kx * c2, ky * s2, out=tmp).mul_(astig)).mul_(math.pi * lam)
    gy = radial.mul_(ky).sub_(torch.sub(kx * s2, ky * c2, out=tmp).mul_(astig))
    gy.mul_(math.pi * lam)
    chi.sub_(tmp.copy_(k > 0).mul_(params["phase_plate_rad"]))  # scattered beams
    delta = microscope.focal_spread_a
    if isinstance(delta, torch.Tensor):
        delta = delta.to(k.device)
    amplitude = torch.pow(k, 4, out=k2_cos)  # temporal envelope
    amplitude.mul_(-0.5 * (math.pi * lam * delta) ** 2).exp_()
    scale = (alpha / (2.0 * lam)) ** 2
    amplitude.mul_(gx.pow_(2).add_(gy.pow_(2)).mul_(-scale).exp_())  # spatial envelope
    del gx, gy, radial, tmp
    if microscope.objective_aperture_rad is not None:  # else × 1 (exact)
        k_max = microscope.objective_aperture_rad / lam
        amplitude.mul_(torch.rsub(k, k_max).div_(pixel_k_per_a).add_(0.5).clamp_(0.0, 1.0))
    del k
    return torch.polar(amplitude, chi.neg_())
