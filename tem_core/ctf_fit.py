"""CTF fitting: defocus, astigmatism and the ring envelope from a micrograph's power spectrum.

Inverse stage. The method follows CTFFIND4 (Rohou & Grigorieff 2015, J. Struct. Biol.
192:216) in its essentials:

1. the amplitude spectrum ``S = √P`` of the micrograph, ``P`` the periodogram averaged over
   ``tile_px`` tiles (Hann window, plane detrend; :func:`micrograph_power_spectrum`);
2. background subtraction: ``D = S − B(|k|)``, ``B`` the radial profile of ``S`` smoothed by
   a running mean; once a first defocus is known the window is one local ring period, over
   which ``sin²`` averages to its mean exactly, so ``D`` holds only the rings. ``D`` is then
   divided by its running radial rms so that every ring counts equally;
3. the score: the normalised cross-correlation, over the annulus ``resolution_range_a``, of
   ``D`` with the model ``sin²(χ(k) − φ)``, ``χ`` the aberration phase of
   :func:`tem_core.optics.aberration_phase` (defocus > 0 underfocus, astigmatism in CTFFIND's
   convention ``Δf(φ) = Δf + (a/2) cos 2(φ − φ_a)``) and ``φ = φ_pp + atan(A/√(1 − A²))``
   with the amplitude contrast ``A``;
4. a 1-D search over the radial average (defocus on a grid fine enough that the phase at the
   highest frequency moves by < π/4 per step), then a 2-D grid over the astigmatism
   (magnitude × angle) and a local L-BFGS refinement of (Δf, a cos 2φ_a, a sin 2φ_a);
5. the ring envelope: in bands of ``|k|`` the regression of ``S − B`` on the model gives the
   ring modulation relative to the background; ``exp(−B_env k²/4)`` is fitted to it, and the
   fit resolution is the highest band up to which the rings correlate with the model
   (correlation ≥ 0.3, as CTFFIND's "fit resolution" uses a threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tem_core.mtf_fit import averaged_periodogram
from tem_core.optics import Microscope, aberration_phase
from tem_core.validation import require_in_range, require_positive, require_positive_int

__all__ = ["CTFFitResult", "fit_ctf", "micrograph_power_spectrum"]


@dataclass(frozen=True, eq=False)
class CTFFitResult:
    """Fitted CTF parameters (internal units) and the ring envelope.

    ``defocus_a`` is the mean defocus [Å] (> 0 underfocus), ``astigmatism_a`` ≥ 0 [Å] with
    ``astigmatism_angle_rad`` in [0, π); ``defocus_u_a``/``defocus_v_a`` as in CTFFIND.
    ``score`` is the 2-D normalised cross-correlation; ``envelope_b_a2`` the B-factor [Å²]
    of the ring modulation ``m(k) = m₀ exp(−B k²/4)``; ``fit_resolution_a`` [Å];
    ``band_frequency_per_a``, ``band_modulation`` (ring amplitude / background) and
    ``band_correlation`` per band.
    """

    defocus_a: float
    astigmatism_a: float
    astigmatism_angle_rad: float
    score: float
    envelope_b_a2: float
    modulation_at_zero: float
    fit_resolution_a: float
    band_frequency_per_a: torch.Tensor
    band_modulation: torch.Tensor
    band_correlation: torch.Tensor

    @property
    def defocus_u_a(self) -> float:
        return self.defocus_a + 0.5 * self.astigmatism_a

    @property
    def defocus_v_a(self) -> float:
        return self.defocus_a - 0.5 * self.astigmatism_a


def micrograph_power_spectrum(image: torch.Tensor, *, tile_px: int = 512) -> torch.Tensor:
    """Periodogram averaged over ``tile_px`` tiles overlapping by half, FFT order [counts²].

    Hann window and a least-squares plane removed per tile (ice gradients); with the Hann
    window, half-overlapping tiles are nearly independent and double the average.
    """
    require_positive_int("tile_px", tile_px)
    if not isinstance(image, torch.Tensor) or image.ndim != 2:
        raise ValueError(f"image must be a 2-D tensor, got {type(image).__name__}")
    if min(image.shape) < tile_px:
        raise ValueError(f"tile_px must be <= the image size {tuple(image.shape)}, got {tile_px}")
    tiles = image.double().unfold(0, tile_px, tile_px // 2).unfold(1, tile_px, tile_px // 2)
    tiles = tiles.reshape(-1, tile_px, tile_px)
    total = torch.zeros(tile_px, tile_px, dtype=torch.float64, device=image.device)
    for start in range(0, tiles.shape[0], 16):  # bounded memory
        chunk = tiles[start : start + 16]
        total += averaged_periodogram(chunk, taper="hann", detrend="plane") * chunk.shape[0]
    return total / tiles.shape[0]


def _running_mean(values: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over a centred window of ``width[i]`` (odd, ≥ 1) bins at each ``i``."""
    c = torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])
    n = values.numel()
    idx = torch.arange(n, device=values.device)
    half = (width // 2).clamp(min=0)
    lo = (idx - half).clamp(min=0)
    hi = (idx + half + 1).clamp(max=n)
    return (c[hi] - c[lo]) / (hi - lo)


class _Spectrum:
    """Amplitude spectrum with its frequency grid, restricted to the fitting annulus."""

    def __init__(self, power, sampling_a, k_lo, k_hi):
        n = power.shape[-1]
        self.dk = 1.0 / (n * sampling_a)
        f = torch.fft.fftfreq(n, d=sampling_a, dtype=torch.float64)
        self.ky, self.kx = torch.meshgrid(f, f, indexing="ij")
        self.k = torch.sqrt(self.kx**2 + self.ky**2)
        self.amplitude = torch.sqrt(power.clamp(min=0))
        self.bin = torch.round(self.k / self.dk).long()
        self.n_bins = int(self.bin.max()) + 1
        # one half-plane (the spectrum is point-symmetric)
        self.mask = (self.k >= k_lo) & (self.k <= k_hi) & (self.kx >= 0)
        self.k_lo, self.k_hi = k_lo, k_hi

    def radial(self, values):
        sums = torch.zeros(self.n_bins, dtype=torch.float64).index_add_(
            0, self.bin.flatten(), values.flatten()
        )
        counts = torch.zeros(self.n_bins, dtype=torch.float64).index_add_(
            0, self.bin.flatten(), torch.ones_like(values.flatten())
        )
        return sums / counts.clamp(min=1)

    def flatten(self, period_bins: torch.Tensor):
        """Background-subtracted, rms-normalised rings ``D`` (2-D) and ``S − B``."""
        background = _running_mean(self.radial(self.amplitude), period_bins)[self.bin]
        rings = self.amplitude - background
        rms = torch.sqrt(_running_mean(self.radial(rings**2), 2 * period_bins + 1))[self.bin]
        return rings / rms.clamp(min=1e-300), rings, background


def _phase_offset(amplitude_contrast: float, phase_shift_rad: float) -> float:
    # sin χ − A' cos χ ∝ sin(χ − atan A'), A' = A/√(1 − A²) (weak phase + amplitude object)
    return phase_shift_rad + math.atan2(amplitude_contrast, math.sqrt(1 - amplitude_contrast**2))


def _model(kx, ky, microscope, defocus, ax, ay, offset):
    a = torch.sqrt(ax**2 + ay**2 + 1e-12)
    angle = 0.5 * torch.atan2(ay, ax)
    chi, _, _ = aberration_phase(
        kx, ky, wavelength_a=microscope.wavelength_a, defocus_a=defocus, astigmatism_a=a,
        astigmatism_angle_rad=angle, cs_a=float(microscope.cs_a),
    )  # fmt: skip
    return torch.sin(chi - offset) ** 2


def _ncc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / torch.sqrt((x * x).sum(-1) * (y * y).sum(-1) + 1e-300)


def fit_ctf(
    image: torch.Tensor,
    *,
    sampling_a: float,
    microscope: Microscope,
    tile_px: int = 512,
    defocus_range_a: tuple[float, float] = (3000.0, 50000.0),
    resolution_range_a: tuple[float, float] = (30.0, 4.0),
    max_astigmatism_a: float = 3000.0,
    amplitude_contrast: float = 0.07,
    phase_shift_rad: float = 0.0,
) -> CTFFitResult:
    """Fit defocus, astigmatism and the ring envelope to ``image`` (module docstring).

    Parameters
    ----------
    image
        ``(ny, nx)`` micrograph [counts], at least ``tile_px`` on each side.
    sampling_a
        Pixel size [Å].
    microscope
        Supplies the wavelength and Cs.
    tile_px
        Tile size of the averaged periodogram [px].
    defocus_range_a
        Search range of the mean defocus [Å] (> 0 underfocus).
    resolution_range_a
        ``(low, high)`` resolution limits of the fit [Å], e.g. (30, 4).
    max_astigmatism_a
        Largest astigmatism searched [Å].
    amplitude_contrast
        Fraction ``A`` in [0, 1) (0.07 for protein in ice).
    phase_shift_rad
        Phase-plate shift [rad].
    """
    require_positive("sampling_a", sampling_a, "Å")
    lo_df, hi_df = (float(v) for v in defocus_range_a)
    require_positive("defocus_range_a", [lo_df, hi_df], "Å")
    if not hi_df > lo_df:
        raise ValueError(f"defocus_range_a must be increasing, got {defocus_range_a} Å")
    res_lo, res_hi = (float(v) for v in resolution_range_a)
    require_positive("resolution_range_a", [res_lo, res_hi], "Å")
    if not res_lo > res_hi >= 2.0 * sampling_a:
        raise ValueError(
            "resolution_range_a must be (low, high) with low > high >= 2 × sampling_a "
            f"({2 * sampling_a} Å), got {resolution_range_a} Å"
        )
    require_in_range("max_astigmatism_a", max_astigmatism_a, 0.0, math.inf, "Å")
    require_in_range("amplitude_contrast", amplitude_contrast, 0.0, 0.99)
    spec = _Spectrum(micrograph_power_spectrum(image, tile_px=tile_px), sampling_a,
                     1.0 / res_lo, 1.0 / res_hi)  # fmt: skip
    offset = _phase_offset(amplitude_contrast, phase_shift_rad)
    lam = microscope.wavelength_a
    radial_k = torch.arange(spec.n_bins, dtype=torch.float64) * spec.dk
    in_band = (radial_k >= spec.k_lo) & (radial_k <= spec.k_hi)

    def period_bins(defocus: float | None) -> torch.Tensor:
        if defocus is None:
            width = torch.full_like(radial_k, 15.0)
        else:  # one ring period 1/(2 λ Δf k) at each k, in bins
            width = 1.0 / (2.0 * lam * defocus * radial_k.clamp(min=spec.dk) * spec.dk)
        return (2 * torch.round(width.clamp(1.0, spec.n_bins / 2) / 2) + 1).long()

    def search_1d(profile, grid):
        models = _model(radial_k[in_band], torch.zeros(()), microscope, grid[:, None],
                        torch.zeros(()), torch.zeros(()), offset)  # fmt: skip
        scores = _ncc(models, profile[in_band][None, :].expand_as(models))
        return float(grid[int(torch.argmax(scores))])

    step = 0.25 / (lam * spec.k_hi**2)
    grid = torch.arange(lo_df, hi_df + step, step, dtype=torch.float64)
    norm, _, _ = spec.flatten(period_bins(None))
    defocus = search_1d(spec.radial(norm), grid)
    for _ in range(2):  # background from the ring period, then search again nearby
        norm, rings, background = spec.flatten(period_bins(defocus))
        local = torch.arange(0.9 * defocus, 1.1 * defocus, step / 4, dtype=torch.float64)
        defocus = search_1d(spec.radial(norm), local)

    kx, ky, target = spec.kx[spec.mask], spec.ky[spec.mask], norm[spec.mask]
    best = (-2.0, defocus, 0.0, 0.0)
    for mag in (0.0, 0.1, 0.25, 0.5, 1.0):
        for ang in range(0 if mag else 1, 8):
            ax = mag * max_astigmatism_a * math.cos(2 * math.pi * ang / 8)
            ay = mag * max_astigmatism_a * math.sin(2 * math.pi * ang / 8)
            dfs = torch.arange(defocus - 4 * step, defocus + 4.5 * step, step)
            m = _model(kx, ky, microscope, dfs[:, None], torch.tensor(ax), torch.tensor(ay),
                       offset)  # fmt: skip
            scores = _ncc(m, target[None, :].expand_as(m))
            i = int(torch.argmax(scores))
            if float(scores[i]) > best[0]:
                best = (float(scores[i]), float(dfs[i]), ax, ay)
    params = torch.tensor(best[1:], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([step, step, step], dtype=torch.float64)
    u = (params.detach() / scale).clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([u], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        p = u * scale
        loss = -_ncc(_model(kx, ky, microscope, p[0], p[1], p[2], offset), target)
        loss.backward()
        return loss

    optimiser.step(closure)
    p = (u * scale).detach()
    score = float(_ncc(_model(kx, ky, microscope, p[0], p[1], p[2], offset), target))
    if score < best[0]:  # keep the grid optimum if the refinement wandered off
        p, score = torch.tensor(best[1:], dtype=torch.float64), best[0]
    defocus, ax, ay = (float(v) for v in p)
    astig = math.hypot(ax, ay)
    angle = (0.5 * math.atan2(ay, ax)) % math.pi
    norm, rings, background = spec.flatten(period_bins(defocus))
    envelope = _envelope(spec, rings, background, microscope, p, offset)
    return CTFFitResult(defocus, astig, angle, score, *envelope)


def _envelope(spec, rings, background, microscope, p, offset):
    """Ring modulation per band, its B-factor fit and the fit resolution."""
    model = _model(spec.kx, spec.ky, microscope, p[0], p[1], p[2], offset)
    edges = torch.arange(spec.k_lo, spec.k_hi + 1e-12, 0.01)
    centres, modulation, correlation = [], [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (spec.k >= a) & (spec.k < b)
        if int(sel.sum()) < 16:
            continue
        m = model[sel] - model[sel].mean()
        r = rings[sel] - rings[sel].mean()
        slope = float((m * r).sum() / (m * m).sum().clamp(min=1e-300))
        centres.append(float(0.5 * (a + b)))
        # sin² has amplitude ½ around its mean: the ring modulation relative to background
        modulation.append(0.5 * slope / float(background[sel].mean()))
        correlation.append(float(_ncc(m, r)))
    k = torch.tensor(centres, dtype=torch.float64)
    mod = torch.tensor(modulation, dtype=torch.float64)
    corr = torch.tensor(correlation, dtype=torch.float64)
    # from the first band that correlates, up to the last before two bands in a row fail
    good = (corr >= 0.3).tolist()
    start = good.index(True) if True in good else len(good)
    last = None
    for i in range(start, len(good)):
        if good[i]:
            last = i
        elif i + 1 >= len(good) or not good[i + 1]:
            break
    fit_res = 1.0 / float(k[last]) if last is not None else math.inf
    use = (mod > 0) & (corr >= 0.3)
    b_factor, m0 = math.nan, math.nan
    if int(use.sum()) >= 2:
        design = torch.stack([torch.ones_like(k[use]), -(k[use] ** 2) / 4], dim=1)
        coef = torch.linalg.lstsq(design, torch.log(mod[use])[:, None]).solution.flatten()
        m0, b_factor = math.exp(float(coef[0])), float(coef[1])
    return b_factor, m0, fit_res, k, mod, corr
