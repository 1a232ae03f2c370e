"""Real tilt series: neighbouring tilts as references (the paper's Algorithm 2).

A real tilt series holds one exposure per view, so the ``n`` projections of one view that
the denoisers need are not available. Algorithm 2 of the diff-tem paper uses the neighbouring
tilts instead: ``{P−, P, P+}``, each neighbour registered to the current tilt
(:func:`tem_core.denoise.registration.register`: rotation, then shift) and resampled onto
it. Neighbours differ from the current view by the small tilt step (a 2° step stretches the
image by ``cos`` ratios of ~0.1 % at 0°, ~1.5 % near 60° across the tilt axis), which the
references then carry as a small blur.
"""

from __future__ import annotations

import torch

from tem_core.denoise._validate import check_image, check_image_stack
from tem_core.denoise.registration import register, warp

__all__ = ["estimate_noise_std", "neighbour_references"]


def neighbour_references(
    stack: torch.Tensor, index: int, *, rotation: bool = True, step: int = 1
) -> torch.Tensor:
    """The tilt ``index`` and its neighbours ``index ± step``, aligned to it.

    Parameters
    ----------
    stack
        ``(n_tilts, ny, nx)`` images ordered by tilt angle (at least 2).
    index
        The current tilt.
    rotation
        Also estimate an in-plane rotation (log-polar); otherwise shifts only.
    step
        Distance to the neighbours in the stack (2: same-parity tilts, for even/odd tests).

    Returns
    -------
    Tensor
        ``(m, ny, nx)``: ``[P−, P, P+]`` (``m = 3``), or ``m = 2`` at either end.
    """
    stack = (
        check_image_stack("stack", stack[None], leading="n_tilts")[0]
        if stack.ndim == 3
        else check_image_stack("stack", stack, leading="n_tilts")
    )
    if stack.ndim != 3:
        raise ValueError(f"stack must have shape (n_tilts, ny, nx), got {tuple(stack.shape)}")
    n = stack.shape[0]
    if n < 2:
        raise ValueError(f"stack must hold at least 2 tilts (the neighbours are used), got {n}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise ValueError(f"index must be an integer in [0, {n - 1}], got {index!r}")
    fixed = stack[index]
    refs = []
    for j in (index - step, index, index + step):
        if not 0 <= j < n:
            continue
        if j == index:
            refs.append(fixed)
            continue
        angle, shift = register(stack[j], fixed, rotation=rotation)
        refs.append(warp(stack[j], angle_rad=angle, shift_px=shift))
    if len(refs) < 2:
        raise ValueError(f"tilt {index} has no neighbour at distance step={step} in {n} tilts")
    return torch.stack(refs)


def estimate_noise_std(image: torch.Tensor) -> torch.Tensor:
    """Standard deviation of white Gaussian noise in ``(..., ny, nx)`` images (Immerkær 1996).

    ``σ = √(π/2) / (6 (W−2)(H−2)) Σ |I ⊛ L|`` with the Laplacian-difference kernel
    ``L = [[1, −2, 1], [−2, 4, −2], [1, −2, 1]]``, which cancels smooth image structure.
    """
    image = check_image("image", image, min_size=3)
    x = image.reshape(-1, 1, *image.shape[-2:])
    kernel = torch.tensor(
        [[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]],
        device=image.device,
        dtype=image.dtype,
    )[None, None]
    response = torch.nn.functional.conv2d(x, kernel).abs()
    ny, nx = image.shape[-2:]
    sigma = response.sum(dim=(-3, -2, -1)) * (torch.pi / 2) ** 0.5 / (6 * (ny - 2) * (nx - 2))
    return sigma.reshape(image.shape[:-2])
