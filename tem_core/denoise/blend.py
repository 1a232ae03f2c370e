"""The network prior's estimate blended with the Wiener estimate by Stein's unbiased risk.

Two estimators of the expected summed counts ``μ = E[S]`` from the same data ``S`` — the
network (:func:`tem_core.denoise.learned.network_denoise`) and the local Wiener filter it
starts from (:func:`tem_core.denoise.learned.wiener_pilot`) — have errors that are not the
same: on held-out scenes the Wiener estimate is better at some noise levels, the network at
most. Their blend ``a f₁ + (1 − a) f₂`` has a risk that is quadratic in ``a``, and because
the noise model is known that risk can be estimated from the data alone, per image, with
nothing tuned: Stein's unbiased risk estimate (SURE) for ``S ≈ μ + noise`` with covariance
``Σ = mean(S) · I`` (Poisson, the image's contrast is a few per cent) and the risk taken
after the detector's MTF ``A`` (as the detector image is scored):

    SURE(f) = ‖A(f − S)‖² − tr(AΣAᵀ) + 2 tr(AᵀAΣ J_f),

the trace of the Jacobian ``J_f`` estimated with one Rademacher probe ``b``
(Ramani, Blu & Unser 2008): ``tr(M J_f) ≈ (M b)ᵀ (f(S + εb) − f(S)) / ε``. The weight
minimising ``SURE(a f₁ + (1 − a) f₂)`` has a closed form; it is clipped to ``[0, 1]`` (no
extrapolation). The Gaussian approximation of the Poisson noise is the only approximation.
Everything is torch and follows the input's device and dtype.

Measured (particle-window PSNR, ``benchmarks/denoise.py``): on the separate tuning image
the blend raises the mean over 40 dose × n settings from 21.956 to 21.990 dB (+0.10 dB
at 100 e/nm² per projection), so it is on by default; on the held-out benchmark scene it
adds −0.02 to +0.07 dB per dose. The risk is that of the whole image, mostly ice: where the
network is worse than the Wiener estimate on the particles only, the blend keeps it.
Taking the risk over the particles found in the Wiener estimate instead (commit 259f155,
``network_blend_region="particles"``, since removed) scored 21.928 dB against 21.933 dB on
the tuning image: not better (``benchmarks/results/denoise_lowdose_tune_2026-12-02.json``).
Capping the SURE weight by a dose-aware prior, the mean oracle weight on the particles of
16 held-out training-distribution scenes per summed count (0.69 at 50 e/px, 0.12-0.35 at
500-1500, 0.93 at 25 000; ``benchmarks/denoise_particles_vs_ice.py``), scored 22.084 dB
against 22.083 dB uncapped, and lower at 100 e/nm² (19.23 vs 19.37 dB): not better
either (commit 3333a85, since reverted;
``benchmarks/results/denoise_lowdose_tune_2026-12-02b.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from tem_core._fft import fft2, ifft2
from tem_core.denoise.learned import load_denoiser, network_denoise, wiener_pilot
from tem_core.validation import require_generator, require_positive

__all__ = ["network_estimate", "sure_blend"]


@lru_cache(maxsize=4)
def _cached_denoiser(path: str | None, device: torch.device, dtype: torch.dtype):
    """The trained network, loaded once per file, device and dtype."""
    return load_denoiser(path, device=device, dtype=dtype)


def network_estimate(
    total: torch.Tensor,
    *,
    weights_path: str | tuple[str, ...] | None,
    symmetries: int,
    blend: bool,
    mtf: torch.Tensor | None,
    generator: torch.Generator,
    sampling_a: float | None = None,
) -> torch.Tensor:
    """The ``"network"`` prior of :func:`tem_core.denoise.denoise_poisson`: the estimate of
    ``E[S]`` for ``(..., ny, nx)`` summed counts [electrons/pixel] by the network (averaged
    over ``symmetries``; a tuple of ``weights_path`` files: the average of those networks),
    blended with the Wiener estimate by :func:`sure_blend` when
    ``blend`` (the probe from ``generator``); same shape, device and dtype."""
    paths = weights_path if isinstance(weights_path, tuple) else (weights_path,)
    model = [_cached_denoiser(p, total.device, total.dtype) for p in paths]

    def network(s: torch.Tensor) -> torch.Tensor:
        return network_denoise(s, model=model, sampling_a=sampling_a, symmetries=symmetries)

    if not blend:
        return network(total)
    flat = total.reshape(-1, *total.shape[-2:])
    out, _ = sure_blend(flat, network, wiener_pilot, mtf=mtf, generator=generator)
    return out.reshape(total.shape)


def sure_blend(
    total: torch.Tensor,
    first: Callable[[torch.Tensor], torch.Tensor],
    second: Callable[[torch.Tensor], torch.Tensor],
    *,
    mtf: torch.Tensor | None,
    generator: torch.Generator,
    probe_step: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SURE-optimal blend of two estimators of ``E[S]`` for summed counts ``S``.

    Parameters
    ----------
    total
        ``(B, ny, nx)`` summed exact counts ``S`` [electrons/pixel].
    first, second
        The estimators: map ``(B, ny, nx)`` counts to ``(B, ny, nx)`` estimates of ``E[S]``.
    mtf
        ``(ny, nx)`` MTF in FFT order (real) weighting the risk, or ``None`` (no blur).
    generator
        Source of the Rademacher probe (on ``total``'s device).
    probe_step
        ``ε`` of the Monte-Carlo divergence in units of the noise's standard deviation
        ``√mean(S)``.

    Returns
    -------
    tuple of torch.Tensor
        The blend ``(B, ny, nx)`` [electrons/pixel] and the weight of ``first`` ``(B,)``
        (in ``[0, 1]``).
    """
    require_generator(generator, total, "total")
    require_positive("probe_step", probe_step)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return x if mtf is None else ifft2(fft2(x) * mtf).real

    mean = total.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    probe = torch.randint(0, 2, total.shape, generator=generator, device=total.device)
    probe = probe.to(total.dtype) * 2 - 1
    step = probe_step * torch.sqrt(mean)
    weighted = mean * blur(blur(probe))  # Σ AᵀA b with Σ = mean(S) I, A symmetric
    moved = total + step * probe
    one, two = first(total), second(total)
    div_one = (weighted * (first(moved) - one)).sum(dim=(-2, -1)) / step[..., 0, 0]
    div_two = (weighted * (second(moved) - two)).sum(dim=(-2, -1)) / step[..., 0, 0]
    d, r = blur(one - two), blur(two - total)
    dd = (d * d).sum(dim=(-2, -1))
    # SURE(a) = ‖a d + r‖² + 2 (a D₁ + (1 − a) D₂) + const, minimal at a = −(dᵀr + D₁ − D₂)/‖d‖²
    a = -((d * r).sum(dim=(-2, -1)) + div_one - div_two) / dd.clamp_min(1e-30)
    a = torch.where(dd > 0, a, torch.ones_like(a)).clamp(0.0, 1.0)
    w = a[..., None, None]
    return w * one + (1 - w) * two, a
