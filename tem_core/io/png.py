"""8-bit PNG previews with a percentile contrast stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tem_core.io.files import PathLike, atomic_write, to_numpy


def write_png_preview(
    path: PathLike,
    image: np.ndarray | torch.Tensor,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    cmap: str = "gray",
    overwrite: bool = False,
) -> Path:
    """Save a 2-D image as an 8-bit PNG with a percentile contrast stretch (atomic).

    Parameters
    ----------
    path
        Destination ``.png``.
    image
        ``(ny, nx)`` real image (numpy or torch); row 0 is drawn at the top.
    percentiles
        Lower and upper percentiles mapped to black and white.
    cmap
        Matplotlib colour map name.
    overwrite
        Replace an existing file.
    """
    from matplotlib import image as mpl_image

    array = to_numpy(image, "image").astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D (ny, nx), got shape {tuple(array.shape)}")
    low_pct, high_pct = percentiles
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise ValueError("image has no finite values")
    vmin, vmax = np.percentile(finite, [low_pct, high_pct])
    if not vmax > vmin:
        vmax = vmin + 1.0
    array = np.nan_to_num(array, nan=vmin, posinf=vmax, neginf=vmin)
    return atomic_write(
        path,
        lambda tmp: mpl_image.imsave(tmp, array, vmin=vmin, vmax=vmax, cmap=cmap, format="png"),
        overwrite=overwrite,
    )
