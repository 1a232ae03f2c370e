"""Quality of a reconstruction: correlation and PSNR against a known truth, Fourier shell
correlation between two independent reconstructions (e.g. from the even and the odd tilts)."""

from __future__ import annotations

import math

import torch

from tem_core.validation import refuse_half_precision, require_same_device


def _pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    for name, t in zip(names, (a, b), strict=True):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        refuse_half_precision(name, t)
    require_same_device(names[1], b, names[0], a)
    for name, t in zip(names, (a, b), strict=True):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite")
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def correlation(volume: torch.Tensor, truth: torch.Tensor) -> float:
    """Pearson correlation coefficient between two volumes [dimensionless]."""
    _pair(volume, truth, ("volume", "truth"))
    a = volume.double().flatten() - volume.double().mean()
    b = truth.double().flatten() - truth.double().mean()
    return float((a @ b) / torch.sqrt((a @ a) * (b @ b)).clamp(min=1e-300))


def psnr_db(volume: torch.Tensor, truth: torch.Tensor, *, fit_scale: bool = True) -> float:
    """Peak signal-to-noise ratio of ``volume`` against ``truth`` [dB].

    The peak is the truth's range (max - min). With ``fit_scale`` the volume is first mapped
    by the least-squares affine fit ``s * volume + c`` to the truth (reconstructions come in
    arbitrary units: counts, potential, HAADF signal).
    """
    _pair(volume, truth, ("volume", "truth"))
    v, t = volume.double().flatten(), truth.double().flatten()
    if fit_scale:
        design = torch.stack([v, torch.ones_like(v)], dim=1)
        coef = torch.linalg.lstsq(design, t[:, None]).solution
        v = design @ coef[:, 0]
    mse = torch.mean((v - t) ** 2)
    peak = t.max() - t.min()
    return float(10.0 * torch.log10(peak**2 / mse.clamp(min=1e-300)))


def fourier_shell_correlation(
    volume_a: torch.Tensor, volume_b: torch.Tensor, *, voxel_size_a: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier shell correlation between two volumes (van Heel & Schatz 2005).

    Returns
    -------
    (frequency, fsc)
        Shell centres [1/Å] (cycles per voxel when ``voxel_size_a = 1``) up to Nyquist and
        the FSC of each shell [dimensionless]. Shells are one voxel of the largest axis wide;
        anisotropic boxes use normalised frequencies per axis.
    """
    _pair(volume_a, volume_b, ("volume_a", "volume_b"))
    if volume_a.ndim != 3:
        raise ValueError(f"volume_a must be 3-D (nz, ny, nx), got {volume_a.ndim}-D")
    if not (math.isfinite(voxel_size_a) and voxel_size_a > 0):
        raise ValueError(f"voxel_size_a must be > 0, got {voxel_size_a} Å")
    fa = torch.fft.rfftn(volume_a.double())
    fb = torch.fft.rfftn(volume_b.double())
    nz, ny, nx = volume_a.shape
    device = fa.device
    kz = torch.fft.fftfreq(nz, device=device, dtype=torch.float64)
    ky = torch.fft.fftfreq(ny, device=device, dtype=torch.float64)
    kx = torch.fft.rfftfreq(nx, device=device, dtype=torch.float64)
    radius = torch.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    n_shells = max(nz, ny, nx) // 2
    index = torch.clamp((radius * 2 * n_shells).round().long(), max=n_shells + 1)
    # rfft keeps half of the spectrum: columns 1..nx/2-1 stand for two voxels each
    weight = torch.full((nx // 2 + 1,), 2.0, dtype=torch.float64, device=device)
    weight[0] = 1.0
    if nx % 2 == 0:
        weight[-1] = 1.0
    weight = weight.expand_as(radius).reshape(-1)
    flat = index.reshape(-1)
    size = n_shells + 2

    def shell_sum(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(size, dtype=torch.float64, device=device).index_add_(
            0, flat, values.reshape(-1) * weight
        )

    cross = shell_sum((fa * fb.conj()).real)
    pa = shell_sum(fa.abs() ** 2)
    pb = shell_sum(fb.abs() ** 2)
    fsc = cross / torch.sqrt(pa * pb).clamp(min=1e-300)
    freq = torch.arange(size, dtype=torch.float64, device=device) / (2 * n_shells)
    keep = slice(1, n_shells + 1)
    return freq[keep] / voxel_size_a, fsc[keep]


def resolution_at(frequency: torch.Tensor, fsc: torch.Tensor, threshold: float = 0.143) -> float:
    """Resolution [1 / frequency unit] where the FSC first drops below ``threshold``.

    Linear interpolation between shells; the Nyquist resolution if it never drops below,
    ``inf`` if the first shell is already below.
    """
    values = fsc.detach().cpu().double()
    f = frequency.detach().cpu().double()
    below = (values < threshold).nonzero()
    if below.numel() == 0:
        return float(1.0 / f[-1])
    i = int(below[0])
    if i == 0:
        return float("inf")
    f0, f1, v0, v1 = f[i - 1], f[i], values[i - 1], values[i]
    cross = f0 + (v0 - threshold) / (v0 - v1) * (f1 - f0)
    return float(1.0 / cross)


def fourier_lowpass(volume: torch.Tensor, *, resolution_a: float, voxel_size_a: float):
    """Keep the spatial frequencies below ``1 / resolution_a`` (a sharp spherical cut-off).

    For comparing a reconstruction with the truth at the resolution the data support.
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim != 3:
        raise ValueError(f"volume must be a 3-D tensor, got {getattr(volume, 'shape', volume)}")
    if not (math.isfinite(resolution_a) and resolution_a > 0):
        raise ValueError(f"resolution_a must be > 0, got {resolution_a} Å")
    if not (math.isfinite(voxel_size_a) and voxel_size_a > 0):
        raise ValueError(f"voxel_size_a must be > 0, got {voxel_size_a} Å")
    spectrum = torch.fft.rfftn(volume.double())
    nz, ny, nx = volume.shape
    dev = spectrum.device
    kz = torch.fft.fftfreq(nz, d=voxel_size_a, device=dev, dtype=torch.float64)
    ky = torch.fft.fftfreq(ny, d=voxel_size_a, device=dev, dtype=torch.float64)
    kx = torch.fft.rfftfreq(nx, d=voxel_size_a, device=dev, dtype=torch.float64)
    k2 = kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2
    keep = k2 < (1.0 / resolution_a) ** 2
    return torch.fft.irfftn(spectrum * keep, s=volume.shape).to(volume.dtype)
