"""Background crops for MTF estimation: validation, automatic selection, particle check.

The MTF estimators need regions of a micrograph that hold nothing but a flat
background (vacuum, or featureless ice): in TEM-simulator's detector model such a
region is Poisson noise blurred by the MTF, and its noise power spectrum is
``s · MTF²(ω)``. Particles, carbon edges or ice gradients add low-frequency power and
bias the fit, so :func:`find_background_crops` tiles a micrograph and keeps the tiles
whose statistics agree with the robust consensus of all tiles, and
:func:`detect_particles_in_crops` flags user-given crops that look structured.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tem_core._fft import fft2
from tem_core.detector import radial_frequency_cycles_per_px
from tem_core.validation import refuse_half_precision, require_positive, require_positive_int

#: Smallest crop edge accepted by the estimators [pixel].
MIN_CROP_SIZE = 16

# 1.4826 · MAD estimates the standard deviation of Gaussian data.
_MAD_TO_SD = 1.4826


def as_crops(crops: Any, *, name: str = "crops", min_size: int = MIN_CROP_SIZE) -> torch.Tensor:
    """Validate background crops and return them as a ``(B, M, N)`` floating tensor.

    Accepts a tensor or NumPy array of shape ``(M, N)`` or ``(B, M, N)`` (integer counts
    are converted to float64). Raises ``TypeError``/``ValueError`` for anything else.
    """
    if isinstance(crops, np.ndarray):
        crops = torch.from_numpy(np.ascontiguousarray(crops))
    if not isinstance(crops, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(crops).__name__}")
    if crops.is_complex():
        raise TypeError(f"{name} must be real, got dtype {crops.dtype}")
    refuse_half_precision(name, crops)
    if not crops.dtype.is_floating_point:
        crops = crops.to(torch.float64)
    if crops.ndim == 2:
        crops = crops.unsqueeze(0)
    if crops.ndim != 3:
        raise ValueError(f"{name} must have shape (M, N) or (B, M, N), got {tuple(crops.shape)}")
    if crops.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one crop, got shape {tuple(crops.shape)}")
    if min(crops.shape[-2:]) < min_size:
        raise ValueError(
            f"{name} must be at least {min_size} x {min_size} pixels, got {tuple(crops.shape[-2:])}"
        )
    if not bool(torch.isfinite(crops).all()):
        bad = int((~torch.isfinite(crops)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite pixels (nan or inf)")
    return crops


def require_noise(crops: torch.Tensor, *, name: str = "crops") -> None:
    """Raise ``ValueError`` naming the crops that hold no noise (zero variance).

    A constant crop has a zero periodogram: its noise spectrum, and so the MTF, cannot be
    estimated from it (a dead or saturated region, a padded border, or a synthetic image
    without noise).
    """
    var = crops.double().var(dim=(-2, -1))
    scale = crops.double().abs().amax(dim=(-2, -1)).clamp_min(1.0)
    flat = var <= (1e-12 * scale) ** 2
    if bool(flat.any()):
        bad = torch.nonzero(flat).flatten().tolist()
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"{name} must hold noise, but {len(bad)} of {crops.shape[0]} crops are constant "
            f"(zero variance; indices {shown}, value {float(crops[bad[0]].flatten()[0]):g}): "
            "the noise spectrum, and so the MTF, cannot be estimated from them "
            "(dead, saturated or padded regions, or an image simulated without noise)"
        )


def _robust_z(values: torch.Tensor) -> torch.Tensor:
    """(x − median) / (1.4826 · MAD); a zero MAD (identical values) gives z = 0 for the median."""
    med = values.median()
    mad = (values - med).abs().median() * _MAD_TO_SD
    scale = mad if float(mad) > 0 else torch.finfo(values.dtype).eps * max(1.0, float(med.abs()))
    return (values - med) / scale


def _block_means(tiles: torch.Tensor, block: int) -> torch.Tensor:
    """Means over ``block × block`` blocks of ``(T, m, n)`` tiles (remainders dropped)."""
    t, m, n = tiles.shape
    mb, nb = m // block, n // block
    x = tiles[:, : mb * block, : nb * block].reshape(t, mb, block, nb, block)
    return x.mean(dim=(2, 4))


def _tile_statistics(tiles: torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """Per-tile statistics that particles, edges and gradients disturb.

    * ``mean``: the tile mean;
    * ``log_var``: log of the pixel variance;
    * ``log_lowpass``: log of ``block² · var(block means) / var(pixels)``, the low-frequency
      power relative to the total (about ``S(0)/mean(S)`` for pure noise, independent of
      the dose; structure raises it);
    * ``block_z``: the largest robust z-score of a block mean within the tile (a blob
      smaller than the tile).
    """
    x = tiles.double()
    var = x.var(dim=(-2, -1)).clamp_min(1e-300)
    blocks = _block_means(x, block)
    bvar = blocks.var(dim=(-2, -1)).clamp_min(1e-300)
    flat = blocks.flatten(1)
    med = flat.median(dim=1, keepdim=True).values
    mad = (flat - med).abs().median(dim=1, keepdim=True).values * _MAD_TO_SD
    block_z = ((flat - med).abs() / mad.clamp_min(1e-300)).amax(dim=1)
    return {
        "mean": x.mean(dim=(-2, -1)),
        "log_var": var.log(),
        "log_lowpass": (bvar * block**2 / var).log(),
        "block_z": block_z,
    }


@dataclass(frozen=True, kw_only=True, eq=False)
class BackgroundCrops:
    """Result of :func:`find_background_crops`.

    Attributes
    ----------
    crops
        ``(B, crop_size, crop_size)`` accepted crops, best first, dtype of the micrograph
        (float64 for integer input).
    origins_px
        ``(B, 2)`` int64 (row, column) of each crop's first pixel [pixel].
    scores
        ``(B,)`` robust distance from the consensus (smaller is flatter).
    tile_origins_px
        ``(T, 2)`` origins of every candidate tile [pixel].
    tile_accepted
        ``(T,)`` bool, True where the tile passed every test (it may still be beyond ``n_max``).
    """

    crops: torch.Tensor
    origins_px: torch.Tensor
    scores: torch.Tensor
    tile_origins_px: torch.Tensor
    tile_accepted: torch.Tensor

    def __len__(self) -> int:
        return int(self.crops.shape[0])


def find_background_crops(
    micrograph: Any,
    *,
    crop_size: int,
    n_max: int | None = None,
    stride: int | None = None,
    k_mad: float = 3.5,
    block_px: int | None = None,
    block_z_max: float = 6.0,
    min_crops: int = 1,
) -> BackgroundCrops:
    """Find particle-free square regions of a micrograph automatically.

    The micrograph is cut into tiles (``crop_size``, step ``stride``). For every tile four
    statistics are computed (see below); a tile is rejected when its mean or log-variance
    deviates from the median over all tiles by more than ``k_mad`` robust standard
    deviations (1.4826 · MAD), when its low-frequency power is more than ``k_mad`` above the
    median (one-sided), or when one of its block means deviates from the tile's own block
    median by more than ``block_z_max`` (a small blob). Accepted tiles are ranked by the
    root-sum-square of their robust z-scores; the ``n_max`` flattest are returned.

    Statistics per tile: mean; log of the pixel variance; log of
    ``block² · var(block means) / var(pixels)`` (low-pass power relative to the total: about
    ``S(0)/mean S`` for pure noise, raised by any structure larger than a block); largest
    robust z-score of a block mean. Tiles that :func:`detect_particles_in_crops` flags are
    rejected too. Blocks are ``block_px`` squared (default ``crop_size // 16``,
    at least 4).

    Parameters
    ----------
    micrograph
        ``(H, W)`` image (tensor or array, counts) [counts].
    crop_size
        Edge of the square crops (≥ 16) [pixel].
    n_max
        Return at most this many crops (``None``: every accepted tile).
    stride
        Step between tile origins (default ``crop_size``: non-overlapping) [pixel].
    k_mad
        Rejection threshold in robust standard deviations.
    block_px
        Block edge for the low-pass statistics [pixel].
    block_z_max
        Largest accepted robust z-score of a block mean within a tile.
    min_crops
        Raise ``ValueError`` when fewer tiles pass.

    Returns
    -------
    BackgroundCrops
    """
    image = as_crops(micrograph, name="micrograph", min_size=MIN_CROP_SIZE)
    if image.shape[0] != 1:
        raise ValueError(f"micrograph must have shape (H, W), got {tuple(image.shape)}")
    image = image[0]
    require_positive_int("crop_size", crop_size)
    if crop_size < MIN_CROP_SIZE:
        raise ValueError(f"crop_size must be >= {MIN_CROP_SIZE} pixels, got {crop_size}")
    stride = crop_size if stride is None else stride
    require_positive_int("stride", stride)
    require_positive("k_mad", k_mad)
    require_positive("block_z_max", block_z_max)
    require_positive_int("min_crops", min_crops)
    if n_max is not None:
        require_positive_int("n_max", n_max)
    block = max(4, crop_size // 16) if block_px is None else block_px
    require_positive_int("block_px", block)
    if crop_size // block < 4:
        raise ValueError(f"block_px must be <= crop_size / 4 = {crop_size // 4} px, got {block}")
    h, w = image.shape
    rows = list(range(0, h - crop_size + 1, stride))
    cols = list(range(0, w - crop_size + 1, stride))
    n_tiles = len(rows) * len(cols)
    if n_tiles < 4:
        raise ValueError(
            f"micrograph {tuple(image.shape)} holds only {n_tiles} tiles of "
            f"crop_size={crop_size} px; "
            "at least 4 are needed for robust statistics (use a smaller crop_size or stride)"
        )
    origins = torch.tensor([(r, c) for r in rows for c in cols], dtype=torch.int64)
    tiles = torch.stack([image[r : r + crop_size, c : c + crop_size] for r, c in origins.tolist()])
    stats = _tile_statistics(tiles, block)
    z_mean = _robust_z(stats["mean"])
    z_var = _robust_z(stats["log_var"])
    z_low = _robust_z(stats["log_lowpass"])
    accepted = (
        (z_mean.abs() <= k_mad)
        & (z_var.abs() <= k_mad)
        & (z_low <= k_mad)
        & (stats["block_z"] <= block_z_max)
    )
    accepted &= ~detect_particles_in_crops(tiles, warn=False)  # same test as for given crops
    score = torch.sqrt(z_mean**2 + z_var**2 + z_low.clamp_min(0) ** 2)
    idx = torch.nonzero(accepted).flatten()
    idx = idx[torch.argsort(score[idx], stable=True)]
    if n_max is not None:
        idx = idx[:n_max]
    if idx.numel() < min_crops:
        raise ValueError(
            f"found only {idx.numel()} background crops of {crop_size} px (min_crops={min_crops}) "
            f"among {n_tiles} tiles; loosen k_mad={k_mad} or use a smaller crop_size"
        )
    return BackgroundCrops(
        crops=tiles[idx],
        origins_px=origins[idx],
        scores=score[idx],
        tile_origins_px=origins,
        tile_accepted=accepted,
    )


def detect_particles_in_crops(
    crops: Any,
    *,
    low_power_ratio_max: float = 2.5,
    block_z_max: float = 6.0,
    k_mad: float = 5.0,
    warn: bool = True,
) -> torch.Tensor:
    """Flag crops that seem to contain particles or other structure (not a flat background).

    Three tests, each independent of the (unknown) MTF and dose:

    * low-frequency excess: the mean periodogram in the ring ``0 < |ω| ≤ f₁`` over the ring
      ``f₁ < |ω| ≤ 2 f₁`` (``f₁ = 4 / crop edge`` cycles/pixel, the mean removed) exceeds
      ``low_power_ratio_max`` (noise with any smooth MTF gives about 1; a particle of tens
      of pixels gives far more);
    * a block mean (blocks of ``edge // 16``, at least 4 px) deviates from the crop's block
      median by more than ``block_z_max`` robust standard deviations (a blob);
    * with 5 or more crops: a crop mean deviates from the median crop mean by more than
      ``k_mad`` robust standard deviations of the crop means.

    Parameters
    ----------
    crops
        ``(B, M, N)`` or ``(M, N)`` crops [counts].
    low_power_ratio_max, block_z_max, k_mad
        Thresholds, see above.
    warn
        Issue a ``UserWarning`` naming the flagged crops.

    Returns
    -------
    Tensor
        ``(B,)`` bool, True for suspicious crops.
    """
    x = as_crops(crops).double()
    b, m, n = x.shape
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    power = fft2(centred).abs() ** 2
    radius = radial_frequency_cycles_per_px((m, n), device=x.device, dtype=torch.float64)
    f1 = 4.0 / min(m, n)
    inner = (radius > 0) & (radius <= f1)
    outer = (radius > f1) & (radius <= 2 * f1)
    ratio = power[:, inner].mean(dim=1) / power[:, outer].mean(dim=1).clamp_min(1e-300)
    block = max(4, min(m, n) // 16)
    block_z = _tile_statistics(x, block)["block_z"]
    flagged = (ratio > low_power_ratio_max) | (block_z > block_z_max)
    if b >= 5:
        flagged |= _robust_z(x.mean(dim=(-2, -1))).abs() > k_mad
    if warn and bool(flagged.any()):
        bad = torch.nonzero(flagged).flatten().tolist()
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        warnings.warn(
            f"{len(bad)} of {b} crops appear to contain particles or structure "
            f"(indices {shown}; low-frequency power ratio up to {float(ratio.max()):.2f}, "
            f"block z up to {float(block_z.max()):.1f}); the MTF fit assumes a flat background. "
            "Use find_background_crops to pick flat regions.",
            UserWarning,
            stacklevel=2,
        )
    return flagged


def taper_window(shape: tuple[int, int], *, taper: str | None, dtype: torch.dtype) -> torch.Tensor:
    """Separable 2-D window: ``"hann"`` (periodic=False) or ``None`` (ones)."""
    if taper is None:
        return torch.ones(shape, dtype=dtype)
    if taper != "hann":
        raise ValueError(f"taper must be 'hann' or None, got {taper!r}")
    wy = torch.hann_window(shape[0], periodic=False, dtype=dtype)
    wx = torch.hann_window(shape[1], periodic=False, dtype=dtype)
    return wy[:, None] * wx[None, :]


def taper_variance_factor(window: torch.Tensor) -> float:
    """Variance inflation of spectral estimates from a tapered periodogram.

    ``MN · Σw⁴ / (Σw²)²`` (1 for no taper, about (35/18)² ≈ 3.8 for a 2-D Hann window):
    neighbouring tapered periodogram values are correlated, so a likelihood that treats
    them as independent overstates the information by this factor.
    """
    w2 = window.double() ** 2
    return float(window.numel() * (w2**2).sum() / w2.sum() ** 2)


def detrend_crops(crops: torch.Tensor, *, detrend: str) -> torch.Tensor:
    """Remove each crop's mean (``"mean"``) or least-squares plane (``"plane"``)."""
    if detrend == "mean":
        return crops - crops.mean(dim=(-2, -1), keepdim=True)
    if detrend != "plane":
        raise ValueError(f"detrend must be 'mean' or 'plane', got {detrend!r}")
    _, m, n = crops.shape
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, m, dtype=crops.dtype, device=crops.device),
        torch.linspace(-1, 1, n, dtype=crops.dtype, device=crops.device),
        indexing="ij",
    )
    design = torch.stack([torch.ones_like(xx), yy, xx], dim=-1).reshape(-1, 3)
    coef = torch.linalg.lstsq(design, crops.reshape(crops.shape[0], -1).T).solution  # (3, B)
    return crops - (design @ coef).T.reshape(crops.shape)
