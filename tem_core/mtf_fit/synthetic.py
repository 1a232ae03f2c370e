"""Synthetic background crops with a known MTF: integrating and counting cameras.

Two detector models (:mod:`tem_core.detector`):

* integrating (TEM-simulator's model, ``mtf_after_noise=True``): Poisson electrons, then
  the MTF blur, so the background's noise power spectrum is ``s · MTF²``;
* counting (``counting=True``): the MTF acts on the signal only and every detected
  electron is one count in one pixel, so the background's noise is white whatever the MTF.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tem_core.detector import (
    apply_mtf,
    mtf_parametric,
    mtf_tabulated,
    radial_frequency_cycles_per_px,
    sample_counts,
)
from tem_core.validation import (
    refuse_half_precision,
    require_float_dtype,
    require_positive,
    require_positive_int,
)


def simulate_flat_background(
    shape: tuple[int, ...],
    *,
    mean_electrons_per_px: float | torch.Tensor,
    mtf: torch.Tensor | None,
    generator: torch.Generator,
    gain_counts_per_e: float | torch.Tensor = 1.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Flat-field detector images in TEM-simulator's model: Poisson, then MTF blur, then gain.

    ``gain · F⁻¹[MTF · F[k]]`` with ``k ~ Poisson(N)`` per pixel. Differentiable wrt the
    MTF (and the gain), not wrt ``N``.

    Parameters
    ----------
    shape
        ``(..., M, N)`` output shape [pixel].
    mean_electrons_per_px
        Expected electrons per pixel ``N`` (> 0) [e/pixel].
    mtf
        ``(M, N)`` MTF in FFT order, or ``None`` for no blur.
    generator
        Random generator (its device is used).
    gain_counts_per_e
        Counts per electron [counts/e].
    dtype
        Floating dtype of the result.
    """
    require_positive("mean_electrons_per_px", mean_electrons_per_px, "e/px")
    require_float_dtype("dtype", dtype)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device
    if mtf is not None:
        if not isinstance(mtf, torch.Tensor):
            raise TypeError(f"mtf must be a torch.Tensor or None, got {type(mtf).__name__}")
        refuse_half_precision("mtf", mtf)
        if mtf.device != device:
            raise ValueError(
                f"mtf is on {mtf.device} but generator is on {device}: the images are drawn "
                "on the generator's device; move the MTF there (mtf.to(generator.device))"
            )
    expected = torch.full(shape, float(mean_electrons_per_px), dtype=dtype, device=device)
    counts = sample_counts(expected, generator=generator)
    if mtf is not None:
        counts = apply_mtf(counts, mtf)
    return gain_counts_per_e * counts


MTFSpec = dict[str, float] | str | Callable[[torch.Tensor], torch.Tensor]


def mtf_from_spec(mtf: MTFSpec, frequency_cycles_per_px: torch.Tensor) -> torch.Tensor:
    """Evaluate an MTF given as parameters, a camera name or a callable of frequency.

    Parameters
    ----------
    mtf
        A dict of :func:`tem_core.detector.mtf_parametric` parameters, the name of a
        tabulated camera (:func:`tem_core.detector.available_cameras`), or a callable
        ``mtf(frequency_cycles_per_px) -> Tensor``.
    frequency_cycles_per_px
        Frequencies [cycles/pixel].
    """
    if isinstance(mtf, dict):
        return mtf_parametric(frequency_cycles_per_px, **mtf)
    if isinstance(mtf, str):
        return mtf_tabulated(frequency_cycles_per_px, camera=mtf)
    if callable(mtf):
        return mtf(frequency_cycles_per_px)
    raise TypeError(
        f"mtf must be a dict of parameters, a camera name or a callable, got {type(mtf).__name__}"
    )


def synthetic_background_crops(
    mtf: MTFSpec,
    *,
    n_crops: int,
    crop_size_px: int,
    mean_electrons_per_px: float,
    generator: torch.Generator,
    micrograph_size_px: int | None = None,
    gain_counts_per_e: float = 1.0,
    counting: bool = False,
) -> torch.Tensor:
    """Background crops cut from flat micrographs with a known MTF.

    Flat square micrographs of ``micrograph_size_px`` (default twice the crop) are
    simulated with :func:`simulate_flat_background` (Poisson electrons, then the MTF blur,
    then the gain) and cut into non-overlapping crops, so the crops are not periodic, as
    crops of a real micrograph are not. With ``counting=True`` the MTF acts on the
    (flat) signal only, as in a counting camera, and the noise stays white.

    Parameters
    ----------
    mtf
        The true MTF: :func:`tem_core.detector.mtf_parametric` parameters (``a, b, c,
        alpha, beta`` and optionally ``p, q``), a tabulated camera name such as
        ``"falcon3ec_300kv"``, or a callable of frequency [cycles/pixel].
    n_crops
        Number of crops returned.
    crop_size_px
        Edge of each square crop [pixel].
    mean_electrons_per_px
        Expected electrons per pixel [e/pixel].
    generator
        Random generator (its device is used).
    micrograph_size_px
        Edge of the simulated micrographs [pixel], a multiple of ``crop_size_px``.
    gain_counts_per_e
        Counts per electron [counts/e].
    counting
        Counting camera: white noise, the MTF not applied to the noise.

    Returns
    -------
    Tensor
        ``(n_crops, crop_size_px, crop_size_px)`` float64 [counts].
    """
    require_positive_int("n_crops", n_crops)
    require_positive_int("crop_size_px", crop_size_px)
    require_positive("gain_counts_per_e", gain_counts_per_e, "counts/e")
    big = 2 * crop_size_px if micrograph_size_px is None else micrograph_size_px
    require_positive_int("micrograph_size_px", big)
    if big % crop_size_px:
        raise ValueError(
            f"micrograph_size_px must be a multiple of crop_size_px = {crop_size_px} px, "
            f"got {big} px"
        )
    k = big // crop_size_px
    n_images = -(-n_crops // (k * k))
    omega = radial_frequency_cycles_per_px((big, big), device=generator.device, dtype=torch.float64)
    blur = mtf_from_spec(mtf, omega)
    images = simulate_flat_background(
        (n_images, big, big),
        mean_electrons_per_px=mean_electrons_per_px,
        mtf=None if counting else blur,
        generator=generator,
        gain_counts_per_e=gain_counts_per_e,
    )
    crops = images.reshape(n_images, k, crop_size_px, k, crop_size_px).permute(0, 1, 3, 2, 4)
    return crops.reshape(-1, crop_size_px, crop_size_px)[:n_crops].contiguous()
